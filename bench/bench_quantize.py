"""Int8 against float: accuracy and single-image latency of the same trained model.

Trains ``--model`` (cnn-resnet by default, the default for bitmaps) on real data through
``imgclass train``, then measures the float bundle and its int8 quantization
(``imgclass.quantize``: ONNX Runtime static QDQ, calibrated on training images) side by
side on the held-out split: top-1, top-3, how often they agree, and the median latency
of one image on one thread. Or give ``--bundle`` and ``--data`` to measure a bundle you
have. Prints a table and one JSON line.

  doodles20 / doodles345: Quick, Draw! drawings as in bench_accuracy.py (60 per class to
                          train, 20 to test);
  mnist:                  the official 60k/10k split.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_accuracy import PICTIONARY, prepare_doodles, prepare_mnist, train  # noqa: E402
from imgclass.quantize import quantize_bundle  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--suite", choices=["doodles20", "doodles345", "mnist"], default="doodles20"
    )
    parser.add_argument("--model", default="cnn-resnet")
    parser.add_argument("--set", action="append", default=[], help="training key=value")
    parser.add_argument("--bundle", help="measure this bundle instead of training one")
    parser.add_argument("--data", help="with --bundle: its prepared dataset")
    parser.add_argument("--calibration", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.bundle:
            if not args.data:
                parser.error("--bundle needs --data")
            bundle, data, trained = Path(args.bundle), Path(args.data), None
        else:
            root = Path(tmp)
            if args.suite == "mnist":
                data = prepare_mnist(root)
            else:
                data = prepare_doodles(root, PICTIONARY if args.suite == "doodles20" else None)
            trained = train(data, args.model, root / "run", args.set)
            bundle = root / "run" / "bundle"
        result = quantize_bundle(
            bundle, data, calibration=args.calibration, tolerance=100.0, write=False
        )
    s = result.summary()
    where = args.bundle or f"{args.model} on {args.suite}"
    print(f"{where}: {s['split']} split, calibrated on {s['calibration_examples']} training images")
    print(f"{'model':<8} {'top-1':>7} {'top-3':>7} {'ms/image':>9}")
    for name in ("float", "int8"):
        m = s[name]
        ms = s["latency_ms"][name]
        print(
            f"{name:<8} {100 * m['accuracy']:>6.2f}% {100 * m['top3_accuracy']:>6.2f}% {ms:>9.3f}"
        )
    print(
        f"agreement {100 * s['agreement']:.1f}%, int8 {s['speedup']:.2f}x faster (1 image, 1 thread)"
    )
    record = {"bench": "quantize", "suite": None if args.bundle else args.suite, **s}
    if trained is not None:
        record["train_seconds"] = trained.get("wall_seconds")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
