"""`kws listen` / `kws devices`: error paths with a fake sounddevice, file replay == the streaming API,
and end-to-end runs through a PulseAudio virtual microphone (tests/pulse.py)."""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from conftest import random_bundle, speech_like
from fake_sounddevice import FakeSD
from pulse import VirtualMic, require_pulseaudio, virtual_mic  # noqa: F401  (fixture)
from kws import listen as L
from kws.audio import read_blocks
from kws.cli import main
from kws.training.features_torch import MFCC
from kws.enginefile import default_model_path
from kws.training.modelfile import DEFAULT_MODEL, save_bundle
from kws.stream import KeywordSpotter

REPO = Path(__file__).resolve().parent.parent
SR = 16000


def _silence(s: float) -> np.ndarray:
    return np.zeros(int(round(s * SR)), np.float32)


def bursts_wave() -> np.ndarray:
    """0.5 s silence, then 4 speech-like bursts of 0.7 s each followed by 1.5 s of silence (9.3 s)."""
    parts = [_silence(0.5)]
    for i in range(4):
        parts += [speech_like(0.7, seed=10 + i), _silence(1.5)]
    return np.concatenate(parts)


BURSTS = [(0.5 + i * 2.2, 0.5 + i * 2.2 + 0.7) for i in range(4)]     # (start, end) of each burst


def reactive_bundle(feats: torch.Tensor, seed: int = 0):
    """Random weights, but inputs normalised on `feats` (MFCC frames of the test audio) and a sharpened
    head, so the posteriors react to speech (peaks 0.6-1.0) and stay low in silence."""
    b = random_bundle(seed=seed, refractory_s=1.0)
    f = feats
    with torch.no_grad():
        b.model.feat_mean.copy_(f.mean(0))
        b.model.feat_std.copy_(f.std(0))
        b.model.head.weight.mul_(20.0)
        b.model.head.bias.zero_()
    return b


def calibrated_bundle(wave: np.ndarray):
    """(bundle, threshold) such that the random model fires exactly once inside each speech burst, and
    robustly so: the same labels (times within 60 ms) at threshold +-0.03, when the stream starts at another
    phase of the feature-frame grid (a live stream starts at an arbitrary sample) and after a
    16 -> 44.1 kHz round trip (what the PulseAudio path does). Searching keeps the test independent of
    architecture details such as frame stacking."""
    def dets(b, thr, x=wave, sr=SR, shift=0.0):
        x = np.concatenate([np.zeros(int(round(shift * sr)), np.float32), x])
        s = KeywordSpotter(b, sample_rate=sr, threshold=thr)
        return [(d.label, d.time - shift) for d in s.process(x) + s.flush()]

    y441 = soxr.resample(wave, SR, 44100).astype(np.float32)
    feats = MFCC(random_bundle().features)(torch.from_numpy(wave))
    for seed in range(12):
        b = reactive_bundle(feats, seed)
        for thr in (0.55, 0.6, 0.65, 0.7, 0.75):
            d = dets(b, thr)
            if len(d) != len(BURSTS) or not all(a <= t <= e + 0.3 for (_, t), (a, e) in zip(d, BURSTS)):
                continue
            variants = (lambda: dets(b, thr - 0.03), lambda: dets(b, thr + 0.03),
                        lambda: dets(b, thr, shift=0.0037), lambda: dets(b, thr, shift=0.0131),
                        lambda: dets(b, thr, shift=0.0171), lambda: dets(b, thr, y441, 44100, shift=0.0093))
            if all([lab for lab, _ in o] == [lab for lab, _ in d]
                   and np.allclose([t for _, t in o], [t for _, t in d], atol=0.06) for o in (v() for v in variants)):
                return b, thr
    raise AssertionError("no random model fires once per burst; adjust reactive_bundle()")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("listen")
    y = bursts_wave()
    bundle, thr = calibrated_bundle(y)
    model = d / "reactive.npz"
    save_bundle(bundle, model)
    wav = d / "bursts.wav"
    sf.write(wav, y, SR, subtype="PCM_16")
    # the same audio as a 48 kHz stereo file (a typical microphone format)
    y48 = soxr.resample(sf.read(wav, dtype="float32")[0], SR, 48000).astype(np.float32)
    wav48 = d / "bursts48k_stereo.wav"
    sf.write(wav48, np.stack([y48, 0.5 * y48], 1), 48000, subtype="FLOAT")
    return {"dir": d, "model": model, "wav": wav, "wav48": wav48, "bundle": bundle, "thr": thr}


