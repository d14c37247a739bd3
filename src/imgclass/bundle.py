"""The deployable bundle: everything needed to use a model, and nothing to unpickle.

``RUNDIR/bundle/``: ``model.onnx``, ``labels.json``, ``preprocess.json`` (the dataset's
recipe and the model-input transform), ``metrics.json``, ``model.json`` (family,
arguments, versions, dataset hash, sha256 of model.onnx) and ``card.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgclass import __version__
from imgclass.errors import ModelError

FILES = ("model.onnx", "labels.json", "preprocess.json", "metrics.json", "model.json", "card.md")


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"imgclass": __version__, "python": platform.python_version()}
    for name in ("torch", "onnx", "onnxruntime", "scikit-learn", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def save_bundle(
    out: str | Path,
    onnx_bytes: bytes,
    labels: list[str],
    preprocess: dict[str, Any],
    metrics: dict[str, Any],
    model_json: dict[str, Any],
) -> Path:
    """Write a bundle atomically (temporary folder, then rename)."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "model.onnx").write_bytes(onnx_bytes)
    info = {
        **model_json,
        "model_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for name, value in (
        ("labels.json", labels),
        ("preprocess.json", preprocess),
        ("metrics.json", metrics),
        ("model.json", info),
    ):
        (tmp / name).write_text(json.dumps(value, indent=2) + "\n")
    (tmp / "card.md").write_text(model_card(labels, preprocess, metrics, info))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def model_card(
    labels: list[str], preprocess: dict[str, Any], metrics: dict[str, Any], info: dict[str, Any]
) -> str:
    test = metrics.get("test", {})
    lines = [
        f"# Model card: {info.get('name', '?')}",
        "",
        f"- Family: {info.get('family')} ({info.get('framework')}), input: {info.get('input_kind')} "
        f"{preprocess.get('input', {}).get('size')}",
        f"- Classes ({len(labels)}): {', '.join(labels[:20])}{' …' if len(labels) > 20 else ''}",
        f"- Trained on: {info.get('dataset', {}).get('path')} (manifest sha256 "
        f"{str(info.get('dataset', {}).get('manifest_sha256'))[:12]}…)",
        f"- Preprocessing recipe: {preprocess.get('recipe', {}).get('name')}",
        f"- Test accuracy: {test.get('accuracy', float('nan')):.4f}, top-3: "
        f"{test.get('top3_accuracy', float('nan')):.4f} on {test.get('n', 0)} examples",
        f"- Created {info.get('created')} with imgclass {info.get('versions', {}).get('imgclass')}",
        "",
        "Limitations: accuracy is measured on held-out data from the same source; drawings or",
        "photos from elsewhere may look different. Check the evaluation report before relying on it.",
        "",
    ]
    return "\n".join(lines)


@dataclass
class Bundle:
    """A loaded bundle; inference through ONNX Runtime only."""

    path: Path
    labels: list[str]
    preprocess: dict[str, Any]
    metrics: dict[str, Any]
    model_json: dict[str, Any]
    session: Any

    @property
    def recipe(self) -> dict[str, Any]:
        return self.preprocess["recipe"]

    def to_input(self, images: np.ndarray) -> np.ndarray:
        """uint8 images in recipe form (n, H, W[, C]) -> the model's float32 input."""
        spec = self.preprocess["input"]
        x = images.astype(np.float32) * np.float32(spec.get("scale", 1 / 255))
        if spec.get("layout") == "flat":
            return x.reshape(len(x), -1)
        if x.ndim == 3:
            return x[:, None]
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def predict_proba(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Class probabilities float32 (n, K) for images already in recipe form."""
        out = [
            self.session.run(
                ["probabilities"], {"input": self.to_input(images[i : i + batch_size])}
            )[0]
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    @property
    def input_kind(self) -> str:
        return str(self.preprocess["input"].get("kind", "image"))

    def predict_sequences(
        self, sequences: np.ndarray, lengths: np.ndarray, batch_size: int = 512
    ) -> np.ndarray:
        """Probabilities for padded sequences (n, T, F) float32 and lengths (n,) int64."""
        out = [
            self.session.run(
                ["probabilities"],
                {
                    "input": sequences[i : i + batch_size].astype(np.float32),
                    "lengths": lengths[i : i + batch_size].astype(np.int64),
                },
            )[0]
            for i in range(0, len(lengths), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def predict_drawings(self, drawings: list[Any], raw: bool = True) -> np.ndarray:
        """Probabilities for drawings (lists of (n, 2|3) strokes): encoded as sequences for
        sequence models, rendered like the training bitmaps for image models."""
        if self.input_kind == "sequence":
            from imgclass.data.sequences import encode_drawings

            spec = self.preprocess["input"]
            seqs, lengths = encode_drawings(drawings, spec["format"], spec["max_len"], raw=raw)
            return self.predict_sequences(seqs, lengths)
        from imgclass.data.preprocess import apply_recipe
        from imgclass.data.render import render_strokes, simplify_raw

        size = self.preprocess["input"]["size"][0]
        images = np.stack(
            [render_strokes(simplify_raw(d) if raw else d, size=size) for d in drawings]
        )
        return self.predict_proba(apply_recipe(self.recipe, images))

    def predict_raw(self, images: list[Any]) -> np.ndarray:
        """Probabilities for decoded user images of any size and polarity."""
        from imgclass.data.preprocess import apply_recipe, prepare_raw_image

        prepared = [prepare_raw_image(img, self.recipe) for img in images]
        return self.predict_proba(apply_recipe(self.recipe, prepared))


def load_bundle(path: str | Path, threads: int = 1) -> Bundle:
    """Load and verify a bundle (model.onnx must match the sha256 in model.json)."""
    import onnxruntime as ort

    path = Path(path)
    missing = [f for f in FILES[:5] if not (path / f).exists()]
    if missing:
        raise ModelError(f"{path} is not a complete bundle: missing {', '.join(missing)}")
    try:
        labels, preprocess, metrics, info = (json.loads((path / f).read_text()) for f in FILES[1:5])
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: a bundle file is not valid JSON ({exc})") from None
    model_bytes = (path / "model.onnx").read_bytes()
    if hashlib.sha256(model_bytes).hexdigest() != info.get("model_sha256"):
        raise ModelError(
            f"{path / 'model.onnx'} does not match the sha256 in model.json (changed or corrupt)"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return Bundle(path, labels, preprocess, metrics, info, session)
