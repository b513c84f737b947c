"""Builders of bad Omniglot files for the bounded-reader and CLI-error tests.

Each writes a file of the kind the reliability issue (#15) probed, cheaply:
large claimed sizes are streamed as zeros, never held in memory.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image

MiB = 1 << 20


def npz_with_header(path, shape, dtype=np.bool_, *, fill_bytes: int | None = None):
    """Writes an ``.npz`` whose ``images`` header says ``shape``/``dtype``.

    The data written is ``fill_bytes`` zero bytes (default: as many as the
    header claims), streamed so the test itself never holds them in memory.
    """
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
    )
    total = int(np.prod(shape)) * np.dtype(dtype).itemsize if fill_bytes is None else fill_bytes
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("images.npy", "w", force_zip64=True) as f:
            f.write(b"\x93NUMPY\x01\x00" + header.getvalue()[8:])
            zeros = bytes(8 * MiB)
            while total > 0:
                f.write(zeros[: min(total, len(zeros))])
                total -= len(zeros)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A 1-bit PNG that claims ``width`` x ``height`` but holds one row of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\xff" * ((width + 7) // 8))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png_of_size(size: int) -> bytes:
    """A blank (all background) 1-bit PNG of ``size`` x ``size``."""
    buf = io.BytesIO()
    Image.new("1", (size, size), 1).save(buf, format="PNG")
    return buf.getvalue()