def reference(bundle_or_path, wav, threshold, block_s=0.05, **kw) -> list[dict]:
    """Detections from feeding the file straight to the streaming API (the ground truth)."""
    sr = sf.info(str(wav)).samplerate
    s = KeywordSpotter(bundle_or_path, sample_rate=sr, threshold=threshold, **kw)
    dets = []
    for block, _ in read_blocks(wav, block_s):
        dets += s.process(block)
    dets += s.flush()
    return [d.to_dict() for d in dets]


def json_lines(text: str) -> list[dict]:
    return [json.loads(l) for l in text.splitlines() if l.strip()]


def strip_wall(dets: list[dict]) -> list[dict]:
    return [{k: d[k] for k in ("label", "score", "time")} for d in dets]


def error_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    errs = [l for l in lines if l.startswith("kws: error:")]
    assert len(errs) == 1 and lines[-1] == errs[0], err
    return errs[0]


# --------------------------------------------------------------------------- a fake sounddevice

MIC = dict(name="USB Mic: Audio (hw:1,0)", max_input_channels=1, default_samplerate=48000.0)
MIC2 = dict(name="HDA Intel PCH: ALC3246 Analog (hw:0,0)", max_input_channels=2, default_samplerate=44100.0)


@pytest.fixture
def fake_sd(monkeypatch):
    def install(**kw) -> FakeSD:
        sd = FakeSD(**kw)
        monkeypatch.setattr(L, "_sounddevice", lambda: sd)
        return sd
    return install


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(map(str, argv)))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# --------------------------------------------------------------------------- (a) error paths

def test_no_input_device(fake_sd, capsys, assets):
    fake_sd(devices=[])
    rc, out, err = run_cli(capsys, "listen", "--model", assets["model"])
    assert rc != 0 and out == ""
    line = error_line(err)
    assert "no audio input device found" in line and "microphone" in line
    rc, out, err = run_cli(capsys, "devices")
    assert rc != 0 and "no audio input device found" in error_line(err)


def test_no_default_device_with_several(fake_sd, capsys, assets):
    fake_sd(devices=[MIC, MIC2], default=-1)
    rc, out, err = run_cli(capsys, "listen", "--model", assets["model"])
    assert rc != 0 and "kws devices" in error_line(err)


@pytest.mark.parametrize("spec,expect", [("7", "no input device with index 7"),
                                         ("bluetooth", "no input device matches 'bluetooth'"),
                                         ("hw:", "2 input devices match 'hw:'")])
def test_unknown_or_ambiguous_device(fake_sd, capsys, assets, spec, expect):
    fake_sd(devices=[MIC, MIC2], default=0)
    rc, out, err = run_cli(capsys, "listen", "--model", assets["model"], "--device", spec)
    assert rc != 0 and out == ""
    line = error_line(err)
    assert expect in line and "kws devices" in line


def test_device_open_fails(fake_sd, capsys, assets):
    fake_sd(devices=[MIC], default=0, open_error="Error opening InputStream: Device unavailable [PaErrorCode -9985]")
    rc, out, err = run_cli(capsys, "listen", "--model", assets["model"], "--device", "usb")
    line = error_line(err)
    assert rc != 0 and "Device unavailable" in line and "kws devices" in line and "audio" in line


