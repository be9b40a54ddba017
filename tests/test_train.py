"""`kws train` end to end on a tiny corpus made here, and resume after a SIGKILL."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws.training.modelfile import load_bundle
from kws.training.train import TrainConfig, frame_targets, train
from kws.features import FeatureConfig

SR = 16000


def word(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Three 'words' a GRU can tell apart: a rising glide, a falling glide, two beeps; 'bed' is a noise burst."""
    dur = rng.uniform(0.35, 0.55)
    t = np.arange(int(dur * SR)) / SR
    f = rng.uniform(0.8, 1.25)
    if kind == "yes":
        x = np.sin(2 * np.pi * np.cumsum(f * np.linspace(300, 1200, t.size)) / SR)
    elif kind == "no":
        x = np.sin(2 * np.pi * np.cumsum(f * np.linspace(1200, 300, t.size)) / SR)
    elif kind == "up":
        x = np.sin(2 * np.pi * 700 * f * t) * ((t % 0.2) < 0.1)
    else:
        x = rng.normal(0, 0.5, t.size)
    return x * np.hanning(t.size) * rng.uniform(0.2, 0.8)


def make_corpus(root: Path, speakers: int = 30) -> Path:
    rng = np.random.default_rng(0)
    for w in ["yes", "no", "up", "bed"]:
        (root / w).mkdir(parents=True)
        for s in range(speakers):
            x = np.zeros(SR)
            y = word(w, rng)
            o = rng.integers(0, SR - y.size)
            x[o:o + y.size] = y
            sf.write(root / w / f"{s:04d}abcd_nohash_0.wav", (x + rng.normal(0, 0.003, SR)).astype(np.float32), SR,
                     subtype="PCM_16")
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "n.wav", rng.normal(0, 0.05, 5 * SR).astype(np.float32), SR)
    return root


def tiny_cfg(root, out, epochs=4) -> TrainConfig:
    return TrainConfig(data=[str(root)], words=["yes", "no", "up"], out=str(out), epochs=epochs, batch=16,
                       seq_clips=2, hidden=32, layers=1, epoch_clips=640, lr=1e-2, cache="", seed=1)


def test_frame_targets_label_after_word_and_silence_far_from_words():
    fcfg = FeatureConfig()
    # clip 0: word at 0.2-0.5 s (label 3); clip 1: silence (label 0)
    tgt = frame_targets([(3200, 8000), (16000, 32000)], [3, 0], [False, True], 318, fcfg, silence_idx=0)
    ends = np.arange(318) * fcfg.hop + fcfg.n_fft
    assert set(tgt[(ends >= 8000 + 480) & (ends <= 8000 + 11200)]) == {3}
    assert set(tgt[ends < 3200 - 800]) == {0}
    assert set(tgt[(ends > 3200) & (ends < 8000)]) == {-100}          # during the word: no target
    assert set(tgt[ends > 8000 + 14400]) == {0}
    # a non-keyword word (label 1 = _unknown_) is labelled inside too, from 100 ms after its start
    tgt = frame_targets([(3200, 8000)], [1], [False], 150, fcfg, silence_idx=0, unknown_idx=1)
    assert set(tgt[(ends[:150] >= 3200 + 1600) & (ends[:150] < 8000)]) == {1}
    assert set(tgt[(ends[:150] > 3200) & (ends[:150] < 3200 + 1600)]) == {-100}


def test_frame_target_window_moves_the_labelled_frames():
    """--target-start/--target-end: the label from 100 ms before the word's end (inside it) to 300 ms after."""
    fcfg = FeatureConfig()
    ends = np.arange(200) * fcfg.hop + fcfg.n_fft
    tgt = frame_targets([(3200, 8000)], [3], [False], 200, fcfg, silence_idx=0, window=(-0.1, 0.3))
    assert set(tgt[(ends >= 8000 - 1600) & (ends <= 8000 + 4800)]) == {3}
    assert 3 not in set(tgt[(ends < 8000 - 1600) | (ends > 8000 + 4800)])
    # a start before the word's beginning is clipped to it
    tgt = frame_targets([(3200, 8000)], [3], [False], 200, fcfg, silence_idx=0, window=(-1.0, 0.3))
    assert set(tgt[(ends >= 3200) & (ends <= 8000 + 4800)]) == {3} and 3 not in set(tgt[ends < 3200])


