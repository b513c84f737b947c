"""Shared fixtures: the real Omniglot folder and quick mode for notebooks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ESMETA_QUICK", "1")  # notebooks run by nbval inherit it


def _omniglot_dir() -> Path | None:
    env = os.environ.get("ESMETA_DATA_DIR")
    candidates = [Path(env)] if env else [ROOT.parent / "shared" / "data" / "omniglot"]
    for folder in candidates:
        if (folder / "images_background.npz").is_file():
            return folder
    return None


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    """The offline Omniglot copy; tests that need it fail in CI, skip elsewhere."""
    folder = _omniglot_dir()
    if folder is None:
        msg = "Omniglot not found: set ESMETA_DATA_DIR (e.g. ../shared/data/omniglot)."
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return folder


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never let a test read or fill the user's real download cache."""
    monkeypatch.setenv("ESMETA_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