class _RaiseOSErrorOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes `import sounddevice` fail the way it does when libportaudio2 is missing."""

    def find_spec(self, name, path=None, target=None):
        if name == "sounddevice":
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise OSError("PortAudio library not found")


@pytest.mark.parametrize("cmd", ["listen", "devices"])
def test_portaudio_missing(monkeypatch, capsys, assets, cmd):
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_RaiseOSErrorOnImport()] + sys.meta_path)
    rc, out, err = run_cli(capsys, cmd, *(["--model", assets["model"]] if cmd == "listen" else []))
    line = error_line(err)
    assert rc != 0 and "PortAudio library not found" in line and "libportaudio2" in line


def test_stalled_stream_is_an_error_not_a_hang(fake_sd, capsys, assets, monkeypatch):
    monkeypatch.setattr(L, "STALL_S", 0.5)
    fake_sd(devices=[MIC], default=0, audio=np.zeros(48000, np.float32), after="stall")
    t = time.monotonic()
    rc, out, err = run_cli(capsys, "listen", "--model", assets["model"])
    assert time.monotonic() - t < 10
    line = error_line(err)
    assert rc != 0 and "no audio from" in line and "stalled or unplugged" in line


@pytest.mark.parametrize("after", ["stall", "finish"])
def test_stream_that_never_delivers_is_an_error_and_never_says_listening(fake_sd, capsys, assets, monkeypatch, after):
    """"listening" means audio flows: a stream that opens but delivers no block is one error line."""
    monkeypatch.setattr(L, "STALL_S", 0.5)
    fake_sd(devices=[MIC], default=0, audio=np.zeros(10, np.float32), after=after)   # shorter than a block
    t = time.monotonic()
    rc, out, err = run_cli(capsys, "listen", "--model", assets["model"])
    assert time.monotonic() - t < 10
    line = error_line(err)
    assert rc != 0 and "listening to" not in err, err
    assert ("within 0.5 s of opening it" in line) if after == "stall" else ("before delivering any audio" in line), line


def test_stream_that_stops_is_an_error(fake_sd, capsys, assets):
    fake_sd(devices=[MIC], default=0, audio=np.zeros(24000, np.float32), after="finish")
    t = time.monotonic()
    rc, out, err = run_cli(capsys, "listen", "--model", assets["model"])
    assert time.monotonic() - t < 10
    line = error_line(err)
    assert rc != 0 and "stopped" in line and "unplugged" in line


def test_overflows_are_counted_never_fatal(fake_sd, capsys, assets):
    fake_sd(devices=[MIC], default=0, audio=np.zeros(48000, np.float32), after="loop", overflow_every=5)
    rc, out, err = run_cli(capsys, "listen", "--model", assets["model"], "--duration", "2")
    assert rc == 0, err
    m = re.search(r"(\d+) input overflow", err)
    assert m and int(m.group(1)) >= 4, err


@pytest.fixture
def sigint_handled():
    """A shell starts background jobs with SIGINT ignored, and then Ctrl-C (and _thread.interrupt_main)
    does nothing: the test gets Python's own SIGINT handling however pytest was launched, restored after."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_ctrl_c_exits_cleanly_with_summary(fake_sd, capsys, assets, sigint_handled):
    fake_sd(devices=[MIC], default=0, audio=np.zeros(48000, np.float32), after="interrupt")
    rc, out, err = run_cli(capsys, "listen", "--model", assets["model"])
    assert rc == 0, err
    last = err.strip().splitlines()[-1]
    assert re.match(r"kws: interrupted after [\d.]+ s of audio: 0 detection\(s\), 0 input overflow\(s\)", last), err


def test_48k_stereo_only_device_gives_reference_detections(fake_sd, capsys, assets):
    """A device that refuses mono and runs at 48 kHz: opened at its own rate with 2 channels, downmixed,
    resampled by the spotter: the same detections as the 16 kHz file through the API."""
    y48, _ = sf.read(assets["wav48"], dtype="float32")
    sd = fake_sd(devices=[dict(MIC2, default_samplerate=48000.0)], default=0, audio=y48, after="stall",
                 mono_ok=False)
    rc, out, err = run_cli(capsys, "listen", "--model", assets["model"], "--threshold", assets["thr"], "--json",
                           "--duration", len(y48) / 48000 - 0.06)
    assert rc == 0, err
    assert sd.opened["samplerate"] == 48000 and sd.opened["channels"] == 2 and sd.opened["dtype"] == "float32"
    assert sd.opened["blocksize"] == 4800       # 100 ms, the default block
    got, ref = json_lines(out), reference(assets["model"], assets["wav48"], assets["thr"])
    assert len(ref) >= 3
    assert [d["label"] for d in got] == [d["label"] for d in ref]
    np.testing.assert_allclose([d["time"] for d in got], [d["time"] for d in ref], atol=0.011)


