"""The tensorflow-datasets source, offline: tfds' own omniglot builder, fed from 127.0.0.1.

Archives in the original format (the real ``images_background_small1.zip`` as the
background half, and a few evaluation characters zipped from the ``.npz``) are
served by a loopback HTTP server, and tfds' ``omniglot`` builder is pointed at
them (its download URLs patched; they have no registered checksums, so tfds
checks none). Then ``source="tfds"`` must give what ``source="files"`` gives on
the same characters.
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

# Evaluation characters served beside the 136 of the real small1 archive: Angelic/character01
# (in the Vinyals train split) and Gurmukhi/character42, 43 (test split).
EVALUATION = (965, 1201, 1202)


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
def small1(omniglot_dir):
    """The real original archive of 5 background alphabets, and its file ids."""
    data = (omniglot_dir / "images_background_small1.zip").read_bytes()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()  # .../<id>_<drawer>.png
    ids = sorted({int(n.rsplit("/", 1)[-1][:4]) for n in names if n.endswith(".png")})
    assert len(ids) == 136
    return data, np.array(ids)


@pytest.fixture(scope="module")
def served(small1):
    """File ids of the characters served with all 20 drawings."""
    return tuple(sorted({*small1[1].tolist(), *EVALUATION}))


@pytest.fixture(scope="module")
def tfds_served(raw, small1, tmp_path_factory):
    """tfds' omniglot builder downloading our archives from 127.0.0.1 into a fresh data dir.

    ``train`` is the real small1 archive, ``test`` holds EVALUATION. The builder
    names its labels from every archive and insists on all 1623 characters and
    50 alphabets, so ``small1`` / ``small2`` carry one drawing of every
    background / evaluation character (tfds' ``small`` splits, not read by us).
    """
    _tfds_or_skip()
    builder = importlib.import_module("tensorflow_datasets.image_classification.omniglot")
    background = range(1, alphabets.NUM_BACKGROUND + 1)
    evaluation = range(alphabets.NUM_BACKGROUND + 1, alphabets.NUM_CHARACTERS + 1)
    files = {
        "images_background.zip": small1[0],
        "images_evaluation.zip": _archive(
            "images_evaluation", {i: raw[i - 1] for i in EVALUATION}, range(1, 21)
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


def test_tfds_source_reads_the_same_drawings_of_the_same_characters(tfds_served, raw, served):
    images, file_ids = tfds_source.read_tfds()
    assert file_ids.tolist() == list(served)
    assert (tfds_served / "omniglot").is_dir()  # tfds prepared it where we said
    for got, file_id in zip(images, file_ids, strict=True):
        want = tfds_source.canonical_order(raw[file_id - 1])
        np.testing.assert_array_equal(got, want, err_msg=f"character {file_id:04d}")


@pytest.mark.parametrize("split", ["train", "test"])
def test_tfds_and_files_sources_give_the_same_split(
    tfds_served, served, omniglot_dir, monkeypatch, split
):
    every_class = omniglot.split_classes

    def only_served(name, **kwargs):  # the split's own classes, restricted to those served
        return [c for c in every_class(name, **kwargs) if c[0] in served]

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


def test_tfds_source_names_characters_it_lacks(tfds_served, served, omniglot_dir):
    val = {c for c, _ in omniglot.split_classes("val", data_dir=omniglot_dir, download=False)}
    lacking = len(val - set(served))
    assert lacking > 0
    with pytest.raises(omniglot.DataCorruptError, match=f"tfds source lacks {lacking} characters"):
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


def test_tfds_source_without_data_or_download_says_what_to_do(tmp_path, monkeypatch):
    _tfds_or_skip()
    monkeypatch.setenv(omniglot.TFDS_DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(omniglot.DataNotFoundError, match="ESMETA_DATA_DIR"):
        tfds_source.read_tfds(download=False)
