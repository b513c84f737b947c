"""Omniglot for few-shot learning: sources, preprocessing and splits.

Where the data comes from, in this order:

1. ``data_dir``, or the folder named by ``$ESMETA_DATA_DIR``: either the
   offline arrays ``images_background.npz`` / ``images_evaluation.npz`` or the
   original archives ``images_background.zip`` / ``images_evaluation.zip``,
   and the split lists under ``splits/vinyals/``.
2. The cache, ``$ESMETA_CACHE_DIR`` (default ``~/.cache/esmeta/omniglot``),
   filled by earlier downloads.
3. A download of the original archives (github.com/brendenlake/omniglot) and
   of the Vinyals split lists (github.com/jakesnell/prototypical-networks),
   every file checked against its SHA-256.

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

DATA_DIR_ENV = "ESMETA_DATA_DIR"
CACHE_DIR_ENV = "ESMETA_CACHE_DIR"
ARCHIVE_URL_ENV = "ESMETA_OMNIGLOT_URL"
SPLITS_URL_ENV = "ESMETA_SPLITS_URL"
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
VINYALS_SPLITS = tuple(SPLIT_SHA256)
ALPHABET_SPLITS = ("background", "evaluation")
SPLITS = VINYALS_SPLITS + ALPHABET_SPLITS
PARTS = ("background", "evaluation")  # the two halves of the original data
IMAGES_PER_CHARACTER = 20
RAW_SIZE = 105
ROTATIONS = (0, 90, 180, 270)


class DataNotFoundError(FileNotFoundError):
    """Omniglot is not where the project looked, and could not be downloaded."""


class DataCorruptError(ValueError):
    """An Omniglot file exists but cannot be read or has the wrong contents."""


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
            fetch(base + name, folder / name, sha256=ARCHIVE_SHA256[name])
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
        return fetch(base + f"{split}.txt", dest, sha256=SPLIT_SHA256[split])
    except DownloadError as e:
        raise _not_found([data_dir / "splits" / "vinyals", dest.parent], str(e)) from e


# ----------------------------------------------------------------------------
# Reading the two formats.


def read_npz(path: str | os.PathLike) -> np.ndarray:
    """Reads an offline ``images_*.npz``: bool[n_characters, 20, 105, 105], True = background."""
    path = Path(path)
    try:
        with np.load(path) as f:
            images = f["images"]
    except Exception as e:  # numpy raises many types for a broken file
        raise DataCorruptError(
            f"{path} cannot be read as an Omniglot .npz ({type(e).__name__}: {e}). "
            "Replace it with a good copy, or point $ESMETA_DATA_DIR elsewhere."
        ) from e
    if images.ndim != 4 or images.shape[1:] != (IMAGES_PER_CHARACTER, RAW_SIZE, RAW_SIZE):
        raise DataCorruptError(
            f"{path}: 'images' has shape {images.shape}, expected (n, 20, 105, 105)."
        )
    return images.astype(bool)


def read_zip(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads an original archive (``images_background.zip`` or a ``_small`` one).

    Returns:
      images: bool[n_characters, 20, 105, 105], True = background, as in the
        ``.npz`` files; characters in file-id order, drawers 01..20.
      file_ids: i64[n_characters], the original file id of each character.
    """
    from PIL import Image  # noqa: PLC0415  (only this reader needs Pillow)

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            by_id: dict[int, dict[int, np.ndarray]] = {}
            for name in archive.namelist():
                if not name.endswith(".png"):
                    continue
                stem = name.rsplit("/", 1)[-1][: -len(".png")]
                char_id, drawer = (int(s) for s in stem.split("_"))
                with Image.open(io.BytesIO(archive.read(name))) as im:
                    by_id.setdefault(char_id, {})[drawer] = np.asarray(im.convert("1"), bool)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
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
    if path.suffix == ".npz":
        images = read_npz(path)
    else:
        images, file_ids = read_zip(path)
        first = 1 if part == "background" else alphabets.NUM_BACKGROUND + 1
        if not np.array_equal(file_ids, np.arange(first, first + len(file_ids))):
            raise DataCorruptError(f"{path}: character ids are not contiguous from {first}.")
    expected = (
        alphabets.NUM_BACKGROUND
        if part == "background"
        else (alphabets.NUM_CHARACTERS - alphabets.NUM_BACKGROUND)
    )
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
) -> OmniglotSplit:
    """Loads one Omniglot split into memory, every rotation its own class.

    Args:
      split: ``train`` / ``val`` / ``trainval`` / ``test`` (Vinyals et al. 2016:
        1028 / 172 / 1200 / 423 characters) or ``background`` / ``evaluation``
        (the original 964 / 659 characters, by alphabet).
      data_dir: folder with the data; default ``$ESMETA_DATA_DIR``, then the cache.
      download: download into the cache when the data is not found.
      image_size: side of the square images after resizing.

    Returns:
      An :class:`OmniglotSplit` with ``images`` f32[4 * characters, 20, s, s].

    Example:
      >>> train = load_split("train")  # doctest: +SKIP
      >>> train.images.shape  # doctest: +SKIP
      (4112, 20, 28, 28)
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown Omniglot split {split!r}; choose one of {SPLITS}.")
    folder = resolve_data_dir(data_dir, download=download)
    classes = split_classes(split, data_dir=folder, download=download)
    characters = _all_characters(folder.resolve(), image_size)
    ids = np.array([c for c, _ in classes], np.int32)
    rotations = np.array([r for _, r in classes], np.int32)
    images = np.empty((len(classes), *characters.shape[1:]), np.float32)
    for k, rotation in enumerate(ROTATIONS):
        rows = rotations == rotation
        images[rows] = np.rot90(characters[ids[rows] - 1], k, axes=(-2, -1))
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
