"""Photos (or drawings) in a folder per class, and the Stanford Dogs layout.

``root/<class>/<file>.{jpg,jpeg,png,webp,bmp}``: class names are the folder names,
files are read in sorted order. Stanford Dogs: ``Images/<wnid>-<breed>/<file>.jpg``
with ``Annotation/<wnid>-<breed>/<file>`` (PASCAL VOC XML bounding boxes); the class
name is the breed (the part after the first ``-``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from imgclass.data.sources.base import Chunk, LabelFilter
from imgclass.errors import DataFormatError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
DEFAULT_MAX_PIXELS = 50_000_000
MAX_ANNOTATION_BYTES = 1_000_000


def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file to uint8 RGB (h, w, 3), honouring EXIF orientation.

    Raises ``DataFormatError`` for unreadable files and for images with more than
    ``max_pixels`` pixels (decompression bombs).
    """
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > max_pixels:
                    raise DataFormatError(
                        path, f"{img.width}x{img.height} is more than {max_pixels} pixels"
                    )
                upright = ImageOps.exif_transpose(img)
                return np.asarray(upright.convert("RGB"))
    except DataFormatError:
        raise
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as exc:
        raise DataFormatError(path, f"cannot read the image ({exc})") from None


def list_class_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataFormatError(root, "no class folders inside (expected one subfolder per class)")
    return folders


def list_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


class ImageFolderSource:
    """One subfolder per class; images decoded to RGB arrays of varying sizes."""

    format = "imagefolder"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
        skip_bad: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.path = str(path)
        self.root = Path(path)
        if not self.root.is_dir():
            raise DataFormatError(path, "not a folder")
        self.filter = LabelFilter(categories, per_class)
        self.skip_bad = skip_bad
        self.max_pixels = max_pixels
        self.skipped: list[str] = []

    def class_folders(self) -> list[tuple[str, Path]]:
        return [(f.name, f) for f in list_class_folders(self.root)]

    def classes(self) -> list[str] | None:
        return [name for name, _ in self.class_folders()]

    def iter_chunks(self, chunk_size: int = 64) -> Iterator[Chunk]:
        for label, folder in self.class_folders():
            if not self.filter.wants(label):
                continue
            images: list[np.ndarray] = []
            ids: list[str] = []
            for file in list_images(folder):
                if self.filter.full(label):
                    break
                image = self._load(file)
                if image is None or not self.filter.take(label):
                    continue
                images.append(image)
                ids.append(str(file.relative_to(self.root)))
                if len(images) >= chunk_size:
                    yield self._chunk(label, images, ids)
                    images, ids = [], []
            if images:
                yield self._chunk(label, images, ids)
        if self.skipped:
            log.warning("skipped %d unreadable image(s) under %s", len(self.skipped), self.root)

    def _chunk(self, label: str, images: list[np.ndarray], ids: list[str]) -> Chunk:
        return Chunk(
            labels=[label] * len(images),
            source=self.path,
            images=images,
            ids=ids,
            ink="unknown",
            meta={"skipped": list(self.skipped)},
        )

    def _load(self, file: Path) -> np.ndarray | None:
        try:
            return self.load_file(file)
        except DataFormatError as exc:
            if not self.skip_bad:
                raise
            log.warning("skipping %s", exc)
            self.skipped.append(str(file))
            return None

    def load_file(self, file: Path) -> np.ndarray:
        return load_image(file, self.max_pixels)


class StanfordDogsSource(ImageFolderSource):
    """``Images/<wnid>-<breed>/`` with optional crop to the ``Annotation/`` bounding box."""

    format = "stanford-dogs"

    def __init__(self, path: str | Path, *, crop_to_box: bool = False, **options: object) -> None:
        super().__init__(path, **options)  # type: ignore[arg-type]
        if not (self.root / "Images").is_dir():
            raise DataFormatError(path, "no Images/ folder (expected the Stanford Dogs layout)")
        self.crop_to_box = crop_to_box

    def class_folders(self) -> list[tuple[str, Path]]:
        folders = list_class_folders(self.root / "Images")
        return [(f.name.split("-", 1)[-1], f) for f in folders]

    def load_file(self, file: Path) -> np.ndarray:
        image = load_image(file, self.max_pixels)
        if not self.crop_to_box:
            return image
        annotation = self.root / "Annotation" / file.parent.name / file.stem
        box = read_voc_box(annotation) if annotation.exists() else None
        if box is None:
            return image
        x0, y0, x1, y1 = box
        h, w = image.shape[:2]
        x0, x1 = max(0, min(x0, w - 1)), max(1, min(x1, w))
        y0, y1 = max(0, min(y0, h - 1)), max(1, min(y1, h))
        if x1 <= x0 or y1 <= y0:
            return image
        return np.ascontiguousarray(image[y0:y1, x0:x1])


def read_voc_box(path: Path) -> tuple[int, int, int, int] | None:
    """Union of the PASCAL VOC bounding boxes in an annotation file, as (x0, y0, x1, y1)."""
    if path.stat().st_size > MAX_ANNOTATION_BYTES:
        raise DataFormatError(path, "annotation file is implausibly large")
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise DataFormatError(path, f"not valid PASCAL VOC XML ({exc})") from None
    boxes = []
    for bnd in root.iter("bndbox"):
        try:
            boxes.append(
                [int(float(bnd.findtext(k) or "")) for k in ("xmin", "ymin", "xmax", "ymax")]
            )
        except ValueError:
            raise DataFormatError(path, "bounding box with non-numeric coordinates") from None
    if not boxes:
        return None
    arr = np.array(boxes)
    return int(arr[:, 0].min()), int(arr[:, 1].min()), int(arr[:, 2].max()), int(arr[:, 3].max())
