"""Downloads, served from a local HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from esmeta_core.data import download, omniglot


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    truncated: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        name = self.path.lstrip("/")
        if name in self.truncated:  # announce the full size, send half, hang up
            body = self.truncated[name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if name not in self.files:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.files[name])))
        self.end_headers()
        self.wfile.write(self.files[name])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(omniglot_dir):
    small = (omniglot_dir / "images_background_small1.zip").read_bytes()
    splits = omniglot_dir / "splits" / "vinyals"
    _Handler.files = {"images_background_small1.zip": small, "tampered.zip": small[:-1] + b"x"}
    _Handler.files |= {f"splits/{p.name}": p.read_bytes() for p in splits.glob("*.txt")}
    _Handler.truncated = {"cut.zip": small}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def test_good_download_is_verified_and_cached(server, tmp_path):
    sha = omniglot.ARCHIVE_SHA256["images_background_small1.zip"]
    path = download.fetch(server + "images_background_small1.zip", tmp_path / "a.zip", sha256=sha)
    assert download.sha256_of(path) == sha
    assert list(tmp_path.iterdir()) == [path]
    images, ids = omniglot.read_zip(path)
    assert images.shape == (136, 20, 105, 105)


def test_checksum_mismatch_raises_and_leaves_no_file(server, tmp_path):
    sha = omniglot.ARCHIVE_SHA256["images_background_small1.zip"]
    with pytest.raises(download.DownloadError, match="expected " + sha):
        download.fetch(server + "tampered.zip", tmp_path / "a.zip", sha256=sha)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_raises_and_leaves_no_file(server, tmp_path):
    sha = omniglot.ARCHIVE_SHA256["images_background_small1.zip"]
    with pytest.raises(download.DownloadError):
        download.fetch(server + "cut.zip", tmp_path / "a.zip", sha256=sha)
    assert list(tmp_path.iterdir()) == []


def test_split_lists_download_into_cache_with_hash_check(server, tmp_path, monkeypatch):
    monkeypatch.setenv("ESMETA_SPLITS_URL", server + "splits/")
    path = omniglot.split_list_path("val", tmp_path / "no-lists-here")
    assert Path(path).parent == omniglot.cache_dir() / "splits" / "vinyals"
    assert download.sha256_of(path) == omniglot.SPLIT_SHA256["val"]


def test_failed_archive_download_explains_both_fixes(server, monkeypatch):
    monkeypatch.delenv("ESMETA_DATA_DIR", raising=False)
    monkeypatch.setenv("ESMETA_OMNIGLOT_URL", server + "missing/")
    with pytest.raises(omniglot.DataNotFoundError) as info:
        omniglot.resolve_data_dir()
    message = str(info.value)
    assert "download failed" in message and "ESMETA_DATA_DIR" in message
    assert str(omniglot.cache_dir()) in message
    assert not any(omniglot.cache_dir().glob("*.zip"))
