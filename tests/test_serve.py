"""`kws serve` (Wyoming protocol): framing and conversion units; then a real `kws serve` process on
127.0.0.1 driven by the wyoming library's own AsyncTcpClient: describe/info, spoken keywords (espeak-ng
clips made here) detected near each word's end, noise, several sessions, audio formats, `detect` names,
8 concurrent clients, serve == `kws detect`, faults and bad input beside a live client, memory over 200
connection cycles, SIGINT/SIGTERM, unix sockets, CLI errors.

Expected detections are always the streaming API's own on the same samples (KeywordSpotter, fed the
same array the test encodes), so the tests hold for any model; only the spoken-keyword test asserts what
the shipped model hears ("yes", "stop", "left", as the listen end-to-end test does)."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws import serve as S
from kws.audio import to_float_mono
from kws.cli import main

REPO = Path(__file__).resolve().parent.parent
SR = 16000
WORDS = ("yes", "stop", "left")                # what tests/test_listen.py's end-to-end test relies on
ALL_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
HELD_OUT_VOICE = "en-us+m7"                    # as tests/test_listen.py: a voice family not trained on


# --------------------------------------------------------------------------- units (fast)

def _reader(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    r = asyncio.StreamReader(limit=S.MAX_LINE)
    r.feed_data(data)
    if eof:
        r.feed_eof()
    return r


def _read(data: bytes, eof: bool = True, timeout: float = 0.2):
    async def go():
        return await S.read_event(_reader(data, eof), timeout)
    return asyncio.run(go())


def test_read_event_framing_matches_wyoming():
    from wyoming.audio import AudioChunk
    from wyoming.event import write_event
    import io
    buf = io.BytesIO()
    write_event(AudioChunk(rate=16000, width=2, channels=1, audio=b"\x01\x02" * 5).event(), buf)
    ev = _read(buf.getvalue())
    c = AudioChunk.from_event(ev)
    assert (ev.type, c.rate, c.width, c.channels, c.audio) == ("audio-chunk", 16000, 2, 1, b"\x01\x02" * 5)
    assert _read(b"") is None                                   # clean EOF between events


@pytest.mark.parametrize("data, expect", [
    (b"\x00\xff\xfe garbage\n", "not JSON"),
    (b"hello\n", "not JSON"),
    (b"[1, 2]\n", "no event type"),
    (b'{"data": {}}\n', "no event type"),
    (b'{"type": "audio-start", "data": [1]}\n', "data is not a JSON object"),
    (b'{"type": "audio-chunk", "payload_length": -1}\n', "payload_length"),
    (b'{"type": "audio-chunk", "payload_length": 1000000000000}\n', "payload_length"),
    (b'{"type": "audio-chunk", "payload_length": "12"}\n', "payload_length"),
    (b'{"type": "x", "data_length": 99999999}\n', "data_length"),
    (b'{"type": "x", "data_length": 3}\nabc', "extra data is not JSON"),
    (b"x" * (S.MAX_LINE + 10) + b"\n", "longer than"),
])
def test_read_event_rejects_bad_headers(data, expect):
    with pytest.raises(S.BadInput, match=expect):
        _read(data)


def test_read_event_payload_that_never_arrives_or_is_cut():
    with pytest.raises(S.BadInput, match="did not arrive within"):
        _read(b'{"type": "audio-chunk", "payload_length": 100}\n' + b"\0" * 10, eof=False, timeout=0.1)
    with pytest.raises(asyncio.IncompleteReadError):
        _read(b'{"type": "audio-chunk", "payload_length": 100}\n' + b"\0" * 10, eof=True)
    with pytest.raises(asyncio.IncompleteReadError):
        _read(b'{"type": "audio-ch')                             # header cut by EOF


def test_audio_format_validation():
    assert S.audio_format({"rate": 48000, "width": 2, "channels": 2}, "x") == (48000, 2, 2)
    for bad in ({"rate": 0, "width": 2, "channels": 1}, {"rate": 10**9, "width": 2, "channels": 1},
                {"rate": 16000, "width": 0, "channels": 1}, {"rate": 16000, "width": 7, "channels": 1},
                {"rate": 16000, "width": 2, "channels": 0}, {"rate": 16000, "width": 2, "channels": 1000},
                {"rate": "16000", "width": 2, "channels": 1}, {"rate": 16000.5, "width": 2, "channels": 1},
                {"rate": True, "width": 2, "channels": 1}, {"width": 2, "channels": 1}):
        with pytest.raises(S.BadInput, match="not supported"):
            S.audio_format(bad, "audio-start")


def encode(x: np.ndarray, width: int, channels: int = 1) -> tuple[bytes, np.ndarray]:
    """float mono [-1, 1] -> (PCM bytes, the integer array [N, C] they stand for, as the streaming API
    takes it: uint8 / int16 / int32, 24-bit as the top 24 bits of an int32)."""
    x = np.clip(x, -1, 1 - 2 ** -23)
    if channels > 1:                                             # a different level per channel
        x = np.stack([x * (1.0 - 0.3 * c / channels) for c in range(channels)], 1)
    else:
        x = x[:, None]
    if width == 1:
        a = np.clip(np.round(x * 128) + 128, 0, 255).astype(np.uint8)
        return a.tobytes(), a
    if width == 2:
        a = np.round(x * 32767).astype("<i2")
        return a.tobytes(), a
    if width == 3:
        v = np.round(x * (2 ** 23 - 1)).astype(np.int64)
        u = (v & 0xFFFFFF).astype("<u4")
        b = np.stack([(u >> s) & 0xFF for s in (0, 8, 16)], -1).astype(np.uint8)
        return b.tobytes(), (v << 8).astype(np.int32)
    a = np.round(x * (2 ** 31 - 256)).astype("<i4")
    return a.tobytes(), a


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2, 3])
def test_pcm_to_array_is_what_the_streaming_api_scales(width, channels):
    rng = np.random.default_rng(width * 10 + channels)
    x = rng.uniform(-1, 1, 999).astype(np.float32)
    b, a = encode(x, width, channels)
    got = S.pcm_to_array(b, width, channels)
    assert got.shape == (999, channels)
    np.testing.assert_array_equal(got, a)
    np.testing.assert_allclose(to_float_mono(got), x * np.mean([1 - 0.3 * c / channels for c in range(channels)]),
                               atol=2.0 / 2 ** (8 * width - 1) + 1e-6)
    if width * channels > 1:
        with pytest.raises(S.BadInput, match="whole number"):
            S.pcm_to_array(b[:-1], width, channels)


@pytest.mark.parametrize("uri, expect", [
    ("tcp://127.0.0.1:10400", ("tcp", ("127.0.0.1", 10400))),
    ("tcp://[::1]:0", ("tcp", ("::1", 0))),
    ("unix:///tmp/k.sock", ("unix", "/tmp/k.sock")),
    ("unix://rel/k.sock", ("unix", "rel/k.sock")),
])
def test_parse_uri(uri, expect):
    assert S.parse_uri(uri) == expect


def error_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    errs = [l for l in lines if l.startswith("kws: error:")]
    assert len(errs) == 1 and lines[-1] == errs[0], err
    return errs[0]


@pytest.mark.parametrize("argv, expect", [
    (["--uri", "http://127.0.0.1:10400"], "only tcp://HOST:PORT and unix://PATH"),
    (["--uri", "tcp://127.0.0.1"], "give a host and a port"),
    (["--uri", "tcp://127.0.0.1:99999"], "give a host and a port"),
    (["--uri", "unix://"], "give a socket path"),
    (["--threshold", "2"], "--threshold must be in (0, 1]"),
    (["--refractory", "-1"], "--refractory must be"),
    (["--workers", "-1"], "--workers must be"),
    (["--event-timeout", "0"], "--event-timeout must be"),
    (["--uri", "unix:///tmp/kws-test-x.sock", "--zeroconf"], "--zeroconf needs a tcp:// URI"),
])
def test_cli_bad_arguments_one_line(capsys, argv, expect):
    assert main(["serve", *argv]) == 2
    assert expect in error_line(capsys.readouterr().err)


def test_cli_model_keyword_and_socket_errors(capsys, tmp_path):
    assert main(["serve", "--uri", "tcp://127.0.0.1:0", "--model", str(tmp_path / "none.pt")]) == 2
    assert "model file not found" in error_line(capsys.readouterr().err)
    assert main(["serve", "--uri", "tcp://127.0.0.1:0", "--keywords", "yes,banana"]) == 2
    assert "keywords not in this model: banana" in error_line(capsys.readouterr().err)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        assert main(["serve", "--uri", f"tcp://127.0.0.1:{busy.getsockname()[1]}"]) == 2
        assert "cannot listen on tcp://127.0.0.1:" in error_line(capsys.readouterr().err)
    finally:
        busy.close()
    f = tmp_path / "not-a-socket"
    f.write_text("x")
    assert main(["serve", "--uri", f"unix://{f}"]) == 2
    assert "exists and is not a socket" in error_line(capsys.readouterr().err)


def test_zeroconf_missing_package_is_one_line(capsys, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "zeroconf" else real(name, *a))
    assert main(["serve", "--uri", "tcp://127.0.0.1:0", "--zeroconf"]) == 2
    assert "--zeroconf needs the zeroconf package" in error_line(capsys.readouterr().err)


def test_zeroconf_on_loopback_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(S, "zeroconf_class", lambda: object)     # as if zeroconf were installed
    assert main(["serve", "--uri", "tcp://127.0.0.1:10400", "--zeroconf"]) == 2
    assert "not reachable from other machines" in error_line(capsys.readouterr().err)


def test_zeroconf_registration_like_the_wyoming_addons():
    """--zeroconf registers `_wyoming._tcp` through wyoming's HomeAssistantZeroconf with the bound port;
    a fake stands in for it (no multicast from the test machine) and no socket is bound here."""
    calls = []

    class FakeZC:
        def __init__(self, port, name, host):
            calls.append((port, name, host))
            self.host = host or "192.0.2.7"

        async def register_server(self):
            calls.append("registered")

    class FakeServer:
        sockets = [type("sock", (), {"getsockname": lambda self: ("0.0.0.0", 10400)})()]

    zc = asyncio.run(S._register_zeroconf("tcp", ("0.0.0.0", 10400), FakeServer(), "kws", FakeZC))
    assert calls == [(10400, "kws", None), "registered"] and zc.host == "192.0.2.7"
    with pytest.raises(S.ServeError, match="not reachable from other machines"):
        asyncio.run(S._register_zeroconf("tcp", ("127.0.0.1", 10400), FakeServer(), "kws", FakeZC))


def test_serve_module_imports_no_torch_at_top_level():
    """Base install becomes run-time only (no torch): serve.py's module-level imports are the standard
    library, numpy and kws.errors; the spotter (kws.stream) and wyoming load inside functions. (`import
    kws` itself still imports torch today, so this is checked on the source.)"""
    import ast
    tree = ast.parse((REPO / "kws" / "serve.py").read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top.add(("." * node.level) + (node.module or ""))
    assert top <= {"__future__", "asyncio", "json", "logging", "os", "signal", "socket", "stat", "sys", "time",
                   "concurrent.futures", "dataclasses", "pathlib", "urllib.parse", "numpy", ".errors"}, top


# --------------------------------------------------------------------------- a real server

def _need(tool_or_path: str, is_file: bool = False):
    ok = Path(tool_or_path).exists() if is_file else shutil.which(tool_or_path) is not None
    if not ok:
        msg = f"not available: {tool_or_path}"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {msg}", pytrace=False)
        pytest.skip(msg)


class ServerProc:
    """`python -m kws.cli serve ...` in a subprocess, stderr (its log) to a file."""

    def __init__(self, log_path: Path, *args: str, uri: str = "tcp://127.0.0.1:0"):
        self.log_path = log_path
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self._err = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "kws.cli", "serve", "--uri", uri, *args],
                                     stdout=subprocess.DEVNULL, stderr=self._err, env=env, cwd=str(REPO))
        m = self.wait_log(r"listening on (\S+)", timeout=120)
        self.uri = m.group(1)
        if self.uri.startswith("tcp://"):
            host, port = self.uri[6:].rsplit(":", 1)
            self.host, self.port = host, int(port)

    def text(self) -> str:
        return self.log_path.read_text()

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def wait_log(self, pattern: str, timeout: float = 10.0, count: int = 1):
        t_end = time.monotonic() + timeout
        while True:
            ms = list(re.finditer(pattern, self.text()))
            if len(ms) >= count:
                return ms[count - 1]
            if self.proc.poll() is not None:
                pytest.fail(f"kws serve exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            if time.monotonic() > t_end:
                pytest.fail(f"no {pattern!r} x{count} in the server log after {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.05)

    def status(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self, sig=signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                pytest.fail(f"kws serve did not stop within {timeout} s after {sig!r}:\n{self.text()[-3000:]}")
        self._err.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _need(str(REPO / "models" / "kws12_gru.npz"), is_file=True)
    s = ServerProc(tmp_path_factory.mktemp("serve") / "serve.log", "--event-timeout", "1")
    yield s
    rc = s.stop()
    assert rc == 0, s.text()[-3000:]
    assert "Traceback" not in s.text() and "Task exception" not in s.text(), s.text()[-5000:]


# --------------------------------------------------------------------------- audio made at test time

def _silence(s: float) -> np.ndarray:
    return np.zeros(int(round(s * SR)), np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    _need("espeak-ng")
    _need("sox")
    return spoken_clips(tmp_path_factory.mktemp("words"))


def spoken_clips(d: Path, words=ALL_WORDS) -> dict:
    """Each keyword spoken by espeak-ng (held-out voice), resampled to 16 kHz by sox, trimmed to the
    word +-10 ms (also used by benchmarks/serve_bench.py)."""
    from test_listen import word_segments_of
    out = {}
    for w in words:
        raw, w16 = d / f"{w}_raw.wav", d / f"{w}_16k.wav"
        subprocess.run(["espeak-ng", "-v", HELD_OUT_VOICE, "-w", str(raw), w], check=True, capture_output=True)
        subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(w16)], check=True,
                       capture_output=True)
        x, sr = sf.read(w16, dtype="float32")
        assert sr == SR
        (a, b), = word_segments_of(x, min_gap_s=1.0)
        out[w] = x[max(0, int(a * SR) - 160): int(b * SR) + 160]
    return out


def compose(clips, words, gap_s=1.5, lead_s=0.5, tail_s=0.8, noise_db=-60.0, seed=0):
    """Words `gap_s` apart over faint noise -> (16 kHz float audio, [(word, start_s, end_s)])."""
    parts, marks, n = [_silence(lead_s)], [], int(round(lead_s * SR))
    for i, w in enumerate(words):
        marks.append((w, n / SR, (n + len(clips[w])) / SR))
        parts.append(clips[w])
        n += len(clips[w])
        g = _silence(gap_s if i < len(words) - 1 else tail_s)
        parts.append(g)
        n += len(g)
    x = np.concatenate(parts)
    rng = np.random.default_rng(seed)
    return (x + rng.normal(0, 10 ** (noise_db / 20), x.size)).astype(np.float32), marks


def reference(arr: np.ndarray, rate: int, keywords=None, **overrides) -> list[tuple[str, int]]:
    """(label, ms) from the streaming API on exactly the samples sent, plus flush (as at audio-stop)."""
    from kws.stream import KeywordSpotter
    sp = KeywordSpotter(sample_rate=rate, keywords=keywords, **overrides)
    dets = [d for i in range(0, len(arr), 4096) for d in sp.process(arr[i:i + 4096])] + sp.flush()
    return [(d.label, int(round(d.time * 1000))) for d in dets]


# --------------------------------------------------------------------------- a wyoming client

def client(server, **kw):
    from wyoming.client import AsyncTcpClient
    return AsyncTcpClient(server.host, server.port, connect_timeout=5, **kw)


async def run_session(c, payload: bytes, rate=SR, width=2, channels=1, chunk_ms=20.0, names="all",
                      pace: float | None = None, timeout=60.0) -> list:
    """detect (unless names == "keep"), audio-start, chunks, audio-stop, then ping; -> the events that
    came back before the pong (the server answers ping after everything sent before it)."""
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.ping import Ping
    from wyoming.wake import Detect
    if names != "keep":
        await c.write_event(Detect(names=None if names == "all" else list(names)).event())
    await c.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    step = max(1, int(round(rate * chunk_ms / 1000))) * width * channels
    t0 = time.monotonic()
    for k, i in enumerate(range(0, len(payload), step)):
        await c.write_event(AudioChunk(rate=rate, width=width, channels=channels, audio=payload[i:i + step]).event())
        if pace:
            delay = t0 + (k + 1) * chunk_ms / 1000 / pace - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    await c.write_event(AudioStop().event())
    await c.write_event(Ping(text="end").event())
    out, t_end = [], time.monotonic() + timeout
    while True:
        ev = await asyncio.wait_for(c.read_event(), max(0.1, t_end - time.monotonic()))
        assert ev is not None, f"server closed the connection; got so far {out}"
        if ev.type == "pong":
            return out
        out.append(ev)


def dets_of(events) -> list[tuple[str, int]]:
    assert all(e.type in ("detection", "not-detected") for e in events), events
    nd = [e for e in events if e.type == "not-detected"]
    d = [(e.data["name"], e.data["timestamp"]) for e in events if e.type == "detection"]
    assert (len(nd) == 1 and not d) or (not nd and d), events       # not-detected iff nothing fired
    return d


def pcm16(x: np.ndarray) -> tuple[bytes, np.ndarray]:
    return encode(x, 2, 1)


# --------------------------------------------------------------------------- behaviour

@pytest.mark.slow
def test_describe_info(server):
    from kws.data.index import NON_KEYWORDS
    from kws.training.modelfile import load_bundle
    from wyoming.info import Describe, Info
    import kws

    async def go():
        async with client(server) as c:
            await c.write_event(Describe().event())
            return Info.from_event(await asyncio.wait_for(c.read_event(), 10))
    info = asyncio.run(go())
    labels = [l for l in load_bundle().labels if l not in NON_KEYWORDS]
    assert [p.name for p in info.wake] == ["kws"]
    prog = info.wake[0]
    assert prog.installed and prog.version == kws.__version__ and prog.attribution.name.startswith("kws")
    assert [m.name for m in prog.models] == labels and len(labels) >= 2
    for m in prog.models:
        assert m.phrase == m.name and m.languages == ["en"] and m.installed and m.attribution.name
    assert not info.asr and not info.tts and not info.handle


@pytest.mark.slow
def test_spoken_keywords_detected_near_word_end(server, clips):
    """"yes", "stop", "left" spoken (espeak-ng, held-out voice) in one session, 16 kHz int16 in 20 ms
    chunks: exactly those detections, each timestamp within 0.3 s of its word's end, and the same
    detections as the streaming API on the same samples."""
    x, marks = compose(clips, WORDS)
    payload, arr = pcm16(x)

    async def go():
        async with client(server) as c:
            return await run_session(c, payload)
    got = dets_of(asyncio.run(go()))
    assert [w for w, _ in got] == list(WORDS), (got, marks)
    for (w, ms), (_, start, end) in zip(got, marks):
        assert abs(ms / 1000 - end) <= 0.3, (w, ms, start, end)
    assert got == reference(arr, SR)


@pytest.mark.slow
def test_noise_gives_not_detected(server):
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 10 ** (-30 / 20), 5 * SR).astype(np.float32)
    payload, arr = pcm16(noise)

    async def go():
        async with client(server) as c:
            return await run_session(c, payload)
    events = asyncio.run(go())
    assert [e.type for e in events] == ["not-detected"] and reference(arr, SR) == []


@pytest.mark.slow
def test_several_sessions_on_one_connection(server, clips):
    """Words, noise, other words at 48 kHz stereo, the first words again: each session starts from a
    reset spotter (timestamps from its own audio-start, equal to a fresh streaming API's)."""
    import soxr
    x1, _ = compose(clips, WORDS)
    x2 = np.random.default_rng(2).normal(0, 0.03, 3 * SR).astype(np.float32)
    x3, _ = compose(clips, ("go", "no", "right"), gap_s=1.2, seed=3)
    x3 = soxr.resample(x3, SR, 48000).astype(np.float32)
    (p1, a1), (p2, a2), (p3, a3) = pcm16(x1), pcm16(x2), encode(x3, 2, 2)

    async def go():
        async with client(server) as c:
            return [await run_session(c, p1), await run_session(c, p2),
                    await run_session(c, p3, rate=48000, channels=2, chunk_ms=10),
                    await run_session(c, p1, chunk_ms=100)]
    s1, s2, s3, s4 = asyncio.run(go())
    r1 = reference(a1, SR)
    assert dets_of(s1) == r1 and r1
    assert [e.type for e in s2] == ["not-detected"] or dets_of(s2) == reference(a2, SR)
    r3 = reference(a3, 48000)
    assert (dets_of(s3) == r3) if r3 else [e.type for e in s3] == ["not-detected"]
    assert dets_of(s4) == r1


@pytest.mark.slow
@pytest.mark.parametrize("rate, width, channels", [(48000, 2, 2), (44100, 4, 1), (22050, 3, 1), (16000, 1, 1),
                                                   (32000, 2, 6)])
def test_audio_formats_converted_as_the_streaming_api(server, clips, rate, width, channels):
    """Any rate, width and channel count: detections equal the streaming API's (downmix, scaling,
    resampling: what `kws listen` applies to its input) on the same integer samples."""
    import soxr
    x, _ = compose(clips, WORDS)
    if rate != SR:
        x = soxr.resample(x, SR, rate).astype(np.float32)
    payload, arr = encode(x * 0.9, width, channels)

    async def go():
        async with client(server) as c:
            return await run_session(c, payload, rate=rate, width=width, channels=channels, chunk_ms=30)
    events = asyncio.run(go())
    ref = reference(arr, rate)
    assert (dets_of(events) == ref) if ref else [e.type for e in events] == ["not-detected"]
    if width >= 2:
        assert ref                                   # not vacuous: the model hears something


@pytest.mark.slow
def test_detect_names_choose_the_keywords(server, clips):
    x, _ = compose(clips, WORDS)
    payload, arr = pcm16(x)

    async def go():
        async with client(server) as c:
            only_stop = await run_session(c, payload, names=["stop"])
            kept = await run_session(c, payload, names="keep")              # names stay for the connection
            unknown = await run_session(c, payload, names=["banana"])
            everything = await run_session(c, payload, names="all")
            return only_stop, kept, unknown, everything
    only_stop, kept, unknown, everything = asyncio.run(go())
    assert dets_of(only_stop) == reference(arr, SR, keywords=["stop"]) == [d for d in reference(arr, SR) if d[0] == "stop"]
    assert dets_of(kept) == dets_of(only_stop)
    assert [e.type for e in unknown] == ["not-detected"]
    assert dets_of(everything) == reference(arr, SR)
    server.wait_log(r"detect: not served here: 'banana'")


@pytest.mark.slow
def test_eight_concurrent_clients_get_only_their_own_detections(server, clips):
    """8 clients at once, each streaming its own word sequence (different words, order and spacing)
    at ~4x real time: each gets exactly the detections of its own audio."""
    heard = [w for w in ALL_WORDS if [d[0] for d in reference(pcm16(compose(clips, [w])[0])[1], SR)] == [w]]
    assert len(heard) >= 4, f"the model hears only {heard} in single-word espeak clips"
    jobs = []
    for i in range(8):
        words = [heard[(i + k) % len(heard)] for k in range(3)]
        x, _ = compose(clips, words, gap_s=1.1 + 0.13 * i, lead_s=0.3 + 0.07 * i, seed=10 + i)
        payload, arr = pcm16(x)
        jobs.append((payload, reference(arr, SR)))
    assert len({tuple(r) for _, r in jobs}) == 8                         # eight different answers

    async def one(payload):
        async with client(server) as c:
            return await run_session(c, payload, pace=4.0)

    async def go():
        return await asyncio.gather(*(one(p) for p, _ in jobs))
    results = asyncio.run(go())
    for k, ((_, ref), events) in enumerate(zip(jobs, results)):
        assert dets_of(events) == ref, (k, ref, events)


@pytest.mark.slow
def test_serve_equals_kws_detect_on_the_same_recording(server, clips, tmp_path, capsys):
    x, _ = compose(clips, ALL_WORDS + ("stop", "yes"), gap_s=1.3, noise_db=-50, seed=5)
    wav = tmp_path / "rec.wav"
    payload, _ = pcm16(x)
    sf.write(wav, np.frombuffer(payload, "<i2"), SR, subtype="PCM_16")
    assert main(["detect", "--json", str(wav)]) == 0
    detect = [(d["label"], int(round(d["time"] * 1000))) for d in map(json.loads, capsys.readouterr().out.splitlines())]

    async def go():
        async with client(server) as c:
            return await run_session(c, sf.read(wav, dtype="int16")[0].astype("<i2").tobytes(), chunk_ms=20)
    assert dets_of(asyncio.run(go())) == detect and len(detect) >= 4


@pytest.mark.slow
def test_keywords_threshold_refractory_options(tmp_path, clips):
    """--keywords, --threshold, --refractory as in `kws listen`: info offers only those keywords and the
    detections are the streaming API's with the same settings."""
    _need(str(REPO / "models" / "kws12_gru.npz"), is_file=True)
    from wyoming.info import Describe, Info
    srv = ServerProc(tmp_path / "serve.log", "--keywords", "stop,yes", "--threshold", "0.6", "--refractory", "0.4")
    x, _ = compose(clips, ("yes", "left", "stop", "go", "yes"), gap_s=0.8)
    payload, arr = pcm16(x)

    async def go():
        async with client(srv) as c:
            await c.write_event(Describe().event())
            info = Info.from_event(await asyncio.wait_for(c.read_event(), 10))
            return info, await run_session(c, payload)
    try:
        info, events = asyncio.run(go())
    finally:
        assert srv.stop() == 0
    assert [m.name for m in info.wake[0].models] == ["yes", "stop"]        # model order
    ref = reference(arr, SR, keywords=["stop", "yes"], threshold=0.6, refractory_s=0.4)
    assert ref and {w for w, _ in ref} <= {"yes", "stop"}
    assert dets_of(events) == ref
    assert "keywords yes,stop, threshold 0.6, refractory 0.4 s" in srv.text()


# --------------------------------------------------------------------------- faults and bad input

async def _raw(server, data: bytes = b"", *, then: str = "close", read: bool = False):
    """Open a raw TCP connection, send `data`, then close / reset / keep it open; -> its local port."""
    r, w = await asyncio.open_connection(server.host, server.port)
    port = w.get_extra_info("sockname")[1]
    if data:
        w.write(data)
        await w.drain()
    if read:
        line = await asyncio.wait_for(r.readline(), 10)
        assert line, "no answer"
    if then == "keep":
        await asyncio.sleep(1.6)                                  # past the server's --event-timeout 1
    if then == "reset":
        w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    w.close()
    try:
        await w.wait_closed()
    except (ConnectionError, OSError):
        pass
    return port


def _ev(type_: str, data: dict | None = None, payload: bytes | None = None, announce: int | None = None) -> bytes:
    head = {"type": type_}
    if data is not None:
        head["data"] = data
    if payload is not None or announce is not None:
        head["payload_length"] = announce if announce is not None else len(payload)
    return (json.dumps(head) + "\n").encode() + (payload or b"")


START16 = {"rate": 16000, "width": 2, "channels": 1}
FAULTS = {
    "garbage bytes": (b"\x00\xff\x13\x37 \xfe\x80garbage\x01\n" * 3, "close", "bad input: header is not JSON"),
    "garbage, no newline": (bytes(b for b in range(256) if b != 10) * 300, "close", "bad input: header line longer than"),
    "non-JSON header": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "close", "bad input: header is not JSON"),
    "JSON, not an event": (b"[1, 2, 3]\n", "close", "bad input: header has no event type"),
    "unknown event types": (_ev("frobnicate") + _ev("run-satellite", {"x": 1}) + _ev("describe"), "read",
                            "closed by client; .*ignored event type\\(s\\) frobnicate, run-satellite"),
    "audio-chunk before audio-start": (_ev("audio-chunk", START16, b"\0\0" * 160), "close",
                                       "bad input: audio-chunk before audio-start"),
    "rate 0": (_ev("audio-start", {**START16, "rate": 0}), "close", "bad input: audio-start: rate 0 not supported"),
    "absurd rate": (_ev("audio-start", {**START16, "rate": 10 ** 12}), "close", "rate 1000000000000 not supported"),
    "width 0": (_ev("audio-start", {**START16, "width": 0}), "close", "width 0 not supported"),
    "absurd width": (_ev("audio-start", {**START16, "width": 1 << 30}), "close", "not supported"),
    "channels 0": (_ev("audio-start", {**START16, "channels": 0}), "close", "channels 0 not supported"),
    "absurd channels": (_ev("audio-start", {**START16, "channels": 10 ** 6}), "close", "channels 1000000 not supported"),
    "chunk format differs": (_ev("audio-start", START16) + _ev("audio-chunk", {**START16, "rate": 8000}, b"\0\0"),
                             "close", "differs from audio-start"),
    "partial frame": (_ev("audio-start", START16) + _ev("audio-chunk", START16, b"\0\0\0"), "close", "whole number"),
    "payload longer than what follows (client waits)": (
        _ev("audio-start", START16) + _ev("audio-chunk", START16, announce=64000) + b"\0" * 1000, "keep",
        "did not arrive within 1 s"),
    "payload longer than what follows (client closes)": (
        _ev("audio-start", START16) + _ev("audio-chunk", START16, announce=64000) + b"\0" * 1000, "close",
        "client disconnected mid-event"),
    "absurd payload length": (_ev("audio-chunk", START16, announce=10 ** 12), "close", "payload_length"),
    "disconnect mid-chunk (reset)": (_ev("audio-start", START16) + _ev("audio-chunk", START16, announce=640) + b"\0" * 300,
                                     "reset", "client disconnected mid-event|connection lost"),
    "header cut off": (b'{"type": "audio-st', "close", "client disconnected mid-event"),
}