def test_bad_target_window_is_one_clear_error(tmp_path):
    from kws.errors import KwsError
    root = make_corpus(tmp_path / "corpus")
    cfg = TrainConfig(data=[str(root)], target_start=0.5, target_end=0.2, out=str(tmp_path / "run"), cache="")
    with pytest.raises(KwsError, match="target-start"):
        train(cfg)


@pytest.mark.slow
def test_tiny_corpus_trains_well_above_chance(tmp_path):
    root = make_corpus(tmp_path / "corpus")
    r = train(tiny_cfg(root, tmp_path / "run"), progress=False)
    last = r["history"][-1]
    assert last["val_acc"] > 0.6 and last["val_stream_acc"] > 0.6     # chance: 0.2 (5 labels)
    b = load_bundle(tmp_path / "run" / "model.npz")
    assert b.labels == ["_silence_", "_unknown_", "yes", "no", "up"]
    assert load_bundle(tmp_path / "run" / "last.npz").meta["epoch"] == last["epoch"]
    for f in ["metrics.csv", "metrics.json", "training_curves.png", "checkpoint.pt", "model.npz", "last.npz"]:
        assert (tmp_path / "run" / f).stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "run").glob("*.pt")) == ["checkpoint.pt"]   # the model file is the .npz
    assert r["model"] == str(tmp_path / "run" / "model.npz")
    assert load_bundle(tmp_path / "run" / "checkpoint.pt").meta["epoch"] == last["epoch"]   # kws export reads it


def test_deadline_stops_training_and_still_saves_a_model(tmp_path):
    """kws wakeword promises a time budget: once deadline_s has passed, the epoch in progress is the last,
    and the model files are written as at the end of any epoch."""
    root = make_corpus(tmp_path / "corpus", speakers=6)
    cfg = tiny_cfg(root, tmp_path / "cut", epochs=3)
    cfg.deadline_s = 1e-6                      # passed before the first step
    r = train(cfg, progress=False)
    assert r["stopped_early"] and len(r["history"]) == 1
    assert load_bundle(tmp_path / "cut" / "last.npz").meta["epoch"] == 1
    cfg = tiny_cfg(root, tmp_path / "full", epochs=2)
    cfg.deadline_s = 3600.0
    r = train(cfg, progress=False)
    assert not r["stopped_early"] and len(r["history"]) == 2


@pytest.mark.slow
def test_pcen_front_end_trains_and_is_recorded_in_the_model(tmp_path):
    """`kws train --frontend pcen`: the tiny corpus is learnt with PCEN features too, and the model files
    carry the front end, so the engine computes the features it was trained on."""
    from dataclasses import replace
    from kws.enginefile import load_engine
    root = make_corpus(tmp_path / "corpus")
    r = train(replace(tiny_cfg(root, tmp_path / "run"), frontend="pcen", pcen_time_s=0.2), progress=False)
    assert r["history"][-1]["val_acc"] > 0.6
    assert load_bundle(tmp_path / "run" / "last.npz").features.frontend == "pcen"
    assert load_bundle(tmp_path / "run" / "last.npz").features.pcen_time_s == 0.2
    assert load_engine(tmp_path / "run" / "last.npz").features.frontend == "pcen"


def test_bad_front_end_and_init_with_other_features_are_one_clear_error(tmp_path):
    from dataclasses import replace
    from conftest import random_bundle
    from kws.errors import KwsError
    from kws.training.modelfile import save_bundle
    root = make_corpus(tmp_path / "corpus")
    with pytest.raises(KwsError, match="--frontend 'cmvn'"):
        train(replace(tiny_cfg(root, tmp_path / "run"), frontend="cmvn"))
    b = random_bundle(labels=["_silence_", "_unknown_", "yes", "no", "up"])
    b.model = type(b.model)(replace(b.model.cfg, hidden=32, layers=1))
    save_bundle(b, tmp_path / "log.pt")
    with pytest.raises(KwsError, match="features differ from this run's: frontend log, not pcen"):
        train(replace(tiny_cfg(root, tmp_path / "run"), frontend="pcen", init=str(tmp_path / "log.pt")))
    with pytest.raises(KwsError, match="--pcen-time-s must be positive"):
        train(replace(tiny_cfg(root, tmp_path / "run"), frontend="pcen", pcen_time_s=0.0))


