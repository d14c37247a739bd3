"""Int8 bundles: static quantization of a bundle's ONNX model, checked before it is kept.

``quantize_bundle`` calibrates ONNX Runtime's static quantization (QDQ format, int8
weights per output channel in 7 bits, uint8 activations, the output layer kept in float)
on a sample of the training split, then
measures the float and the int8 model side by side on the held-out split (test, else
valid). The int8 bundle is written only when its accuracy is no more than ``tolerance``
points below the float model's and it runs at least ``min_speedup`` times as fast (very
small networks can be slower in int8: the quantize and dequantize steps cost more than
the arithmetic saved); its metrics.json holds the int8 model's own metrics
(measured, not copied) and a ``quantization`` section with both models' numbers, how
often they agree, and their single-image latency. The float weights (weights.npz) are
carried over, so an int8 bundle can still be fine-tuned (retraining starts from them).

Only image models with the nchw layout (the CNNs and transfer models) are quantized:
the scikit-learn and stroke models are small already or have no convolutions to gain on.

Two choices make the int8 model safe wherever it is served, not only where it was made:

- weights use 7 bits (``reduce_range``): on x86 CPUs with AVX2 but no VNNI (AMD Zen 1-3,
  Intel before Cascade Lake), ONNX Runtime multiplies uint8 activations by int8 weights
  with VPMADDUBSW, which adds two products in 16 bits and saturates at 32767. With 8-bit
  weights one pair reaches 255 * 127 * 2 = 64770; the first convolution sees raw pixels
  (ink = 255) and per-channel weights that reach 127, so on such a CPU the int8 digits
  model fell from 84% to 67% while the same graph, computed in float, kept 81%. With 7
  bits a pair stays under 255 * 64 * 2 = 32640. CPUs with VNNI add in 32 bits and never
  saturated, which is why the fault followed the machine and not any package version.
- the output layer (the last Gemm/MatMul and everything after it, the softmax included)
  stays in float: it costs nothing measurable, and quantized probabilities would come in
  steps of 1/255.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgclass.bundle import (
    Bundle,
    describe_bundle,
    description_to_save,
    load_bundle,
    onnx_session,
    read_weights,
    save_bundle,
)
from imgclass.errors import ConfigError, ImgclassError, ModelError

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION = 512
DEFAULT_TOLERANCE = 0.5  # accuracy points the int8 model may lose
DEFAULT_MIN_SPEEDUP = 1.0  # and it must not be slower than the float one
LATENCY_RUNS = 200


class QuantizationRefused(ImgclassError):
    """The int8 model lost more accuracy than allowed; nothing was written."""


@dataclass
class QuantizeResult:
    out: Path | None
    split: str
    float_metrics: dict[str, Any]
    int8_metrics: dict[str, Any]
    agreement: float
    float_ms: float
    int8_ms: float
    calibration: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        """The numbers, as JSON-ready data (also what metrics.json records)."""

        def headline(m: dict[str, Any]) -> dict[str, float]:
            return {"accuracy": m["accuracy"], "top3_accuracy": m.get("top3_accuracy", 0.0)}

        return {
            "format": "qdq-int8",
            "split": self.split,
            "float": headline(self.float_metrics),
            "int8": headline(self.int8_metrics),
            "agreement": self.agreement,
            "latency_ms": {"float": self.float_ms, "int8": self.int8_ms},
            "speedup": self.float_ms / self.int8_ms if self.int8_ms > 0 else None,
            "calibration_examples": self.calibration,
        }


def default_out(bundle_dir: Path) -> Path:
    """Where the int8 bundle goes by default: ``RUNDIR/bundle-int8`` beside ``bundle``."""
    return bundle_dir.with_name(f"{bundle_dir.name}-int8")


def check_quantizable(bundle: Bundle) -> None:
    spec = bundle.preprocess["input"]
    if bundle.input_kind != "image" or spec.get("layout", "nchw") != "nchw":
        raise ConfigError(
            f"{bundle.path} is a {bundle.model_json.get('family', '?')} model; only image "
            "models with convolutions (the cnn-* and transfer-* families) are quantized"
        )
    if bundle.model_json.get("quantization"):
        raise ConfigError(f"{bundle.path} is quantized already")


def quantize_bundle(
    bundle_dir: str | Path,
    data_dir: str | Path,
    out: str | Path | None = None,
    calibration: int = DEFAULT_CALIBRATION,
    tolerance: float = DEFAULT_TOLERANCE,
    min_speedup: float = DEFAULT_MIN_SPEEDUP,
    seed: int = 0,
    force: bool = False,
    write: bool = True,
) -> QuantizeResult:
    """Quantize ``bundle_dir`` with calibration data from ``data_dir`` (a prepared
    dataset with the model's classes) into ``out``.

    QuantizationRefused (nothing written) when the int8 accuracy is more than
    ``tolerance`` points below the float one, or its single-image latency is not
    ``min_speedup`` times better, unless ``force``; ``write=False`` only measures.
    """
    from imgclass.data.store import PreparedDataset
    from imgclass.evaluate.run import check_compatible, evaluate

    started = time.perf_counter()
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir, threads=0)
    check_quantizable(bundle)
    if calibration < 1:
        raise ConfigError(f"--calibration must be at least 1 example, got {calibration}")
    if tolerance < 0:
        raise ConfigError(f"--tolerance must be 0 or more points, got {tolerance}")
    target = Path(out) if out is not None else default_out(bundle_dir)
    if target.resolve() == bundle_dir.resolve():
        raise ConfigError("--out must not be the bundle being quantized")
    float_bytes = (bundle_dir / "model.onnx").read_bytes()
    with PreparedDataset.open(data_dir) as ds:
        split = "test" if "test" in ds.splits else "valid"
        for needed in ("train", split):
            check_compatible(bundle, ds, needed)
        sample = _calibration_sample(ds, calibration, seed)
        q_bytes = _quantize(bundle, float_bytes, sample)
        int8 = _bundle_from_bytes(bundle, q_bytes)
        float_metrics, _, float_proba = evaluate(bundle, ds, split)
        int8_metrics, _, int8_proba = evaluate(int8, ds, split)
        x = bundle.to_input(sample[:1])
        result = QuantizeResult(
            out=None,
            split=split,
            float_metrics=float_metrics,
            int8_metrics=int8_metrics,
            agreement=float(np.mean(float_proba.argmax(1) == int8_proba.argmax(1))),
            float_ms=_latency_ms(float_bytes, x),
            int8_ms=_latency_ms(q_bytes, x),
            calibration=len(sample),
            seconds=0.0,
        )
        _refuse_unless_good(result, tolerance, min_speedup, force)
        if write:
            # the int8 model's own metrics on every held-out split, not the float ones
            other = {
                s: evaluate(int8, ds, s)[0]
                for s in ("valid", "test")
                if s in ds.splits and s != split
            }
            metrics = dict(bundle.metrics)
            for name, m in ((split, int8_metrics), *other.items()):
                metrics[name] = {k: v for k, v in m.items() if k != "confusion"}
            metrics["quantization"] = result.summary()
            weights = read_weights(bundle_dir) if describe_bundle(bundle_dir).has_weights else None
            keep = description_to_save(bundle.model_json)
            keep["quantization"] = {
                "format": "qdq-int8",
                "from_model_sha256": bundle.model_json.get("model_sha256"),
                "calibration_examples": len(sample),
                "seed": seed,
            }
            save_bundle(
                target, q_bytes, bundle.labels, bundle.preprocess, metrics, keep, weights=weights
            )
            result.out = target
    result.seconds = time.perf_counter() - started
    return result


def _refuse_unless_good(
    result: QuantizeResult, tolerance: float, min_speedup: float, force: bool
) -> None:
    """QuantizationRefused when int8 loses more than ``tolerance`` accuracy points or is
    not ``min_speedup`` times faster (unless ``force``)."""
    if force:
        return
    f, q, split = result.float_metrics, result.int8_metrics, result.split
    lost = 100 * (f["accuracy"] - q["accuracy"])
    if lost > tolerance:
        raise QuantizationRefused(
            f"the int8 model loses {lost:.2f} accuracy points on the {split} split "
            f"({100 * f['accuracy']:.2f}% -> {100 * q['accuracy']:.2f}%), "
            f"more than the tolerance of {tolerance:g}; nothing written (--force keeps it anyway)"
        )
    speedup = result.float_ms / result.int8_ms if result.int8_ms > 0 else float("inf")
    if speedup < min_speedup:
        raise QuantizationRefused(
            f"the int8 model is not fast enough: {result.int8_ms:.3f} ms per image against "
            f"{result.float_ms:.3f} ms for the float one ({speedup:.2f}x, less than "
            f"{min_speedup:g}x); nothing written (--force keeps it anyway)"
        )


def _calibration_sample(ds: Any, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` training images, uint8 in recipe form, chosen at random by ``seed``."""
    total = ds.size("train")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(total, size=min(n, total), replace=False))
    return np.asarray(ds.images("train")[idx])


