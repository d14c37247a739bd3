"""Decoding uploads: big images reduced while decoding, small ones untouched, the pixel
limit checked at the scale actually decoded; the multipart field reader."""

from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from imgclass.data.preprocess import prepare_raw_image
from imgclass.serve.multipart import form_field
from imgclass.serve.predictor import BadInput, decode_image, decode_pixels

GRAY = {"channels": 1}


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def test_a_canvas_is_decoded_exactly_as_before():
    pixels = np.random.default_rng(0).integers(0, 256, (280, 280, 4), dtype=np.uint8)
    data = encode(Image.fromarray(pixels, "RGBA"), "PNG")
    img = decode_image(data, 4096 * 4096, min_side=1024)
    assert img.size == (280, 280) and np.array_equal(np.asarray(img), pixels)


def test_a_big_png_is_box_reduced_by_a_whole_factor():
    data = encode(Image.new("RGBA", (5000, 4000), (0, 0, 0, 0)), "PNG")
    img = decode_image(data, 25_000_000, min_side=1024)
    assert img.size == (math.ceil(5000 / 3), math.ceil(4000 / 3))  # 4000 // 1024 = 3


def test_a_big_jpeg_is_decoded_at_a_reduced_scale_and_counted_at_that_scale():
    data = encode(Image.new("RGB", (6000, 5000), (200, 30, 30)), "JPEG")
    with pytest.raises(BadInput) as refused:  # 30 MP at full scale
        decode_image(data, 4096 * 4096)
    assert refused.value.status == 413 and "6000x5000" in str(refused.value)
    img = decode_image(data, 4096 * 4096, min_side=1024)  # 1/4 scale: 1500x1250
    assert img.size == (1500, 1250)
    assert np.abs(np.asarray(img).astype(int) - (200, 30, 30)).max() < 8


def test_orientation_survives_the_reduction():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees to show
    data = encode(Image.new("L", (3000, 2048), 255), "PNG", exif=exif)
    img = decode_image(data, 4096 * 4096, min_side=1024)
    assert img.size == (1500, 1024)
    assert prepare_raw_image(img, GRAY).shape == (1500, 1024)  # upright: taller than wide


@pytest.mark.parametrize("mode", ["P", "1", "LA"])
def test_modes_that_reduce_cannot_take_are_converted_first(mode):
    data = encode(Image.new(mode, (2100, 2100)), "PNG")
    img = decode_image(data, 4096 * 4096, min_side=1024)
    assert img.size == (1050, 1050)


def multipart(*parts: tuple[str, bytes], boundary: str = "b0und") -> bytes:
    body = b""
    for name, content in parts:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                'filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
            + content
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode()


def test_form_field_finds_the_named_part_among_others():
    body = multipart(("other", b"no"), ("file", b"\r\n--b0un not a boundary\r\n"))
    ctype = "multipart/form-data; boundary=b0und"
    assert form_field(body, ctype, "file") == b"\r\n--b0un not a boundary\r\n"
    assert form_field(body, 'multipart/form-data; boundary="b0und"', "file") is not None
    assert form_field(body, ctype, "missing") is None


@pytest.mark.parametrize(
    ("body", "ctype", "detail"),
    [
        (b"--b0und\r\n", "multipart/form-data", "no boundary"),
        (b"nothing here", "multipart/form-data; boundary=b0und", "does not contain"),
        (
            b'--b0und\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
            "multipart/form-data; boundary=b0und",
            "truncated",
        ),
    ],
)
def test_malformed_multipart_is_a_clear_422(body, ctype, detail):
    with pytest.raises(BadInput) as bad:
        form_field(body, ctype, "file")
    assert bad.value.status == 422 and detail in str(bad.value)


def _chunk(kind: bytes, body: bytes, crc_delta: int = 0) -> bytes:
    crc = (zlib.crc32(kind + body) + crc_delta) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _with_chunk(png: bytes, chunk: bytes) -> bytes:
    """``png`` with ``chunk`` placed right after its IHDR."""
    return png[:33] + chunk + png[33:]


def _canvas(mode: str) -> Image.Image:
    pixels = np.random.default_rng(1).integers(0, 256, (90, 130, 4), dtype=np.uint8)
    return Image.fromarray(pixels, "RGBA").convert(mode)


PLAIN = {
    "gray": encode(_canvas("L"), "PNG"),
    "rgb": encode(_canvas("RGB"), "PNG"),
    "rgba": encode(_canvas("RGBA"), "PNG"),
    "rgb with gamma and text": _with_chunk(
        encode(_canvas("RGB"), "PNG"),
        _chunk(b"gAMA", struct.pack(">I", 22000)) + _chunk(b"tEXt", b"k\0v"),
    ),
}


@pytest.mark.parametrize("name", list(PLAIN))
def test_plain_pngs_decode_to_the_same_pixels_by_opencv(name):
    fast = decode_pixels(PLAIN[name], 10**6, min_side=1024)
    assert isinstance(fast, np.ndarray)  # OpenCV's path was taken
    assert np.array_equal(fast, np.asarray(decode_image(PLAIN[name], 10**6, min_side=1024)))
    assert np.array_equal(
        prepare_raw_image(fast, GRAY), prepare_raw_image(Image.open(io.BytesIO(PLAIN[name])), GRAY)
    )


def _exif_png() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: Pillow turns it upright, OpenCV's decode would not
    return encode(_canvas("RGB"), "PNG", exif=exif.tobytes())


OTHERS = {
    "palette": encode(_canvas("P"), "PNG"),
    "palette with transparency": encode(_canvas("P"), "PNG", transparency=0),
    "gray with tRNS": encode(_canvas("L"), "PNG", transparency=7),
    "16-bit": encode(Image.fromarray(np.full((40, 50), 4000, np.uint16)), "PNG"),
    "exif": _exif_png(),
    "icc profile": encode(_canvas("RGB"), "PNG", icc_profile=b"not really a profile"),
    "big (reduced)": encode(Image.new("L", (3000, 2100)), "PNG"),
    "no IEND (Pillow takes it)": PLAIN["rgb"][:-12],
}


@pytest.mark.parametrize("name", list(OTHERS))
def test_other_pngs_take_pillows_path(name):
    fast = decode_pixels(OTHERS[name], 10**7, min_side=1024)
    assert isinstance(fast, Image.Image)
    assert np.array_equal(np.asarray(fast), np.asarray(decode_image(OTHERS[name], 10**7, 1024)))


BROKEN = {
    "bad ancillary crc": _with_chunk(PLAIN["rgb"], _chunk(b"tEXt", b"k\0v", crc_delta=1)),
    "bad data crc": PLAIN["rgb"][:-30] + bytes([PLAIN["rgb"][-30] ^ 1]) + PLAIN["rgb"][-29:],
    "truncated": PLAIN["rgb"][: len(PLAIN["rgb"]) // 2],
    "over the pixel limit": encode(Image.new("L", (1200, 1000)), "PNG"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_pngs_are_refused_as_pillow_refuses_them(name):
    with pytest.raises(BadInput) as pillow:
        np.asarray(decode_image(BROKEN[name], 10**6, 1024))
    with pytest.raises(BadInput) as fast:
        np.asarray(decode_pixels(BROKEN[name], 10**6, 1024))
    assert (fast.value.status, str(fast.value)) == (pillow.value.status, str(pillow.value))
