"""Tests for data_scripts/download_speech_commands.py against a local fake server."""

from __future__ import annotations

import errno
import hashlib
import http.server
import importlib.util
import io
import os
import re
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import wave
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "data_scripts" / "download_speech_commands.py"
TRAIN = "speech_commands_v0.02.tar.gz"
TEST = "speech_commands_test_set_v0.02.tar.gz"


def _load_module():
    spec = importlib.util.spec_from_file_location("download_speech_commands", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


dl = _load_module()


# --------------------------------------------------------------------------- fake data


def _wav_bytes(seconds: float = 0.05, sr: int = 16000, seed: int = 0) -> bytes:
    n = int(seconds * sr)
    samples = struct.pack(f"<{n}h", *(((i * 37 + seed * 101) % 2000) - 1000 for i in range(n)))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(samples)
    return buf.getvalue()


def _tar_gz(members: dict[str, bytes], prefix: str = "./") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        dirs = sorted({str(Path(name).parent) for name in members} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(prefix + d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name if name.startswith(("/", "..")) else prefix + name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


WORDS = ("yes", "no", "up")


def fake_train_archive() -> bytes:
    members: dict[str, bytes] = {}
    seed = 0
    for word in WORDS:
        for spk in ("0a7c2a8d", "0b09edd3", "0c2ca723"):
            members[f"{word}/{spk}_nohash_0.wav"] = _wav_bytes(seed=seed)
            seed += 1
    members["validation_list.txt"] = b"yes/0a7c2a8d_nohash_0.wav\nno/0a7c2a8d_nohash_0.wav\n"
    members["testing_list.txt"] = b"up/0b09edd3_nohash_0.wav\n"
    members["_background_noise_/white_noise.wav"] = _wav_bytes(seconds=0.5, seed=99)
    members["_background_noise_/README.md"] = b"noise\n"
    members["README.md"] = b"fake speech commands\n"
    members["LICENSE"] = b"CC-BY-4.0\n"
    return _tar_gz(members)


def fake_test_archive() -> bytes:
    members = {f"{c}/{h}_nohash_0.wav": _wav_bytes(seed=i) for i, (c, h) in enumerate(
        [("yes", "aa11"), ("no", "bb22"), ("_silence_", "cc33"), ("_unknown_", "dd44")]
    )}
    return _tar_gz(members)


# --------------------------------------------------------------------------- fake server


class FakeServer:
    """Serves ``files`` over HTTP; records (path, Range header) of every request."""

    def __init__(self, files: dict[str, bytes], honour_range: bool = True):
        self.files = files
        self.honour_range = honour_range
        self.requests: list[tuple[str, str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _serve(self, head: bool) -> None:
                path = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((self.command, path, rng))
                data = server.files.get(path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                total = len(data)
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
                if m and server.honour_range:
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else total - 1
                    if start >= total:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{total}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    body = data[start : end + 1]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
                else:
                    body = data
                    self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes" if server.honour_range else "none")
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def do_GET(self):
                self._serve(head=False)

            def do_HEAD(self):
                self._serve(head=True)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def train_bytes() -> bytes:
    return fake_train_archive()


@pytest.fixture
def server_factory():
    servers: list[FakeServer] = []

    def make(files: dict[str, bytes], **kw) -> FakeServer:
        s = FakeServer(files, **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--no-progress", "--timeout", "10", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


# --------------------------------------------------------------------------- tests


def test_full_download_extract_and_layout(tmp_path, server_factory, train_bytes):
    srv = server_factory({TRAIN: train_bytes, TEST: fake_test_archive()})
    out = tmp_path / "sc"
    proc = run_cli("--version", "0.02", "--out", str(out), "--base-url", srv.url, "--test-set")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in WORDS:
        assert len(list((out / word).glob("*_nohash_0.wav"))) == 3
    assert (out / "validation_list.txt").is_file()
    assert (out / "testing_list.txt").is_file()
    assert (out / "_background_noise_" / "white_noise.wav").is_file()
    assert (out / dl.TEST_SET_DIRNAME / "_silence_" / "cc33_nohash_0.wav").is_file()
    assert "layout OK: 3 words, 9 utterances, 2 validation / 1 testing entries, 1 background-noise files" in proc.stdout
    assert "test set OK: 4 classes" in proc.stdout
    # without --keep-archive the archives are removed, and no .part is left behind
    assert not list(out.glob("*.tar.gz")) and not list(out.glob("*.part"))
    # the extracted WAVs are real 16 kHz mono files
    with wave.open(str(out / "yes" / "0a7c2a8d_nohash_0.wav")) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
    # a second run is a no-op that only re-verifies the layout
    n_requests = len(srv.requests)
    proc2 = run_cli("--version", "0.02", "--out", str(out), "--base-url", srv.url)
    assert proc2.returncode == 0, proc2.stderr
    assert "already extracted" in proc2.stdout
    assert len(srv.requests) == n_requests


@pytest.mark.parametrize("honour_range", [True, False], ids=["range", "range-ignored"])
def test_resume_partial_download(tmp_path, server_factory, train_bytes, honour_range):
    srv = server_factory({TRAIN: train_bytes}, honour_range=honour_range)
    out = tmp_path / "sc"
    out.mkdir()
    n = len(train_bytes) // 3
    (out / (TRAIN + ".part")).write_bytes(train_bytes[:n])
    proc = run_cli("--out", str(out), "--base-url", srv.url, "--keep-archive")
    assert proc.returncode == 0, proc.stderr
    gets = [r for r in srv.requests if r[0] == "GET" and r[1] == TRAIN]
    assert gets and gets[0][2] == f"bytes={n}-"
    assert (out / TRAIN).read_bytes() == train_bytes
    assert not (out / (TRAIN + ".part")).exists()
    if honour_range:
        assert "resuming at" in proc.stdout
    else:
        assert "ignored the Range request" in proc.stderr
    assert "layout OK" in proc.stdout


def test_resume_when_part_is_already_complete(tmp_path, server_factory, train_bytes):
    srv = server_factory({TRAIN: train_bytes})
    out = tmp_path / "sc"
    out.mkdir()
    (out / (TRAIN + ".part")).write_bytes(train_bytes)
    proc = run_cli("--out", str(out), "--base-url", srv.url)
    assert proc.returncode == 0, proc.stderr
    assert "already complete" in proc.stdout


def test_sha256_ok_and_mismatch(tmp_path, server_factory, train_bytes):
    srv = server_factory({TRAIN: train_bytes})
    good = hashlib.sha256(train_bytes).hexdigest()
    proc = run_cli("--out", str(tmp_path / "a"), "--base-url", srv.url, "--sha256", good)
    assert proc.returncode == 0, proc.stderr
    assert "sha256 OK" in proc.stdout

    out = tmp_path / "b"
    proc = run_cli("--out", str(out), "--base-url", srv.url, "--sha256", "0" * 64)
    assert_one_line_error(proc, "checksum mismatch")
    assert not (out / TRAIN).exists() and not (out / (TRAIN + ".part")).exists()


def test_corrupt_archive(tmp_path, server_factory, train_bytes):
    srv = server_factory({TRAIN: b"this is not a gzip file" * 50})
    out = tmp_path / "sc"
    proc = run_cli("--out", str(out), "--base-url", srv.url)
    assert_one_line_error(proc, "corrupt archive")
    assert not (out / TRAIN).exists()  # deleted so that a re-run downloads it again


def test_truncated_gzip_is_corrupt(tmp_path, server_factory, train_bytes):
    srv = server_factory({TRAIN: train_bytes[: len(train_bytes) // 2]})
    proc = run_cli("--out", str(tmp_path / "sc"), "--base-url", srv.url)
    assert_one_line_error(proc, "corrupt archive")


def test_connection_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the socket is closed now: nothing listens on the port
    proc = run_cli("--out", str(tmp_path / "sc"), "--base-url", f"http://127.0.0.1:{port}")
    assert_one_line_error(proc, "connection refused")


def test_dns_failure(tmp_path):
    proc = run_cli("--out", str(tmp_path / "sc"), "--base-url", "http://nonexistent-host.invalid")
    assert_one_line_error(proc, "cannot resolve host")


def test_http_404(tmp_path, server_factory, train_bytes):
    srv = server_factory({TRAIN: train_bytes})
    proc = run_cli("--version", "0.01", "--out", str(tmp_path / "sc"), "--base-url", srv.url)
    assert_one_line_error(proc, "HTTP 404", "speech_commands_v0.01.tar.gz")


def test_path_traversal_member_rejected(tmp_path, server_factory):
    evil = _tar_gz({"yes/a_nohash_0.wav": _wav_bytes(), "../evil.wav": b"pwned"})
    srv = server_factory({TRAIN: evil})
    out = tmp_path / "deep" / "sc"
    proc = run_cli("--out", str(out), "--base-url", srv.url)
    assert_one_line_error(proc, "unsafe archive member", "..")
    assert not (tmp_path / "deep" / "evil.wav").exists()
    assert not list(tmp_path.rglob("evil.wav"))


@pytest.mark.parametrize(
    "name, kind",
    [
        ("/etc/passwd", tarfile.REGTYPE),
        ("yes/../../x.wav", tarfile.REGTYPE),
        ("C:/x.wav", tarfile.REGTYPE),
        ("yes/link.wav", tarfile.SYMTYPE),
        ("yes/hard.wav", tarfile.LNKTYPE),
        ("dev", tarfile.CHRTYPE),
    ],
)
def test_check_member_rejects_unsafe(name, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = "../../etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    with pytest.raises(dl.DownloadError, match="unsafe archive member"):
        dl.check_member(info)


def test_check_member_accepts_normal():
    info = tarfile.TarInfo("./yes/0a7c2a8d_nohash_0.wav")
    assert str(dl.check_member(info)) == "yes/0a7c2a8d_nohash_0.wav"


def test_disk_full(tmp_path, server_factory, train_bytes, monkeypatch, capsys):
    srv = server_factory({TRAIN: train_bytes})
    real_open = open

    class FullFile(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fake_open(path, mode="r", *a, **kw):
        if str(path).endswith(".part") and ("w" in mode or "a" in mode):
            return FullFile()
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr(dl, "open", fake_open, raising=False)
    rc = dl.main(["--out", str(tmp_path / "sc"), "--base-url", srv.url, "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: disk full"), err


def test_layout_check_reports_missing_list(tmp_path):
    (tmp_path / "yes").mkdir()
    (tmp_path / "yes" / "a_nohash_0.wav").write_bytes(_wav_bytes())
    with pytest.raises(dl.DownloadError, match="validation_list.txt is missing"):
        dl.verify_layout(tmp_path, None)
