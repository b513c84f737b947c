"""Omniglot for few-shot learning: sources, preprocessing and splits.

Where the data comes from. The default source, ``files``, looks in this order:

1. ``data_dir``, or the folder named by ``$ESMETA_DATA_DIR``: either the
   offline arrays ``images_background.npz`` / ``images_evaluation.npz`` or the
   original archives ``images_background.zip`` / ``images_evaluation.zip``,
   and the split lists under ``splits/vinyals/``.
2. The cache, ``$ESMETA_CACHE_DIR`` (default ``~/.cache/esmeta/omniglot``),
   filled by earlier downloads.
3. A download of the original archives (github.com/brendenlake/omniglot) and
   of the Vinyals split lists (github.com/jakesnell/prototypical-networks),
   every file checked against its SHA-256.

The ``tfds`` source, chosen explicitly (``source="tfds"`` or
``$ESMETA_DATA_SOURCE=tfds``), reads the images through
``tfds.load("omniglot")`` instead (see :mod:`esmeta_core.data.tfds_source`); the
split lists still come from ``data_dir`` / ``$ESMETA_DATA_DIR``, the cache or a
download, and the preprocessing below is the same code for both sources.

Preprocessing follows Vinyals et al. (2016) and Snell et al. (2017): ink is 1
and background 0, images are resized to 28x28 by area averaging, and each
character rotated by 0, 90, 180 and 270 degrees is its own class.
"""

from __future__ import annotations

import functools
import io
import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from esmeta_core.data import alphabets
from esmeta_core.data.download import DownloadError, fetch, sha256_of
from esmeta_core.data.raw import (  # noqa: F401 (re-exported: part of this module's API)
    IMAGES_PER_CHARACTER,
    MIN_BACKGROUND_FRACTION,
    RAW_SIZE,
    TFDS_DATA_DIR_ENV,
    DataCorruptError,
    DataNotFoundError,
)

DATA_DIR_ENV = "ESMETA_DATA_DIR"
CACHE_DIR_ENV = "ESMETA_CACHE_DIR"
ARCHIVE_URL_ENV = "ESMETA_OMNIGLOT_URL"
SPLITS_URL_ENV = "ESMETA_SPLITS_URL"
SOURCE_ENV = "ESMETA_DATA_SOURCE"
SOURCES = ("files", "tfds")  # the first is the default
DEFAULT_ARCHIVE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
DEFAULT_SPLITS_URL = (
    "https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/"
    "data/omniglot/splits/vinyals/"
)

# SHA-256 of the original archives (as published in tensorflow-datasets'
# url_checksums/omniglot.txt) and of the Vinyals split lists.
ARCHIVE_SHA256 = {
    "images_background.zip": "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640",
    "images_evaluation.zip": "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee",
    "images_background_small1.zip": (
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"
    ),
    "images_background_small2.zip": (
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"
    ),
}
SPLIT_SHA256 = {
    "train": "984522c194c30fb678ce53304a160a42faf5403ad4f9a67010f32dd3a35738e0",
    "val": "11f99e54faee3e26f53d3231c1cceac5bf7b8730e9be31cb6dab256551dc0c1a",
    "trainval": "5276ae50c755596d0bff7f2284e85625695549a85ee6e36b6491ad1e5d1cc26a",
    "test": "845264cc5c156180828ccf17915668b17ee21424d0170df6e7d81676aa5d1204",
}
# Sizes in bytes (tensorflow-datasets' url_checksums/omniglot.txt; the split
# lists as verified by the hashes above): downloads stop at these sizes.
ARCHIVE_BYTES = {
    "images_background.zip": 9464212,
    "images_evaluation.zip": 6462886,
    "images_background_small1.zip": 1319022,
    "images_background_small2.zip": 1580917,
}
SPLIT_BYTES = {"train": 133244, "val": 21312, "trainval": 154556, "test": 50372}
VINYALS_SPLITS = tuple(SPLIT_SHA256)
ALPHABET_SPLITS = ("background", "evaluation")
SPLITS = VINYALS_SPLITS + ALPHABET_SPLITS
PARTS = ("background", "evaluation")  # the two halves of the original data
ROTATIONS = (0, 90, 180, 270)
# Characters per split (Vinyals' lists; the original background / evaluation halves) and
# classes per split (each rotation of a character is a class). The data tests check them
# against the files; configs and evaluation read them from here.
SPLIT_CHARACTERS = {
    "train": 1028,
    "val": 172,
    "trainval": 1200,
    "test": 423,
    "background": 964,
    "evaluation": 659,
}
SPLIT_CLASSES = {split: len(ROTATIONS) * n for split, n in SPLIT_CHARACTERS.items()}


