"""Smoke test of the side-by-side benchmark driver (benchmarks/peers/run_all.py) on tiny inputs.

Skipped cleanly when the peer packages (pip install '.[peers]') are not installed."""
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import random_bundle, speech_like

pytest.importorskip("pocketsphinx")
pytest.importorskip("openwakeword")
pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))


def _corpus(root: Path, words, per_word: int, split_list: str | None, seed: int):
    rels = []
    for wi, w in enumerate(words):
        (root / w).mkdir(parents=True, exist_ok=True)
        for k in range(per_word):
            rel = f"{w}/{seed:02x}{wi:02x}{k:04x}_nohash_0.wav"
            sf.write(root / rel, 0.5 * speech_like(0.8, seed=seed * 100 + wi * 10 + k), 16000, subtype="PCM_16")
            rels.append(rel)
    if split_list:
        (root / split_list).write_text("\n".join(rels) + "\n")
    noise = root / "_background_noise_"
    noise.mkdir(exist_ok=True)
    sf.write(noise / "white_noise.wav", (np.random.default_rng(seed).normal(0, 0.05, 16000 * 3)).astype(np.float32),
             16000, subtype="PCM_16")


def test_run_all_smoke(tmp_path):
    import run_all
    from kws.training.modelfile import save_bundle
    model = tmp_path / "tiny.npz"
    save_bundle(random_bundle(seed=3, threshold=0.5, smooth_ms=100.0, refractory_s=1.0), model)
    # "test" corpora: every clip in testing_list.txt
    _corpus(tmp_path / "synth", ["yes", "no", "bed"], 2, "testing_list.txt", 1)
    _corpus(tmp_path / "real", ["go", "cat"], 2, "testing_list.txt", 2)
    # openWakeWord head training corpus: no list files -> split by speaker hash; give it enough speakers
    train = tmp_path / "train"
    _corpus(train, ["yes", "no", "bed"], 8, None, 3)
    (train / "validation_list.txt").write_text("")
    (train / "testing_list.txt").write_text("")
    # a 20 s stream with two keywords
    st = tmp_path / "streams"
    st.mkdir()
    x = speech_like(20.0, seed=9) * 0.3
    sf.write(st / "s0.wav", x, 16000, subtype="PCM_16")
    with open(st / "ground_truth.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "start", "end"])
        w.writerow(["s0.wav", "yes", 3.0, 3.6])
        w.writerow(["s0.wav", "go", 11.0, 11.5])
        w.writerow(["s0.wav", "_unknown_", 15.0, 15.5])
    out = tmp_path / "out"
    oww = {"synth": str(train), "real_words": None, "noise": str(train / "_background_noise_"),
           "per_keyword": 6, "unknown": 6, "silence": 6, "real_unknown": 0}
    rc = run_all.main(["--kws-model", str(model), "--synth", str(tmp_path / "synth"), "--real", str(tmp_path / "real"),
                       "--streams", str(st), "--dev-streams", str(st), "--speed-seconds", "2", "--cache", str(tmp_path / "cache"),
                       "--out", str(out), "--oww-train", json.dumps(oww), "--sc-val", ""])
    assert rc == 0
    rep = json.loads((out / "results.json").read_text())
    assert set(rep["results"]) == {"kws", "kws-torch", "pocketsphinx", "openwakeword"}
    tr = rep["results"].pop("kws-torch")          # speed only: kws's model on the torch path
    assert tr["status"] == "ok" and tr["speed"]["rtf"] > 0 and tr["speed"]["torch_imported"]
    assert rep["results"]["kws"]["speed"]["torch_imported"] is False
    for name, r in rep["results"].items():
        assert r["status"] == "ok", (name, r["status"])
        assert set(r["clips"]) == {"synth_test", "real_test"}
        assert r["clips"]["synth_test"]["n"] == rep["inputs"]["synth_test"]["n"]
        assert r["streams"]["occurrences"] == 2 and len(r["streams"]["sweep"]) > 1
        assert r["streams_dev"]["occurrences"] == 2
        assert r["speed"]["rtf"] > 0 and r["speed"]["peak_rss_mb"] > 0
    md = (out / "results.md").read_text()
    assert "| kws |" in md and "| pocketsphinx |" in md and "command:" in md
    assert (out / "results.png").stat().st_size > 1000
    # --reuse: the peers' results come back from the cache unchanged, without rerunning them
    out2 = tmp_path / "out2"
    rc = run_all.main(["--kws-model", str(model), "--synth", str(tmp_path / "synth"), "--real", str(tmp_path / "real"),
                       "--streams", str(st), "--dev-streams", str(st), "--speed-seconds", "2", "--cache", str(tmp_path / "cache"),
                       "--out", str(out2), "--sc-val", "", "--systems", "pocketsphinx", "--reuse", "pocketsphinx"])
    assert rc == 0
    again = json.loads((out2 / "results.json").read_text())["results"]["pocketsphinx"]
    assert again.pop("reused") is True
    assert again["clips"] == rep["results"]["pocketsphinx"]["clips"] and again["speed"] == rep["results"]["pocketsphinx"]["speed"]


def test_missing_peer_is_reported(tmp_path, monkeypatch):
    import run_all
    monkeypatch.setattr(run_all, "missing_modules", lambda mods: list(mods))
    _corpus(tmp_path / "synth", ["yes", "bed"], 1, "testing_list.txt", 1)
    out = tmp_path / "out"
    rc = run_all.main(["--kws-model", str(tmp_path / "none.pt"), "--synth", str(tmp_path / "synth"), "--real", "", "--sc-val", "",
                       "--streams", "", "--dev-streams", "", "--systems", "pocketsphinx,openwakeword", "--cache", str(tmp_path / "c"),
                       "--out", str(out)])
    assert rc == 0
    rep = json.loads((out / "results.json").read_text())
    for name in ("pocketsphinx", "openwakeword"):
        assert rep["results"][name]["status"] == "not installed: pip install '.[peers]'"
    assert "not installed: pip install '.[peers]'" in (out / "results.md").read_text()