def _lines_for(server, port: int) -> list[str]:
    return [l for l in server.lines() if f"127.0.0.1:{port}:" in l]


def _conns_for(server, port: int) -> dict[int, list[str]]:
    """The log lines of each connection that used this client port, by connection id: with 200
    connections in a row the OS can hand a later one the same ephemeral port."""
    out: dict[int, list[str]] = {}
    for l in _lines_for(server, port):
        m = re.search(r"conn (\d+) 127\.0\.0\.1:", l)
        out.setdefault(int(m.group(1)) if m else -1, []).append(l)
    return out


@pytest.mark.slow
def test_faults_cost_only_their_own_connection(server, clips):
    """Every fault and 200 connections opened and dropped, while a live client streams: each fault gets
    exactly one log line (its connection's) with the reason; the live client gets the right detections
    before, during and after; the server stays up (the module fixture checks it exits cleanly)."""
    x, _ = compose(clips, WORDS, gap_s=1.0)
    payload, arr = pcm16(x)
    ref = reference(arr, SR)
    assert ref

    async def faults():
        ports = {}
        for name, (data, then, _) in FAULTS.items():
            ports[name] = await _raw(server, data, then="close" if then == "read" else then, read=then == "read")
        dropped = []
        for i in range(200):                                      # opened and dropped, some mid-header
            mode = ("close", "reset")[i % 2]
            dropped.append(await _raw(server, b'{"type": "aud' if i % 3 == 0 else b"", then=mode))
        return ports, dropped

    async def go():
        async with client(server) as live:
            before = await run_session(live, payload)
            during_task = asyncio.create_task(run_session(live, payload, pace=2.0))
            ports, dropped = await faults()
            during = await during_task
            after = await run_session(live, payload)
            return before, during, after, ports, dropped
    before, during, after, ports, dropped = asyncio.run(go())
    assert dets_of(before) == ref and dets_of(during) == ref and dets_of(after) == ref
    for name, port in ports.items():
        server.wait_log(rf"127\.0\.0\.1:{port}: ")
    time.sleep(0.3)
    for name, port in ports.items():
        conns = _conns_for(server, port)
        lines = conns[min(conns)]                  # the fault's own connection came before any reuse of its port
        assert len(lines) == 1 and re.search(FAULTS[name][2], lines[0]), (name, lines)
    one_each = lambda p: bool(_conns_for(server, p)) and all(len(v) == 1 for v in _conns_for(server, p).values())
    t_end = time.monotonic() + 10
    while not all(one_each(p) for p in dropped) and time.monotonic() < t_end:
        time.sleep(0.1)
    bad = {p: _lines_for(server, p) for p in dropped if not one_each(p)}
    assert not bad, bad
    assert server.proc.poll() is None


