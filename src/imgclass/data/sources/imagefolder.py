"""Photos (or drawings) in a folder per class, and the Stanford Dogs layout.

``root/<class>/<file>.{jpg,jpeg,png,webp,bmp}`` (extensions in any case, hidden
files and other files ignored): class names are the folder names, folders and files
are read in sorted order. Stanford Dogs: ``Images/<wnid>-<breed>/<file>.jpg`` with
``Annotation/<wnid>-<breed>/<file>`` (PASCAL VOC XML bounding boxes); the class
name is the breed (the part after the first ``-``).

Every image comes out as uint8 RGB (h, w, 3), whatever its mode: one layout for the
whole source, and the preprocessing recipe decides on grayscale. Transparent
pixels are composited on white (a drawing saved with a transparent background
keeps its look), 16-bit images are scaled to 8 bits, and the EXIF orientation is
applied, so the array is the picture as a viewer shows it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree

import numpy as np

from imgclass.data.limits import DEFAULT_LIMITS, ReadLimits, check_pixels
from imgclass.data.sources.base import Chunk, LabelFilter, Reader
from imgclass.errors import DataFormatError

if TYPE_CHECKING:
    from PIL import Image as PILImage

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
DEFAULT_MAX_PIXELS = DEFAULT_LIMITS.max_image_pixels
MAX_ANNOTATION_BYTES = 1_000_000
Box = tuple[int, int, int, int]
# Modes Image.reduce averages correctly (not palette indices, not 16-bit or 1-bit ones).
_REDUCIBLE_MODES = {"L", "LA", "RGB", "RGBA", "I", "F"}


def load_image(
    path: Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    box: Box | None = None,
    min_side: int | None = None,
) -> np.ndarray:
    """Decode an image file to uint8 RGB (h, w, 3), upright as its EXIF orientation says.

    ``box`` (x0, y0, x1, y1), in the stored image's pixels, crops before the
    orientation is applied (annotations refer to the stored pixels). Raises
    ``DataFormatError`` for unreadable files and for images with more than
    ``max_pixels`` pixels (decompression bombs), checked from the header before
    decoding: Pillow's own guard (a warning past 89M pixels) is not relied on.

    ``min_side``: the picture (the box, when cropping) may come out reduced by an
    integer factor, as long as its shorter side stays at least ``min_side`` pixels,
    for a recipe that shrinks it further anyway. JPEGs are then decoded straight at
    1/2, 1/4 or 1/8 of their size (draft mode); other formats are decoded whole, then
    averaged down, so memory holds at most one full-size picture at a time.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # Pillow warns past its own limit; ours, checked next, decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_pixels(path, img.width, img.height, max_pixels)
                orientation = img.getexif().get(0x0112, 1)
                box = _draft(img, box, min_side)
                img.load()
                picture = _crop(img, box, path) if box else img
                return _to_rgb(_upright(_reduce(picture, min_side), orientation))
    except DataFormatError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataFormatError(path, f"cannot read the image ({exc})") from None


def _draft(img: PILImage.Image, box: Box | None, min_side: int | None) -> Box | None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when the region kept (``box``, or the
    whole picture) keeps a shorter side of ``min_side``; returns ``box`` in the scaled
    pixels. Other formats are left as they are (draft does nothing for them)."""
    if not min_side or img.format != "JPEG":
        return box
    x0, y0, x1, y1 = box or (0, 0, img.width, img.height)
    shorter = min(min(x1, img.width) - max(0, x0), min(y1, img.height) - max(0, y0))
    factor = max(1, shorter // min_side)
    scale = next(s for s in (8, 4, 2, 1) if s <= factor)
    if scale == 1:
        return box
    width, height = img.size
    # Pillow picks the largest scale that keeps the size asked for: ask for 1/scale.
    img.draft(None, (width // scale, height // scale))
    if box is None or img.size == (width, height):
        return box
    sx, sy = img.width / width, img.height / height
    return (
        int(box[0] * sx),
        int(box[1] * sy),
        int(np.ceil(box[2] * sx)),
        int(np.ceil(box[3] * sy)),
    )


def _reduce(img: PILImage.Image, min_side: int | None) -> PILImage.Image:
    """Average ``img`` down by the largest integer factor that keeps its shorter side at
    least ``min_side`` (no change without ``min_side`` or when that factor is 1)."""
    factor = min(img.size) // min_side if min_side else 1
    if factor < 2:
        return img
    if img.mode not in _REDUCIBLE_MODES or "transparency" in img.info:
        alpha = img.mode in ("PA", "La", "RGBa") or "transparency" in img.info
        deep = img.mode.startswith("I;16") and not alpha
        img = img.convert("I" if deep else "RGBA" if alpha else "RGB")
    return img.reduce(factor)


def _crop(img: PILImage.Image, box: Box, path: Path) -> PILImage.Image:
    x0, y0 = max(0, box[0]), max(0, box[1])
    x1, y1 = min(img.width, box[2]), min(img.height, box[3])
    if x1 <= x0 or y1 <= y0:
        log.warning("%s: bounding box %s is outside the image; keeping the whole image", path, box)
        return img
    return img.crop((x0, y0, x1, y1))


def _upright(img: PILImage.Image, orientation: object) -> PILImage.Image:
    """Apply an EXIF orientation (1..8) the way viewers do."""
    from PIL import Image

    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation if isinstance(orientation, int) else 1)
    return img.transpose(method) if method is not None else img


def _to_rgb(img: PILImage.Image) -> np.ndarray:
    """Any PIL mode -> uint8 (h, w, 3): alpha over white, 16-bit and float scaled to 8 bits."""
    from PIL import Image

    if img.mode.startswith(("I", "F")):  # 16/32-bit integer or float grayscale
        values = np.asarray(img, dtype=np.float64)
        if values.size and values.max() > 255:
            values = values / 257.0  # the 16-bit range onto 0..255
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def list_class_folders(root: Path) -> list[Path]:
    """The non-hidden subfolders of ``root``, sorted; an error when there are none."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataFormatError(root, "no class folders inside (expected one subfolder per class)")
    return folders