def test_devices_lists_inputs_and_marks_default(fake_sd, capsys):
    fake_sd(devices=[MIC, dict(name="HDMI out", max_input_channels=0, default_samplerate=48000.0), MIC2],
            default=2)
    rc, out, err = run_cli(capsys, "devices")
    assert rc == 0, err
    rows = [l for l in out.splitlines() if "hw:" in l]
    assert len(rows) == 2 and "HDMI" not in out
    assert rows[0].startswith(" ") and "48000" in rows[0] and re.search(r"\b1\b", rows[0])
    assert rows[1].startswith("*") and "44100" in rows[1] and re.search(r"\b2\b", rows[1])
    rc, out, _ = run_cli(capsys, "devices", "--json")
    assert [d["default"] for d in json_lines(out)] == [False, True]


@pytest.mark.parametrize("argv,expect", [
    (["--keywords", "yes,bogus"], "keywords not in this model: bogus"),
    (["--threshold", "1.5"], "--threshold must be between 0 and 1"),
    (["--block-ms", "0"], "--block-ms"),
    (["--fast"], "--fast only applies to --input"),
])
def test_bad_arguments_one_line(capsys, assets, argv, expect):
    rc, out, err = run_cli(capsys, "listen", "--model", assets["model"], "--input", assets["wav"], *argv) \
        if argv != ["--fast"] else run_cli(capsys, "listen", "--model", assets["model"], *argv)
    assert rc != 0 and expect in error_line(err)


def test_missing_input_file_and_model(capsys, assets, tmp_path):
    rc, _, err = run_cli(capsys, "listen", "--model", assets["model"], "--input", tmp_path / "nope.wav")
    assert rc != 0 and "no such file" in error_line(err)
    rc, _, err = run_cli(capsys, "listen", "--model", tmp_path / "nope.pt", "--input", assets["wav"])
    assert rc != 0 and "model file not found" in error_line(err)


# --------------------------------------------------------------------------- (b) file replay == API

@pytest.mark.parametrize("which,block_ms", [("wav", 50), ("wav48", 20), ("wav", 100)])
def test_input_fast_json_equals_streaming_api(capsys, assets, which, block_ms):
    rc, out, err = run_cli(capsys, "listen", "--model", assets["model"], "--input", assets[which], "--fast",
                           "--json", "--threshold", assets["thr"], "--block-ms", block_ms)
    assert rc == 0, err
    got, ref = json_lines(out), reference(assets["model"], assets[which], assets["thr"])
    assert len(ref) >= 3
    assert all(set(d) == {"time", "label", "score", "wall"} for d in got)
    assert all(abs(d["wall"] - time.time()) < 60 for d in got)
    assert strip_wall(got) == ref
    assert f"{len(ref)} detection(s)" in err.strip().splitlines()[-1]


def test_input_plain_lines(capsys, assets):
    rc, out, err = run_cli(capsys, "listen", "--model", assets["model"], "--input", assets["wav"], "--fast",
                           "--threshold", assets["thr"])
    assert rc == 0
    ref = reference(assets["model"], assets["wav"], assets["thr"])
    lines = out.strip().splitlines()
    assert len(lines) == len(ref)
    for line, d in zip(lines, ref):
        assert re.fullmatch(r"\s*\d+\.\d\ds  \S+  \d\.\d\d", line), line
        t, lab, score = line.split()
        assert lab == d["label"] and abs(float(t[:-1]) - d["time"]) <= 0.005


def test_input_keywords_filter(capsys, assets):
    ref = reference(assets["model"], assets["wav"], assets["thr"])
    keep = ref[0]["label"]
    rc, out, _ = run_cli(capsys, "listen", "--model", assets["model"], "--input", assets["wav"], "--fast",
                         "--json", "--threshold", assets["thr"], "--keywords", keep)
    assert rc == 0
    got = json_lines(out)
    assert got and {d["label"] for d in got} == {keep}
    assert strip_wall(got) == reference(assets["model"], assets["wav"], assets["thr"], keywords=[keep])


