"""Dataset index (TensorFlow's split rule, list files, class balance) and augmentation."""
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from kws.training.augment import AugmentConfig, Augmenter
from kws.data.index import (KEYWORDS10, SILENCE, UNKNOWN, build_index, parse_root, scan_root, select,
                            speaker_of, task_labels, which_set)
from kws.errors import KwsError
from kws.features import FeatureConfig
from kws.training.features_torch import MFCC

# Splits of real Speech Commands speakers as TensorFlow's which_set() assigns them (from the
# `sc_split` column of ../shared/real_speech/manifest.csv, computed with TF's own code).
KNOWN = {"0d82fd99": "validation", "026290a7": "validation", "060cd039": "validation", "099d52ad": "validation",
         "00176480": "training", "004ae714": "training", "00f0204f": "training", "012c8314": "training",
         "0132a06d": "training", "6d818f6c": "validation"}


def test_which_set_matches_tensorflow_on_known_speakers():
    for spk, split in KNOWN.items():
        assert which_set(spk) == split, spk


def test_which_set_proportions():
    rng = np.random.default_rng(0)
    sets = [which_set(f"{rng.integers(0, 2**32):08x}") for _ in range(20000)]
    for name, want in [("validation", 0.1), ("testing", 0.1), ("training", 0.8)]:
        assert abs(sets.count(name) / len(sets) - want) < 0.01


def test_speaker_of_layouts():
    assert speaker_of("yes/0a1b2c3d_nohash_3.wav") == "0a1b2c3d"
    assert speaker_of("yes/so762_0036_3.wav") == "so762_0036"
    assert speaker_of("_unknown_/after_so762_0036_9.wav") == "so762_0036"


def write_wav(path, seconds=1.0, sr=16000, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.random.default_rng(seed).normal(0, 0.1, int(sr * seconds)).astype(np.float32), sr, subtype="PCM_16")


@pytest.fixture
def sc_root(tmp_path):
    root = tmp_path / "sc"
    words = KEYWORDS10 + ["bed", "cat"]
    for w in words:
        for s in range(10):
            write_wav(root / w / f"{s:04x}beef_nohash_0.wav", seed=s)
    write_wav(root / "_background_noise_" / "noise.wav", seconds=3)
    (root / "validation_list.txt").write_text("\n".join(f"{w}/0000beef_nohash_0.wav" for w in words) + "\n")
    (root / "testing_list.txt").write_text("\n".join(f"{w}/0001beef_nohash_0.wav" for w in words) + "\n\n")
    return root


def test_list_files_decide_the_split(sc_root):
    items = scan_root(sc_root)
    assert len(items) == 120 and not any(it.word == "_background_noise_" for it in items)
    by = {(it.word, it.speaker): it.split for it in items}
    assert by[("yes", "0000beef")] == "validation" and by[("cat", "0001beef")] == "testing"
    assert by[("go", "0002beef")] == "training"


def test_twelve_class_balance(sc_root):
    labels = task_labels("12")
    idx = build_index([sc_root], labels)
    train = idx["training"]
    n_target = sum(it.label in KEYWORDS10 for it in train)
    assert n_target == 80
    assert sum(it.label == UNKNOWN for it in train) == min(16, math.ceil(n_target * 0.1))
    assert sum(it.label == SILENCE for it in train) == math.ceil(n_target * 0.1)
    assert all(it.path is None for it in train if it.label == SILENCE)
    assert len(idx["testing"]) == 10 + 1 + 1


def test_custom_words_and_root_percentages(tmp_path, sc_root):
    items = select(scan_root(sc_root), task_labels(words=["bed", "cat"]), "training", unknown_pct=None)
    assert {it.label for it in items} == {SILENCE, UNKNOWN, "bed", "cat"}
    root, v, t = parse_root(f"{sc_root}@5,0")
    assert (root, v, t) == (sc_root, 5.0, 0.0)
    with pytest.raises(KwsError, match="ROOT@VAL,TEST"):
        parse_root(f"{sc_root}@x")


def make_aug(seed):
    fcfg = FeatureConfig()
    noise = [np.random.default_rng(9).normal(0, 0.2, 48000).astype(np.float32)]
    return Augmenter(AugmentConfig(), fcfg, noise, None, seed=seed)


def test_augmentation_is_deterministic_under_a_seed():
    x = np.random.default_rng(1).normal(0, 0.1, 16000).astype(np.float32)
    a1, a2, b = make_aug(5), make_aug(5), make_aug(6)
    outs1 = [a1.wave(x, False, (4000, 12000)) for _ in range(5)]
    outs2 = [a2.wave(x, False, (4000, 12000)) for _ in range(5)]
    outs3 = [b.wave(x, False, (4000, 12000)) for _ in range(5)]
    for (w1, s1), (w2, s2) in zip(outs1, outs2):
        np.testing.assert_array_equal(w1, w2)
        assert s1 == s2
    assert any(not np.array_equal(w1, w3) for (w1, _), (w3, _) in zip(outs1, outs3))
    assert all(not np.allclose(w1, x) for w1, _ in outs1)          # it does change the audio


def test_augmented_features_differ_but_eval_features_do_not():
    aug = make_aug(0)
    mfcc = MFCC()
    wave = torch.from_numpy(np.random.default_rng(2).normal(0, 0.1, (2, 16000)).astype(np.float32))
    f_aug = aug.features(mfcc, wave)
    assert f_aug.shape == mfcc(wave).shape
    assert not torch.allclose(f_aug, mfcc(wave), atol=1e-2)
    torch.testing.assert_close(mfcc(wave), mfcc(wave))             # evaluation path: no randomness


def test_clip_cache_write_does_not_collide_with_another_writer(tmp_path, sc_root):
    """Two trainers can decode the same split into one cache at once (a shared temp name made one of
    them crash); a stranger's temp file at the old fixed name must not matter, and the cache must reload."""
    from kws.data.dataset import ClipSet, _key
    labels = task_labels("12")
    items = build_index([sc_root], labels)["validation"]
    cache = tmp_path / "cache"
    (cache / f"{_key(items)}.tmp.npz").mkdir(parents=True)        # another writer's temp name, taken
    first = ClipSet(items, labels, cache, progress=False)
    assert (cache / f"{_key(items)}.npz").exists()
    assert not [p for p in cache.iterdir() if p.is_file() and p.name.endswith(".tmp.npz")]
    again = ClipSet(items, labels, cache, progress=False)
    assert np.array_equal(first.audio, again.audio) and np.array_equal(first.y, again.y)


def test_speech_span_finds_the_word_and_widens_by_the_margin():
    from kws.data.dataset import speech_span
    sr, rng = 16000, np.random.default_rng(0)
    x = (1e-4 * rng.standard_normal(sr)).astype(np.float32)            # -80 dBFS floor
    x[4800:9600] += 0.1 * np.sin(2 * np.pi * 440 * np.arange(4800) / sr).astype(np.float32)   # 0.30-0.60 s
    s, e = speech_span(x)
    assert abs(s - 4800) <= 160 and abs(e - 9600) <= 160
    s2, e2 = speech_span(x, win_s=0.025, margin_s=0.02)                 # the stream benchmark's reading
    assert s2 <= s - 320 + 160 and e2 >= e + 320 - 160 and e2 - e <= 400 + 320
    assert speech_span(np.zeros(sr, np.float32)) is None               # nothing above the floor: silence
    assert speech_span(np.zeros(100, np.float32)) == (0, 100)           # shorter than one frame: all of it