def list_images(folder: Path) -> list[Path]:
    """The non-hidden image files of ``folder`` (by extension, any case), sorted by name."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


class ImageFolderSource(Reader):
    """One subfolder per class; chunks hold ``images`` as a list of uint8 (h, w, 3),
    at most ``chunk_size`` of them and, but for a single one, at most
    ``limits.chunk_bytes`` together.

    ``limits.max_image_pixels`` refuses an image from its header, before decoding it.
    ``min_side`` (also settable after opening, once the recipe is known) lets pictures
    come out reduced by an integer factor as long as their shorter side stays at least
    that many pixels (see ``load_image``): a folder of 7000 x 7000 photos then reads
    at the cost of small pictures. ``skip_bad=True`` turns an unreadable image into a logged warning: its path is
    added to ``skipped`` (reset at each pass) and ``Chunk.meta["skipped"]`` holds the
    count so far; a summary warning follows the last chunk. Ids are paths relative
    to the root.
    """

    format = "imagefolder"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
        skip_bad: bool = False,
        limits: ReadLimits | None = None,
        min_side: int | None = None,
    ) -> None:
        super().__init__(path, categories=categories, per_class=per_class, limits=limits)
        self.root = Path(path)
        if not self.root.is_dir():
            raise DataFormatError(path, "not a folder")
        self.skip_bad = skip_bad
        self.min_side = min_side
        self.skipped: list[str] = []

    def class_folders(self) -> list[tuple[str, Path]]:
        return [(f.name, f) for f in list_class_folders(self.root)]

    def classes(self) -> list[str] | None:
        return [name for name, _ in self.class_folders()]

    def iter_chunks(self, chunk_size: int = 64) -> Iterator[Chunk]:
        filt = self.label_filter()
        self.skipped = []
        for label, folder in self.class_folders():
            if filt.wants(label):
                yield from self._folder_chunks(label, folder, filt, chunk_size)
        if self.skipped:
            log.warning("skipped %d unreadable image(s) under %s", len(self.skipped), self.root)

    def _folder_chunks(
        self, label: str, folder: Path, filt: LabelFilter, chunk_size: int
    ) -> Iterator[Chunk]:
        images: list[np.ndarray] = []
        ids: list[str] = []
        nbytes = 0
        for file in list_images(folder):
            if filt.full(label):
                break
            image = self._load(file)
            if image is None or not filt.take(label):
                continue
            images.append(image)
            ids.append(str(file.relative_to(self.root)))
            nbytes += image.nbytes
            if len(images) >= chunk_size or nbytes >= self.limits.chunk_bytes:
                yield self._chunk(label, images, ids)
                images, ids, nbytes = [], [], 0
        if images:
            yield self._chunk(label, images, ids)

    def _chunk(self, label: str, images: list[np.ndarray], ids: list[str]) -> Chunk:
        return Chunk(
            labels=[label] * len(images),
            source=self.path,
            images=images,
            ids=ids,
            ink="unknown",
            meta={"skipped": len(self.skipped)},
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
        return load_image(file, self.limits.max_image_pixels, min_side=self.min_side)


class StanfordDogsSource(ImageFolderSource):
    """``Images/<wnid>-<breed>/`` with optional crop to the ``Annotation/`` bounding box.

    With ``crop_to_box=True`` each photo is cropped to the union of its annotated
    boxes (every dog in the photo stays in view); a photo without an annotation
    file or box is kept whole.
    """

    format = "stanford-dogs"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
        skip_bad: bool = False,
        limits: ReadLimits | None = None,
        min_side: int | None = None,
        crop_to_box: bool = False,
    ) -> None:
        super().__init__(
            path,
            categories=categories,
            per_class=per_class,
            skip_bad=skip_bad,
            limits=limits,
            min_side=min_side,
        )
        if not (self.root / "Images").is_dir():
            raise DataFormatError(path, "no Images/ folder (expected the Stanford Dogs layout)")
        self.crop_to_box = crop_to_box

    def class_folders(self) -> list[tuple[str, Path]]:
        folders = list_class_folders(self.root / "Images")
        return [(f.name.split("-", 1)[-1], f) for f in folders]

    def load_file(self, file: Path) -> np.ndarray:
        box = None
        if self.crop_to_box:
            annotation = self.root / "Annotation" / file.parent.name / file.stem
            box = read_voc_box(annotation) if annotation.is_file() else None
        return load_image(file, self.limits.max_image_pixels, box, self.min_side)


def read_voc_box(path: Path) -> Box | None:
    """Union of the PASCAL VOC bounding boxes in an annotation file, as (x0, y0, x1, y1).

    The stdlib parser is enough here: the size cap bounds the input, and expat
    2.4.1 and later (bundled with Python 3.11) refuses entity-expansion bombs.
    """
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
            raise DataFormatError(
                path, "bounding box with missing or non-numeric coordinates"
            ) from None
    if not boxes:
        return None
    arr = np.array(boxes)
    return int(arr[:, 0].min()), int(arr[:, 1].min()), int(arr[:, 2].max()), int(arr[:, 3].max())
