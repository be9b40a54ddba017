"""`kws record WORD` (issue 23): the take checks on synthetic takes, importing files, CLI errors, and an
end-to-end run through the PulseAudio virtual microphone (tests/pulse.py) with espeak-ng speaking the word."""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws import record as R
from kws.cli import main
from pulse import virtual_mic, wait_for_line  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parent.parent
SR = 16000


def burst(dur_s: float, level_db: float = -12.0, sr: int = SR) -> np.ndarray:
    """A voiced-sounding burst: harmonics of 150 Hz under a Hann envelope, peak at `level_db`."""
    t = np.arange(int(dur_s * sr)) / sr
    x = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8))
    x = x * np.hanning(len(t))
    return (x / np.max(np.abs(x)) * 10 ** (level_db / 20)).astype(np.float32)


def take(word: np.ndarray, at_s: float, total_s: float = 2.0, noise_db: float = -70.0, sr: int = SR, seed=0):
    x = np.random.default_rng(seed).normal(0, 10 ** (noise_db / 20), int(total_s * sr)).astype(np.float32)
    i = int(at_s * sr)
    x[i:i + len(word)] += word[: len(x) - i]
    return x


def test_a_good_take_is_trimmed_and_centred():
    w = burst(0.5)
    t = R.check_take(take(w, 0.7))
    assert t.ok and t.reason == "" and t.clip.shape == (SR,) and t.clip.dtype == np.float32
    assert 0.3 < t.word_s < 0.55 and -13 < t.peak_db < -11
    e = np.abs(t.clip)
    centre = np.average(np.arange(SR), weights=e)
    assert abs(centre - SR / 2) < 0.05 * SR                     # the word is in the middle
    assert np.max(e) == pytest.approx(np.max(np.abs(w)), rel=0.05)


def test_any_rate_and_int16_input():
    x48 = take(burst(0.5, sr=48000), 0.7, sr=48000)
    assert R.check_take(x48, 48000).ok
    assert R.check_take((take(burst(0.5), 0.7) * 32767).astype(np.int16)).ok


@pytest.mark.parametrize("x, reason", [
    (np.zeros(2 * SR, np.float32), "silent"),
    (take(burst(0.5, level_db=-50), 0.7), "silent"),
    (np.clip(take(burst(0.5, level_db=6), 0.7), -1, 1), "clipped"),
    (take(burst(0.5), 0.0), "cut off at the start"),
    (take(burst(0.5), 1.6), "cut off at the end"),
    (take(burst(1.4), 0.3), "too long"),
    (take(burst(0.06), 0.9), "too short ("),
    (take(burst(0.5), 0.7, noise_db=-22), "no clear word above the background noise"),
    (np.zeros(1000, np.float32), "too short a recording"),
])
def test_bad_takes_are_rejected_with_a_reason(x, reason):
    t = R.check_take(x)
    assert not t.ok and t.clip is None and reason in t.reason, t.reason


def test_edge_check_can_be_off_for_trimmed_files():
    x = take(burst(0.5), 0.0, total_s=0.6)
    assert "cut off" in R.check_take(x).reason
    assert R.check_take(x, edges=False).ok


