"""`kws listen --retry` (issue 23, long-running use): the microphone goes away and comes back; kws logs one
line, retries with backoff and resumes with a fresh spotter state, instead of exiting.

A unit test with a fake sounddevice whose stream ends, whose next opens fail and whose device then comes
back; an end-to-end test through the PulseAudio virtual microphone (tests/pulse.py) whose null sink is
unloaded and loaded again while `kws listen --retry` runs."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws import listen as L
from kws.cli import main
from fake_sounddevice import FlakySD
from pulse import VirtualMic, require_pulseaudio, virtual_mic, wait_for_line  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parent.parent
HELD_OUT_VOICE = "en-us+m7"


def spoken(word: str, tmp: Path, rate: int, lead_s=0.5, tail_s=1.2) -> np.ndarray:
    """`word` by espeak-ng at `rate` Hz, with silence around it (float32)."""
    import soxr
    if not _has("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    wav = tmp / f"{word}.wav"
    subprocess.run(["espeak-ng", "-v", HELD_OUT_VOICE, "-w", str(wav), word], check=True, capture_output=True)
    x, sr = sf.read(wav, dtype="float32")
    x = soxr.resample(x, sr, rate).astype(np.float32)
    return np.concatenate([np.zeros(int(lead_s * rate), np.float32), x, np.zeros(int(tail_s * rate), np.float32)])


def _has(tool: str) -> bool:
    import shutil
    return shutil.which(tool) is not None


def _error_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    errs = [l for l in lines if l.startswith("kws: error:")]
    assert len(errs) == 1 and lines[-1] == errs[0], err
    return errs[0]


def test_retry_survives_a_microphone_that_goes_away_and_comes_back(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(L, "RETRY_FIRST_S", 0.05)
    x = spoken("yes", tmp_path, 48000)
    sd = FlakySD(x, fail_opens=2)
    monkeypatch.setattr(L, "_sounddevice", lambda: sd)
    resets = []
    from kws.stream import KeywordSpotter
    real_reset = KeywordSpotter.reset
    monkeypatch.setattr(KeywordSpotter, "reset", lambda self: (resets.append(1), real_reset(self))[1])
    dur = 2 * len(x) / 48000 + 0.5
    t0 = time.monotonic()
    rc = main(["listen", "--retry", "--json", "--block-ms", "20", "--duration", f"{dur:.3f}", "--keywords", "yes"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert time.monotonic() - t0 < 30
    lost = [l for l in cap.err.splitlines() if "input lost" in l]
    back = [l for l in cap.err.splitlines() if "input back" in l]
    assert len(lost) == 1 and "stopped" in lost[0] and "--retry" in lost[0], cap.err
    assert len(back) == 1 and "spotter state reset" in back[0], cap.err
    assert "Traceback" not in cap.err and "kws: error" not in cap.err
    assert sd.opens == 4 and sd.rescans == 3                 # 1 lost stream, 2 failed opens, 1 back
    assert len(resets) >= 2                                  # the constructor's and the reconnect's
    dets = [json.loads(l) for l in cap.out.splitlines()]
    assert [d["label"] for d in dets] == ["yes", "yes"], cap.out
    # the same audio after a reset: the same detection, one first-stream length later (time counts all audio)
    b = int(round(48000 * 0.02))
    first_len = (len(x) // b) * b / 48000
    assert abs(dets[1]["time"] - dets[0]["time"] - first_len) < 2e-3, (dets, first_len)
    m = re.search(r"done after ([\d.]+) s of audio", cap.err)
    assert m and abs(float(m.group(1)) - dur) < 0.05, cap.err


def test_without_retry_the_lost_microphone_is_one_error_line(monkeypatch, capsys, tmp_path):
    sd = FlakySD(np.zeros(48000, np.float32))
    monkeypatch.setattr(L, "_sounddevice", lambda: sd)
    rc = main(["listen", "--json"])
    cap = capsys.readouterr()
    assert rc == 2 and "stopped" in _error_line(cap.err) and sd.opens == 1


def test_retry_with_input_file_is_one_error_line(capsys, tmp_path):
    wav = tmp_path / "x.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    assert main(["listen", "--retry", "--input", str(wav)]) == 2
    assert "--retry applies to a microphone" in _error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- end to end

def _reload_sink(mic: VirtualMic) -> None:
    mic.pactl("load-module", "module-null-sink", "sink_name=vmic", f"rate={mic.rate}", f"channels={mic.channels}",
              "format=s16le")
    mic.pactl("set-default-sink", "vmic")
    mic.pactl("set-default-source", "vmic.monitor")
    mic.reader = subprocess.Popen(["pacat", "--record", "--raw", f"--latency-msec={mic.reader_latency_ms}",
                                   "-d", "vmic.monitor"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=mic.subprocess_env())
    time.sleep(0.3)


@pytest.mark.e2e
def test_e2e_retry_when_the_virtual_microphone_goes_away(virtual_mic, tmp_path):
    """The virtual microphone's sink is unloaded while `kws listen --retry` listens (as when a USB
    microphone is unplugged), then loaded again: kws logs it, waits, resumes, and hears the word
    played after the microphone is back."""
    x = spoken("yes", tmp_path, 16000, lead_s=0.3, tail_s=0.5)
    wav = tmp_path / "yes16k.wav"
    sf.write(wav, x, 16000, subtype="PCM_16")
    p = subprocess.Popen([sys.executable, "-m", "kws.cli", "listen", "--retry", "--json", "--keywords", "yes"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=virtual_mic.subprocess_env())
    err, out = [], []
    threads = [threading.Thread(target=lambda f=f, s=s: [s.append(l) for l in f], daemon=True)
               for f, s in ((p.stderr, err), (p.stdout, out))]
    for t in threads:
        t.start()

    def wait_for(pattern, timeout):
        wait_for_line(p, err, pattern, 1, timeout)

    try:
        wait_for(r"listening to", 60)
        virtual_mic.play(wav)
        time.sleep(1.0)
        assert [json.loads(l)["label"] for l in out] == ["yes"], (out, err)
        virtual_mic.pactl("unload-module", "module-null-sink")
        wait_for(r"input lost", 15)
        time.sleep(1.5)                                     # a few failed retries while it is away
        _reload_sink(virtual_mic)
        wait_for(r"input back", 30)
        time.sleep(0.5)
        virtual_mic.play(wav)
        time.sleep(1.5)
        assert p.poll() is None, "".join(err)
    finally:
        if p.poll() is None:
            p.send_signal(2)                                # Ctrl-C: summary, exit 0
        rc = p.wait(timeout=15)
        for t in threads:
            t.join(timeout=5)
    text = "".join(err)
    assert rc == 0, text
    assert [json.loads(l)["label"] for l in out] == ["yes", "yes"], (out, text)
    assert len(re.findall("input lost", text)) == 1 and len(re.findall("input back", text)) == 1, text
    assert "Traceback" not in text and "kws: error" not in text, text