@pytest.mark.slow
def test_memory_and_fds_flat_over_200_connection_cycles(server, clips, capsys):
    """200 cycles of connect, describe, a 1 s session with a keyword, disconnect (half of them without
    waiting for the answer): resident memory and open file descriptors stay flat."""
    from wyoming.info import Describe
    x, _ = compose(clips, ["yes"], lead_s=0.2, tail_s=0.3)
    payload, arr = pcm16(x)
    ref = reference(arr, SR)

    async def cycle(i):
        async with client(server) as c:
            await c.write_event(Describe().event())
            assert (await asyncio.wait_for(c.read_event(), 10)).type == "info"
            if i % 2:
                assert dets_of(await run_session(c, payload)) == ref
            else:
                from wyoming.audio import AudioChunk, AudioStart
                await c.write_event(AudioStart(**START16).event())
                await c.write_event(AudioChunk(**START16, audio=payload[:8000]).event())

    async def cycles(n, offset):
        for i in range(n):
            await cycle(offset + i)

    def settled():
        t_end = time.monotonic() + 5
        while time.monotonic() < t_end and server.text().count("closed by client") < want[0]:
            time.sleep(0.05)
        time.sleep(0.3)
        return server.status("VmRSS"), server.fds()

    want = [server.text().count("closed by client") + 30]
    asyncio.run(cycles(30, 0))                                   # warm-up: caches, allocator arenas
    rss0, fd0 = settled()
    samples = []
    for k in range(4):
        want[0] += 50
        asyncio.run(cycles(50, 30 + 50 * k))
        samples.append(settled())
    rss = [r for r, _ in samples]
    with capsys.disabled():
        print(f"\n[serve memory] RSS after warm-up {rss0 / 1024:.1f} MB, after each 50 cycles "
              f"{', '.join(f'{r / 1024:.1f}' for r in rss)} MB; fds {fd0} -> {[f for _, f in samples]}")
    assert all(f <= fd0 + 2 for _, f in samples), (fd0, samples)
    assert rss[-1] - rss0 <= 6 * 1024, (rss0, rss)                 # < 6 MB over 200 cycles
    assert rss[-1] - rss[1] <= 3 * 1024, (rss0, rss)               # and no steady growth


