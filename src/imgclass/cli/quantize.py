"""``imgclass quantize BUNDLE``: an int8 bundle, kept only when it is as accurate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from imgclass.quantize import DEFAULT_CALIBRATION, DEFAULT_MIN_SPEEDUP, DEFAULT_TOLERANCE


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "quantize",
        help="make an int8 bundle (2-3x faster on CPU) if it loses no accuracy",
        description=(
            "Static int8 quantization of a CNN or transfer bundle with ONNX Runtime: "
            "calibrated on training images, then the float and int8 models are measured "
            "side by side on the test split (valid when there is none). The int8 bundle "
            "is written only when its accuracy is at most --tolerance points lower and it "
            "is at least --min-speedup times faster; its "
            "metrics are its own, and metrics.json's 'quantization' section holds both "
            "models' accuracy, how often they agree and their single-image latency. "
            "Serve it like any bundle."
        ),
    )
    p.add_argument("bundle", help="bundle folder (what train writes to RUNDIR/bundle)")
    p.add_argument(
        "--data",
        metavar="DIR",
        help="prepared dataset for calibration and measurement (default: the one the "
        "bundle was trained on, from its model.json)",
    )
    p.add_argument("--out", metavar="DIR", help="the int8 bundle (default: BUNDLE-int8)")
    p.add_argument(
        "--calibration",
        type=int,
        default=DEFAULT_CALIBRATION,
        metavar="N",
        help=f"training images to calibrate on ({DEFAULT_CALIBRATION})",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        metavar="POINTS",
        help=f"accuracy points the int8 model may lose ({DEFAULT_TOLERANCE:g})",
    )
    p.add_argument(
        "--min-speedup",
        type=float,
        default=DEFAULT_MIN_SPEEDUP,
        metavar="X",
        help="how many times faster (one image, one thread) int8 must be "
        f"({DEFAULT_MIN_SPEEDUP:g}; tiny networks can be slower in int8)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration sample (0)")
    p.add_argument("--force", action="store_true", help="write it even if it loses more")
    p.add_argument("--dry-run", action="store_true", help="measure only; write nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imgclass.bundle import describe_bundle
    from imgclass.errors import ConfigError
    from imgclass.quantize import quantize_bundle

    data = args.data
    if data is None:
        data = describe_bundle(args.bundle).dataset.get("path")
        if not data or not (Path(data) / "manifest.json").is_file():
            raise ConfigError(
                f"the dataset {args.bundle} was trained on ({data or 'not recorded'}) is not "
                "there; give one with --data"
            )
    result = quantize_bundle(
        args.bundle,
        data,
        out=args.out,
        calibration=args.calibration,
        tolerance=args.tolerance,
        min_speedup=args.min_speedup,
        seed=args.seed,
        force=args.force,
        write=not args.dry_run,
    )
    summary = result.summary()
    if args.json:
        print(json.dumps({**summary, "out": str(result.out) if result.out else None,
                          "seconds": result.seconds}))  # fmt: skip
        return 0
    f, q = summary["float"], summary["int8"]
    print(f"{'':<8} {'accuracy':>9} {'top-3':>7} {'ms/image':>9}")
    for name, m, ms in (("float", f, result.float_ms), ("int8", q, result.int8_ms)):
        print(f"{name:<8} {m['accuracy']:>9.4f} {m['top3_accuracy']:>7.4f} {ms:>9.3f}")
    print(
        f"{summary['split']} split; the two agree on {100 * result.agreement:.1f}% of "
        f"examples; int8 is {summary['speedup']:.1f}x faster (one image, one thread)"
    )
    print(f"wrote {result.out}" if result.out else "dry run: nothing written")
    return 0
