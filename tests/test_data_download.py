"""Downloads, served from a local HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import pytest

from esmeta_core.data import download, omniglot


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    truncated: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        name = self.path.lstrip("/")
        if name == "drip":  # announce 10 kB, then one byte every 50 ms (never a silent read)
            self.send_response(200)
            self.send_header("Content-Length", "10000")
            self.end_headers()
            for _ in range(10000):
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.05)
            return
        if name in ("endless", "announced-huge"):  # 64 MiB, no (or a huge) Content-Length
            self.send_response(200)
            if name == "announced-huge":
                self.send_header("Content-Length", str(200 << 20))
            self.end_headers()
            self.close_connection = True
            chunk = bytes(1 << 20)
            for _ in range(64):
                try:
                    self.wfile.write(chunk)
                except OSError:
                    return
            return
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


def test_drip_fed_download_stops_at_the_total_deadline_and_leaves_no_file(server, tmp_path):
    start = time.monotonic()
    with pytest.raises(download.DownloadError, match="longer than 1 s"):
        download.fetch(server + "drip", tmp_path / "a.zip", sha256="0" * 64, deadline_s=1.0)
    elapsed = time.monotonic() - start
    assert elapsed < 3.0  # a per-read timeout would wait the whole 500 s drip
    assert list(tmp_path.iterdir()) == []


def test_body_without_length_stops_at_the_known_size_and_leaves_no_file(server, tmp_path):
    cap = 1 << 20
    with pytest.raises(download.DownloadError, match=f"more than the {cap} bytes"):
        download.fetch(server + "endless", tmp_path / "a.zip", sha256="0" * 64, max_bytes=cap)
    assert list(tmp_path.iterdir()) == []


def test_announced_length_above_the_known_size_is_refused_before_reading(server, tmp_path):
    with pytest.raises(download.DownloadError, match="known to have 1000"):
        download.fetch(
            server + "announced-huge", tmp_path / "a.zip", sha256="0" * 64, max_bytes=1000
        )
    assert list(tmp_path.iterdir()) == []


def test_every_known_file_has_a_size_cap():
    assert set(omniglot.ARCHIVE_BYTES) == set(omniglot.ARCHIVE_SHA256)
    assert set(omniglot.SPLIT_BYTES) == set(omniglot.SPLIT_SHA256)


def test_split_list_sizes_match_the_verified_files(omniglot_dir):
    for split, size in omniglot.SPLIT_BYTES.items():
        assert (omniglot_dir / "splits" / "vinyals" / f"{split}.txt").stat().st_size == size
    for name in ("images_background_small1.zip", "images_background_small2.zip"):
        assert (omniglot_dir / name).stat().st_size == omniglot.ARCHIVE_BYTES[name]