def test_input_replays_at_real_time_pace(capsys, assets):
    t = time.monotonic()
    rc, out, err = run_cli(capsys, "listen", "--model", assets["model"], "--input", assets["wav"],
                           "--duration", "1.0", "--json")
    elapsed = time.monotonic() - t
    assert rc == 0 and 0.9 <= elapsed < 3.0, (elapsed, err)
    assert "after 1.0 s of audio" in err


def test_sigint_subprocess_exits_cleanly(assets):
    p = subprocess.Popen([sys.executable, "-m", "kws.cli", "listen", "--model", str(assets["model"]),
                          "--input", str(assets["wav"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=REPO, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = p.stderr.readline()
        assert "listening to" in first, first
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert re.match(r"kws: interrupted after [\d.]+ s of audio", err.strip().splitlines()[-1]), err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- (c) end to end

class ListenProc:
    """`kws listen` as a subprocess: stdout/stderr lines with arrival wall times, CPU and peak RSS."""

    def __init__(self, *argv: str):
        self.p = subprocess.Popen([sys.executable, "-m", "kws.cli", "listen", *argv], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.out, self.err = [], []
        self.started = threading.Event()
        self.t_listen = None          # wall time of the "listening" line (stream started)
        self.cpu_listen = None        # CPU seconds at that moment
        self.samples = []             # (wall, cpu_s, hwm_kb)
        self._threads = [threading.Thread(target=self._read, args=(self.p.stdout, self.out), daemon=True),
                         threading.Thread(target=self._read, args=(self.p.stderr, self.err), daemon=True),
                         threading.Thread(target=self._poll, daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self, f, sink):
        for line in f:
            now = time.time()
            sink.append((now, line.rstrip("\n")))
            if sink is self.err and "listening to" in line and not self.started.is_set():
                self.t_listen = now
                self.cpu_listen = self._cpu()
                self.started.set()

    def _cpu(self):
        try:
            stat = Path(f"/proc/{self.p.pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime + stime
        except (OSError, ValueError, IndexError):
            return None

    def _hwm(self):
        try:
            for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return None

    def _poll(self):
        while self.p.poll() is None:
            cpu, hwm = self._cpu(), self._hwm()
            if cpu is not None and hwm is not None:
                self.samples.append((time.time(), cpu, hwm))
            time.sleep(0.1)

    def wait_started(self, timeout=90):
        if not self.started.wait(timeout):
            self.kill()
            raise AssertionError(f"kws listen did not start: {self.stderr()}")

    def wait(self, timeout):
        try:
            self.p.wait(timeout=timeout)
        finally:
            self.kill()
        for t in self._threads:
            t.join(timeout=5)
        return self.p.returncode

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def stderr(self) -> str:
        return "\n".join(l for _, l in self.err)

    def detections(self) -> list[dict]:
        return [dict(json.loads(l), read_wall=t) for t, l in self.out if l.strip()]

    def usage(self) -> dict:
        """CPU percent of one core while listening (after model load) and peak RSS."""
        if not self.samples or self.cpu_listen is None:
            return {"cpu_percent": float("nan"), "peak_rss_mb": float("nan")}
        t1, cpu1, _ = self.samples[-1]
        span = max(t1 - self.t_listen, 1e-3)
        return {"cpu_percent": 100.0 * (cpu1 - self.cpu_listen) / span, "listen_s": span,
                "peak_rss_mb": max(h for _, _, h in self.samples) / 1024.0}


def _report(capsys, title: str, rows: dict) -> None:
    with capsys.disabled():
        print(f"\n[{title}] " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in rows.items()))


def _live_run(mic, model, wav, extra=(), lead_s=1.0, tail_s=2.0):
    """Start `kws listen --json --duration D`, play `wav` into the virtual mic after `lead_s`,
    return (process, wall time paplay started)."""
    dur = lead_s + sf.info(str(wav)).duration + tail_s
    proc = ListenProc("--model", str(model), "--json", "--duration", f"{dur:.2f}", *extra)
    proc.wait_started()
    time.sleep(lead_s)
    t_play = mic.play(wav)
    rc = proc.wait(timeout=dur + 30)
    assert rc == 0, proc.stderr()
    assert "0 input overflow(s)" in proc.stderr(), proc.stderr()
    return proc, t_play


@pytest.mark.e2e
def test_e2e_virtual_mic_matches_file_replay(virtual_mic, assets, capsys):
    """(c1) Model-independent: a random (reactive) model through the real audio stack (paplay -> PulseAudio
    null sink -> ALSA pulse plugin -> PortAudio at the device's 44.1 kHz -> kws listen) reports the same
    detections, at the same audio times, as `kws listen --input same.wav --fast --json`."""
    model, wav = assets["model"], assets["wav"]
    rc, out, err = run_cli(capsys, "listen", "--model", model, "--input", wav, "--fast", "--json",
                           "--threshold", assets["thr"])
    assert rc == 0, err
    replay = strip_wall(json_lines(out))
    truth = reference(model, wav, assets["thr"])
    assert replay == truth and len(replay) == len(BURSTS)

    proc, t_play = _live_run(virtual_mic, model, wav, extra=("--threshold", str(assets["thr"])))
    live = proc.detections()
    assert [d["label"] for d in live] == [d["label"] for d in replay], (live, replay, proc.stderr())
    # live times count from the stream start, replay times from the file start: one constant offset
    offsets = np.array([a["time"] - b["time"] for a, b in zip(live, replay)])
    offset = float(np.median(offsets))
    assert np.all(np.abs(offsets - offset) <= 0.15), offsets
    # ... and that offset is when paplay started, by the wall clock (pipeline latency ≈ tens of ms)
    assert -0.15 <= offset - (t_play - proc.t_listen) <= 0.4, (offset, t_play - proc.t_listen)
    # latency: the frame that fired, in the played audio -> the JSON line's wall time
    lat = np.array([a["wall"] - (t_play + b["time"]) for a, b in zip(live, replay)])
    _report(capsys, "e2e random model", dict(detections=len(live), offset_jitter_s=float(np.ptp(offsets)),
                                             latency_mean_s=float(lat.mean()), latency_max_s=float(lat.max()),
                                             **proc.usage()))


# -- (c2) the shipped model with synthetic speech

WORDS = ("yes", "stop", "left")


def _need_tools(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        msg = f"not installed: {', '.join(missing)} (apt-get install -y espeak-ng sox)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the end-to-end test cannot run: {msg}", pytrace=False)
        pytest.skip(msg)


def _need_model():
    if not DEFAULT_MODEL.exists():
        pytest.skip(f"shipped model {DEFAULT_MODEL} not there yet")


C2_THRESHOLD = 0.88

# espeak-ng's m7 variant is a voice family held out of the synthetic training corpus (its testing split)
HELD_OUT_VOICE = "en-us+m7"


def speak_wav(path: Path, words=WORDS, gap_s=1.5, voice=HELD_OUT_VOICE) -> Path:
    """espeak-ng words in a held-out voice, resampled to 16 kHz by sox, `gap_s` apart, 0.5 s padding."""
    parts = [_silence(0.5)]
    for i, w in enumerate(words):
        raw, w16 = path.parent / f"{w}_raw.wav", path.parent / f"{w}_16k.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), w], check=True, capture_output=True)
        subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(w16)], check=True,
                       capture_output=True)
        x, sr = sf.read(w16, dtype="float32")
        assert sr == SR
        (a, b), = word_segments_of(x, min_gap_s=1.0)      # trim espeak's own leading/trailing silence
        x = x[max(0, int(a * SR) - 160): int(b * SR) + 160]
        parts += [x, _silence(gap_s if i < len(words) - 1 else 0.5)]
    sf.write(path, np.concatenate(parts), SR, subtype="PCM_16")
    return path


def word_segments(wav: Path, rel_db=-35.0, min_gap_s=0.3) -> list[tuple[float, float]]:
    """(start, end) of each word from the 10 ms energy envelope: frames within 35 dB of the peak,
    merged across gaps shorter than 0.3 s."""
    x, sr = sf.read(wav, dtype="float32")
    return word_segments_of(x, sr, rel_db, min_gap_s)


def word_segments_of(x: np.ndarray, sr: int = SR, rel_db=-35.0, min_gap_s=0.3) -> list[tuple[float, float]]:
    hop = sr // 100
    n = len(x) // hop
    e = 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    active = np.flatnonzero(e > e.max() + rel_db)
    segs = []
    for f in active:
        if segs and (f - segs[-1][1]) * hop / sr < min_gap_s:
            segs[-1][1] = f
        else:
            segs.append([f, f])
    return [(a * hop / sr, (b + 1) * hop / sr) for a, b in segs]


@pytest.mark.e2e
def test_e2e_shipped_model_hears_spoken_keywords(virtual_mic, tmp_path, capsys):
    """(c2) The shipped model: "yes", "stop", "left" spoken into the virtual mic are each reported
    within 1 s (wall clock) after the word ends in the played audio."""
    _need_model()
    _need_tools("espeak-ng", "sox")
    wav = speak_wav(tmp_path / "words.wav")
    segs = word_segments(wav)
    assert len(segs) == len(WORDS), segs
    # The shipped threshold (0.94) is tuned on real voices at 2 false alarms/hour; this held-out TTS
    # voice's "yes" peaks at 0.944-0.960 depending on where the 44.1 kHz stream's samples fall, so at
    # 0.94 the test flickered (1 run in ~10). At 0.88 each word clears it by >= 0.06 and "stop"'s
    # plateau stays >= 0.06 under it after the refractory second (no double report): this test is
    # about the audio stack and timing, the model's calibration is measured in models/kws12_gru.md.
    proc, t_play = _live_run(virtual_mic, default_model_path(), wav, extra=("--threshold", str(C2_THRESHOLD)))
    live = proc.detections()
    assert [d["label"] for d in live] == list(WORDS), (live, segs)
    lat = []
    for d, (start, end) in zip(live, segs):
        assert t_play + start <= d["wall"] <= t_play + end + 1.0, (d, start, end, t_play)
        lat.append(d["wall"] - (t_play + end))
    _report(capsys, "e2e shipped model", dict(latency_after_word_end_mean_s=float(np.mean(lat)),
                                              latency_after_word_end_max_s=float(np.max(lat)), **proc.usage()))


@pytest.mark.e2e
def test_e2e_shipped_model_ignores_noise(virtual_mic, tmp_path, capsys):
    """(c2) 5 s of white noise at -30 dBFS into the virtual mic: no detection."""
    _need_model()
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 10 ** (-30 / 20), 5 * SR).astype(np.float32)
    wav = tmp_path / "noise.wav"
    sf.write(wav, np.concatenate([_silence(0.1), noise, _silence(0.1)]), SR, subtype="PCM_16")
    proc, _ = _live_run(virtual_mic, default_model_path(), wav)
    assert proc.detections() == [], proc.detections()
    _report(capsys, "e2e shipped model, noise", proc.usage())


# --------------------------------------------------------------------------- helpers: CI policy, live view

def test_virtual_mic_skips_locally_but_fails_on_ci(monkeypatch):
    import pulse
    monkeypatch.setattr(pulse.shutil, "which", lambda tool: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        pulse.require_pulseaudio()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        pulse.require_pulseaudio()


def test_live_view_renders(assets):
    import io
    from collections import deque
    from rich.console import Console
    from kws.stream import Detection
    st = L.ViewState(source="'USB Mic' (#1, ALSA)", rate=48000, level=-23.5, peak=-6.0,
                     top=[("yes", 0.91), ("_silence_", 0.05), ("no", 0.02)],
                     recent=deque([Detection("yes", 0.91, 12.34)], maxlen=5), overflows=3, seconds=12.5)
    buf = io.StringIO()
    Console(file=buf, width=100, force_terminal=False).print(L.LiveOutput.render(st))
    text = buf.getvalue()
    for needle in ("-23.5 dBFS", "yes", "0.91", "_silence_", "3 overflow(s)", "12.3s yes 0.91", "48000 Hz"):
        assert needle in text, (needle, text)
