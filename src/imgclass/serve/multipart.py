"""One field of a ``multipart/form-data`` body, found with ``bytes.find``.

``/v1/predict`` takes one image in the field ``file``. Starlette's form parser streams
every part through python-multipart into a spooled temporary file, on the event loop;
the body is already in memory (at most ``max_body_bytes``), so the part is cut out of
it directly, on a worker thread. RFC 7578: parts are separated by ``--boundary`` lines,
each starts with headers, and ``Content-Disposition: form-data; name="..."`` names it.
"""

from __future__ import annotations

import re

from imgclass.serve.predictor import BadInput

_BOUNDARY = re.compile(r';\s*boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_NAME = re.compile(rb'(?:^|;)\s*name\s*=\s*(?:"([^"]*)"|([^;\s]+))', re.IGNORECASE)
_DISPOSITION = re.compile(rb"^content-disposition:(.*)$", re.IGNORECASE | re.MULTILINE)


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a multipart Content-Type header; 422 without one."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise BadInput("the multipart Content-Type has no boundary")
    return (match.group(1) or match.group(2)).encode("latin-1")


def form_field(body: bytes, content_type: str, field: str) -> bytes | None:
    """The content of the first part named ``field``, or None if there is none.

    Raises BadInput (422) when the body is not multipart as its header says.
    """
    delimiter = b"--" + boundary_of(content_type)
    at = body.find(delimiter)
    if at < 0:
        raise BadInput("the multipart body does not contain its boundary")
    wanted = field.encode()
    while True:
        at += len(delimiter)
        if body.startswith(b"--", at):  # the closing delimiter
            return None
        head_end = body.find(b"\r\n\r\n", at)
        end = body.find(b"\r\n" + delimiter, head_end + 4)
        if head_end < 0 or end < 0:
            raise BadInput("the multipart body is truncated or malformed")
        if _part_name(body[at:head_end]) == wanted:
            return body[head_end + 4 : end]
        at = end + 2


def _part_name(headers: bytes) -> bytes | None:
    disposition = _DISPOSITION.search(headers.replace(b"\r\n", b"\n"))
    if disposition is None:
        return None
    name = _NAME.search(disposition.group(1).strip())
    if name is None:
        return None
    return name.group(1) if name.group(1) is not None else name.group(2)
