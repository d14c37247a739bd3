"""Resumable, retried, verified downloads with a progress bar.

A download goes to ``<dest>.part``; an interrupted one resumes from that file's size
with an HTTP Range request (a server that ignores Range answers 200 and we start
over cleanly). The size (Content-Length or known) and sha256 or md5 (when known) are
checked before the file is renamed into place, so a file at ``dest`` is always
complete and verified.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from imgclass.errors import DownloadError
from imgclass.progress import progress

log = logging.getLogger(__name__)

USER_AGENT = "imgclass-downloader/1.0"
BLOCK = 1 << 16


@dataclass
class RetryPolicy:
    """How often and how patiently to retry: delays grow as base * 2**attempt."""

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    timeout: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * (2**attempt))


@dataclass(frozen=True)
class Expected:
    """What the finished file must be; any field may be unknown."""

    size: int | None = None
    sha256: str | None = None
    md5: str | None = None


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, expected: Expected) -> str | None:
    """None when ``path`` matches ``expected``, else what is wrong."""
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        return f"size {size} bytes, expected {expected.size}"
    for algorithm in ("sha256", "md5"):
        want = getattr(expected, algorithm)
        if want and file_digest(path, algorithm) != want.lower():
            return f"{algorithm} mismatch (expected {want})"
    return None


def download(
    url: str, dest: str | Path, expected: Expected | None = None, retry: RetryPolicy | None = None
) -> Path:
    """Download ``url`` to ``dest`` (skipped if ``dest`` exists and verifies)."""
    dest = Path(dest)
    expected = expected or Expected()
    retry = retry or RetryPolicy()
    if (
        dest.exists()
        and (expected.sha256 or expected.md5 or expected.size)
        and verify(dest, expected) is None
    ):
        log.info("%s already downloaded and verified", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error = "no attempt made"
    for attempt in range(retry.attempts):
        try:
            total = _fetch_into(url, part, retry.timeout)
            problem = verify(part, Expected(expected.size or total, expected.sha256, expected.md5))
            if problem is None:
                os.replace(part, dest)
                return dest
            part.unlink(missing_ok=True)  # bad content: start over, do not resume it
            last_error = problem
            if expected.sha256 or expected.md5:
                break  # a checksum mismatch will not fix itself
        except _Retryable as exc:
            last_error = str(exc)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        if attempt + 1 < retry.attempts:
            wait = retry.delay(attempt)
            log.warning("download of %s failed (%s); retrying in %.1f s", url, last_error, wait)
            time.sleep(wait)
    raise DownloadError(f"{url}: {last_error}")


class _Retryable(Exception):
    pass


def _fetch_into(url: str, part: Path, timeout: float) -> int | None:
    """Append the rest of ``url`` to ``part``; returns the total size if the server said."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch, or a stale part: verify decides
            return have
        if exc.code >= 500 or exc.code == 429:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
        raise
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        raise _Retryable(f"connection failed ({exc})") from None
    with response:
        if have and response.status == 200:
            have = 0  # the server ignored Range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        mode = "ab" if have else "wb"
        try:
            with (
                open(part, mode) as f,
                progress(
                    desc=part.name[:-5],
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                ) as bar,
            ):
                while block := response.read(BLOCK):
                    f.write(block)
                    bar.update(len(block))
        except (TimeoutError, ConnectionError, OSError) as exc:
            raise _Retryable(
                f"connection broken after {part.stat().st_size} bytes ({exc})"
            ) from None
    got = part.stat().st_size
    if total is not None and got < total:
        raise _Retryable(f"connection closed after {got} of {total} bytes")
    return total
