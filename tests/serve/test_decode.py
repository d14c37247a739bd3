"""Decoding uploads: big images reduced while decoding, small ones untouched, the pixel
limit checked at the scale actually decoded; the multipart field reader."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from imgclass.data.preprocess import prepare_raw_image
from imgclass.serve.multipart import form_field
from imgclass.serve.predictor import BadInput, decode_image

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
