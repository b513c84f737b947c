"""Bounded readers: hostile or broken Omniglot files are refused before they cost memory.

Each test builds the bad file the issue's table names (a small npz claiming
1500 characters, a zip with a 300 MiB member, PNG bombs, wrong sizes, float /
NaN / inverted images) and checks the error is the project's own
``DataCorruptError``, named after the file, raised before the claimed size is
allocated (measured with ``tracemalloc``, which numpy reports to).
"""

from __future__ import annotations

import tracemalloc
import zipfile

import numpy as np
import pytest
from bad_files import MiB, npz_with_header, png_header_only, png_of_size

from esmeta_core.data import omniglot


def _peak_bytes(fn, *args, **kwargs) -> int:
    """Peak Python/numpy heap growth while ``fn`` runs (it must raise DataCorruptError)."""
    tracemalloc.start()
    try:
        with pytest.raises(omniglot.DataCorruptError):
            fn(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_small_npz_claiming_1500_characters_is_refused_before_loading(tmp_path):
    path = tmp_path / "images_background.npz"
    npz_with_header(path, (1500, 20, 105, 105))  # 331 MB of zeros, compressed
    assert path.stat().st_size < 2 * MiB
    peak = _peak_bytes(omniglot.read_npz, path, characters=964)
    assert peak < 16 * MiB  # not the 331 MB the header claims


def test_npz_whose_header_claims_more_than_its_member_holds_is_refused(tmp_path):
    path = tmp_path / "images_background.npz"
    npz_with_header(path, (964, 20, 105, 105), fill_bytes=1000)
    with pytest.raises(omniglot.DataCorruptError, match="claims shape"):
        omniglot.read_npz(path, characters=964)


def test_npz_part_with_wrong_character_count_is_refused_by_read_part(tmp_path):
    npz_with_header(tmp_path / "images_evaluation.npz", (3, 20, 105, 105))
    with pytest.raises(omniglot.DataCorruptError, match="holds 3 characters, expected 659"):
        omniglot.read_part(tmp_path, "evaluation")


def _save_npz(path, images):
    np.savez_compressed(path, images=images)
    return path


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_npz_of_non_bool_images_is_refused_naming_the_dtype(tmp_path, dtype):
    path = _save_npz(tmp_path / "f.npz", np.ones((2, 20, 105, 105), dtype))
    with pytest.raises(omniglot.DataCorruptError, match=f"dtype {np.dtype(dtype)}, expected bool"):
        omniglot.read_npz(path)


def test_npz_of_all_nan_images_is_refused(tmp_path):
    path = _save_npz(tmp_path / "nan.npz", np.full((2, 20, 105, 105), np.nan, np.float32))
    with pytest.raises(omniglot.DataCorruptError, match="nan.npz.*expected bool"):
        omniglot.read_npz(path)


def test_npz_of_inverted_images_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    good = rng.random((2, 20, 105, 105)) < 0.92  # True = background, as in the real files
    assert omniglot.read_npz(_save_npz(tmp_path / "good.npz", good)).shape == good.shape
    with pytest.raises(omniglot.DataCorruptError, match="look inverted"):
        omniglot.read_npz(_save_npz(tmp_path / "inverted.npz", ~good))


def test_npz_without_any_ink_is_refused(tmp_path):
    path = _save_npz(tmp_path / "blank.npz", np.ones((2, 20, 105, 105), bool))
    with pytest.raises(omniglot.DataCorruptError, match="no ink"):
        omniglot.read_npz(path)


def test_zip_with_a_300_mib_member_is_refused_before_unpacking(tmp_path):
    path = tmp_path / "images_background.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("images_background/A/character01/0001_01.png", "w", force_zip64=True) as f:
            zeros = bytes(8 * MiB)
            for _ in range(300 // 8 + 1):
                f.write(zeros)
    assert path.stat().st_size < 2 * MiB
    peak = _peak_bytes(omniglot.read_zip, path)
    assert peak < 16 * MiB


def _zip_of_pngs(path, pngs: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in pngs.items():
            z.writestr(name, data)
    return path


def test_zip_with_a_20000x20000_png_bomb_gives_data_corrupt_error(tmp_path):
    path = _zip_of_pngs(
        tmp_path / "bomb.zip", {"a/character01/0001_01.png": png_header_only(20000, 20000)}
    )
    peak = _peak_bytes(omniglot.read_zip, path)
    assert peak < 16 * MiB


def test_zip_with_a_large_png_under_the_bomb_limit_is_refused_before_decoding(tmp_path):
    path = _zip_of_pngs(
        tmp_path / "big.zip", {"a/character01/0001_01.png": png_header_only(9000, 9000)}
    )
    with pytest.raises(omniglot.DataCorruptError, match="9000x9000, expected 105x105"):
        omniglot.read_zip(path)


def test_zip_with_50x50_pngs_gives_data_corrupt_error_naming_the_member(tmp_path):
    pngs = {f"a/character01/0001_{d:02d}.png": png_of_size(50) for d in range(1, 21)}
    path = _zip_of_pngs(tmp_path / "small.zip", pngs)
    with pytest.raises(omniglot.DataCorruptError, match="0001_01.png is 50x50"):
        omniglot.read_zip(path)


def test_real_archive_and_arrays_still_pass_the_bounds(omniglot_dir):
    images, ids = omniglot.read_zip(omniglot_dir / "images_background_small1.zip")
    assert images.shape == (136, 20, 105, 105) and len(ids) == 136
    shape, dtype = omniglot.npz_header(omniglot_dir / "images_background.npz")
    assert shape == (964, 20, 105, 105) and dtype == np.bool_


@pytest.mark.parametrize("line", ["Arcadian/character27/rot000", "Arcadian/character00/rot000"])
def test_split_line_naming_a_character_outside_its_alphabet_is_refused(line):
    # Arcadian has 26 characters; character 27 would otherwise be Armenian's first.
    with pytest.raises(omniglot.DataCorruptError, match="Bad line in a split list"):
        omniglot._parse_class(line)