def _quantize(bundle: Bundle, model_bytes: bytes, sample: np.ndarray) -> bytes:
    """The bundle's model (``model_bytes``) quantized (QDQ, per-channel 7-bit int8
    weights, uint8 activations, the output layer in float), calibrated on ``sample``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = iter(
                {"input": bundle.to_input(sample[i : i + 64])} for i in range(0, len(sample), 64)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="imgclass-quantize-") as tmp:
        source, prepared, quantized = (Path(tmp) / n for n in ("in.onnx", "pre.onnx", "q.onnx"))
        source.write_bytes(model_bytes)
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
            in_float = _name_output_layer(prepared)
            quantize_static(
                str(prepared),
                str(quantized),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=True,  # 7-bit weights: no int16 saturation on AVX2 (module doc)
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=in_float,
            )
        except Exception as exc:  # ONNX Runtime's tools raise many untyped errors
            raise ModelError(f"{bundle.path}: ONNX Runtime could not quantize it ({exc})") from None
        return quantized.read_bytes()


WEIGHTED_OPS = ("Gemm", "MatMul", "Conv")


def output_layer(graph: Any) -> list[Any]:
    """The nodes of an ONNX ``graph`` from its last layer with weights (a Gemm, MatMul or
    Conv with a constant input) to its outputs, softmax included: the ones kept in float.

    Walks back from the outputs and stops at the first weighted layer on each path, so a
    bias Add after a MatMul, a Flatten or a Softmax come along; nothing is left out when
    no weighted layer is found (the whole graph would stay float)."""
    producer = {name: node for node in graph.node for name in node.output}
    constants = {t.name for t in graph.initializer}
    found: dict[int, Any] = {}
    pending = [o.name for o in graph.output]
    weighted = False
    while pending:
        node = producer.get(pending.pop())
        if node is None or id(node) in found:
            continue
        found[id(node)] = node
        if node.op_type in WEIGHTED_OPS and any(i in constants for i in node.input[1:]):
            weighted = True
            continue
        pending.extend(i for i in node.input if i)
    return list(found.values()) if weighted else []


def _name_output_layer(path: Path) -> list[str]:
    """The names of the output layer's nodes in the ONNX model at ``path`` (nodes without
    a name get one, written back, since ONNX Runtime excludes nodes by name)."""
    import onnx

    model = onnx.load(str(path))
    nodes = output_layer(model.graph)
    if any(not node.name for node in nodes):
        taken = {node.name for node in model.graph.node}
        for i, node in enumerate(n for n in model.graph.node if not n.name):
            name = f"imgclass_unnamed_{i}"
            while name in taken:
                name += "_"
            node.name = name
        onnx.save(model, str(path))
    return [node.name for node in nodes]


def _bundle_from_bytes(bundle: Bundle, model_bytes: bytes) -> Bundle:
    """The same bundle with another model, in memory (to measure before writing)."""
    return Bundle(
        bundle.path, bundle.labels, bundle.preprocess, bundle.metrics, bundle.model_json,
        onnx_session(model_bytes, 0),
    )  # fmt: skip


def _latency_ms(model_bytes: bytes, x: np.ndarray) -> float:
    """Median milliseconds of one single-image run on one thread."""
    session = onnx_session(model_bytes, 1)
    for _ in range(20):
        session.run(["probabilities"], {"input": x})
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        session.run(["probabilities"], {"input": x})
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)
