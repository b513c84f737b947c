"""Omniglot through tensorflow-datasets: ``tfds.load("omniglot")`` as a data source.

Colab and Kaggle runtimes ship TensorFlow and tensorflow-datasets; elsewhere
``pip install 'esmeta_core[tfds]'`` adds them. This source is chosen explicitly
(``load_split(..., source="tfds")`` or ``ESMETA_DATA_SOURCE=tfds``), never by
default. tfds downloads the same original archives as the files source and keeps
its prepared copy in ``data_dir`` / ``$TFDS_DATA_DIR`` (default
``~/tensorflow_datasets``). This module only turns that copy into raw arrays laid
out like :func:`esmeta_core.data.omniglot.read_npz` (bool, True = background);
inversion, resizing, rotations and the Vinyals split lists are then the files
source's own code, in :func:`esmeta_core.data.omniglot.load_split`.

How tfds' ``omniglot`` (version 3.0.0) maps onto the original files:

- ``label`` is the original file id minus 1 (the ``0108`` of ``0108_01.png``);
- ``alphabet`` (names: the archive folders) and ``alphabet_char_id``
  (``characterNN`` minus 1) are checked, for every image, against
  :mod:`esmeta_core.data.alphabets`, so a character is the same character in
  both sources;
- ``image`` is uint8[105, 105, 3] with ink 0 and background 255;
- tfds split ``train`` is the background half (ids 1-964) and ``test`` the
  evaluation half (965-1623); ``small1`` / ``small2`` are subsets of ``train``.

Drawing order. tfds keeps no drawer number (the ``_01`` of the file name) and
shuffles examples when it prepares the data set, so the 20 drawings of a
character are put in a canonical order (:func:`canonical_order`). They are the
same 20 images as in the archives, in another order: episodes sampled with the
same seed from the two sources use the same classes but may pick other drawings.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

import numpy as np

from esmeta_core.data import alphabets, raw

TFDS_NAME = "omniglot"
TFDS_SPLITS = ("train", "test")  # background, evaluation
INSTALL_HINT = (
    "The tfds source needs TensorFlow and tensorflow-datasets (preinstalled on Colab and "
    "Kaggle): pip install 'esmeta_core[tfds]'. Or use the default files source "
    "(unset ESMETA_DATA_SOURCE, or pass source='files')."
)


def import_tfds():
    """Imports and returns ``tensorflow_datasets``, with TensorFlow behind it.

    Raises:
      ImportError: TensorFlow or tensorflow-datasets is missing, with how to install them.
    """
    try:
        importlib.import_module("tensorflow")
        return importlib.import_module("tensorflow_datasets")
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({type(e).__name__}: {e})") from e


def canonical_order(drawings: np.ndarray) -> np.ndarray:
    """Sorts the drawings of one character by their packed pixels.

    Args:
      drawings: bool[n, h, w] in any order.

    Returns:
      bool[n, h, w]: the same drawings in an order that depends only on their
      pixels, so two sources that list them differently agree.
    """
    keys = [np.packbits(d).tobytes() for d in drawings]
    return drawings[sorted(range(len(keys)), key=keys.__getitem__)]


def _validate_identity(file_id: int, alphabet: str, alphabet_char_id: int) -> None:
    """Raises unless tfds' alphabet and character number agree with the file id."""
    expected = alphabets.alphabet_of(file_id)
    character = file_id - alphabets.FIRST_ID[expected] + 1
    if (alphabet, alphabet_char_id + 1) != (expected, character):
        raise raw.DataCorruptError(
            f"tfds omniglot labels file id {file_id:04d} as {alphabet}/character"
            f"{alphabet_char_id + 1:02d}, but in the original archives it is {expected}/"
            f"character{character:02d}. This tfds version maps Omniglot differently; use "
            "the files source (source='files')."
        )


