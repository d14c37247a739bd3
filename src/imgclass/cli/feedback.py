"""``imgclass feedback export | list | accept | reject | stats | migrate``: the feedback
people sent through the page or ``POST /v1/feedback``, reviewed and turned into data."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from imgclass.errors import FeedbackError
from imgclass.text import plural

DEFAULT_BUNDLE = Path("work/runs/default/bundle")

EPILOG = """examples:
  imgclass feedback stats
  imgclass feedback list --status new --limit 20
  imgclass feedback accept 12 13 17 && imgclass feedback reject 14
  imgclass feedback export --out work/feedback-data --bundle work/runs/default/bundle
  imgclass feedback list --db postgresql+psycopg://imgclass:pw@db/imgclass --json
  imgclass feedback migrate --db work/feedback.sqlite3

The database is --db, else IMGCLASS_FEEDBACK_URL, else IMGCLASS_FEEDBACK_DB, else
work/feedback.sqlite3 (where `imgclass serve` keeps it by default).
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "feedback",
        help="review people's feedback and export it as a prepared dataset",
        description="Review the confirmations and corrections people sent, and export the "
        "accepted ones as a prepared dataset for retraining.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        metavar="PATH_OR_URL",
        help="an SQLite file or a SQLAlchemy URL (default: see `imgclass feedback --help`)",
    )
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    sub = parser.add_subparsers(dest="feedback_command", metavar="SUBCOMMAND")
    _add_export(sub, common)
    _add_list(sub, common)
    for status, verb in (("accepted", "accept"), ("rejected", "reject")):
        p = sub.add_parser(
            verb,
            parents=[common],
            help=f"mark submissions {status}",
            description=f"Mark submissions {status} by id (see `imgclass feedback list`).",
        )
        p.add_argument("ids", nargs="+", type=int, metavar="ID")
        p.set_defaults(func=run_review, status=status)
    s = sub.add_parser(
        "stats",
        parents=[common],
        help="submissions per status and label",
        description="How many submissions there are, per status and per label.",
    )
    s.set_defaults(func=run_stats)
    m = sub.add_parser(
        "migrate",
        parents=[common],
        help="create the database or bring its schema up to date",
        description="Run the schema migrations (Alembic): create a new database, or upgrade "
        "an old one to the newest schema (the server and the other commands also do this "
        "when they open a database).",
    )
    m.set_defaults(func=run_migrate)
    parser.set_defaults(func=lambda _args: _no_subcommand(parser))


def _add_export(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        parents=[common],
        help="write reviewed feedback as a prepared dataset",
        description="Write the submissions with --status (default accepted) as a prepared "
        "dataset (the store format of `imgclass data prepare`) with the bundle's "
        "preprocessing recipe: classes are the bundle's labels then any new ones, splits "
        "train and test follow each submission's content hash.",
        epilog="example:\n  imgclass feedback export --out work/feedback-data "
        "--bundle work/runs/default/bundle",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument(
        "--bundle",
        type=Path,
        help=f"the model whose recipe and labels to use (default {DEFAULT_BUNDLE})",
    )
    p.add_argument("--status", default="accepted", choices=["new", "accepted", "rejected"])
    p.add_argument("--test-fraction", type=float, default=0.2, help="default 0.2")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_source_options(p)
    p.set_defaults(func=run_export)


def add_source_options(group: Any) -> None:
    """--source and --game-weight: which submissions count, and how much a game round does."""
    group.add_argument(
        "--source",
        metavar="LIST",
        help="only submissions from these sources, comma-separated: page, api, game (default: all)",
    )
    group.add_argument(
        "--game-weight",
        type=float,
        default=1.0,
        metavar="W",
        help="copies of each game round in the training split: 0 leaves the game's drawings "
        "out, 2 counts each twice, 0.5 keeps half (default 1)",
    )


def source_weights(args: argparse.Namespace) -> Any:
    """SourceWeights from --source and --game-weight (ConfigError for bad values)."""
    from imgclass.feedback.dataset_export import SourceWeights

    sources = None
    if args.source:
        sources = tuple(s.strip() for s in args.source.split(",") if s.strip())
    weights = SourceWeights(sources=sources, game_weight=args.game_weight)
    weights.check()
    return weights


def _add_list(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "list",
        parents=[common],
        help="list submissions, newest first",
        description="List submissions, newest first, with their predicted and given labels.",
    )
    p.add_argument("--status", choices=["new", "accepted", "rejected"])
    p.add_argument("--label", help="only this given label")
    p.add_argument("--model", help="only submissions about this model")
    p.add_argument("--source", choices=["page", "api", "game"], help="only from this source")
    p.add_argument("--limit", type=int, default=50, help="default 50")
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(func=run_list)


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def database(value: str | None) -> str:
    """--db, else the server's settings (IMGCLASS_FEEDBACK_URL / _DB), else the default."""
    if value:
        return value
    return (
        os.environ.get("IMGCLASS_FEEDBACK_URL")
        or os.environ.get("IMGCLASS_FEEDBACK_DB")
        or "work/feedback.sqlite3"
    )


def open_store(args: argparse.Namespace, create: bool = False) -> Any:
    """The store named by --db; FeedbackError for an SQLite file that does not exist
    (unless ``create``), rather than silently making an empty one."""
    from imgclass.feedback.store import FeedbackStore

    where = database(args.db)
    if not create and "://" not in where and not Path(where).is_file():
        raise FeedbackError(
            f"no feedback database at {where} (pass --db, or run `imgclass serve` and send some)"
        )
    return FeedbackStore.from_path_or_url(where)


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if args.json else text)


