"""Fetching files over HTTP(S) into a cache, checked by SHA-256.

A download is written to a temporary file beside its destination and moved
into place only when its size and hash are right, so an interrupted or
corrupt download never leaves a file in the cache that looks complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO


class DownloadError(RuntimeError):
    """A file could not be downloaded, or its contents were not the expected ones."""


def sha256_of(path: str | os.PathLike, *, chunk_bytes: int = 1 << 20) -> str:
    """Returns the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _limit_next_read(response, seconds: float) -> None:
    """Caps the socket wait of the next read of an HTTP response (no-op for ``file://``)."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 1e-3))


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str,
    timeout_s: float = 60.0,
    deadline_s: float = 600.0,
    max_bytes: int | None = None,
) -> Path:
    """Downloads ``url`` to ``dest`` unless a file with the right hash is there.

    Args:
      url: where to download from (``http://``, ``https://`` or ``file://``).
      dest: the file to create; its folder is created if needed.
      sha256: the expected hex SHA-256 of the file.
      timeout_s: the longest wait for any one network operation, in seconds.
      deadline_s: the longest the whole transfer may take, in seconds: a
        server that drip-feeds bytes is cut off here, not only a silent one.
      max_bytes: the file's known size; a larger ``Content-Length`` is refused
        before anything is read, and the transfer stops before the first byte
        past this size is written.

    Returns:
      The path of the verified file.

    Raises:
      DownloadError: the server could not be reached, the transfer stopped
        early, took longer than ``deadline_s``, was larger than ``max_bytes``,
        or the hash differs. No partial file is left at ``dest``.
    """
    dest = Path(dest)
    if dest.exists() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            got = _download(
                url, out, timeout_s=timeout_s, deadline_s=deadline_s, max_bytes=max_bytes
            )
        _verify(url, got, sha256=sha256)
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


@dataclasses.dataclass
class _Transfer:
    """What a download has received so far: its running SHA-256 and byte count."""

    digest: Any = dataclasses.field(default_factory=hashlib.sha256)
    received: int = 0
    expected: str | None = None  # the Content-Length header, if the server sent one


def _download(
    url: str, out: BinaryIO, *, timeout_s: float, deadline_s: float, max_bytes: int | None
) -> _Transfer:
    """Writes ``url``'s bytes to ``out``; DownloadError for every way the transfer can fail."""
    start = time.monotonic()
    got = _Transfer()
    try:
        with urllib.request.urlopen(url, timeout=min(timeout_s, deadline_s)) as r:
            got.expected = r.headers.get("Content-Length")
            if max_bytes is not None and got.expected is not None:
                if int(got.expected) > max_bytes:
                    raise DownloadError(
                        f"{url} announces {got.expected} bytes, but the file is known to have "
                        f"{max_bytes}. Nothing was kept."
                    )
            _copy(r, out, got, url=url, start=start, timeout_s=timeout_s, deadline_s=deadline_s,
                  max_bytes=max_bytes)  # fmt: skip
    except DownloadError:
        raise
    except TimeoutError as e:
        if time.monotonic() - start >= deadline_s:
            raise DownloadError(
                f"Downloading {url} took longer than {deadline_s:g} s "
                f"({got.received} bytes received). Nothing was kept; run again to retry."
            ) from e
        raise DownloadError(f"Downloading {url} failed after {got.received} bytes: {e}") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise DownloadError(f"Downloading {url} failed after {got.received} bytes: {e}") from e
    return got


def _copy(
    response: Any,
    out: BinaryIO,
    got: _Transfer,
    *,
    url: str,
    start: float,
    timeout_s: float,
    deadline_s: float,
    max_bytes: int | None,
) -> None:
    """Copies the response in 64 KiB chunks, within the deadline and ``max_bytes``."""
    read = getattr(response, "read1", response.read)
    while True:
        left = deadline_s - (time.monotonic() - start)
        if left <= 0:
            raise TimeoutError("deadline")
        _limit_next_read(response, min(timeout_s, left))
        chunk = read(1 << 16)
        if not chunk:
            return
        if max_bytes is not None and got.received + len(chunk) > max_bytes:
            raise DownloadError(
                f"{url} sent more than the {max_bytes} bytes the file is known to "
                "have. Nothing was kept."
            )
        out.write(chunk)
        got.digest.update(chunk)
        got.received += len(chunk)


def _verify(url: str, got: _Transfer, *, sha256: str) -> None:
    """Raises DownloadError unless the whole announced size arrived with the right hash."""
    if got.expected is not None and got.received != int(got.expected):
        raise DownloadError(
            f"Downloading {url} stopped early: got {got.received} of {got.expected} bytes. "
            "Nothing was kept; run again to retry."
        )
    if got.digest.hexdigest() != sha256:
        raise DownloadError(
            f"The file downloaded from {url} has SHA-256 {got.digest.hexdigest()}, "
            f"expected {sha256}. It was deleted; the server may hold a different "
            "or corrupt file."
        )
