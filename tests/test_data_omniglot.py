"""Omniglot loading on the real offline data: counts, hashes, formats, errors."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from esmeta_core.data import alphabets, omniglot


@pytest.fixture(scope="module")
def vinyals(omniglot_dir):
    return {s: omniglot.load_split(s, data_dir=omniglot_dir) for s in ("train", "val", "test")}


def test_background_and_evaluation_have_964_and_659_characters(omniglot_dir):
    background = omniglot.load_split("background", data_dir=omniglot_dir)
    evaluation = omniglot.load_split("evaluation", data_dir=omniglot_dir)
    assert (background.num_characters, evaluation.num_characters) == (964, 659)
    assert (background.num_classes, evaluation.num_classes) == (4 * 964, 4 * 659)
    assert set(background.alphabets).isdisjoint(evaluation.alphabets)
    assert len(set(background.alphabets)) == 30 and len(set(evaluation.alphabets)) == 20


def test_vinyals_split_has_1028_172_423_characters(vinyals):
    counts = {s: (v.num_characters, v.num_classes) for s, v in vinyals.items()}
    assert counts == {"train": (1028, 4112), "val": (172, 688), "test": (423, 1692)}
    ids = [set(v.character_ids.tolist()) for v in vinyals.values()]
    assert ids[0].isdisjoint(ids[1]) and ids[0].isdisjoint(ids[2]) and ids[1].isdisjoint(ids[2])
    assert len(set.union(*ids)) == alphabets.NUM_CHARACTERS


def test_split_classes_constant_matches_the_loaded_splits(vinyals, omniglot_dir):
    # configs and evaluation check episode sizes against SPLIT_CLASSES before loading data.
    loaded = {s: v.num_classes for s, v in vinyals.items()}
    for split in omniglot.ALPHABET_SPLITS:
        loaded[split] = omniglot.load_split(split, data_dir=omniglot_dir).num_classes
    assert loaded == {s: omniglot.SPLIT_CLASSES[s] for s in loaded}


def test_class_names_round_trip_the_split_list(vinyals, omniglot_dir):
    lines = (omniglot_dir / "splits" / "vinyals" / "test.txt").read_text().split()
    assert list(vinyals["test"].class_names) == lines
    assert vinyals["test"].alphabets[0] == lines[0].split("/")[0]


@pytest.mark.parametrize("split", omniglot.VINYALS_SPLITS)
def test_split_list_sha256_matches(split, omniglot_dir):
    path = omniglot.split_list_path(split, omniglot_dir, download=False)
    assert omniglot.sha256_of(path) == omniglot.SPLIT_SHA256[split]


def test_modified_split_list_is_rejected(tmp_path, omniglot_dir):
    folder = tmp_path / "splits" / "vinyals"
    folder.mkdir(parents=True)
    text = (omniglot_dir / "splits" / "vinyals" / "val.txt").read_text()
    (folder / "val.txt").write_text(text.replace("rot090", "rot180", 1))
    with pytest.raises(omniglot.DataCorruptError, match="SHA-256"):
        omniglot.split_list_path("val", tmp_path, download=False)


def test_images_are_in_unit_interval_with_strokes_as_one(vinyals):
    images = vinyals["val"].images
    assert images.dtype == np.float32 and images.shape[1:] == (20, 28, 28)
    assert images.min() >= 0.0 and images.max() <= 1.0
    # Strokes are thin: ink (1) covers a small part of each image, background is 0.
    assert 0.02 < images.mean() < 0.2
    assert np.median(images) == 0.0


def test_rotated_classes_are_rotations_of_the_same_character(vinyals):
    split = vinyals["train"]
    first = split.character_ids[0]
    rows = np.flatnonzero(split.character_ids == first)
    by_rotation = {int(split.rotations[r]): split.images[r] for r in rows}
    assert sorted(by_rotation) == [0, 90, 180, 270]
    for k, rotation in enumerate((90, 180, 270), start=1):
        np.testing.assert_array_equal(by_rotation[rotation], np.rot90(by_rotation[0], k, (-2, -1)))


def test_zip_reader_matches_npz_for_every_character_of_small1(omniglot_dir):
    images, ids = omniglot.read_zip(omniglot_dir / "images_background_small1.zip")
    npz = omniglot.read_npz(omniglot_dir / "images_background.npz")
    assert len(ids) == 136
    np.testing.assert_array_equal(images, npz[ids - 1])


def test_zip_alphabet_folders_match_the_alphabet_table(omniglot_dir):
    with zipfile.ZipFile(omniglot_dir / "images_background_small1.zip") as z:
        for name in z.namelist():
            if name.endswith(".png"):
                _, alphabet, _, png = name.split("/")
                assert alphabets.alphabet_of(int(png[:4])) == alphabet


def test_resize_matrix_rows_are_averages():
    m = omniglot.area_resize_matrix(105, 28)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
    assert m.shape == (28, 105) and (m >= 0).all()


def test_missing_data_error_says_where_and_how_to_fix(tmp_path):
    with pytest.raises(omniglot.DataNotFoundError) as info:
        omniglot.resolve_data_dir(tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "ESMETA_DATA_DIR" in message and "download" in message.lower()


def test_no_download_and_no_env_gives_clear_error(monkeypatch):
    monkeypatch.delenv("ESMETA_DATA_DIR", raising=False)
    with pytest.raises(omniglot.DataNotFoundError, match="ESMETA_DATA_DIR"):
        omniglot.resolve_data_dir(download=False)


def test_corrupt_npz_gives_clear_error(tmp_path):
    (tmp_path / "images_background.npz").write_bytes(b"not a numpy archive at all")
    with pytest.raises(omniglot.DataCorruptError, match="images_background.npz"):
        omniglot.read_npz(tmp_path / "images_background.npz")


def test_corrupt_zip_gives_clear_error(tmp_path, omniglot_dir):
    good = (omniglot_dir / "images_background_small1.zip").read_bytes()
    (tmp_path / "broken.zip").write_bytes(good[: len(good) // 2])
    with pytest.raises(omniglot.DataCorruptError, match="broken.zip"):
        omniglot.read_zip(tmp_path / "broken.zip")


def test_unknown_split_is_rejected(omniglot_dir):
    with pytest.raises(ValueError, match="choose one of"):
        omniglot.load_split("training", data_dir=omniglot_dir)
