"""Omniglot loading and few-shot episode sampling (NumPy in, NumPy out)."""

from esmeta_core.data.download import DownloadError, fetch, sha256_of
from esmeta_core.data.episodes import (
    Episode,
    episode_rng,
    sample_episode,
    sample_episodes,
    validate_episode_size,
)
from esmeta_core.data.omniglot import (
    DATA_DIR_ENV,
    IMAGES_PER_CHARACTER,
    SOURCES,
    SPLIT_CLASSES,
    SPLITS,
    DataCorruptError,
    DataNotFoundError,
    OmniglotSplit,
    load_split,
    preprocess,
    read_npz,
    read_zip,
    resolve_data_dir,
    resolve_source,
)

__all__ = [
    "DATA_DIR_ENV",
    "IMAGES_PER_CHARACTER",
    "SOURCES",
    "SPLITS",
    "SPLIT_CLASSES",
    "DataCorruptError",
    "DataNotFoundError",
    "DownloadError",
    "Episode",
    "OmniglotSplit",
    "episode_rng",
    "fetch",
    "load_split",
    "preprocess",
    "read_npz",
    "read_zip",
    "resolve_data_dir",
    "resolve_source",
    "sample_episode",
    "sample_episodes",
    "sha256_of",
    "validate_episode_size",
]