def test_init_reads_the_npz_and_bad_init_files_are_one_line_exit_2(tmp_path, capsys):
    """--init takes the .npz model file (an old .pt too: the test above); a model of other labels, a
    missing or a corrupt file is one `kws: error:` line."""
    from conftest import random_bundle
    from kws.cli import main
    from kws.training.modelfile import save_bundle
    root = make_corpus(tmp_path / "corpus", speakers=4)
    save_bundle(random_bundle(labels=["_silence_", "_unknown_", "yes", "no", "up"]), tmp_path / "other.npz")
    small = random_bundle(labels=["_silence_", "_unknown_", "yes", "no"])
    small.model = type(small.model)(replace(small.model.cfg, hidden=32, layers=1))
    save_bundle(small, tmp_path / "labels.npz")
    (tmp_path / "bad.npz").write_bytes((tmp_path / "other.npz").read_bytes()[:300])
    for init, want in ((tmp_path / "other.npz", "architecture differs from this run's (hidden 64 vs 32, layers 2 vs 1"),
                       (tmp_path / "labels.npz", "labels (_silence_, _unknown_, yes, no) differ"),
                       (tmp_path / "nope.npz", "not found"), (tmp_path / "bad.npz", "corrupt")):
        rc = main(["train", "--data", str(root), "--words", "yes,no,up", "--epochs", "1", "--init", str(init),
                   "--out", str(tmp_path / "r"), "--hidden", "32", "--layers", "1"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and err[-1].startswith("kws: error: ") and want in err[-1], err


def test_init_may_change_dropout(tmp_path):
    """Dropout is how the model trains, not its shape: a fine-tune with other dropout starts from the
    init model's weights (it used to be refused as 'architecture differs')."""
    from conftest import random_bundle
    from kws.training.modelfile import load_bundle, save_bundle
    root = make_corpus(tmp_path / "corpus")
    cfg = tiny_cfg(root, tmp_path / "run", epochs=1)
    b = random_bundle(labels=["_silence_", "_unknown_", "yes", "no", "up"])
    b.model = type(b.model)(replace(b.model.cfg, hidden=cfg.hidden, layers=cfg.layers, dropout=0.3))
    save_bundle(b, tmp_path / "init.npz")
    out = train(replace(cfg, init=str(tmp_path / "init.npz"), dropout=0.0, lr=1e-9), progress=False)
    got = load_bundle(out["model"]).model.state_dict()
    want = b.model.state_dict()
    assert max(float((got[k] - want[k]).abs().max()) for k in want if k.startswith("gru.")) < 1e-5


@pytest.mark.slow
def test_resume_after_sigkill_continues_where_it_stopped(tmp_path):
    root = make_corpus(tmp_path / "corpus", speakers=12)
    ref = train(tiny_cfg(root, tmp_path / "ref", epochs=3), progress=False)["history"]
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "kws.cli", "train", "--data", str(root), "--words", "yes,no,up", "--out", str(out),
            "--epochs", "3", "--batch", "16", "--seq-clips", "2", "--hidden", "32", "--layers", "1",
            "--epoch-clips", "640", "--lr", "1e-2", "--cache", "", "--seed", "1", "--no-progress"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not (out / "metrics.json").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)                   # mid-epoch 2 (or later): no clean shutdown
    p.wait()
    done = len(json.loads((out / "metrics.json").read_text()))
    assert 1 <= done <= 3
    rc = subprocess.run(args + ["--resume"], capture_output=True, text=True).returncode
    assert rc == 0
    hist = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    for a, b in zip(hist, ref):                        # same seeds per epoch: the same run
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1e-6)