class OmniglotSplit(NamedTuple):
    """One split of Omniglot, held in memory.

    Attributes:
      images: f32[num_classes, 20, size, size], ink = 1, background = 0.
      class_names: ``<Alphabet>/character<NN>/rot<DDD>`` for each class.
      alphabets: the alphabet folder name of each class.
      character_ids: i32[num_classes], the original file id of each class.
      rotations: i32[num_classes], the rotation in degrees of each class.
    """

    images: np.ndarray
    class_names: tuple[str, ...]
    alphabets: tuple[str, ...]
    character_ids: np.ndarray
    rotations: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_characters(self) -> int:
        return len(set(self.character_ids.tolist()))


# ----------------------------------------------------------------------------
# Finding the files.


def cache_dir() -> Path:
    """The download cache: ``$ESMETA_CACHE_DIR`` or ``~/.cache/esmeta/omniglot``."""
    return Path(os.environ.get(CACHE_DIR_ENV, Path.home() / ".cache" / "esmeta" / "omniglot"))


def _not_found(looked: list[Path], why: str) -> DataNotFoundError:
    places = "\n".join(f"  - {p}" for p in looked)
    return DataNotFoundError(
        f"Omniglot was not found. {why}\nLooked in:\n{places}\n"
        "Two ways to fix it:\n"
        "  1. Online: run again with internet access; the original archives (16 MB) are\n"
        f"     downloaded, checked and cached in {cache_dir()} (set ${CACHE_DIR_ENV} to move it).\n"
        f"  2. Offline: set ${DATA_DIR_ENV} to a folder holding images_background.npz and\n"
        "     images_evaluation.npz (or the original images_background.zip and\n"
        "     images_evaluation.zip) and splits/vinyals/*.txt, e.g.\n"
        f"     export {DATA_DIR_ENV}=../shared/data/omniglot"
    )


def _part_file(folder: Path, part: str) -> Path | None:
    for name in (f"images_{part}.npz", f"images_{part}.zip"):
        if (folder / name).is_file():
            return folder / name
    return None


