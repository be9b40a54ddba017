"""Every container soundfile decodes works wherever kws reads audio: data roots (Speech Commands layout and
list files), the clip cache, CSV lists of kws eval, folders of kws detect, kws listen --input and the
stream benchmark. The files are made here, one of each format."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import random_bundle, speech_like
from kws.audio import AUDIO_EXT, load_clip
from kws.cli import main
from kws.data.dataset import ClipSet
from kws.data.index import background_files, scan_root, select, task_labels
from kws.training.modelfile import save_bundle

REPO = Path(__file__).resolve().parent.parent
SR = 16000
# extension -> soundfile (format, subtype)
FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"),
           ".opus": ("OGG", "OPUS"), ".mp3": ("MP3", "MPEG_LAYER_III")}


def write(path: Path, x: np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt, sub = FORMATS[path.suffix]
    sf.write(path, x, sr, format=fmt, subtype=sub)
    return path


def test_every_format_is_listed():
    assert set(FORMATS) <= set(AUDIO_EXT)


@pytest.mark.parametrize("ext", list(FORMATS))
def test_each_format_decodes_to_the_same_clip(tmp_path, ext):
    x = speech_like(1.0, seed=1)
    y = load_clip(write(tmp_path / f"a{ext}", x))
    assert y.shape == (SR,)
    # lossy codecs shift and colour the signal a little; the clip must still be the same sound
    lag = int(np.argmax(np.correlate(y[2000:14000], x[2000:14000], "full"))) - 11999
    assert abs(lag) < 800
    assert np.corrcoef(np.roll(y, -lag)[2000:14000], x[2000:14000])[0, 1] > 0.8


@pytest.fixture
def mixed_root(tmp_path):
    """A Speech Commands-layout root whose clips and noise come in every format, list files included."""
    root = tmp_path / "sc"
    exts = list(FORMATS)
    val = []
    for i, word in enumerate(["yes", "no", "up", "cat"]):
        for s, ext in enumerate(exts):
            rel = f"{word}/{s:04x}{i:04x}_nohash_0{ext}"
            write(root / rel, speech_like(1.0, seed=10 * i + s))
            if s == 0:
                val.append(rel)
    write(root / "_background_noise_" / "noise.flac", np.random.default_rng(0).normal(0, .1, 3 * SR).astype(np.float32))
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    return root


def test_data_root_lists_and_cache_read_every_format(mixed_root, tmp_path):
    items = scan_root(mixed_root)
    assert len(items) == 4 * len(FORMATS)
    assert {Path(it.path).suffix for it in items} == set(FORMATS)
    assert sum(it.split == "validation" for it in items) == 4          # the list names .wav files only
    assert background_files([mixed_root]) == [str(mixed_root / "_background_noise_" / "noise.flac")]
    labels = task_labels("12")
    train = select(items, labels, "training", unknown_pct=None, silence_pct=0)
    cs = ClipSet(train, labels, tmp_path / "cache", "training", progress=False)
    assert len(cs) == len(train) and (np.abs(cs.audio).max(axis=1) > 1000).all()   # all decoded, none skipped
    again = ClipSet(train, labels, tmp_path / "cache", "training", progress=False)  # from the cache
    assert np.array_equal(again.audio, cs.audio)


def test_eval_csv_list_and_detect_folder_read_every_format(mixed_root, tmp_path, capsys):
    m = tmp_path / "m.npz"
    save_bundle(random_bundle(seed=2, threshold=0.01), m)
    lst = tmp_path / "list.csv"
    files = sorted(p for p in mixed_root.rglob("*") if p.suffix in FORMATS and "_background" not in str(p))
    with open(lst, "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label"]] + [[str(p), p.parent.name] for p in files])
    js = tmp_path / "r.json"
    assert main(["eval", "--model", str(m), "--data", str(lst), "--json", str(js), "--quiet"]) == 0
    assert json.loads(js.read_text())["offline"]["n"] == len(files) and json.loads(js.read_text())["skipped"] == 0
    capsys.readouterr()
    assert main(["detect", "--model", str(m), "--json", str(mixed_root / "yes")]) == 0
    seen = {Path(json.loads(l)["file"]).suffix for l in capsys.readouterr().out.splitlines() if l.startswith("{")}
    assert seen == set(FORMATS)       # threshold 0.01: every file fires, so each was read


@pytest.mark.parametrize("ext", [".flac", ".opus", ".mp3"])
def test_listen_input_reads_other_formats(tmp_path, capsys, ext):
    m = tmp_path / "m.npz"
    save_bundle(random_bundle(seed=2, threshold=0.01), m)
    f = write(tmp_path / f"in{ext}", speech_like(3.0, seed=4))
    assert main(["listen", "--model", str(m), "--input", str(f), "--fast", "--json"]) == 0
    assert any(l.startswith("{") for l in capsys.readouterr().out.splitlines())


@pytest.mark.slow
def test_stream_benchmark_takes_opus_keywords_and_flac_noise(tmp_path):
    """The real-voice dev streams: keywords and bait from an Opus Speech Commands part, noise in FLAC."""
    sc, real, synth = tmp_path / "sc", tmp_path / "real", tmp_path / "synth"
    val = []
    for i, word in enumerate(["yes", "stop", "bed", "dog"]):
        for s in range(3):
            rel = f"{word}/{s:04x}{i:04x}_nohash_0.opus"
            write(sc / rel, speech_like(0.8, seed=30 * i + s) * 0.5)
            val.append(rel)
    (sc / "validation_list.txt").write_text("\n".join(val) + "\n")
    write(real / "_background_noise_" / "n.flac", np.random.default_rng(1).normal(0, .1, 5 * SR).astype(np.float32))
    (real / "validation_list.txt").write_text("")
    synth.mkdir()
    (synth / "testing_list.txt").write_text("")
    (synth / "validation_list.txt").write_text("")
    out = tmp_path / "streams"
    r = subprocess.run([sys.executable, str(REPO / "data_scripts" / "make_stream_benchmark.py"), "--out", str(out),
                        "--minutes", "1", "--files", "1", "--keywords-from", "sc-validation", "--real-bait", "1",
                        "--sc", str(sc), "--real", str(real), "--synth", str(synth), "--split", "validation"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "benchmark.json").read_text())
    assert meta["keyword_occurrences"] > 0 and meta["bait_words"] > 0
    assert set(meta["per_keyword"]) <= {"yes", "stop"} and meta["noise_files"] == ["n.flac"]
    assert set(meta["bait_sources"]) == {"real"}


@pytest.mark.slow
def test_stream_benchmark_real_validation_makes_a_wake_word_the_only_target(tmp_path):
    """--keywords-from real-validation (a custom wake word): keywords from real_speech's validation split,
    and the Speech Commands part's words, the ten commands included, are all bait."""
    sc, real, synth = tmp_path / "sc", tmp_path / "real", tmp_path / "synth"
    sc_val, real_val = [], []
    for i, word in enumerate(["yes", "stop", "happy"]):
        for s in range(3):
            rel = f"{word}/{s:04x}{i:04x}_nohash_0.opus"
            write(sc / rel, speech_like(0.8, seed=30 * i + s) * 0.5)
            sc_val.append(rel)
    for s in range(4):
        for word in ("happy", "bed"):
            rel = f"{word}/{s:04x}beef_nohash_0.wav"
            write(real / rel, speech_like(0.7, seed=90 + s) * 0.5)
            real_val.append(rel)
    (sc / "validation_list.txt").write_text("\n".join(sc_val) + "\n")
    (real / "validation_list.txt").write_text("\n".join(real_val) + "\n")
    write(real / "_background_noise_" / "n.wav", np.random.default_rng(1).normal(0, .1, 5 * SR).astype(np.float32))
    synth.mkdir()
    out = tmp_path / "streams"
    r = subprocess.run([sys.executable, str(REPO / "data_scripts" / "make_stream_benchmark.py"), "--out", str(out),
                        "--minutes", "1", "--files", "1", "--keywords", "happy", "--keywords-from", "real-validation",
                        "--real-bait", "1", "--sc", str(sc), "--real", str(real), "--synth", str(synth),
                        "--real-words", "", "--keyword-rate", "0.3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import csv
    rows = list(csv.DictReader(open(out / "ground_truth.csv")))
    kw = [r for r in rows if r["label"] != "_unknown_"]
    assert kw and {r["label"] for r in kw} == {"happy"}
    assert json.loads((out / "benchmark.json").read_text())["keyword_pool"] == 4   # real_speech's 4, not SC's 3
    bait = {r["word"] for r in rows if r["label"] == "_unknown_"}
    assert "happy" not in bait and {"yes", "stop"} & bait      # the commands are bait for a wake word