def test_import_files_writes_speech_commands_layout(tmp_path, capsys):
    good = [tmp_path / f"g{i}.wav" for i in range(3)]
    for i, p in enumerate(good):                                   # the second one at 44.1 kHz
        sr = 44100 if i == 1 else SR
        sf.write(p, take(burst(0.4 + 0.1 * i, sr=sr), 0.6, sr=sr, seed=i), sr)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(2 * SR, np.float32), SR)
    out = tmp_path / "words"
    (out / "marvin").mkdir(parents=True)
    sf.write(out / "marvin" / "alice_nohash_4.wav", np.zeros(SR, np.float32), SR)   # numbering goes on
    rc = main(["record", "Marvin", "--out", str(out), "--speaker", "Alice", "--from", *map(str, good), str(silent)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "rejected" in err and "silent.wav: silent" in err and "imported 3 of 4" in err
    files = sorted(p.name for p in (out / "marvin").glob("*.wav"))
    assert files == ["alice_nohash_4.wav", "alice_nohash_5.wav", "alice_nohash_6.wav", "alice_nohash_7.wav"]
    x, sr = sf.read(out / "marvin" / "alice_nohash_6.wav", dtype="int16")
    assert sr == SR and x.shape == (SR,) and sf.info(out / "marvin" / "alice_nohash_6.wav").subtype == "PCM_16"
    from kws.data.index import scan_root
    items = [it for it in scan_root(out) if it.label == "marvin"]
    assert len(items) == 4 and {Path(it.path).name.split("_")[0] for it in items} == {"alice"}


@pytest.mark.parametrize("argv, expect", [
    (["record", "marvin", "--from", "/nonexistent.wav"], "audio file not found: /nonexistent.wav"),
    (["record", "!!!", "--from", "x.wav"], "word '!!!' has no letters"),
    (["record", "marvin", "--takes", "0"], "--takes must be in 1..1000"),
    (["record", "marvin", "--seconds", "0.5"], "--seconds must be between 1 and 10"),
])
def test_cli_errors_are_one_line(capsys, tmp_path, argv, expect):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("kws: error:") and expect in err[-1] and len([l for l in err if "error" in l]) == 1, err


def test_all_files_rejected_is_an_error(capsys, tmp_path):
    p = tmp_path / "s.wav"
    sf.write(p, np.zeros(SR, np.float32), SR)
    assert main(["record", "marvin", "--out", str(tmp_path / "o"), "--from", str(p)]) == 2
    assert "no file was kept" in capsys.readouterr().err


# --------------------------------------------------------------------------- end to end

def espeak_wav(word: str, path: Path, voice: str = "en-us+m3", lead_s=0.3, tail_s=0.3) -> Path:
    import soxr
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), word], check=True, capture_output=True)
    x, sr = sf.read(raw, dtype="float32")
    x = soxr.resample(x, sr, SR)
    x = np.concatenate([np.zeros(int(lead_s * SR)), x / np.max(np.abs(x)) * 0.5, np.zeros(int(tail_s * SR))])
    sf.write(path, x.astype(np.float32), SR, subtype="PCM_16")
    return path


@pytest.mark.e2e
def test_e2e_record_through_the_virtual_microphone(virtual_mic, tmp_path):
    """`kws record marvin --takes 2` while the test speaks into the virtual microphone: the first
    recording is left silent (rejected, asked again), the next two get the word; two clips are written."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    wav = espeak_wav("marvin", tmp_path / "marvin.wav")
    out = tmp_path / "words"
    p = subprocess.Popen([sys.executable, "-m", "kws.cli", "record", "marvin", "--out", str(out), "--takes", "2",
                          "--seconds", "2", "--pause", "0.3", "--speaker", "tester"], cwd=REPO,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=virtual_mic.subprocess_env())
    err: list[str] = []
    th = threading.Thread(target=lambda: [err.append(l) for l in p.stderr], daemon=True)
    th.start()

    def wait_for(pattern, count=1, timeout=30):
        wait_for_line(p, err, pattern, count, timeout)

    try:
        wait_for(r"take 1/2: recording", 1, 60)              # left silent
        wait_for(r"take 1/2: rejected: silent", 1)
        wait_for(r"take 1/2: recording", 2)
        time.sleep(0.4)
        virtual_mic.play(wav)
        wait_for(r"take 1/2: kept", 1)
        wait_for(r"take 2/2: recording", 1)
        time.sleep(0.4)
        virtual_mic.play(wav)
        rc = p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
        th.join(timeout=5)
    text = "".join(err)
    assert rc == 0, text
    files = sorted((out / "marvin").glob("*.wav"))
    assert [f.name for f in files] == ["tester_nohash_0.wav", "tester_nohash_1.wav"], text
    ref, _ = sf.read(wav, dtype="float32")
    for f in files:
        x, sr = sf.read(f, dtype="float32")
        assert sr == SR and len(x) == SR
        t = R.check_take(np.concatenate([np.zeros(SR // 4), x, np.zeros(SR // 4)]).astype(np.float32))
        assert t.ok, t.reason                               # a kept take passes the checks again
        assert abs(t.word_s - R.check_take(ref).word_s) < 0.15
    assert "Traceback" not in text
