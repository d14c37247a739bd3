"""Cached embeddings: a frozen backbone's features of every training image, computed once.

While a transfer model's backbone is frozen its features of an image never change, so
running it in every epoch (10-15 photos/s on two cores) is waste: ``split_features``
runs it once per image and view (through ONNX Runtime, which DESIGN.md measured 5-8x
faster than torch on CPU, same numbers) and keeps the result beside the run, in
``RUNDIR/cache/embeddings-<key>.npy`` with a small JSON header ``embeddings-<key>.json``.

The key (``CacheKey``) holds everything the features depend on: the dataset's manifest
hash, the split and how many of its examples, the model's name and input arguments, a
hash of the backbone's weights, and the views (the image itself; its mirror; random
augmentations of the run's preset, seeded). Any change gives another file name; a file
whose header does not match its key, whose bytes do not match the header's sha256, or
that numpy cannot read as a plain float32 array (never unpickled: ``allow_pickle=False``)
is computed again with a warning. Files are written whole or not at all
(``imgclass.atomic``), the array first and the header last, so a half-written cache is
never taken for a whole one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclass.atomic import replacing, write_text

if TYPE_CHECKING:
    import torch

    from imgclass.data.store import PreparedDataset
    from imgclass.train.config import Augment

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
BATCH = 32  # images per backbone call: ONNX Runtime's speed on 2 cores is flat above ~16


@dataclass(frozen=True)
class CacheKey:
    """What a split's cached features depend on (see the module docstring).

    views: 1 = the images as they are; 2 = and their mirrors (when ``mirror``), or one
    random augmentation; each further view another random augmentation of ``augment``
    (the preset's settings as JSON) drawn with ``seed``. augment and seed are empty when
    no view is random, so that they do not change the key of plain or mirrored views.
    """

    manifest_sha256: str
    split: str
    count: int
    model: str
    model_args: str
    weights_sha256: str
    views: int = 1
    mirror: bool = False
    augment: str = ""
    seed: int = 0
    format: int = CACHE_FORMAT

    def digest(self) -> str:
        """20 hex digits of the key's sha256: the cache file's name."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @property
    def random_views(self) -> int:
        """Views drawn at random (neither the image itself nor its mirror)."""
        return self.views - 1 - int(self.mirror and self.views > 1)


def make_key(
    manifest_sha256: str,
    split: str,
    count: int,
    model: Any,
    cfg_model: str,
    model_args: dict[str, Any],
    views: int = 1,
    augment: Augment | None = None,
    seed: int = 0,
) -> CacheKey:
    """The key of ``count`` examples of ``split`` seen by ``model``'s backbone."""
    mirror = bool(augment is not None and augment.hflip > 0 and views > 1)
    key = CacheKey(
        manifest_sha256,
        split,
        count,
        cfg_model,
        json.dumps(model_args, sort_keys=True, default=str),
        weights_sha256(model.backbone),
        views,
        mirror,
    )
    if key.random_views and augment is not None:
        settings = json.dumps(dataclasses.asdict(augment), sort_keys=True)
        key = dataclasses.replace(key, augment=settings, seed=seed)
    return key


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's state (names, shapes and bytes, in order)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype};".encode())
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()


# --- the files -----------------------------------------------------------------------


def cache_paths(folder: Path, key: CacheKey) -> tuple[Path, Path]:
    """(array, header) of ``key`` in ``folder``."""
    stem = f"embeddings-{key.digest()}"
    return folder / f"{stem}.npy", folder / f"{stem}.json"


def load_cached(folder: Path, key: CacheKey) -> np.ndarray | None:
    """The cached float32 (views, count, features) of ``key``, or None: not there (a
    miss) or not sound (a warning says why; the caller computes it again)."""
    array_path, header_path = cache_paths(folder, key)
    if not header_path.exists():
        return None
    try:
        header = json.loads(header_path.read_text())
        if header.get("key") != dataclasses.asdict(key):
            raise ValueError("its header is of another key")
        raw = array_path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != header.get("sha256"):
            raise ValueError("its bytes do not match the header's sha256")
        with array_path.open("rb") as f:
            features: np.ndarray = np.load(f, allow_pickle=False)
        shape = (key.views, key.count, int(header.get("features", -1)))
        if features.dtype != np.float32 or features.shape != shape:
            raise ValueError(f"it holds {features.dtype} {features.shape}, not float32 {shape}")
        if not np.isfinite(features).all():
            raise ValueError("it holds values that are not finite")
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("%s: embedding cache not usable (%s): computing it again", array_path, exc)
        return None
    return features


def save_cached(folder: Path, key: CacheKey, features: np.ndarray) -> Path:
    """Write ``features`` float32 (views, count, F) and its header, each all or nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    array_path, header_path = cache_paths(folder, key)
    with replacing(array_path) as tmp, tmp.open("wb") as f:
        np.save(f, np.ascontiguousarray(features, dtype=np.float32), allow_pickle=False)
    header = {
        "key": dataclasses.asdict(key),
        "features": int(features.shape[2]),
        "shape": list(features.shape),
        "dtype": "float32",
        "sha256": hashlib.sha256(array_path.read_bytes()).hexdigest(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_text(header_path, json.dumps(header, indent=1))
    return array_path


# --- computing features --------------------------------------------------------------


class FeatureExtractor:
    """A frozen transfer model's ``features(x)``: through ONNX Runtime on CPU (exported
    once, on first use), through torch on a GPU or when the export fails.

    model: a TransferClassifier (``features``, ``backbone``); sample: float32 (n, C, H,
    W) inputs to trace the export with.
    """

    def __init__(self, model: Any, threads: int = 0) -> None:
        self.model = model
        self.threads = threads
        self.session: Any = None
        self.torch_only = next(model.parameters()).device.type != "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Features float32 (n, F) of inputs float32 (n, C, H, W) in [0, 1]."""
        if self.session is None and not self.torch_only:
            self.session = self._export(x)
        if self.session is not None:
            out: np.ndarray = self.session.run(None, {"input": x})[0]
            return out
        return self._torch(x)

    def _torch(self, x: np.ndarray) -> np.ndarray:
        import torch

        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model.features(torch.from_numpy(x).to(device))
        finally:
            self.model.train(was_training)
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

    def _export(self, x: np.ndarray) -> Any:
        """An ONNX Runtime session of ``model.features``, or None (torch is used)."""
        import io

        import onnxruntime as ort
        import torch

        from imgclass.onnx_export import OPSET, _eval_mode, _expected_exporter_warnings_silenced

        class Features(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, images: torch.Tensor) -> torch.Tensor:
                out: torch.Tensor = self.inner.features(images)
                return out

        buffer = io.BytesIO()
        try:
            with _eval_mode(self.model), torch.no_grad(), _expected_exporter_warnings_silenced():
                torch.onnx.export(
                    Features(self.model),
                    (torch.from_numpy(x[:1]),),
                    buffer,  # type: ignore[arg-type]
                    input_names=["input"],
                    output_names=["features"],
                    dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}},
                    opset_version=OPSET,
                    dynamo=False,
                )
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads or torch.get_num_threads()
            return ort.InferenceSession(
                buffer.getvalue(), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - any export failure: torch does the work
            log.info("features through torch (the ONNX export failed: %s)", exc)
            self.torch_only = True
            return None


def view_batch(
    images: np.ndarray, view: int, key: CacheKey, augment: Augment | None, start: int
) -> np.ndarray:
    """View number ``view`` of a batch of uint8 images (b, H, W[, C]) as the model's
    float32 (b, C, H, W) input: 0 the images, 1 their mirrors (``key.mirror``), others
    random augmentations seeded by (seed, view, first index)."""
    from imgclass.train.run import images_to_input

    x = images_to_input(images)
    if view == 0:
        return x
    if key.mirror and view == 1:
        return np.ascontiguousarray(x[..., ::-1])
    import torch

    from imgclass.train.augment import augment_images
    from imgclass.train.trainer import epoch_seed

    assert augment is not None  # noqa: S101 - make_key gives random views only with one
    generator = torch.Generator().manual_seed(epoch_seed(key.seed, view, 3, start))
    return np.ascontiguousarray(augment_images(torch.from_numpy(x), augment, generator).numpy())


def compute_features(
    ds: PreparedDataset,
    key: CacheKey,
    extract: FeatureExtractor,
    augment: Augment | None = None,
) -> np.ndarray:
    """float32 (views, count, F): each view of the first ``key.count`` examples of the
    split, read and run in batches of BATCH."""
    from imgclass.progress import progress

    images = ds.images(key.split)
    out: np.ndarray | None = None
    started = time.perf_counter()
    total = key.count * key.views
    with progress(
        total=total, desc=f"embeddings ({key.split})", unit=" images", leave=False
    ) as bar:
        for start in range(0, key.count, BATCH):
            batch = np.asarray(images[start : min(start + BATCH, key.count)])
            for view in range(key.views):
                features = extract(view_batch(batch, view, key, augment, start))
                if out is None:
                    out = np.empty((key.views, key.count, features.shape[1]), np.float32)
                out[view, start : start + len(batch)] = features
                bar.update(len(batch))
    seconds = time.perf_counter() - started
    log.info(
        "embeddings of %d %s images x %d view(s) in %.1f s (%.0f images/s)",
        key.count, key.split, key.views, seconds, total / max(seconds, 1e-9),
    )  # fmt: skip
    return out if out is not None else np.empty((key.views, 0, 0), np.float32)


def split_features(
    ds: PreparedDataset,
    key: CacheKey,
    folder: Path | None,
    extract: FeatureExtractor,
    augment: Augment | None = None,
) -> tuple[np.ndarray, bool]:
    """(features float32 (views, count, F), whether they came from the cache); computed
    and written to ``folder`` on a miss (``folder`` None: no cache)."""
    if folder is not None:
        cached = load_cached(folder, key)
        if cached is not None:
            log.info("embeddings of %d %s images from the cache", key.count, key.split)
            return cached, True
    features = compute_features(ds, key, extract, augment)
    if folder is not None:
        try:
            save_cached(folder, key, features)
        except OSError as exc:
            log.warning("%s: cannot write the embedding cache (%s); going on without", folder, exc)
    return features, False