# --------------------------------------------------------------------------- shutdown, unix sockets

@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_clean_shutdown_on_signal_over_unix_socket(tmp_path, clips, sig):
    """Over unix:// (and, for SIGTERM, with 2 processing threads): describe and a session work; a signal
    while a client is mid-session ends the server within seconds, exit 0, that connection logged as
    ended by the shutdown, socket removed."""
    _need(str(REPO / "models" / "kws12_gru.npz"), is_file=True)
    from wyoming.audio import AudioChunk, AudioStart
    from wyoming.client import AsyncUnixClient
    from wyoming.info import Describe
    sock = tmp_path / "kws.sock"
    workers = ["--workers", "2"] if sig == signal.SIGTERM else []     # processing threads, or in the loop
    srv = ServerProc(tmp_path / "serve.log", *workers, uri=f"unix://{sock}")
    x, _ = compose(clips, ["stop"])
    payload, arr = pcm16(x)

    async def go():
        async with AsyncUnixClient(str(sock), connect_timeout=5) as c:
            await c.write_event(Describe().event())
            assert (await asyncio.wait_for(c.read_event(), 10)).type == "info"
            assert dets_of(await run_session(c, payload)) == reference(arr, SR)
            await c.write_event(AudioStart(**START16).event())
            await c.write_event(AudioChunk(**START16, audio=payload[:16000]).event())
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            srv.proc.send_signal(sig)
            ev = await asyncio.wait_for(c.read_event(), 10)      # the server closes our connection
            return ev, time.monotonic() - t0
    ev, took = asyncio.run(go())
    assert ev is None and took < 5
    srv.proc.wait(10)
    assert srv.stop(sig, timeout=10) == 0
    log = srv.text()
    assert f"stopped ({sig.name})" in log and "server shutdown" in log and "Traceback" not in log, log
    assert not sock.exists()
