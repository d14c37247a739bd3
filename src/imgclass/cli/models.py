"""``imgclass models``: the model registry (register, list, show, promote, rollback,
fetch), with champion/challenger aliases in MLflow's Model Registry."""

from __future__ import annotations

import argparse
import json
from typing import Any

from imgclass.tables import format_table

EXAMPLES = """\
examples:
  imgclass models register work/runs/cnn/bundle --name doodles --promote
  imgclass models register work/runs/cnn2 --name doodles --alias challenger
  imgclass models list
  imgclass models list doodles --json
  imgclass models show doodles              # the champion
  imgclass models show doodles 3            # or any version, or alias (challenger)
  imgclass models promote doodles 3         # champion := version 3
  imgclass models rollback doodles          # champion := the one before
  imgclass models fetch doodles challenger  # a verified local copy of its bundle
  imgclass serve --registry doodles         # serves doodles@champion, follows promotions

The registry lives in the MLflow store: --tracking-uri, else $MLFLOW_TRACKING_URI,
else work/mlflow/mlflow.db (browse it with `mlflow ui --backend-store-uri ...`).
"""


class ExamplesFormatter(argparse.HelpFormatter):
    """Wraps descriptions to the terminal; keeps the example lines of epilogs as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "models",
        help="the model registry: register bundles, promote and roll back champions",
        description="Named, numbered model versions in MLflow's Model Registry. The alias "
        "'champion' marks the version that `imgclass serve --registry NAME` serves; "
        "'challenger' marks a candidate. Promotion remembers the champion it replaces, "
        "so `rollback` restores it.",
        epilog=EXAMPLES,
        formatter_class=ExamplesFormatter,
    )
    commands = p.add_subparsers(dest="models_command", metavar="COMMAND", required=True)
    add_register(commands)
    add_list(commands)
    add_show(commands)
    add_promote(commands)
    add_rollback(commands)
    add_fetch(commands)


def common(p: argparse.ArgumentParser, json_help: str = "print the result as JSON") -> None:
    p.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else work/mlflow/mlflow.db)",
    )
    p.add_argument("--json", action="store_true", help=json_help)


def add_register(commands: Any) -> None:
    p = commands.add_parser(
        "register",
        help="register a bundle as a new version",
        description="Verify a bundle and register it as the next version of NAME (created "
        "if new). A bundle trained with tracking on is registered from its training run; "
        "any other is stored in a run of the experiment imgclass-registry.",
        epilog="examples:\n  imgclass models register work/runs/cnn/bundle --name doodles "
        "--promote\n  imgclass models register work/runs/cnn2 --name doodles --alias "
        "challenger --tag note=more-data",
        formatter_class=ExamplesFormatter,
    )
    p.add_argument("bundle", metavar="BUNDLE", help="bundle folder (or the run folder holding it)")
    p.add_argument("--name", required=True, help="registered model name, e.g. doodles")
    p.add_argument("--description", help="a line about this version")
    p.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="extra version tag"
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument("--promote", action="store_true", help="make it the champion at once")
    how.add_argument("--alias", help="give it this alias (e.g. challenger)")
    common(p)
    p.set_defaults(func=run_register)


def add_list(commands: Any) -> None:
    p = commands.add_parser(
        "list",
        help="registered versions in a table",
        description="Every version of every registered model (or of NAME): aliases, test "
        "accuracy, when it was registered and the run it came from. Newest first.",
        epilog="examples:\n  imgclass models list\n  imgclass models list doodles --json",
        formatter_class=ExamplesFormatter,
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="only this model")
    common(p, "print the versions as one JSON object")
    p.set_defaults(func=run_list)


def add_show(commands: Any) -> None:
    p = commands.add_parser(
        "show",
        help="one version in detail",
        description="Source, run, tags and aliases of one version.",
        epilog="examples:\n  imgclass models show doodles\n  imgclass models show doodles 3\n"
        "  imgclass models show doodles challenger --json",
        formatter_class=ExamplesFormatter,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("ref", nargs="?", default="champion", metavar="VERSION_OR_ALIAS")
    common(p)
    p.set_defaults(func=run_show)


def add_promote(commands: Any) -> None:
    p = commands.add_parser(
        "promote",
        help="make a version the champion",
        description="champion := VERSION. The champion it replaces is remembered (alias "
        "previous-champion) for `imgclass models rollback`; a challenger alias on VERSION "
        "is dropped. Servers started with --registry NAME switch to it on their next poll "
        "(or at once: POST /v1/admin/reload).",
        epilog="example:\n  imgclass models promote doodles 3",
        formatter_class=ExamplesFormatter,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("version", type=int, metavar="VERSION")
    common(p)
    p.set_defaults(func=run_promote)


def add_rollback(commands: Any) -> None:
    p = commands.add_parser(
        "rollback",
        help="restore the previous champion",
        description="champion := the champion before the last promotion. Repeat to go "
        "further back; an error when there is nothing to go back to.",
        epilog="example:\n  imgclass models rollback doodles",
        formatter_class=ExamplesFormatter,
    )
    p.add_argument("name", metavar="NAME")
    common(p)
    p.set_defaults(func=run_rollback)


def add_fetch(commands: Any) -> None:
    p = commands.add_parser(
        "fetch",
        help="a verified local copy of a version's bundle",
        description="Download a version's bundle into the cache (CACHE/NAME/VERSION), check "
        "it against the sha256 recorded at registration, and print its folder. A copy "
        "already there is reused when it still verifies.",
        epilog="examples:\n  imgclass models fetch doodles\n"
        "  imgclass predict $(imgclass -q models fetch doodles challenger) drawing.png",
        formatter_class=ExamplesFormatter,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("ref", nargs="?", default="champion", metavar="VERSION_OR_ALIAS")
    p.add_argument("--cache-dir", metavar="DIR", help="default work/registry-cache")
    common(p)
    p.set_defaults(func=run_fetch)


# --- running ---------------------------------------------------------------------------


def registry(args: argparse.Namespace) -> Any:
    from imgclass.experiments.model_registry import ModelRegistry

    return ModelRegistry(args.tracking_uri)


def parse_tags(items: list[str]) -> dict[str, str]:
    from imgclass.errors import ConfigError

    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--tag {item!r}: expected KEY=VALUE")
        tags[key.strip()] = value
    return tags


def run_register(args: argparse.Namespace) -> int:
    from imgclass.experiments.model_registry import CHAMPION

    info = registry(args).register(
        args.bundle,
        args.name,
        description=args.description,
        tags=parse_tags(args.tag),
        alias=CHAMPION if args.promote else args.alias,
    )
    if args.json:
        print(json.dumps(info.to_dict()))
        return 0
    print(f"registered {info.name} version {info.version}{aliases_note(info)}")
    if "champion" not in info.aliases:
        print(f"make it the champion with: imgclass models promote {info.name} {info.version}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    reg = registry(args)
    names = [args.name] if args.name else reg.names()
    rows = [v for name in names for v in reg.versions(name)]
    if args.json:
        print(json.dumps({"tracking_uri": reg.uri, "versions": [v.to_dict() for v in rows]}))
    elif not rows:
        print(f"no registered models in {reg.uri}")
        print("register one with: imgclass models register BUNDLE --name NAME --promote")
    else:
        print(versions_table(rows))
    return 0


def run_show(args: argparse.Namespace) -> int:
    info = registry(args).get(args.name, args.ref)
    if args.json:
        print(json.dumps(info.to_dict()))
        return 0
    print(f"{info.name} version {info.version}{aliases_note(info)}")
    for key in ("created", "source", "run_id", "description"):
        value = getattr(info, key)
        if value:
            print(f"  {key}: {value}")
    for key, value in sorted(info.tags.items()):
        print(f"  {key}: {value}")
    return 0


def run_promote(args: argparse.Namespace) -> int:
    info = registry(args).promote(args.name, args.version)
    return report_champion(args, info, "champion is now")


def run_rollback(args: argparse.Namespace) -> int:
    info = registry(args).rollback(args.name)
    return report_champion(args, info, "rolled back: champion is now")


def report_champion(args: argparse.Namespace, info: Any, what: str) -> int:
    if args.json:
        print(json.dumps(info.to_dict()))
    else:
        print(f"{info.name}: {what} version {info.version}{aliases_note(info, but='champion')}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from pathlib import Path

    reg = registry(args)
    info = reg.get(args.name, args.ref)
    cache = Path(args.cache_dir) if args.cache_dir else None
    path = reg.fetch_bundle(args.name, info.version, cache_dir=cache)
    if args.json:
        print(json.dumps({**info.to_dict(), "path": str(path)}))
    else:
        print(path)
    return 0


def aliases_note(info: Any, but: str | None = None) -> str:
    """`` (champion, stable)``: the version's aliases, less ``but`` (the one the
    sentence already names)."""
    shown = [a for a in info.aliases if a != but]
    return f" ({', '.join(shown)})" if shown else ""


def versions_table(rows: list[Any]) -> str:
    """name, version, aliases, test accuracy, created, source run: aligned columns."""
    header = ("NAME", "VERSION", "ALIASES", "TEST_ACC", "CREATED", "RUN")
    body = [
        (
            v.name,
            str(v.version),
            ",".join(v.aliases) or "-",
            f"{v.test_accuracy:.4f}" if v.test_accuracy is not None else "-",
            v.created.replace("T", " ").removesuffix("Z"),
            (v.run_id or "-")[:12],
        )
        for v in rows
    ]
    return format_table(header, body)