def test_root_share_gives_each_root_its_weight_of_every_class_whatever_its_size():
    from types import SimpleNamespace
    from kws.training.train import BatchMaker
    labels = ["_silence_", "_unknown_", "yes", "no"]
    # root 0: 900 "yes", 300 "no", 500 unknown; root 1 (small, real voices): 30 "yes", 60 unknown,
    # one stray "no"
    y = np.array([2] * 900 + [3] * 300 + [1] * 500 + [2] * 30 + [1] * 60 + [3])
    root_of = np.array([0] * 1700 + [1] * 91)
    clips = SimpleNamespace(y=y, is_silence=np.zeros(len(y), bool))
    fcfg = FeatureConfig()

    def shares(root_share):
        cfg = TrainConfig(weights=[1.0, 1.0], root_share=root_share, unknown_weight=2.0)
        p = BatchMaker(clips, root_of, cfg, labels, fcfg, None).p
        return {c: p[(y == c) & (root_of == 1)].sum() / p[y == c].sum() for c in (1, 2, 3)}, p

    tilt, _ = shares(False)
    assert tilt[2] < 0.05                      # by count, 30 real tokens are 3% of "yes"
    share, p = shares(True)
    assert share[2] == pytest.approx(0.5) and share[1] == pytest.approx(0.5)
    assert share[3] == pytest.approx(0.05 / 1.05)   # one stray clip: 1/20 of a share, not half the class
    # class weights still hold: unknown twice a keyword, keywords equal
    assert p[y == 1].sum() == pytest.approx(2 * p[y == 2].sum())
    assert p[y == 2].sum() == pytest.approx(p[y == 3].sum())


def test_select_root_picks_the_epoch_by_that_roots_validation_accuracy(tmp_path):
    """Two roots; --select-root B: the saved model is the epoch where B's validation accuracy peaked
    (not the mean over roots), and an unknown root name is a one-line error before any training."""
    from kws.errors import KwsError
    a, b = make_corpus(tmp_path / "A"), make_corpus(tmp_path / "B", speakers=20)
    cfg = tiny_cfg(a, tmp_path / "run", epochs=3)
    cfg.data, cfg.select_root = [str(a), str(b)], "B"
    hist = train(cfg, progress=False)["history"]
    best = max(hist, key=lambda h: h["val_acc[B]"])
    assert [h["select_score"] for h in hist] == [h["val_acc[B]"] for h in hist]
    assert load_bundle(tmp_path / "run" / "model.npz").meta["epoch"] == best["epoch"]
    cfg.select_root, cfg.out = "C", str(tmp_path / "run2")
    with pytest.raises(KwsError, match="not one of the data roots"):
        train(cfg, progress=False)


