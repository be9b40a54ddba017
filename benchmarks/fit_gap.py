"""Underfitting or a generalisation gap? Per keyword, the share of clean clips whose detector-view peak
(each clip from a zero state + 1 s of quiet, smoothed as the detector smooths) reaches the model's own
threshold, on training speakers beside validation speakers.

    python benchmarks/fit_gap.py --model models/kws12_gru.npz --root ../shared/speech_commands_part

Training close to validation, both low: the model has not learned its own training clips to the confidence
its operating point needs (underfit: train longer, or a larger model). Training far above validation: it
learned the speakers, not the word (overfit: more speakers, more augmentation).

`--saturation` (needs torch) asks why the peaks stop where they do: at each validation clip's peak, the share of
the top GRU layer's units that are saturated (|h| > 0.95) and the largest posterior the head could give the word
with every unit pushed all the way to +-1 in the direction it points (the ceiling of that state). A ceiling close to the median peak means
the model is confident as far as its head allows, and a threshold close to it sits where every clip's score is
compressed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def word_waves(clips: list, word: str, per: int) -> tuple[list, np.ndarray]:
    """The first `per` clips of `word` among `clips`, and their audio (decoded once, for every measure)."""
    from kws.evaluate import load_clips
    clips = [c for c in clips if c.word == word][:per]
    return clips, (load_clips(clips, [], progress=False)[0] if clips else np.zeros((0, 0), np.float32))


def peaks(model, clips: list, waves: np.ndarray, word: str, lowest: int = 0) -> np.ndarray:
    """Detector-view peak of `word`'s own column on each clip; prints the `lowest` clips (the ones it
    misses first: worth a listen, they may be cut off or silent)."""
    from kws.evaluate import _detector_posteriors
    if not len(clips):
        return np.zeros(0)
    k = model.labels.index(word)
    out = np.array([sm[:, k].max() for _, sm in _detector_posteriors(model, waves, 1.0, 0, 256)])
    for i in np.argsort(out)[:lowest]:
        print(f"  {word} {out[i]:.3f} {clips[i].path}")
    return out


def saturation(bundle, waves: np.ndarray, word: str) -> tuple[float, float]:
    """(median share of saturated top-layer units, median ceiling posterior) at the peaks of `word`'s clips."""
    import torch
    from kws.training.features_torch import MFCC
    net, mfcc, k = bundle.model.eval(), MFCC(bundle.features), bundle.labels.index(word)
    W, bias = net.head.weight.detach().numpy(), net.head.bias.detach().numpy()
    sat, ceil = [], []
    quiet = np.zeros((len(waves), bundle.features.sample_rate), np.float32)
    with torch.no_grad():
        h, _ = net.hidden_all(mfcc(torch.from_numpy(np.concatenate([waves, quiet], axis=1))))
    for hc in h.numpy():
        z = hc @ W.T + bias
        t = int(np.argmax(z[:, k] - np.logaddexp.reduce(z, axis=1)))
        zs = np.sign(hc[t]) @ W.T + bias
        sat.append(float(np.mean(np.abs(hc[t]) > 0.95)))
        ceil.append(float(np.exp(zs[k] - np.logaddexp.reduce(zs))))
    return float(np.median(sat)), float(np.median(ceil))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/kws12_gru.npz")
    ap.add_argument("--root", default="../shared/speech_commands_part", help="Speech Commands root with split lists")
    ap.add_argument("--per", type=int, default=150, help="clips per keyword and split (the first N in list order)")
    ap.add_argument("--threshold", type=float, default=None, help="default: the model's own")
    ap.add_argument("--lowest", type=int, default=0, help="list the N validation clips of each word with the lowest peaks")
    ap.add_argument("--saturation", action="store_true", help="also: saturated GRU units and the head's ceiling "
                                                               "at the validation peaks (needs torch)")
    a = ap.parse_args()
    from kws.data.index import NON_KEYWORDS
    from kws.enginefile import as_engine_model
    from kws.evaluate import collect_clips
    from kws.stream import KeywordSpotter
    m = as_engine_model(a.model)
    sp = KeywordSpotter(m)
    split = {s: collect_clips([a.root], m.labels, split=s)[0] for s in ("training", "validation")}   # one scan each
    if a.saturation:
        from kws.training.modelfile import load_bundle
        bundle = load_bundle(a.model)             # the torch model, read once: saturation needs its hidden states
    print(f"{a.model}: share of clean clips whose peak reaches the threshold, training / validation speakers")
    print(f"{'word':8s} {'thr':>5s} {'train':>6s} {'val':>6s}   {'train>=.5':>9s} {'val>=.5':>7s}   median train / val   n"
          + ("   saturated  ceiling" if a.saturation else ""))
    for k, word in enumerate(m.labels):
        if word in NON_KEYWORDS:
            continue
        thr = a.threshold if a.threshold is not None else float(sp.label_thresholds[k])
        (tc, tw), (vc, vw) = word_waves(split["training"], word, a.per), word_waves(split["validation"], word, a.per)
        t, v = peaks(m, tc, tw, word), peaks(m, vc, vw, word, a.lowest)
        if not len(t) or not len(v):
            print(f"{word:8s} no clips in one of the splits")
            continue
        print(f"{word:8s} {thr:5.2f} {(t >= thr).mean():6.3f} {(v >= thr).mean():6.3f}   {(t >= .5).mean():9.3f} "
              f"{(v >= .5).mean():7.3f}   {np.median(t):.3f} / {np.median(v):.3f}   {len(t)}/{len(v)}"
              + ("   {:9.2f}  {:7.3f}".format(*saturation(bundle, vw, word)) if a.saturation else ""),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
