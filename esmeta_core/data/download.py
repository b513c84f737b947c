"""Fetching files over HTTP(S) into a cache, checked by SHA-256.

A download is written to a temporary file beside its destination and moved
into place only when its size and hash are right, so an interrupted or
corrupt download never leaves a file in the cache that looks complete.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


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
    start = time.monotonic()
    try:
        digest = hashlib.sha256()
        received = 0
        try:
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=min(timeout_s, deadline_s)) as r,
            ):
                expected = r.headers.get("Content-Length")
                if max_bytes is not None and expected is not None and int(expected) > max_bytes:
                    raise DownloadError(
                        f"{url} announces {expected} bytes, but the file is known to have "
                        f"{max_bytes}. Nothing was kept."
                    )
                read = getattr(r, "read1", r.read)
                while True:
                    left = deadline_s - (time.monotonic() - start)
                    if left <= 0:
                        raise TimeoutError("deadline")
                    _limit_next_read(r, min(timeout_s, left))
                    chunk = read(1 << 16)
                    if not chunk:
                        break
                    if max_bytes is not None and received + len(chunk) > max_bytes:
                        raise DownloadError(
                            f"{url} sent more than the {max_bytes} bytes the file is known to "
                            "have. Nothing was kept."
                        )
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
        except DownloadError:
            raise
        except TimeoutError as e:
            if time.monotonic() - start >= deadline_s:
                raise DownloadError(
                    f"Downloading {url} took longer than {deadline_s:g} s "
                    f"({received} bytes received). Nothing was kept; run again to retry."
                ) from e
            raise DownloadError(f"Downloading {url} failed after {received} bytes: {e}") from e
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            raise DownloadError(f"Downloading {url} failed after {received} bytes: {e}") from e
        if expected is not None and received != int(expected):
            raise DownloadError(
                f"Downloading {url} stopped early: got {received} of {expected} bytes. "
                "Nothing was kept; run again to retry."
            )
        if digest.hexdigest() != sha256:
            raise DownloadError(
                f"The file downloaded from {url} has SHA-256 {digest.hexdigest()}, "
                f"expected {sha256}. It was deleted; the server may hold a different "
                "or corrupt file."
            )
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)
