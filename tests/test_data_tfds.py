"""The tensorflow-datasets source, offline: tfds' own omniglot builder, fed from 127.0.0.1.

Archives in the original format are built from the offline copy for a few
characters, served by a loopback HTTP server, and tfds' ``omniglot`` builder is
pointed at them (its download URLs patched; they have no registered checksums,
so tfds checks none). Then ``source="tfds"`` must give what ``source="files"``
gives on the same characters.
"""

from __future__ import annotations

import http.server
import importlib
import io
import os
import sys
import threading
import zipfile

import numpy as np
import pytest

from esmeta_core.data import alphabets, omniglot, tfds_source

# Background: Grantha/character01, Latin/character01; evaluation: Angelic/character01
# (in the Vinyals train split) and Gurmukhi/character42, 43 (test split).
CHARACTERS = (351, 683, 965, 1201, 1202)


def _png(background: np.ndarray) -> bytes:
    """A 1-bit PNG like the original files: white (True) background, black ink."""
    from PIL import Image  # noqa: PLC0415

    buf = io.BytesIO()
    Image.fromarray(background).save(buf, format="PNG")
    return buf.getvalue()


def _archive(top: str, raw_by_id: dict[int, np.ndarray], drawers: range) -> bytes:
    """``<top>/<Alphabet>/characterNN/<id>_<drawer>.png``, the original layout."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for file_id, drawings in raw_by_id.items():
            alphabet = alphabets.alphabet_of(file_id)
            character = file_id - alphabets.FIRST_ID[alphabet] + 1
            for d in drawers:
                name = f"{top}/{alphabet}/character{character:02d}/{file_id:04d}_{d:02d}.png"
                z.writestr(name, _png(drawings[d - 1]))
    return buf.getvalue()


def _tfds_or_skip():
    """tensorflow_datasets; skips where TensorFlow cannot be imported, unless it should be."""
    try:
        return tfds_source.import_tfds()
    except ImportError as e:
        msg = (
            "TensorFlow or tensorflow-datasets cannot be imported here, so the tfds source "
            f"cannot run; pip install -e '.[tfds]' to test it ({e})."
        )
        if "tfds" in os.environ.get("ESMETA_EXTRAS", ""):  # scripts/env.sh installed it
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def raw(omniglot_dir):
    """The offline copy: bool[1623, 20, 105, 105] by file id - 1, True = background."""
    parts = [omniglot.read_npz(omniglot_dir / f"images_{p}.npz") for p in omniglot.PARTS]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def tfds_served(raw, tmp_path_factory):
    """tfds' omniglot builder downloading our archives from 127.0.0.1 into a fresh data dir.

    ``train`` / ``test`` hold the CHARACTERS with their 20 drawings. The builder
    names its labels from every archive and insists on all 1623 characters and
    50 alphabets, so ``small1`` / ``small2`` carry one drawing of every
    background / evaluation character (tfds' ``small`` splits, not read by us).
    """
    _tfds_or_skip()
    builder = importlib.import_module("tensorflow_datasets.image_classification.omniglot")
    chosen = {i: raw[i - 1] for i in CHARACTERS}
    background = range(1, alphabets.NUM_BACKGROUND + 1)
    evaluation = range(alphabets.NUM_BACKGROUND + 1, alphabets.NUM_CHARACTERS + 1)
    files = {
        "images_background.zip": _archive(
            "images_background", {i: d for i, d in chosen.items() if i in background}, range(1, 21)
        ),
        "images_evaluation.zip": _archive(
            "images_evaluation", {i: d for i, d in chosen.items() if i in evaluation}, range(1, 21)
        ),
        "images_background_small1.zip": _archive(
            "images_background_small1", {i: raw[i - 1] for i in background}, range(1, 2)
        ),
        "images_background_small2.zip": _archive(
            "images_background_small2", {i: raw[i - 1] for i in evaluation}, range(1, 2)
        ),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    urls = {"train": "images_background.zip", "eval": "images_evaluation.zip"}
    urls |= {"small1": "images_background_small1.zip", "small2": "images_background_small2.zip"}
    data_dir = tmp_path_factory.mktemp("tfds")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builder, "_DL_URLS", {k: base + v for k, v in urls.items()})
        mp.setenv(omniglot.TFDS_DATA_DIR_ENV, str(data_dir))
        yield data_dir
    httpd.shutdown()
    omniglot._tfds_characters.cache_clear()


def test_tfds_source_reads_the_same_drawings_of_the_same_characters(tfds_served, raw):
    images, file_ids = tfds_source.read_tfds()
    assert file_ids.tolist() == sorted(CHARACTERS)
    assert (tfds_served / "omniglot").is_dir()  # tfds prepared it where we said
    for got, file_id in zip(images, file_ids, strict=True):
        want = tfds_source.canonical_order(raw[file_id - 1])
        np.testing.assert_array_equal(got, want, err_msg=f"character {file_id:04d}")


@pytest.mark.parametrize("split", ["train", "test"])
def test_tfds_and_files_sources_give_the_same_split(tfds_served, omniglot_dir, monkeypatch, split):
    every_class = omniglot.split_classes

    def only_served(name, **kwargs):  # the split's own classes, restricted to CHARACTERS
        return [c for c in every_class(name, **kwargs) if c[0] in CHARACTERS]

    monkeypatch.setattr(omniglot, "split_classes", only_served)
    files = omniglot.load_split(split, data_dir=omniglot_dir, download=False)
    tfds = omniglot.load_split(split, data_dir=omniglot_dir, download=False, source="tfds")
    assert files.num_classes >= 8  # at least two characters x four rotations
    assert tfds.class_names == files.class_names
    assert tfds.alphabets == files.alphabets
    np.testing.assert_array_equal(tfds.character_ids, files.character_ids)
    np.testing.assert_array_equal(tfds.rotations, files.rotations)
    assert tfds.images.shape == files.images.shape and tfds.images.dtype == np.float32
    for name, a, b in zip(files.class_names, files.images, tfds.images, strict=True):
        # The same 20 images, in another order (tfds keeps no drawer numbers).
        distance = np.abs(a[:, None] - b[None, :]).max(axis=(-2, -1))  # [20, 20]
        match = distance.argmin(axis=1)
        assert sorted(match.tolist()) == list(range(20)), name
        assert distance[np.arange(20), match].max() <= 1e-6, name


def test_tfds_source_names_characters_it_lacks(tfds_served, omniglot_dir):
    with pytest.raises(omniglot.DataCorruptError, match="tfds source lacks 172 characters"):
        omniglot.load_split("val", data_dir=omniglot_dir, download=False, source="tfds")


def test_data_source_comes_from_the_environment_and_is_checked(monkeypatch):
    monkeypatch.delenv(omniglot.SOURCE_ENV, raising=False)
    assert omniglot.resolve_source() == "files"
    monkeypatch.setenv(omniglot.SOURCE_ENV, "tfds")
    assert omniglot.resolve_source() == "tfds"
    assert omniglot.resolve_source("files") == "files"
    monkeypatch.setenv(omniglot.SOURCE_ENV, "hub")
    with pytest.raises(ValueError, match="ESMETA_DATA_SOURCE is 'hub'"):
        omniglot.load_split("train")


def test_tfds_source_without_tensorflow_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install 'esmeta_core\[tfds\]'"):
        tfds_source.read_tfds()