def resolve_data_dir(data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Returns the folder that holds both halves of Omniglot, downloading if needed.

    Args:
      data_dir: a folder to use; ``None`` reads ``$ESMETA_DATA_DIR``, then the cache.
      download: whether to download into the cache when nothing is found.

    Raises:
      DataNotFoundError: with where it looked and how to fix it.
    """
    explicit = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if explicit:
        folder = Path(explicit).expanduser()
        if all(_part_file(folder, p) for p in PARTS):
            return folder
        source = "data_dir" if data_dir is not None else f"${DATA_DIR_ENV}"
        raise _not_found([folder], f"{source} points at {folder}, which lacks the image files.")
    folder = cache_dir()
    if all(_part_file(folder, p) for p in PARTS):
        return folder
    if not download:
        raise _not_found([folder], f"${DATA_DIR_ENV} is not set and download=False.")
    base = os.environ.get(ARCHIVE_URL_ENV, DEFAULT_ARCHIVE_URL)
    try:
        for part in PARTS:
            name = f"images_{part}.zip"
            fetch(
                base + name,
                folder / name,
                sha256=ARCHIVE_SHA256[name],
                max_bytes=ARCHIVE_BYTES[name],
            )
    except DownloadError as e:
        raise _not_found(
            [folder], f"${DATA_DIR_ENV} is not set and the download failed: {e}"
        ) from e
    return folder


def split_list_path(split: str, data_dir: Path, *, download: bool = True) -> Path:
    """Returns the verified ``splits/vinyals/<split>.txt``, downloading if needed."""
    if split not in SPLIT_SHA256:
        raise ValueError(f"Unknown Vinyals split {split!r}; choose one of {VINYALS_SPLITS}.")
    for folder in (data_dir, cache_dir()):
        path = folder / "splits" / "vinyals" / f"{split}.txt"
        if path.is_file():
            digest = sha256_of(path)
            if digest != SPLIT_SHA256[split]:
                raise DataCorruptError(
                    f"{path} has SHA-256 {digest}, expected {SPLIT_SHA256[split]}: it is not "
                    "the standard Vinyals split list. Delete it (it is downloaded again) or "
                    "replace it with the original."
                )
            return path
    dest = cache_dir() / "splits" / "vinyals" / f"{split}.txt"
    if not download:
        raise _not_found([data_dir / "splits" / "vinyals", dest.parent], f"No {split}.txt.")
    base = os.environ.get(SPLITS_URL_ENV, DEFAULT_SPLITS_URL)
    try:
        return fetch(
            base + f"{split}.txt", dest, sha256=SPLIT_SHA256[split], max_bytes=SPLIT_BYTES[split]
        )
    except DownloadError as e:
        raise _not_found([data_dir / "splits" / "vinyals", dest.parent], str(e)) from e


# ----------------------------------------------------------------------------
# Reading the two formats.


# Bounds checked before anything is decompressed: a file cannot make the
# readers allocate more than a genuine Omniglot file would.
MAX_PNG_BYTES = 1 << 16  # an original 105x105 1-bit PNG is under 1 KiB
# every PNG of the two original archives, plus as many folder entries
MAX_ZIP_MEMBERS = 2 * alphabets.NUM_CHARACTERS * IMAGES_PER_CHARACTER
NPZ_HEADER_SLACK = 1 << 12  # the .npy header before the array data


def _corrupt(path: Path, what: str) -> DataCorruptError:
    return DataCorruptError(
        f"{path}: {what} Replace it with a good copy, or point ${DATA_DIR_ENV} elsewhere."
    )


def npz_header(path: str | os.PathLike, key: str = "images") -> tuple[tuple[int, ...], np.dtype]:
    """Reads the shape and dtype of array ``key`` of an ``.npz`` without loading it.

    Also checks that the zip member's declared size is what that shape and
    dtype take, so that a small file cannot claim a huge array.

    Raises:
      DataCorruptError: not an ``.npz``, no ``key``, or sizes that disagree.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(f"{key}.npy")
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(f)
    except KeyError:
        raise _corrupt(path, f"it holds no {key!r} array.") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise _corrupt(
            path, f"it cannot be read as an Omniglot .npz ({type(e).__name__}: {e})."
        ) from e
    data_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not data_bytes <= info.file_size <= data_bytes + NPZ_HEADER_SLACK:
        raise _corrupt(
            path,
            f"{key!r} claims shape {shape} ({data_bytes} bytes) but its zip member holds "
            f"{info.file_size} bytes.",
        )
    return tuple(shape), dtype


def read_npz(path: str | os.PathLike, *, characters: int | None = None) -> np.ndarray:
    """Reads an offline ``images_*.npz``: bool[n_characters, 20, 105, 105], True = background.

    The header (shape, dtype) is checked before the array is loaded, so a
    corrupt file is rejected without allocating what it claims.

    Args:
      path: the ``.npz`` file.
      characters: the number of characters it must hold (964 for the
        background half, 659 for the evaluation half); ``None`` accepts up to
        1623.

    Raises:
      DataCorruptError: wrong shape or dtype (float images are refused: NaN
        or grey values cannot be told from ink), no ink, or inverted images.
    """
    path = Path(path)
    shape, dtype = npz_header(path)
    if dtype != np.bool_:
        raise _corrupt(
            path,
            f"'images' has dtype {dtype}, expected bool (True = background, False = ink); "
            "float or integer images (NaN, grey levels) are not accepted.",
        )
    if len(shape) != 4 or shape[1:] != (IMAGES_PER_CHARACTER, RAW_SIZE, RAW_SIZE):
        raise _corrupt(path, f"'images' has shape {shape}, expected (n, 20, 105, 105).")
    limit = alphabets.NUM_CHARACTERS if characters is None else characters
    if (characters is not None and shape[0] != characters) or not 0 < shape[0] <= limit:
        expected = characters if characters is not None else f"1 to {limit}"
        raise _corrupt(path, f"'images' holds {shape[0]} characters, expected {expected}.")
    try:
        with np.load(path) as f:
            images = f["images"]
    except Exception as e:  # numpy raises many types for a broken file
        raise _corrupt(
            path, f"it cannot be read as an Omniglot .npz ({type(e).__name__}: {e})."
        ) from e
    background = float(images.mean())
    if background == 1.0:
        raise _corrupt(path, "its images hold no ink at all (every pixel is background).")
    if background < MIN_BACKGROUND_FRACTION:
        raise _corrupt(
            path,
            f"only {background:.0%} of its pixels are background (True); Omniglot drawings "
            "are about 92 % background, so the images look inverted (True must be background).",
        )
    return images


def read_zip(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads an original archive (``images_background.zip`` or a ``_small`` one).

    Member sizes are checked before anything is decompressed, and every PNG
    must be 105x105 before it is decoded (no decompression bombs).

    Returns:
      images: bool[n_characters, 20, 105, 105], True = background, as in the
        ``.npz`` files; characters in file-id order, drawers 01..20.
      file_ids: i64[n_characters], the original file id of each character.

    Raises:
      DataCorruptError: unreadable archive, oversized members, images of the
        wrong size, or characters lacking drawings.
    """
    from PIL import Image  # noqa: PLC0415  (only this reader needs Pillow)

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = [i for i in archive.infolist() if i.filename.endswith(".png")]
            if len(archive.infolist()) > MAX_ZIP_MEMBERS:
                raise _corrupt(
                    path,
                    f"it has {len(archive.infolist())} members, at most "
                    f"{MAX_ZIP_MEMBERS} expected.",
                )
            for info in members:
                if info.file_size > MAX_PNG_BYTES:
                    raise _corrupt(
                        path,
                        f"member {info.filename} unpacks to {info.file_size} bytes; an Omniglot "
                        f"PNG is under {MAX_PNG_BYTES}.",
                    )
            by_id: dict[int, dict[int, np.ndarray]] = {}
            for info in members:
                name = info.filename
                stem = name.rsplit("/", 1)[-1][: -len(".png")]
                char_id, drawer = (int(s) for s in stem.split("_"))
                with Image.open(io.BytesIO(archive.read(info))) as im:
                    if im.size != (RAW_SIZE, RAW_SIZE):
                        raise _corrupt(
                            path, f"{name} is {im.size[0]}x{im.size[1]}, expected 105x105."
                        )
                    by_id.setdefault(char_id, {})[drawer] = np.asarray(im.convert("1"), bool)
    except DataCorruptError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise DataCorruptError(
            f"{path} is not a readable Omniglot archive ({type(e).__name__}: {e}). Delete it "
            "and download again, or point $ESMETA_DATA_DIR at a good copy."
        ) from e
    if not by_id:
        raise DataCorruptError(f"{path} holds no Omniglot PNG files.")
    file_ids = np.array(sorted(by_id), dtype=np.int64)
    images = np.empty((len(file_ids), IMAGES_PER_CHARACTER, RAW_SIZE, RAW_SIZE), bool)
    for i, char_id in enumerate(file_ids):
        drawers = by_id[int(char_id)]
        if sorted(drawers) != list(range(1, IMAGES_PER_CHARACTER + 1)):
            raise DataCorruptError(
                f"{path}: character {char_id:04d} lacks some of its 20 drawings."
            )
        images[i] = np.stack([drawers[d] for d in range(1, IMAGES_PER_CHARACTER + 1)])
    return images, file_ids


def read_part(folder: Path, part: str) -> np.ndarray:
    """Reads one half (``background`` or ``evaluation``) from ``.npz`` or ``.zip``."""
    path = _part_file(folder, part)
    if path is None:
        raise _not_found([folder], f"No images_{part}.npz or images_{part}.zip.")
    expected = (
        alphabets.NUM_BACKGROUND
        if part == "background"
        else (alphabets.NUM_CHARACTERS - alphabets.NUM_BACKGROUND)
    )
    if path.suffix == ".npz":
        images = read_npz(path, characters=expected)
    else:
        images, file_ids = read_zip(path)
        first = 1 if part == "background" else alphabets.NUM_BACKGROUND + 1
        if not np.array_equal(file_ids, np.arange(first, first + len(file_ids))):
            raise DataCorruptError(f"{path}: character ids are not contiguous from {first}.")
    if len(images) != expected:
        raise DataCorruptError(f"{path} holds {len(images)} characters, expected {expected}.")
    return images


# ----------------------------------------------------------------------------
# Preprocessing.


def area_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """f32[size_out, size_in]: row r averages the input pixels that output pixel r covers."""
    edges = np.linspace(0.0, size_in, size_out + 1)
    left, right = edges[:-1, None], edges[1:, None]
    pixel = np.arange(size_in)[None, :]
    overlap = np.clip(np.minimum(right, pixel + 1) - np.maximum(left, pixel), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def preprocess(raw: np.ndarray, *, size: int = 28) -> np.ndarray:
    """Inverts and resizes raw images: bool[..., 105, 105] (True = background) to f32[..., s, s].

    Ink becomes 1. Resizing averages the area each output pixel covers, so
    values lie in [0, 1].
    """
    resize = area_resize_matrix(raw.shape[-1], size)
    flat = raw.reshape(-1, raw.shape[-2], raw.shape[-1])
    out = np.empty((flat.shape[0], size, size), np.float32)
    for start in range(0, flat.shape[0], 4096):  # bounded temporary memory
        ink = 1.0 - flat[start : start + 4096].astype(np.float32)
        resized = np.einsum("ri,nij,cj->nrc", resize, ink, resize, optimize=True)
        out[start : start + 4096] = np.clip(resized, 0.0, 1.0)
    return out.reshape(*raw.shape[:-2], size, size)


@functools.lru_cache(maxsize=4)
def _all_characters(folder: Path, size: int) -> np.ndarray:
    """f32[1623, 20, size, size], indexed by file id - 1."""
    return np.concatenate([preprocess(read_part(folder, p), size=size) for p in PARTS])


@functools.lru_cache(maxsize=2)
def _tfds_characters(
    size: int, tfds_data_dir: str | None, download: bool
) -> tuple[np.ndarray, np.ndarray]:
    """f32[n, 20, size, size] and i64[n] file ids: the characters tfds holds."""
    from esmeta_core.data import tfds_source  # noqa: PLC0415  (imports TensorFlow)

    raw, file_ids = tfds_source.read_tfds(data_dir=tfds_data_dir, download=download)
    return preprocess(raw, size=size), file_ids


def resolve_source(source: str | None = None) -> str:
    """Returns the data source: ``source``, else ``$ESMETA_DATA_SOURCE``, else ``files``."""
    chosen = source if source is not None else (os.environ.get(SOURCE_ENV) or SOURCES[0])
    if chosen not in SOURCES:
        where = "source" if source is not None else f"${SOURCE_ENV}"
        raise ValueError(f"{where} is {chosen!r}; choose one of {SOURCES}.")
    return chosen


def _rows_of(file_ids: np.ndarray, wanted: np.ndarray, source: str) -> np.ndarray:
    """Positions of ``wanted`` ids in the sorted ``file_ids``; raises if any is absent."""
    rows = np.clip(np.searchsorted(file_ids, wanted), 0, len(file_ids) - 1)
    missing = sorted(set(wanted[file_ids[rows] != wanted].tolist()))
    if missing:
        listed = ", ".join(f"{i:04d}" for i in missing[:10])
        raise DataCorruptError(
            f"The {source} source lacks {len(missing)} characters that the split needs "
            f"(file ids {listed}{', ...' if len(missing) > 10 else ''})."
        )
    return rows


# ----------------------------------------------------------------------------
# Splits.


def _parse_class(line: str) -> tuple[int, int]:
    try:
        alphabet, character, rotation = line.split("/")
        return alphabets.file_id(alphabet, int(character[len("character") :])), int(rotation[3:])
    except ValueError as e:
        raise DataCorruptError(f"Bad line in a split list: {line!r}") from e


def split_classes(split: str, *, data_dir: Path, download: bool = True) -> list[tuple[int, int]]:
    """Lists ``(file_id, rotation)`` for every class of a split, in a fixed order."""
    if split in VINYALS_SPLITS:
        lines = split_list_path(split, data_dir, download=download).read_text().split()
        return [_parse_class(line) for line in lines]
    if split == "background":
        ids = range(1, alphabets.NUM_BACKGROUND + 1)
    elif split == "evaluation":
        ids = range(alphabets.NUM_BACKGROUND + 1, alphabets.NUM_CHARACTERS + 1)
    else:
        raise ValueError(f"Unknown Omniglot split {split!r}; choose one of {SPLITS}.")
    return [(i, r) for i in ids for r in ROTATIONS]


def load_split(
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    image_size: int = 28,
    source: str | None = None,
) -> OmniglotSplit:
    """Loads one Omniglot split into memory, every rotation its own class.

    Args:
      split: ``train`` / ``val`` / ``trainval`` / ``test`` (Vinyals et al. 2016:
        1028 / 172 / 1200 / 423 characters) or ``background`` / ``evaluation``
        (the original 964 / 659 characters, by alphabet).
      data_dir: folder with the data; default ``$ESMETA_DATA_DIR``, then the cache.
        With ``source="tfds"`` only the split lists are read from it.
      download: download into the cache (or let tfds download) when the data is
        not found.
      image_size: side of the square images after resizing.
      source: ``files`` (the offline copy, cache or original archives) or ``tfds``
        (``tfds.load("omniglot")``, data in ``$TFDS_DATA_DIR``); default
        ``$ESMETA_DATA_SOURCE``, else ``files``. Both give the same classes in
        the same order and the same images, except the order of the 20
        drawings within a class (see :mod:`esmeta_core.data.tfds_source`).

    Returns:
      An :class:`OmniglotSplit` with ``images`` f32[4 * characters, 20, s, s].

    Example (``load_split("train").images.shape[:2]``, known without loading):
      >>> SPLIT_CLASSES["train"], IMAGES_PER_CHARACTER
      (4112, 20)
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown Omniglot split {split!r}; choose one of {SPLITS}.")
    source = resolve_source(source)
    if source == "files":
        folder = resolve_data_dir(data_dir, download=download)
    else:  # the folder only serves the split lists
        explicit = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
        folder = Path(explicit).expanduser() if explicit else cache_dir()
    classes = split_classes(split, data_dir=folder, download=download)
    if source == "files":
        characters = _all_characters(folder.resolve(), image_size)
        file_ids = np.arange(1, alphabets.NUM_CHARACTERS + 1)
    else:
        tfds_dir = os.environ.get(TFDS_DATA_DIR_ENV)
        characters, file_ids = _tfds_characters(image_size, tfds_dir, download)
    ids = np.array([c for c, _ in classes], np.int32)
    rotations = np.array([r for _, r in classes], np.int32)
    rows_of_class = _rows_of(file_ids, ids, source)
    images = np.empty((len(classes), *characters.shape[1:]), np.float32)
    for k, rotation in enumerate(ROTATIONS):
        rows = rotations == rotation
        images[rows] = np.rot90(characters[rows_of_class[rows]], k, axes=(-2, -1))
    names = []
    for char_id, rotation in classes:
        alphabet = alphabets.alphabet_of(char_id)
        character = char_id - alphabets.FIRST_ID[alphabet] + 1
        names.append(f"{alphabet}/character{character:02d}/rot{rotation:03d}")
    return OmniglotSplit(
        images=images,
        class_names=tuple(names),
        alphabets=tuple(n.split("/")[0] for n in names),
        character_ids=ids,
        rotations=rotations,
    )
