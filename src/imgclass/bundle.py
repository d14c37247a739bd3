"""The deployable bundle: everything needed to use a model, and nothing to unpickle.

``RUNDIR/bundle/`` holds:

- ``model.onnx``: input ``input`` (+ ``lengths`` for sequences), output ``probabilities``;
- ``labels.json``: the class names, index = output column;
- ``preprocess.json``: ``{"recipe": <the dataset's recipe>, "input": <model-input spec>}``,
  the spec being ``{"kind": "image", "layout": "nchw" | "flat", "channels": 1 | 3,
  "size": [H, W], "scale": 1/255}`` or ``{"kind": "sequence", "format": "stroke5" |
  "stroke3", "max_len": N}``;
- ``metrics.json``: test/valid metrics, the per-epoch history, timings;
- ``model.json``: name, family, framework, input kind, the model's arguments, number
  of classes, library versions, the dataset (path, manifest sha256, classes), the
  creation time and the sha256 of model.onnx;
- ``card.md``: a short human-readable model card;
- ``weights.npz`` (torch models, optional): the trained state_dict as plain arrays, its
  sha256 in model.json (``weights_sha256``), so a model can be fine-tuned later
  (``load_torch_model``). Read with ``allow_pickle=False``; serving never reads it.

Inference goes through ONNX Runtime only, so serving needs neither torch nor
scikit-learn, and loading verifies model.onnx against its recorded sha256.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclass import __version__, atomic
from imgclass.errors import ModelError

if TYPE_CHECKING:
    from torch import nn

FILES = ("model.onnx", "labels.json", "preprocess.json", "metrics.json", "model.json", "card.md")
REQUIRED = FILES[:5]  # card.md is for people; a bundle without it still loads
WEIGHTS = "weights.npz"  # optional: torch models' weights, for fine-tuning (never served)
# model.json keys that save_bundle writes itself: hashes of the files, versions, time
WRITTEN_ON_SAVE = ("model_sha256", "weights_sha256", "versions", "created")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that built the model, for model.json."""
    import importlib.metadata as md

    out = {"imgclass": __version__, "python": platform.python_version()}
    for name in ("torch", "onnx", "onnxruntime", "scikit-learn", "skl2onnx", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def check_bundle_parts(labels: list[str], preprocess: dict[str, Any]) -> None:
    """ModelError unless labels and preprocess.json have the documented shape."""
    if not labels or not all(isinstance(x, str) for x in labels):
        raise ModelError("labels must be a non-empty list of class names")
    if len(set(labels)) != len(labels):
        raise ModelError(
            f"labels must be unique; repeated: {sorted({x for x in labels if labels.count(x) > 1})}"
        )
    spec = preprocess.get("input")
    if "recipe" not in preprocess or not isinstance(spec, dict):
        raise ModelError('preprocess must hold "recipe" and an "input" spec')
    kind = spec.get("kind")
    needed = {"image": ("size",), "sequence": ("format", "max_len")}.get(str(kind))
    if needed is None:
        raise ModelError(f'preprocess "input" kind must be "image" or "sequence", got {kind!r}')
    missing = [k for k in needed if k not in spec]
    if missing:
        raise ModelError(f'preprocess "input" for {kind} models lacks {", ".join(missing)}')


def save_bundle(
    out: str | Path,
    onnx_bytes: bytes,
    labels: list[str],
    preprocess: dict[str, Any],
    metrics: dict[str, Any],
    model_json: dict[str, Any],
    weights: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write a bundle atomically (a temporary folder renamed into place) and return its path.

    model_json: what describes the model (name, family, framework, input_kind, args,
    num_classes, dataset); ``model_sha256``, ``versions`` and ``created`` are added here.
    weights: a torch state_dict as numpy arrays, written as weights.npz (its sha256 as
    ``weights_sha256``) so the model can be fine-tuned later.
    """
    check_bundle_parts(labels, preprocess)
    out = Path(out)
    with atomic.folder(out) as tmp:
        if weights is not None:
            model_json = {**model_json, "weights_sha256": _write_weights(tmp / WEIGHTS, weights)}
        info = _write_files(tmp, onnx_bytes, labels, preprocess, metrics, model_json)
        (tmp / "card.md").write_text(model_card(labels, preprocess, metrics, info))
    return out


def description_to_save(model_json: Mapping[str, Any], *drop: str) -> dict[str, Any]:
    """A bundle's model.json as a ``model_json`` for ``save_bundle`` of a derived bundle:
    without what saving writes again (WRITTEN_ON_SAVE) and without the keys ``drop``."""
    return {k: v for k, v in model_json.items() if k not in (*WRITTEN_ON_SAVE, *drop)}


def _write_weights(path: Path, weights: Mapping[str, np.ndarray]) -> str:
    """weights.npz (plain arrays, no pickle); returns its sha256."""
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _write_files(
    folder: Path,
    onnx_bytes: bytes,
    labels: list[str],
    preprocess: dict[str, Any],
    metrics: dict[str, Any],
    model_json: dict[str, Any],
) -> dict[str, Any]:
    (folder / "model.onnx").write_bytes(onnx_bytes)
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
        (folder / name).write_text(json.dumps(value, indent=2) + "\n")
    return info


def model_card(
    labels: list[str], preprocess: dict[str, Any], metrics: dict[str, Any], info: dict[str, Any]
) -> str:
    """card.md: what the model is, what it was trained on, how well it did."""
    test = metrics.get("test", {})
    spec = preprocess.get("input", {})
    shown = spec.get("size") if spec.get("kind") == "image" else spec.get("format")
    dataset = info.get("dataset", {})
    lines = [
        f"# Model card: {info.get('name', '?')}",
        "",
        f"- Family: {info.get('family')} ({info.get('framework')}), input: "
        f"{info.get('input_kind')} {shown}",
        f"- Classes ({len(labels)}): {', '.join(labels[:20])}{' …' if len(labels) > 20 else ''}",
        f"- Trained on: {dataset.get('path')} (manifest sha256 "
        f"{str(dataset.get('manifest_sha256'))[:12]}…)",
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


def decode_side(recipe: Mapping[str, Any]) -> int:
    """The shorter side a big upload is reduced to while decoding, no less: well above the
    model's input, so that a small drawing on a big page keeps its detail."""
    from imgclass.data.decode import DECODE_MIN_SIDE

    side: int = max(DECODE_MIN_SIDE, 4 * max(recipe["size"]))
    return side


def decode_input(data: bytes, recipe: Mapping[str, Any], max_pixels: int) -> Any:
    """Image bytes a person sent (an upload, a canvas export, a file, a stored feedback
    image) -> the PIL image ``model_input`` takes, reduced as ``decode_side`` allows;
    ``BadInput`` (413/415) when they are not an image imgclass accepts."""
    from imgclass.data.decode import decode_image

    return decode_image(data, max_pixels, decode_side(recipe))


def model_input(
    recipe: dict[str, Any],
    size: int,
    items: list[Any],
    raw: bool | None = None,
    checked: bool = False,
) -> np.ndarray:
    """THE one path from raw inputs to what the model sees: uint8 (n, H, W[, C]) in
    recipe form, which ``Bundle.to_input`` scales for the network. The server, the
    ``predict`` command, the feedback export (and so retraining) all go through here.

    items: decoded images of any size and polarity (PIL images, arrays (h, w) or
    (h, w, 3|4); see ``decode_input`` for bytes) or drawings (lists of (n, 2|3) strokes),
    which are rendered at ``size`` like the training bitmaps. raw: whether drawings must
    be simplified first (strokes in any coordinate range, a canvas); None decides per
    drawing, leaving strokes already in Quick, Draw!'s simplified form as they are.
    checked: ``recipe`` is ``validate_recipe``'s output already (``Bundle.checked_recipe``).
    """
    from imgclass.data.preprocess import apply_recipe, prepare_raw_image
    from imgclass.data.render import render_strokes

    shape = (*recipe["size"],) if recipe["channels"] == 1 else (*recipe["size"], 3)
    out = np.zeros((len(items), *shape), np.uint8)
    drawing = np.array([isinstance(item, list | tuple) for item in items], dtype=bool)
    pick = np.flatnonzero(drawing)
    if len(pick):
        rasters = [render_strokes(simplified(items[i], raw), size=size) for i in pick]
        out[pick] = apply_recipe(recipe, np.stack(rasters), checked=checked)
    pick = np.flatnonzero(~drawing)
    if len(pick):
        images = [prepare_raw_image(items[i], recipe) for i in pick]
        out[pick] = apply_recipe(recipe, images, checked=checked)
    return out


def simplified(drawing: Any, raw: bool | None = None) -> Any:
    """A drawing in Quick, Draw!'s simplified form (``model_input`` says what raw means)."""
    from imgclass.data.render import is_simplified, simplify_raw

    if raw is None:
        raw = not is_simplified(drawing)
    return simplify_raw(drawing) if raw else drawing


@dataclass
class Bundle:
    """A loaded bundle; inference through ONNX Runtime only.

    labels: class names, index = output column. preprocess: the parsed preprocess.json.
    metrics, model_json: the parsed metrics.json and model.json.
    """

    path: Path
    labels: list[str]
    preprocess: dict[str, Any]
    metrics: dict[str, Any]
    model_json: dict[str, Any]
    session: Any

    @property
    def recipe(self) -> dict[str, Any]:
        """The dataset's preprocessing recipe (for ``imgclass.data.preprocess``)."""
        recipe: dict[str, Any] = self.preprocess["recipe"]
        return recipe

    @functools.cached_property
    def checked_recipe(self) -> dict[str, Any]:
        """``recipe``, validated once (``model_input`` then skips the check per request)."""
        from imgclass.data.preprocess import validate_recipe

        return validate_recipe(self.recipe)

    @property
    def temperature(self) -> float | None:
        """The temperature model.onnx divides its logits by (model.json's
        ``calibration``); None for bundles made before calibration (they apply none)."""
        value = (self.model_json.get("calibration") or {}).get("temperature")
        return float(value) if isinstance(value, int | float) else None

    @property
    def input_kind(self) -> str:
        """ "image" or "sequence"."""
        return str(self.preprocess["input"].get("kind", "image"))

    def to_input(self, images: np.ndarray) -> np.ndarray:
        """uint8 images in recipe form (n, H, W[, C]) -> the model's float32 input
        ((n, C, H, W) for the nchw layout, (n, H*W*C) for the flat one)."""
        spec = self.preprocess["input"]
        images = np.asarray(images)
        self._check_images(images)
        x = images.astype(np.float32) * np.float32(spec.get("scale", 1 / 255))
        if spec.get("layout") == "flat":
            return x.reshape(len(x), -1)
        if x.ndim == 3:
            return x[:, None]
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def _check_images(self, images: np.ndarray) -> None:
        spec = self.preprocess["input"]
        size = tuple(spec.get("size", images.shape[1:3]))
        channels = int(spec.get("channels", 1 if images.ndim == 3 else images.shape[-1]))
        expected = (*size,) if channels == 1 else (*size, channels)
        shape = images.shape[1:]
        if images.ndim not in (3, 4) or (shape != expected and shape != (*size, 1)):
            raise ModelError(
                f"{self.path}: this model takes images of shape (n, {', '.join(map(str, expected))})"
                f" in recipe form, got {images.shape}; use predict_raw for images of other sizes"
            )

    def predict_proba(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Class probabilities float32 (n, K) for uint8 images (n, H, W[, C]) in recipe form."""
        if self.input_kind == "sequence":
            raise ModelError(f"{self.path}: this model reads strokes; use predict_drawings")
        out = [
            self.session.run(
                ["probabilities"], {"input": self.to_input(images[i : i + batch_size])}
            )[0]
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

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

    @property
    def decode_side(self) -> int:
        """See ``decode_side``: how far ``decode`` may reduce a big image."""
        return decode_side(self.recipe)

    def decode(self, data: bytes, max_pixels: int) -> Any:
        """Image bytes -> the PIL image ``model_input`` takes (see ``decode_input``)."""
        return decode_input(data, self.recipe, max_pixels)

    def model_input(self, items: list[Any], raw: bool | None = None) -> np.ndarray:
        """Raw inputs -> uint8 (n, H, W[, C]) in recipe form: see ``model_input``.
        For sequence models, the recipe's image of them (what a prepared dataset stores)."""
        size = int((self.preprocess["input"].get("size") or self.recipe["size"])[0])
        return model_input(self.checked_recipe, size, items, raw, checked=True)

    def predict_drawings(self, drawings: list[Any], raw: bool | None = True) -> np.ndarray:
        """Probabilities for drawings (lists of (n, 2|3) strokes): encoded as sequences for
        sequence models, rendered like the training bitmaps for image models.

        raw: strokes in any coordinate range (a canvas) are simplified first; False for
        strokes already in Quick, Draw!'s simplified 0..255 form; None decides per drawing.
        """
        if self.input_kind == "sequence":
            from imgclass.data.sequences import encode_drawings

            spec = self.preprocess["input"]
            if raw is None:
                drawings, raw = [simplified(d) for d in drawings], False
            seqs, lengths = encode_drawings(drawings, spec["format"], spec["max_len"], raw=raw)
            return self.predict_sequences(seqs, lengths)
        return self.predict_proba(self.model_input(list(drawings), raw))

    def predict_raw(self, items: list[Any], raw: bool | None = None) -> np.ndarray:
        """Probabilities float32 (n, K) for raw user inputs, through ``model_input``.

        items: decoded images of any size and polarity (arrays (h, w), (h, w, 3|4) or PIL
        images), or drawings (lists of strokes), which sequence models need; raw as in
        ``model_input``.
        """
        drawing = [isinstance(item, list | tuple) for item in items]
        if self.input_kind == "sequence":
            if not all(drawing):
                raise ModelError(f"{self.path}: this model reads strokes, not images")
            return self.predict_drawings(items, raw)
        if not items:
            return np.zeros((0, len(self.labels)), np.float32)
        return self.predict_proba(self.model_input(items, raw))


def read_bundle_json(
    path: Path,
) -> tuple[list[str], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """labels, preprocess, metrics and model.json of a bundle folder (ModelError if unreadable)."""
    parsed = []
    for name in REQUIRED[1:]:
        try:
            parsed.append(json.loads((path / name).read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path / name}: cannot read it as JSON ({exc})") from None
    labels, preprocess, metrics, info = parsed
    try:
        check_bundle_parts(labels, preprocess)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    return labels, preprocess, metrics, info


def load_bundle(path: str | Path, threads: int = 1) -> Bundle:
    """Load and verify a bundle: model.onnx must match the sha256 in model.json.

    threads: ONNX Runtime's intra-op threads (0 = its default, all cores).
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelError(
            f"{path} is not a complete bundle: no such folder (expected one holding "
            f"{', '.join(REQUIRED)})"
        )
    missing = [f for f in REQUIRED if not (path / f).is_file()]
    if missing:
        raise ModelError(f"{path} is not a complete bundle: missing {', '.join(missing)}")
    labels, preprocess, metrics, info = read_bundle_json(path)
    model_bytes = (path / "model.onnx").read_bytes()
    if hashlib.sha256(model_bytes).hexdigest() != info.get("model_sha256"):
        raise ModelError(
            f"{path / 'model.onnx'} does not match the sha256 in model.json (changed or corrupt)"
        )
    try:
        session = onnx_session(model_bytes, threads)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"{path / 'model.onnx'}: ONNX Runtime cannot load it ({exc})") from None
    _check_outputs(path, session, labels)
    return Bundle(path, labels, preprocess, metrics, info, session)


def onnx_session(model_bytes: bytes, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session: ``threads`` intra-op threads (0 = all cores), one
    inter-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _check_outputs(path: Path, session: Any, labels: list[str]) -> None:
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if "probabilities" not in outputs:
        raise ModelError(f"{path / 'model.onnx'} has no 'probabilities' output")
    width = outputs["probabilities"][-1]
    if isinstance(width, int) and width != len(labels):
        raise ModelError(
            f"{path}: model.onnx gives {width} probabilities but labels.json names {len(labels)}"
        )


# --- weights, for fine-tuning (torch only; never on the serving path) -----------------


@dataclass(frozen=True)
class ModelDescription:
    """What a bundle says about its model, enough to rebuild it through the registry.

    name: the registered model name; args: its constructor arguments; labels: class
    names (output columns); config: the training configuration (TrainConfig.to_dict());
    dataset: {path, manifest_sha256, classes} of the data it was trained on.
    """

    path: Path
    name: str
    framework: str
    input_kind: str
    args: dict[str, Any]
    labels: list[str]
    preprocess: dict[str, Any]
    metrics: dict[str, Any]
    model_json: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.model_json.get("config") or {})

    @property
    def dataset(self) -> dict[str, Any]:
        return dict(self.model_json.get("dataset") or {})

    @property
    def has_weights(self) -> bool:
        return (self.path / WEIGHTS).is_file() and "weights_sha256" in self.model_json


def describe_bundle(path: str | Path) -> ModelDescription:
    """The bundle's description (JSON files only; nothing is loaded or unpickled)."""
    path = Path(path)
    labels, preprocess, metrics, info = read_bundle_json(path)
    return ModelDescription(
        path,
        str(info.get("name", "")),
        str(info.get("framework", "")),
        str(info.get("input_kind", preprocess["input"].get("kind", "image"))),
        dict(info.get("args") or {}),
        labels,
        preprocess,
        metrics,
        info,
    )


def read_weights(path: str | Path) -> dict[str, np.ndarray]:
    """A bundle's weights.npz as arrays, verified against ``weights_sha256`` in model.json.

    ModelError when the bundle has none (made before bundles kept their weights, or a
    scikit-learn model) or when they do not match the recorded hash.
    """
    desc = describe_bundle(path)
    if not desc.has_weights:
        raise ModelError(
            f"{desc.path} has no {WEIGHTS}: it was made before bundles kept their weights "
            "(or is not a torch model); retrain it with this version of imgclass"
        )
    data = (desc.path / WEIGHTS).read_bytes()
    if hashlib.sha256(data).hexdigest() != desc.model_json["weights_sha256"]:
        raise ModelError(f"{desc.path / WEIGHTS} does not match the sha256 in model.json")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as exc:
        raise ModelError(f"{desc.path / WEIGHTS}: not a readable weights file ({exc})") from None


def load_torch_model(path: str | Path) -> tuple[nn.Module, ModelDescription]:
    """The bundle's torch model rebuilt through ``create_model`` with its trained weights
    (in eval mode), and its description. ModelError when it has no weights or they do
    not fit the model its model.json names."""
    import torch

    from imgclass.models import create_model
    from imgclass.models.registry import constructor_keys

    desc = describe_bundle(path)
    if desc.framework != "torch":
        raise ModelError(
            f"{desc.path}: a {desc.framework or 'non-torch'} model has no torch weights"
        )
    weights = read_weights(desc.path)
    args = dict(desc.args)
    if "pretrained" in constructor_keys(desc.name):
        args["pretrained"] = False  # every weight comes from the bundle: nothing to download
    model = create_model(desc.name, len(desc.labels), **args)
    try:
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{desc.path}: its weights do not fit {desc.name} ({first})") from None
    return model.eval(), desc