def test_augment_option_parses_fields_and_refuses_bad_ones_in_one_line(tmp_path, capsys):
    from kws.cli import main
    from kws.errors import KwsError
    from kws.training.train import parse_augment
    assert parse_augment("reverb_prob=0.1, vtlp=0.94:1.06,time_masks=3") == {
        "reverb_prob": 0.1, "vtlp": (0.94, 1.06), "time_masks": 3}
    assert parse_augment("") == {}
    for bad in ("nosuch=1", "reverb_prob", "vtlp=0.9", "time_masks=two"):
        with pytest.raises(KwsError):
            parse_augment(bad)
    root = make_corpus(tmp_path / "corpus", speakers=4)
    assert main(["train", "--data", str(root), "--augment", "nosuch=1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nosuch" in err[0] and "reverb_prob" in err[0]


def test_augment_overrides_reach_the_augmenter_and_the_run_record(tmp_path, monkeypatch):
    import kws.training.train as tr
    seen = []
    real = tr.Augmenter

    def spy(acfg, *a, **k):
        seen.append(acfg)
        return real(acfg, *a, **k)
    monkeypatch.setattr(tr, "Augmenter", spy)
    root = make_corpus(tmp_path / "corpus", speakers=6)
    cfg = tiny_cfg(root, tmp_path / "run", epochs=1)
    cfg.augment_overrides = {"reverb_prob": 0.0, "vtlp": (1.0, 1.0)}
    train(cfg, progress=False)
    assert seen and seen[0].reverb_prob == 0.0 and seen[0].vtlp == (1.0, 1.0) and seen[0].noise_prob == 0.8
    meta = load_bundle(tmp_path / "run" / "last.npz").meta
    assert json.loads(meta["train_config"])["augment_overrides"] == {"reverb_prob": 0.0, "vtlp": [1.0, 1.0]}


def test_stream_packed_sequences_place_whole_words_apart_over_one_noise_bed():
    """--stream-pack: words trimmed to their spans, 80 ms-1.5 s apart, never overlapping, inside the
    sequence; silence clips become pauses; the targets follow the packed spans."""
    from types import SimpleNamespace
    from kws.training.augment import AugmentConfig, Augmenter
    from kws.training.train import BatchMaker
    rng = np.random.default_rng(3)
    labels = ["_silence_", "_unknown_", "yes", "no"]
    audio = np.zeros((8, SR), np.int16)
    spans = np.zeros((8, 2), np.int32)
    for i in range(8):
        w = word("yes", rng)
        o = int(rng.integers(0, SR - w.size))
        audio[i, o:o + w.size] = np.round(w * 32767).astype(np.int16)
        spans[i] = (o, o + w.size)
    y = np.array([2, 3, 1, 0, 2, 3, 1, 0])
    class Clips(SimpleNamespace):
        def __len__(self):
            return len(self.y)
    clips = Clips(y=y, is_silence=y == 0, audio=audio, spans=spans)
    fcfg = FeatureConfig()
    cfg = TrainConfig(seq_clips=4, stream_pack=1.0)
    noise = [rng.normal(0, 0.05, 5 * SR).astype(np.float32)]
    quiet = Augmenter(AugmentConfig(noise_prob=0.0, reverb_prob=0, clip_prob=0, speed=(1, 1), shift_ms=0,
                                    gain_db=(0, 0)), fcfg, noise, seed=0)
    bm = BatchMaker(clips, np.zeros(8, int), cfg, labels, fcfg, quiet)
    seen_pause = False
    for row in ([0, 1, 3, 2], [4, 5, 6, 7], [0, 2, 4, 1]):
        wave, sp, ys, sil, _ = bm.packed(np.array(row), 4 * SR)
        kept = [i for i in row if y[i] != 0]
        assert ys == [y[i] for i in kept[:len(ys)]] and not any(sil) and len(ys) >= 2
        for (a, b), i in zip(sp, kept):
            assert 0 <= a < b <= 4 * SR and b - a == spans[i, 1] - spans[i, 0]
            src = audio[i, spans[i, 0]:spans[i, 1]] / 32768.0     # peak-normalised (gain 0 dB), else the same
            np.testing.assert_allclose(wave[a:b] / np.abs(wave[a:b]).max(), src / np.abs(src).max(), atol=1e-4)
        gaps = [c - b for (_, b), (c, _) in zip(sp, sp[1:])]
        assert all(0.08 * SR <= g <= 2.5 * SR for g in gaps), gaps
        outside = np.ones(4 * SR, bool)
        for a, b in sp:
            outside[a:b] = False
        assert np.abs(wave[outside]).max() == 0.0          # no noise asked for: nothing between words
        seen_pause |= 0 in [y[i] for i in row[:len(ys) + 1]]
    assert seen_pause
    # with noise: one bed under everything, at an SNR within the configured range
    noisy = Augmenter(AugmentConfig(noise_prob=1.0, snr_db=(10.0, 10.0), reverb_prob=0, clip_prob=0), fcfg,
                      noise, seed=0)
    bm = BatchMaker(clips, np.zeros(8, int), cfg, labels, fcfg, noisy)
    wave, sp, ys, _, _ = bm.packed(np.array([0, 1, 2, 4]), 4 * SR)
    gap = wave[sp[0][1]:sp[1][0]]
    assert gap.size and 0.01 < np.sqrt(np.mean(gap ** 2))
    # and the batch uses them: targets carry the packed words' labels
    wave_b, tgt, words = bm()
    assert wave_b.shape == (cfg.batch, 4 * SR) and set(np.unique(tgt.numpy())) >= {0, 2}
    assert words is None                                  # no --word-aux: no word targets


def test_boost_keeps_class_shares_and_hard_negatives_need_init(tmp_path):
    from types import SimpleNamespace
    from kws.training.train import BatchMaker
    labels = ["_silence_", "_unknown_", "yes"]
    y = np.array([1] * 10 + [2] * 10)
    bm = BatchMaker(SimpleNamespace(y=y, is_silence=np.zeros(20, bool)), np.zeros(20, int),
                    TrainConfig(unknown_weight=2.0), labels, FeatureConfig(), None)
    shares = np.bincount(y, weights=bm.p, minlength=3)
    bm.boost(np.arange(10), np.array([10.0] + [1.0] * 9))
    np.testing.assert_allclose(np.bincount(y, weights=bm.p, minlength=3), shares)
    assert bm.p[0] == pytest.approx(10 * bm.p[1]) and bm.p[1] == pytest.approx(bm.p[9])
    root = make_corpus(tmp_path / "c", speakers=6)
    cfg = tiny_cfg(root, tmp_path / "run", epochs=1)
    cfg.hard_negatives = 5.0
    with pytest.raises(Exception, match="--hard-negatives needs --init"):
        train(cfg, progress=False)
    for field, value, msg in (("stream_pack", 1.5, "--stream-pack is a share"),
                              ("reversed_negatives", -0.1, "--reversed-negatives is a share"),
                              ("hard_negatives", -1.0, "--hard-negatives must be >= 0")):
        cfg = tiny_cfg(root, tmp_path / "run", epochs=1)
        setattr(cfg, field, value)
        with pytest.raises(Exception, match=msg):
            train(cfg, progress=False)
    # a new head (other keywords than the init model's): its near-misses name the wrong words
    cfg = tiny_cfg(root, tmp_path / "src", epochs=1)
    train(cfg, progress=False)
    cfg = tiny_cfg(root, tmp_path / "new", epochs=1)
    cfg.words, cfg.init, cfg.init_new_head, cfg.hard_negatives = ["bed"], str(tmp_path / "src" / "model.npz"), True, 2.0
    with pytest.raises(Exception, match="has no bed"):
        train(cfg, progress=False)


def test_hard_negative_mining_boosts_the_unknown_clips_the_init_model_nearly_fires_on(tmp_path):
    """A tiny model fine-tuned with --hard-negatives: the mined peaks come from the init model's
    detector view, and the clips with higher peaks are sampled more often, in proportion."""
    from kws.data.dataset import ClipSet
    from kws.data.index import scan_root, select
    from kws.training.train import BatchMaker, mine_hard_negatives
    root = make_corpus(tmp_path / "c", speakers=20)
    base = train(tiny_cfg(root, tmp_path / "base", epochs=2), progress=False)
    src = load_bundle(base["model"])
    labels = src.labels
    items = select(scan_root(str(root)), labels, "training", unknown_pct=None, silence_pct=10, seed=1)
    clips = ClipSet(items, labels, None, "t", progress=False)
    cfg = TrainConfig(seq_clips=2)
    bm = BatchMaker(clips, np.zeros(len(clips), int), cfg, labels, FeatureConfig(), None)
    p0 = bm.p.copy()
    unk = labels.index("_unknown_")
    peaks = mine_hard_negatives(bm, src, clips, unk, boost=10.0, progress=False)
    idx = np.flatnonzero((clips.y == unk) & ~clips.is_silence)
    assert peaks.shape == idx.shape and np.all((0 <= peaks) & (peaks <= 1)) and np.ptp(peaks) > 0
    ratio = bm.p[idx] / p0[idx]
    np.testing.assert_allclose(ratio / ratio[0], (1 + 10 * peaks) / (1 + 10 * peaks[0]), rtol=1e-5)
    np.testing.assert_allclose(bm.p[clips.y != unk], p0[clips.y != unk] * bm.p[clips.y != unk].sum()
                               / p0[clips.y != unk].sum(), rtol=1e-6)


def test_reversed_negatives_play_keywords_backwards_as_unknown_never_no_or_on():
    from types import SimpleNamespace
    from kws.training.train import BatchMaker
    labels = ["_silence_", "_unknown_", "yes", "no", "on"]
    rng = np.random.default_rng(0)
    audio = (rng.normal(0, 3000, (4, SR))).astype(np.int16)
    spans = np.array([[1000, 9000], [2000, 5000], [100, 15000], [0, 16000]], np.int32)
    y = np.array([2, 3, 4, 1])
    clips = SimpleNamespace(y=y, is_silence=np.zeros(4, bool), audio=audio, spans=spans)
    bm = BatchMaker(clips, np.zeros(4, int), TrainConfig(reversed_negatives=0.5), labels, FeatureConfig(), None)
    got = {0: set(), 1: set(), 2: set(), 3: set()}
    for _ in range(200):
        for i in range(4):
            x, span, lab, _ = bm.take(i)
            got[i].add(lab)
            if lab == 1 and i == 0:      # "yes" backwards: reversed audio, mirrored span
                np.testing.assert_array_equal(x, audio[0, ::-1] / 32768.0)
                assert span == (SR - 9000, SR - 1000)
    assert got[0] == {1, 2}                  # yes: sometimes backwards as _unknown_
    assert got[1] == {3} and got[2] == {4}   # no, on: never (each is the other backwards)
    assert got[3] == {1}
    off = BatchMaker(clips, np.zeros(4, int), TrainConfig(), labels, FeatureConfig(), None)
    assert {off.take(0)[2] for _ in range(50)} == {2}


def test_word_aux_targets_name_each_word_on_the_frames_that_carry_its_label():
    """--word-aux: the auxiliary target is the clip's word (two `_unknown_` words get two names) on
    exactly the frames where the main target is its label; silence, rare words and keywords played
    backwards get none."""
    from types import SimpleNamespace
    from kws.data.index import Item
    from kws.training.train import BatchMaker, word_vocabulary
    labels = ["_silence_", "_unknown_", "yes"]
    words = ["yes"] * 20 + ["bed"] * 20 + ["cat"] * 20 + ["dog"] * 3 + ["_silence_"] * 5
    y = np.array([2] * 20 + [1] * 43 + [0] * 5)
    items = [Item(None if w == "_silence_" else f"{w}/{i}.wav", labels[k], w, f"s{i}", "training")
             for i, (w, k) in enumerate(zip(words, y))]
    assert word_vocabulary(items) == ["bed", "cat", "yes"]          # dog: 3 clips, under the minimum
    rng = np.random.default_rng(0)
    spans = np.tile(np.array([[4000, 10000]], np.int32), (len(y), 1))
    class Clips(SimpleNamespace):
        def __len__(self):
            return len(self.y)
    clips = Clips(y=y, is_silence=y == 0, audio=rng.normal(0, 3000, (len(y), SR)).astype(np.int16),
                  spans=spans, items=items)
    cfg = TrainConfig(word_aux=0.5, batch=8, seq_clips=4)
    bm = BatchMaker(clips, np.zeros(len(y), int), cfg, labels, FeatureConfig(), None)
    assert bm.words == ["bed", "cat", "yes"]
    _, _, ys, _, ws = bm.slotted(np.array([0, 20, 40, 60]))
    assert ws == [2, 0, 1, -100] and ys == [2, 1, 1, 1]               # yes, bed, cat; dog has no name
    assert bm.word_id(63, 0) == -100                                  # silence
    assert bm.word_id(0, 1) == -100                                   # "yes" taken backwards as _unknown_
    for _ in range(3):
        _, tgt, wt = bm()
        assert wt.shape == tgt.shape
        named = wt.numpy() >= 0
        assert named.any() and set(np.unique(wt.numpy()[named])) <= {0, 1, 2}
        assert (tgt.numpy()[named] > 0).all()                         # named frames carry a word's label
        # a word's name and its label go together: yes (2) <-> label yes, bed/cat (0, 1) <-> _unknown_
        np.testing.assert_array_equal(tgt.numpy()[named & (wt.numpy() == 2)], 2)
        assert (tgt.numpy()[named & (wt.numpy() < 2)] == 1).all()


def test_word_aux_trains_and_leaves_the_model_file_as_it_was(tmp_path):
    """A tiny run with --word-aux learns as well as without, and its model files hold the classifier
    alone (same keys and shapes as a plain run); the word head lives in the checkpoint, for --resume."""
    import torch
    from dataclasses import replace
    root = make_corpus(tmp_path / "corpus")
    r = train(replace(tiny_cfg(root, tmp_path / "aux"), word_aux=0.5), progress=False)
    assert r["history"][-1]["val_acc"] > 0.6
    plain = train(tiny_cfg(root, tmp_path / "plain", epochs=1), progress=False)
    a, p = load_bundle(tmp_path / "aux" / "last.npz"), load_bundle(tmp_path / "plain" / "last.npz")
    assert {k: v.shape for k, v in a.model.state_dict().items()} == {k: v.shape for k, v in p.model.state_dict().items()}
    ck = torch.load(tmp_path / "aux" / "checkpoint.pt", weights_only=True)
    assert ck["word_head"]["weight"].shape == (4, 32)                 # bed, no, up, yes
    from kws.errors import KwsError
    with pytest.raises(KwsError, match="word-aux"):
        train(replace(tiny_cfg(root, tmp_path / "aux"), word_aux=-1.0), progress=False)
    with pytest.raises(KwsError, match="trained without --word-aux"):
        train(replace(tiny_cfg(root, tmp_path / "plain", epochs=2), word_aux=0.5), resume=True, progress=False)


def test_weight_decay_option_reaches_the_optimiser_and_refuses_negatives(tmp_path, monkeypatch, capsys):
    import torch
    from kws.cli import main
    seen = []
    real = torch.optim.AdamW

    def spy(params, **k):
        seen.append(k["weight_decay"])
        return real(params, **k)
    monkeypatch.setattr(torch.optim, "AdamW", spy)
    root = make_corpus(tmp_path / "corpus", speakers=6)
    cfg = tiny_cfg(root, tmp_path / "run", epochs=1)
    cfg.weight_decay = 0.0
    train(cfg, progress=False)
    assert seen == [0.0]
    capsys.readouterr()
    assert main(["train", "--data", str(root), "--weight-decay", "-1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weight-decay" in err[0]


def _float_weights(path):
    return {k: v.double() for k, v in load_bundle(path).model.state_dict().items() if v.is_floating_point()}


def test_average_epochs_writes_the_mean_of_the_last_epochs_weights_and_survives_a_resume(tmp_path):
    """averaged.npz is the mean of the weights at the end of the last N epochs (what kws wakeword ships);
    its running sum lives in the checkpoint, so a resumed run averages the same epochs."""
    import torch
    root = make_corpus(tmp_path / "corpus", speakers=6)
    cfg = tiny_cfg(root, tmp_path / "run", epochs=3)
    cfg.average_epochs, cfg.keep_epochs = 2, True
    r = train(cfg, progress=False)
    run = tmp_path / "run"
    assert r["averaged"] == str(run / "averaged.npz")
    e2, e3, avg = (_float_weights(run / n) for n in ("epoch2.npz", "epoch3.npz", "averaged.npz"))
    assert sorted(p.name for p in run.glob("epoch*.npz")) == ["epoch1.npz", "epoch2.npz", "epoch3.npz"]
    for k in avg:
        torch.testing.assert_close(avg[k], (e2[k] + e3[k]) / 2, atol=1e-6, rtol=0)
    assert max(float((avg[k] - e3[k]).abs().max()) for k in avg) > 1e-4    # not just the last epoch's weights
    assert load_bundle(run / "averaged.npz").meta["averaged_epochs"] == 2
    assert "averaged" not in train(tiny_cfg(root, tmp_path / "plain", epochs=1), progress=False)

    cut = replace(cfg, out=str(tmp_path / "cut"), average_epochs=3, deadline_s=1e-6)   # stops after epoch 1
    train(cut, progress=False)
    train(replace(cut, deadline_s=0.0), resume=True, progress=False)                   # epochs 2 and 3
    w = [_float_weights(tmp_path / "cut" / f"epoch{i}.npz") for i in (1, 2, 3)]
    avg = _float_weights(tmp_path / "cut" / "averaged.npz")
    for k in avg:
        torch.testing.assert_close(avg[k], sum(x[k] for x in w) / 3, atol=1e-6, rtol=0)


def test_init_rows_start_a_new_words_output_row_from_another_label(tmp_path):
    """kws wakeword --inherit: the new word's head row starts as the init wake word's (not from noise);
    naming a label the init model lacks is one clear error."""
    from kws.errors import KwsError
    root = make_corpus(tmp_path / "corpus", speakers=6)
    src = tiny_cfg(root, tmp_path / "src", epochs=1)
    src.words = ["yes"]
    train(src, progress=False)
    init = str(tmp_path / "src" / "model.npz")
    w_src = load_bundle(init).model.head.weight.detach()

    def new_head(out, rows):
        cfg = tiny_cfg(root, tmp_path / out, epochs=1)
        cfg.words, cfg.init, cfg.init_new_head, cfg.init_rows, cfg.lr = ["no"], init, True, rows, 1e-12
        train(cfg, progress=False)
        return load_bundle(tmp_path / out / "last.npz").model.head.weight.detach()

    inherited, fresh = new_head("inherit", {"no": "yes"}), new_head("fresh", {})
    np.testing.assert_allclose(inherited[2].numpy(), w_src[2].numpy(), atol=1e-5)   # [sil, unk, no] <- yes
    np.testing.assert_allclose(inherited[:2].numpy(), w_src[:2].numpy(), atol=1e-5)  # shared labels as before
    assert float((fresh[2] - w_src[2]).abs().max()) > 1e-2
    with pytest.raises(KwsError, match="no label 'up' to start 'no'"):
        new_head("bad", {"no": "up"})