def read_tfds(
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    splits: Sequence[str] = TFDS_SPLITS,
    batch_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Reads every character that tfds' ``omniglot`` holds in ``splits``.

    Args:
      data_dir: tfds' data folder; default ``$TFDS_DATA_DIR``, then tfds' own default.
      download: let tfds download and prepare the data set when it is not there.
      splits: tfds splits to read (``train`` = background, ``test`` = evaluation).
      batch_size: images decoded per step (memory: ``batch_size`` x 33 kB).

    Returns:
      images: bool[n_characters, 20, 105, 105], True = background (as
        :func:`~esmeta_core.data.omniglot.read_npz`), characters by file id, the 20
        drawings of each in :func:`canonical_order`.
      file_ids: i64[n_characters], ascending.

    Raises:
      ImportError: TensorFlow or tensorflow-datasets cannot be imported.
      DataNotFoundError: tfds could not load (or download) the data set.
      DataCorruptError: labels that contradict the original file ids, a
        character without exactly 20 drawings, or blank or inverted images.

    With the whole data set, ``images.shape`` is ``(1623, 20, 105, 105)`` and
    ``file_ids[:2]`` is ``[1, 2]`` (``tests/test_data_tfds.py`` reads a real archive).
    """
    tfds = import_tfds()
    if data_dir is None:
        data_dir = os.environ.get(raw.TFDS_DATA_DIR_ENV)
    datasets, info = _load(tfds, data_dir=data_dir, download=download, splits=splits)
    alphabet_names = info.features["alphabet"].names
    by_id: dict[int, list[np.ndarray]] = {}
    for dataset in datasets:
        for batch in tfds.as_numpy(dataset.batch(batch_size)):
            _add_batch(by_id, batch, alphabet_names)
    if not by_id:
        raise raw.DataNotFoundError(f"tfds omniglot splits {list(splits)} hold no images.")
    file_ids = np.array(sorted(by_id), np.int64)
    out = np.stack([_character(by_id[int(file_id)], int(file_id)) for file_id in file_ids])
    background = float(out.mean())
    if not raw.MIN_BACKGROUND_FRACTION <= background < 1.0:  # the files source's check
        raise raw.DataCorruptError(
            f"tfds omniglot images are {background:.0%} background; Omniglot drawings are "
            "about 92 % background (white), so these are blank or inverted."
        )
    return out, file_ids


def _load(tfds, *, data_dir: str | os.PathLike | None, download: bool, splits: Sequence[str]):
    """``tfds.load`` of ``splits`` with the data set's info; DataNotFoundError if it fails."""
    try:
        return tfds.load(
            TFDS_NAME,
            split=list(splits),
            data_dir=None if data_dir is None else os.fspath(data_dir),
            download=download,
            shuffle_files=False,
            with_info=True,
        )
    except Exception as e:  # tfds raises many types (network, missing files, registry)
        where = data_dir or f"tfds' default data dir (${raw.TFDS_DATA_DIR_ENV} unset)"
        raise raw.DataNotFoundError(
            f"tensorflow-datasets could not load {TFDS_NAME!r} from {where} "
            f"(download={download}): {type(e).__name__}: {e}\n"
            "Run once with internet access, or use the files source with an offline copy: "
            "unset ESMETA_DATA_SOURCE and set ESMETA_DATA_DIR."
        ) from e


def _add_batch(
    by_id: dict[int, list[np.ndarray]], batch: dict[str, np.ndarray], alphabet_names: Sequence[str]
) -> None:
    """Appends each image of one tfds batch, as bool[105, 105] background, to its file id."""
    images = batch["image"]  # u8[b, 105, 105, 3]
    if images.shape[1:3] != (raw.RAW_SIZE, raw.RAW_SIZE):
        raise raw.DataCorruptError(f"tfds omniglot image shape {images.shape[1:]}.")
    background = images[..., 0] >= 128  # bool[b, 105, 105]
    rows = zip(batch["label"], batch["alphabet"], batch["alphabet_char_id"], strict=True)
    for k, (label, alphabet, char_id) in enumerate(rows):
        file_id = int(label) + 1
        _validate_identity(file_id, alphabet_names[int(alphabet)], int(char_id))
        by_id.setdefault(file_id, []).append(background[k])


def _character(drawings: list[np.ndarray], file_id: int) -> np.ndarray:
    """bool[20, 105, 105]: one character's drawings in :func:`canonical_order`."""
    if len(drawings) != raw.IMAGES_PER_CHARACTER:
        raise raw.DataCorruptError(
            f"tfds omniglot has {len(drawings)} drawings of character {file_id:04d}, "
            f"expected {raw.IMAGES_PER_CHARACTER}."
        )
    return canonical_order(np.stack(drawings))
