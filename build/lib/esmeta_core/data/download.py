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


def fetch(url: str, dest: str | os.PathLike, *, sha256: str, timeout_s: float = 60.0) -> Path:
    """Downloads ``url`` to ``dest`` unless a file with the right hash is there.

    Args:
      url: where to download from (``http://``, ``https://`` or ``file://``).
      dest: the file to create; its folder is created if needed.
      sha256: the expected hex SHA-256 of the file.
      timeout_s: socket timeout in seconds.

    Returns:
      The path of the verified file.

    Raises:
      DownloadError: the server could not be reached, the transfer stopped
        early, or the hash differs. No partial file is left at ``dest``.
    """
    dest = Path(dest)
    if dest.exists() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        received = 0
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as r:
                expected = r.headers.get("Content-Length")
                while chunk := r.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
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
