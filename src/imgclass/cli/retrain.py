"""``imgclass retrain``: fine-tune the champion on accepted feedback, compare, maybe promote."""

from __future__ import annotations

import argparse
import json
from typing import Any

from imgclass.cli.feedback import add_source_options

EXAMPLES = """\
examples:
  imgclass retrain --registry digits
  imgclass retrain --registry digits --epochs 8 --replay-ratio 2 --freeze-features
  imgclass retrain --registry doodles --feedback-db postgresql+psycopg://u:pw@db/imgclass
  imgclass retrain --registry digits --data work/mnist --no-promote --json

what happens: NAME@champion is fetched from the model registry; the accepted feedback is
exported with its recipe (a fixed share, chosen by content hash, held out for judging);
the champion is fine-tuned on the rest plus a replay sample of its original training data
(labels it did not know extend its head); champion and challenger are compared on the
original test split and the held-out feedback. The challenger is registered with the alias
"challenger" and promoted to champion only if the original-test accuracy drops by at most
--tolerance points and the feedback accuracy improves by more than luck (--significance). The comparison report
(comparison.json, comparison.md, per_class_changes.png) is written to the run folder and
recorded as an MLflow run. Nothing is registered before the challenger is complete, and
the feedback store is only read: a retrain killed half-way changes nothing.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "retrain",
        help="fine-tune the champion on accepted feedback; promote it if it is better",
        description="Retrain a registered model from the feedback people gave, compare the "
        "challenger with the champion and promote it when it is better (champion/challenger).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--registry", required=True, metavar="NAME", help="registered model name")
    p.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow store holding the registry (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<cwd>/work/mlflow/mlflow.db)",
    )
    p.add_argument(
        "--feedback-db",
        metavar="PATH|URL",
        help="feedback database (default: $IMGCLASS_FEEDBACK_URL, $IMGCLASS_FEEDBACK_DB, "
        "else work/feedback.sqlite3)",
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        help="the champion's original prepared dataset (default: the path in its model.json)",
    )
    g = p.add_argument_group("fine-tuning")
    g.add_argument(
        "--replay-ratio",
        type=float,
        default=1.0,
        help="original training examples replayed per feedback example (default 1.0; 0: none)",
    )
    g.add_argument(
        "--min-replay",
        type=int,
        default=200,
        help="replay at least this many original examples (default 200)",
    )
    g.add_argument(
        "--freeze-features",
        action="store_true",
        help="train the head only (convolution layers frozen)",
    )
    g.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs (default 5)")
    g.add_argument(
        "--lr", type=float, help="learning rate (default: the champion's times --lr-factor)"
    )
    g.add_argument(
        "--lr-factor",
        type=float,
        default=0.1,
        help="the champion's learning rate is scaled by this (default 0.1)",
    )
    g.add_argument("--batch-size", type=int, help="batch size (default: the champion's)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d = p.add_argument_group("decision")
    d.add_argument(
        "--tolerance",
        type=float,
        default=0.5,
        help="original-test accuracy points the challenger may lose (default 0.5)",
    )
    d.add_argument(
        "--significance",
        type=float,
        default=0.05,
        metavar="ALPHA",
        help="the feedback gain must pass a one-sided exact McNemar test at this level, so "
        "that random or contradictory corrections are refused (default 0.05; 0: any gain)",
    )
    d.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of the feedback held out to judge on, by content hash (default 0.2)",
    )
    d.add_argument(
        "--no-promote",
        action="store_true",
        help="register the challenger but never promote it",
    )
    add_source_options(p.add_argument_group("feedback"))
    p.add_argument("--out", metavar="DIR", help="run folder (default work/retrain/<name>-<time>)")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    p.set_defaults(func=run_retrain_command)


def options_from(args: argparse.Namespace) -> Any:
    """RetrainOptions from the parsed arguments."""
    from imgclass.cli.feedback import database, source_weights
    from imgclass.feedback.cycle import RetrainOptions
    from imgclass.feedback.retrain import FineTuneConfig

    finetune = FineTuneConfig(
        replay_ratio=args.replay_ratio,
        min_replay=args.min_replay,
        freeze_features=args.freeze_features,
        epochs=args.epochs,
        lr=args.lr,
        lr_factor=args.lr_factor,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    return RetrainOptions(
        registry=args.registry,
        feedback_db=database(args.feedback_db),
        tracking_uri=args.tracking_uri,
        data=args.data,
        out=args.out,
        tolerance=args.tolerance,
        alpha=args.significance,
        test_fraction=args.test_fraction,
        promote=not args.no_promote,
        finetune=finetune,
        weights=source_weights(args),
    )


def run_retrain_command(args: argparse.Namespace) -> int:
    from imgclass.errors import ConfigError
    from imgclass.feedback.cycle import run_retrain

    if not 0 < args.test_fraction < 1:
        raise ConfigError(f"--test-fraction must be between 0 and 1, got {args.test_fraction}")
    if not 0 <= args.significance < 1:
        raise ConfigError(f"--significance must be in [0, 1), got {args.significance}")
    if args.tolerance < 0:
        raise ConfigError(f"--tolerance must not be negative, got {args.tolerance}")
    outcome = run_retrain(options_from(args))
    print(json.dumps(outcome.to_dict()) if args.json else summary(outcome))
    return 0


def summary(outcome: Any) -> str:
    """A few lines for people: before/after on both sets, the decision and why."""
    c = outcome.comparison
    rows = []
    for split, label in (
        ("original_test", "original test"),
        ("feedback_test", "held-out feedback"),
    ):
        a, b = c["champion"][split], c["challenger"][split]
        rows.append(
            f"  {label:<18} {100 * a['accuracy']:6.2f}% -> {100 * b['accuracy']:6.2f}% "
            f"({100 * (b['accuracy'] - a['accuracy']):+.2f} points, n={b['n']})"
        )
    verdict = (
        f"promoted: version {outcome.challenger_version} is the champion"
        if outcome.promoted
        else f"not promoted: version {outcome.challenger_version} stays a challenger"
    )
    tuned = outcome.fine_tune
    new = f", new labels: {', '.join(tuned['new_labels'])}" if tuned["new_labels"] else ""
    return "\n".join(
        [
            f"{outcome.name}: champion version {outcome.champion_version} vs challenger "
            f"(fine-tuned on {tuned['feedback_examples']} feedback + "
            f"{tuned['replayed_examples']} replayed examples{new})",
            *rows,
            verdict,
            *[f"  - {reason}" for reason in outcome.reasons],
            f"report: {outcome.report_dir}/comparison.md",
        ]
    )