def run_export(args: argparse.Namespace) -> int:
    from imgclass.data.store import PreparedDataset
    from imgclass.feedback.dataset_export import export_feedback

    bundle = args.bundle or DEFAULT_BUNDLE
    if args.bundle is None and not bundle.is_dir():
        raise FeedbackError(f"no bundle at {DEFAULT_BUNDLE}: pass --bundle RUNDIR/bundle")
    with open_store(args) as store:
        out = export_feedback(
            store,
            Path(args.out),
            bundle=bundle,
            status=args.status,
            test_fraction=args.test_fraction,
            seed=args.seed,
            overwrite=args.overwrite,
            weights=source_weights(args),
        )
    ds = PreparedDataset.open(out)
    m = ds.manifest
    data = {
        "out": str(out),
        "classes": ds.classes,
        "new_classes": m["feedback"]["new_classes"],
        "counts": {s: m["counts"][s] for s in ("train", "test")},
        "has_strokes": ds.has_strokes,
        "skipped": m["skipped"],
    }
    ds.close()
    text = (
        f"{out}: {m['counts']['train']} train, {plural(m['counts']['test'], 'test example')}, "
        f"{plural(len(ds.classes), 'class', 'classes')}"
        + (f" (new: {', '.join(data['new_classes'])})" if data["new_classes"] else "")
        + (f"; {len(m['skipped'])} skipped" if m["skipped"] else "")
    )
    _emit(args, data, text)
    return 0


def run_list(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        items = store.list(
            status=args.status,
            label=args.label,
            model=args.model,
            source=args.source,
            limit=args.limit,
            offset=args.offset,
        )
        total = store.count(args.status, label=args.label, model=args.model, source=args.source)
    if args.json:
        print(json.dumps({"items": items, "total": total}))
        return 0
    if not items:
        print("no submissions match")
        return 0
    print(
        f"{'id':>6}  {'created':19}  {'status':8}  {'source':6}  {'kind':7}  {'predicted':12}  label"
    )
    for r in items:
        guess = (r["predicted"] or [{}])[0].get("label", "-")
        print(
            f"{r['id']:>6}  {(r['created'] or '')[:19]:19}  {r['status']:8}  {r['source']:6}  "
            f"{r['input_kind']:7}  {str(guess)[:12]:12}  {r['label']}"
        )
    print(f"{len(items)} of {total} shown")
    return 0


def run_review(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        changed = store.set_status(args.ids, args.status)
    missing = len(set(args.ids)) - changed
    _emit(
        args,
        {"changed": changed, "status": args.status, "missing": missing},
        f"{changed} marked {args.status}"
        + (f"; {plural(missing, 'id')} not found" if missing else ""),
    )
    return 0 if not missing else 1


def run_stats(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        counts = store.counts()
        where = store.location
    per_status = counts["status"]
    lines = [f"{where}: {plural(sum(per_status.values()), 'submission')}"]
    lines.append("  " + ", ".join(f"{k} {v}" for k, v in per_status.items()))
    for label, row in counts["label"].items():
        lines.append(f"  {label}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    _emit(args, {"database": where, **counts}, "\n".join(lines))
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    from imgclass.feedback import db

    with open_store(args, create=True) as store:  # opening upgrades to the newest schema
        revision = store.revision()
        where = store.location
    _emit(
        args,
        {"database": where, "revision": revision, "head": db.head_revision()},
        f"{where}: schema at revision {revision} (the newest)",
    )
    return 0
