"""What a raw Omniglot array is, shared by both sources (files and tfds).

A raw split is ``bool[n_characters, IMAGES_PER_CHARACTER, RAW_SIZE, RAW_SIZE]``,
True = background, as the original 105x105 PNGs store it. The two errors are the
ones every reader raises. :mod:`esmeta_core.data.omniglot` (which reaches
:mod:`esmeta_core.data.tfds_source` lazily: it imports TensorFlow) and
``tfds_source`` both take them from here, so ``tfds_source`` does not import
``omniglot`` back.
"""

from __future__ import annotations

IMAGES_PER_CHARACTER = 20
RAW_SIZE = 105
MIN_BACKGROUND_FRACTION = 0.5  # real drawings are about 92 % background
TFDS_DATA_DIR_ENV = "TFDS_DATA_DIR"  # tensorflow-datasets' own variable


class DataNotFoundError(FileNotFoundError):
    """Omniglot is not where the project looked, and could not be downloaded."""


class DataCorruptError(ValueError):
    """An Omniglot file exists but cannot be read or has the wrong contents."""
