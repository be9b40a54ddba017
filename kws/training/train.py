"""`kws train`: stateful training of the GRU spotter on Speech Commands-layout data.

Why stateful: the streaming detector never resets its state, and a GRU trained only from a zero
state collapses when streamed (97% -> 54%, google-research kws_streaming issue 819). So each
training sequence is K augmented 1 s clips back to back, often starting from the state left by the
previous batch, with frame-level targets: the clip's label on frames 30-700 ms after its word ends,
`_silence_` on frames well away from any word, nothing (ignored) elsewhere. The model thus learns to
fire just after a keyword and to fall back to silence, whatever came before.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from ..audio import load
from .augment import AugmentConfig, Augmenter
from ..data.dataset import CLIP, ClipSet
from ..data.index import NON_KEYWORDS, SILENCE, UNKNOWN, background_files, parse_root, scan_root, select, summary, task_labels
from ..errors import KwsError
from ..features import FRONTENDS, FeatureConfig
from .features_torch import MFCC
from .distributed import AMP, DEVICES, Dist, cpu_copy, precision, reproducible, setup
from .model import GRUClassifier, ModelConfig, count_parameters
from .modelfile import Bundle, checkpoint_model, save_bundle
from ..stream import DetectorConfig


@dataclass
class TrainConfig:
    data: list = field(default_factory=list)
    weights: list = field(default_factory=list)   # sampling weight per data root
    root_share: bool = False       # weights are each root's share of every class, whatever its clip count
    task: str = "12"
    words: list = field(default_factory=list)
    out: str = "runs/kws"
    epochs: int = 20
    batch: int = 32
    seq_clips: int = 4             # clips per training sequence (state carried through them)
    carry_prob: float = 0.5        # start a sequence from the previous batch's final state
    lr: float = 3e-3
    weight_decay: float = 1e-2
    hidden: int = 128
    layers: int = 2
    stack: int = 2                 # feature frames per GRU step (2: 50 Hz, 3: 33 Hz)
    dropout: float = 0.1
    unknown_weight: float = 1.5    # sampling weight of `_unknown_` relative to one keyword
    silence_weight: float = 1.0
    epoch_clips: int = 0           # clips per epoch; 0 = size of the training split
    seed: int = 0
    cache: str = "data/cache"
    augment: bool = True
    augment_overrides: dict = field(default_factory=dict)   # AugmentConfig fields to change, e.g. {"reverb_prob": 0.1}
    unknown_inside: bool = True    # also label the inside of non-keyword words `_unknown_`
    target_start: float = 0.03     # a word's label on the frames from this many seconds after its end...
    target_end: float = 0.7        # ...to this many (or the next word's start); negative start: inside the word
    frontend: str = "log"          # feature front end: log mel or pcen (features.FeatureConfig)
    pcen_time_s: float = FeatureConfig.pcen_time_s   # PCEN's smoother time constant
    init: str = ""                 # start from this model file's weights (fine-tuning)
    init_new_head: bool = False    # with init: its labels may differ; every weight but the output head is copied
    init_rows: dict = field(default_factory=dict)   # new head: {new label: init label} rows copied beyond the shared labels
    threads: int = 1               # torch threads of the trainer; `workers` other processes make the batches
    workers: int = 1               # batch producer processes (augmentation + features) per trainer process
    device: str = "auto"           # auto (CUDA where present), cpu, cuda, mps (kws/training/distributed.py)
    amp: str = "auto"              # mixed precision: auto (bf16 or fp16 on CUDA, off elsewhere), off, bf16, fp16
    select_root: str = ""          # choose the best epoch on this root's validation accuracy (default: mean over roots)
    hard_negatives: float = 0.0    # with init: _unknown_ clips sampled (1 + this * their keyword peak) times as often
    reversed_negatives: float = 0.0   # share of keyword clips played backwards as `_unknown_` (real-voice negatives)
    stream_pack: float = 0.0       # share of sequences packed like a live stream (words 0.08-1.5 s apart, one noise bed)
    word_aux: float = 0.0          # weight of an auxiliary loss naming each word (training only; 0: off)
    deadline_s: float = 0.0        # stop (and save) once training has run this long, whatever is left (0: off)
    average_epochs: int = 0        # also write averaged.npz: the mean weights at the end of the last N epochs (0: off)
    keep_epochs: bool = False      # also write epochN.npz after every epoch (to choose or average them later)


# ------------------------------------------------------------------ data

REVERSE_EXCLUDE = ("no", "on")     # played backwards, each sounds like the other
WORD_AUX_MIN_CLIPS = 20            # words with fewer training clips get no auxiliary target


def word_vocabulary(items, min_clips: int = WORD_AUX_MIN_CLIPS) -> list[str]:
    """The words the auxiliary head names: every spoken word with >= min_clips training clips, sorted
    (`_silence_` items, made from noise or a `_silence_` folder, carry the word `_silence_`: never named)."""
    from collections import Counter
    n = Counter(it.word for it in items if it.word != SILENCE)
    return sorted(w for w, c in n.items() if c >= min_clips)


def root_label(spec: str) -> str:
    """Short name of a data root for reports: its folder name."""
    return parse_root(spec)[0].resolve().name


def load_noises(roots) -> list[np.ndarray]:
    return [load(f) for f in background_files(roots)]


def frame_targets(spans, labels_idx, silent, n_frames, fcfg: FeatureConfig, silence_idx: int,
                  unknown_idx: int = -1,
                  window: tuple = (TrainConfig.target_start, TrainConfig.target_end)) -> np.ndarray:
    """Per-frame targets for one sequence of back-to-back clips (see module docstring). Frames inside a
    non-keyword word (from 100 ms after its start) are `_unknown_` too: a keyword-like onset must not
    fire before the word has shown it is not a keyword. `window` (seconds relative to the word's end, start
    clipped to the word's start) is where the word's label goes: the frames whose reading should say it."""
    sr = fcfg.sample_rate
    ends = np.arange(n_frames) * fcfg.hop + fcfg.n_fft          # sample at which each frame completes
    tgt = np.full(n_frames, -100, np.int64)
    busy = np.zeros(n_frames, bool)
    words = [(s, e, y) for (s, e), y, sil in zip(spans, labels_idx, silent) if not sil]
    for k, (s, e, y) in enumerate(words):
        nxt = words[k + 1][0] if k + 1 < len(words) else 10 ** 12
        first = max(e + window[0] * sr, s)
        win = (ends >= first) & (ends <= min(e + window[1] * sr, nxt))
        tgt[win] = y
        if y == unknown_idx:
            tgt[(ends >= s + 0.1 * sr) & (ends < first)] = y
        busy |= (ends >= s - 0.05 * sr) & (ends <= e + 0.9 * sr)
    if silence_idx >= 0:
        tgt[~busy & (tgt == -100)] = silence_idx
    return tgt


class BatchMaker:
    def __init__(self, clips: ClipSet, root_of: np.ndarray, cfg: TrainConfig, labels, fcfg, aug: Augmenter | None):
        self.clips, self.cfg, self.fcfg, self.aug = clips, cfg, fcfg, aug
        self.silence_idx = labels.index(SILENCE) if SILENCE in labels else -1
        self.unknown_idx = labels.index(UNKNOWN) if UNKNOWN in labels and cfg.unknown_inside else -1
        self.rng = np.random.default_rng(cfg.seed + 1)
        cw = np.ones(len(labels))
        if UNKNOWN in labels:
            cw[labels.index(UNKNOWN)] = cfg.unknown_weight
        if SILENCE in labels:
            cw[labels.index(SILENCE)] = cfg.silence_weight
        rw = np.array(cfg.weights or [1.0] * (root_of.max() + 1), float)
        # weight of a clip = its class weight shared over its class, tilted by its root's weight
        w = rw[root_of]
        if cfg.root_share:
            # a root's share of a class no longer grows with its clip count: 20 real "stop" tokens
            # weigh as much as 900 synthetic ones, so "real voice" cannot stand for "_unknown_".
            # Below 20 clips the share shrinks, so one stray clip cannot take a fifth of a class.
            counts = np.zeros((len(labels), len(rw)))
            np.add.at(counts, (clips.y, root_of), 1)
            w = w / np.maximum(counts[clips.y, root_of], 20)
        per_class = np.bincount(clips.y, weights=w, minlength=len(labels))
        p = cw[clips.y] * w / np.maximum(per_class[clips.y], 1e-9)
        self.p = p / p.sum()
        # keywords that can be played backwards as `_unknown_`: not no/on, each the other reversed
        self.unk_label = labels.index(UNKNOWN) if UNKNOWN in labels else -1
        self.reversible = np.array([l not in NON_KEYWORDS and l not in REVERSE_EXCLUDE for l in labels])
        # --word-aux: each clip's word as an index of the auxiliary head (-100: none, e.g. silence)
        self.words = word_vocabulary(clips.items) if cfg.word_aux > 0 else []
        wid = {w: i for i, w in enumerate(self.words)}
        self.word_of = np.array([wid.get(it.word, -100) for it in clips.items], np.int64) if self.words else None

    def word_id(self, i: int, y: int) -> int:
        """Auxiliary target of clip i as taken with label y (-100 when off, or played backwards)."""
        return -100 if self.word_of is None or y != self.clips.y[i] else int(self.word_of[i])

    def take(self, i: int) -> tuple[np.ndarray, tuple[int, int], int, bool]:
        """Clip i as (audio, speech span, label, is silence); with --reversed-negatives, a keyword clip
        is sometimes played backwards and labelled `_unknown_`: the same real voices, vowels and channel
        as the keywords, in an order no keyword has. Real non-keyword speech is the scarcest data here."""
        x = self.clips.audio[i].astype(np.float32) / 32768.0
        span, y, is_sil = tuple(self.clips.spans[i]), int(self.clips.y[i]), bool(self.clips.is_silence[i])
        if (self.cfg.reversed_negatives > 0 and self.unk_label >= 0 and not is_sil and self.reversible[y]
                and self.rng.random() < self.cfg.reversed_negatives):
            x, span, y = x[::-1].copy(), (len(x) - span[1], len(x) - span[0]), self.unk_label
        return x, span, y, is_sil

    def boost(self, idx: np.ndarray, factor: np.ndarray) -> None:
        """Sample clips `idx` `factor` times as often as now, keeping every class's total share."""
        before = np.bincount(self.clips.y, weights=self.p, minlength=int(self.clips.y.max()) + 1)
        p = self.p.copy()
        p[idx] *= factor
        after = np.bincount(self.clips.y, weights=p, minlength=before.size)
        p *= before[self.clips.y] / np.maximum(after[self.clips.y], 1e-30)
        self.p = p / p.sum()

    def packed(self, row: np.ndarray, n: int):
        """One stream-like sequence of n samples from the clips in `row`: each word trimmed to its speech
        span and placed 0.08-1.5 s after the previous one (runs of words, as people speak and as the
        stream benchmarks are built), silence clips becoming pauses, over one continuous noise bed.
        In the 1 s slots of `__call__` words are always ~0.5 s apart with the noise restarting per clip.
        -> (wave, spans, labels, silent flags, auxiliary word ids) of the words that fitted."""
        sr, rng = self.fcfg.sample_rate, self.rng
        wave = np.zeros(n, np.float32)
        spans, ys, sil, ws = [], [], [], []
        t = int(rng.uniform(0.0, 0.5) * sr)
        for i in row:
            if self.clips.is_silence[i]:
                t += int(rng.uniform(0.3, 1.0) * sr)
                continue
            x, span, y, _ = self.take(i)
            if self.aug is not None:
                x, span = self.aug.wave(x, False, span, noise=False)
            a, e = span
            if e - a < 0.05 * sr:
                continue
            if t + (e - a) > n:
                break
            wave[t:t + e - a] += x[a:e]
            spans.append((t, t + e - a))
            ys.append(y)
            sil.append(False)
            ws.append(self.word_id(i, y))
            t += e - a + int(rng.uniform(0.08, 1.5) * sr)
        if self.aug is not None:
            wave = self.aug.noise_bed(wave)
        return wave, spans, ys, sil, ws

    def slotted(self, row: np.ndarray):
        """One sequence of the clips in `row`, each in its own 1 s slot, back to back (the default).
        -> (wave, spans, labels, silent flags, auxiliary word ids), as `packed`."""
        wave = np.zeros(len(row) * CLIP, np.float32)
        spans, ys, sil, ws = [], [], [], []
        for k, i in enumerate(row):
            x, span, y, is_sil = self.take(i)
            if self.aug is not None:
                x, span = self.aug.wave(x, is_sil, span)
            wave[k * CLIP:(k + 1) * CLIP] = x
            spans.append((span[0] + k * CLIP, span[1] + k * CLIP))
            ys.append(y)
            sil.append(is_sil)
            ws.append(self.word_id(i, y))
        return wave, spans, ys, sil, ws

    def __call__(self, rngs=None):
        """A batch of cfg.batch sequences from self.rng; or, with `rngs` (one generator per row, as the
        trainer's producers pass them), one row per generator: every draw of row b (clips, packing,
        augmentation) then comes from rngs[b] alone, so a row is the same whichever batch, worker or
        rank makes it."""
        B, K = (self.cfg.batch if rngs is None else len(rngs)), self.cfg.seq_clips
        idx = self.rng.choice(len(self.clips), size=(B, K), p=self.p) if rngs is None else None
        wave = np.zeros((B, K * CLIP), np.float32)
        targets, word_targets = [], []
        n_frames = (K * CLIP - self.fcfg.n_fft) // self.fcfg.hop + 1
        window = (self.cfg.target_start, self.cfg.target_end)
        cdf = None if rngs is None else np.cumsum(self.p)
        for b in range(B):
            if rngs is not None:       # rng.choice(p=...) without its O(clips) set-up per row
                self.rng = rngs[b]
                if self.aug is not None:
                    self.aug.rng = rngs[b]
                row = np.minimum(np.searchsorted(cdf, self.rng.random(K) * cdf[-1], side="right"), len(cdf) - 1)
            else:
                row = idx[b]
            pack = self.cfg.stream_pack > 0 and self.rng.random() < self.cfg.stream_pack
            wave[b], spans, ys, sil, ws = self.packed(row, K * CLIP) if pack else self.slotted(row)
            targets.append(frame_targets(spans, ys, sil, n_frames, self.fcfg, self.silence_idx, self.unknown_idx,
                                         window))
            if self.word_of is not None:     # the word's name on the frames that carry its label
                word_targets.append(frame_targets(spans, ws, sil, n_frames, self.fcfg, -1, -1, window))
        words = torch.from_numpy(np.stack(word_targets)) if word_targets else None
        return torch.from_numpy(wave), torch.from_numpy(np.stack(targets)), words


def mine_hard_negatives(batches: BatchMaker, bundle, clips: ClipSet, unk: int, boost: float,
                        progress: bool = True, chunk: int = 2048) -> np.ndarray:
    """Hard-negative mining: score every training `_unknown_` clip with `bundle` in the detector's view
    (`evaluate.keyword_peaks`) and sample it (1 + boost * peak) times as often, within `_unknown_`'s
    unchanged share. The false alarms of real-voice streams are other words that look like keywords;
    most `_unknown_` clips are easy, so the few near-misses get the updates. -> the peaks."""
    from ..enginefile import as_engine_model
    from ..evaluate import keyword_peaks
    engine = as_engine_model(bundle)              # converted once, not once per chunk
    idx = np.flatnonzero((clips.y == unk) & ~clips.is_silence)
    peaks = np.zeros(idx.size, np.float32)
    for s in tqdm(range(0, idx.size, chunk), desc="mining hard negatives", unit="chunk", disable=not progress,
                  file=sys.stderr):
        w = clips.audio[idx[s:s + chunk]].astype(np.float32) / 32768.0
        peaks[s:s + chunk] = keyword_peaks(engine, w)
    share = lambda: float(batches.p[idx[peaks >= 0.5]].sum() / max(batches.p[idx].sum(), 1e-30))
    before = share()
    batches.boost(idx, 1.0 + boost * peaks)
    print(f"hard negatives: {int((peaks >= 0.5).sum())} of {idx.size} _unknown_ clips peak >= 0.5 "
          f"(their share of _unknown_ samples {100 * before:.1f}% -> {100 * share():.1f}%)", file=sys.stderr)
    return peaks


def _produce(q, batches: BatchMaker, aug, mfcc, fill, steps, seed, rows) -> None:
    """One producer: the batches of `steps` (this worker's share of the epoch), rows `rows` of each global
    batch. Row g of step t draws from default_rng((*seed, t, g)) alone, so the batch sequence depends on
    the seed and the global batch only: not on the number of workers or ranks, nor on timing."""
    torch.set_num_threads(1)
    with torch.no_grad():
        for t in steps:
            rngs = [np.random.default_rng((*seed, t, g)) for g in rows]
            wave, tgt, words = batches(rngs)
            feats = aug.features(mfcc, wave, rngs) if aug is not None else mfcc(wave)
            if aug is not None:
                feats = aug.spec_augment(feats, fill, rngs)
            # numpy: plain pickling, no torch shared-memory fds
            q.put((feats.numpy(), tgt.numpy(), None if words is None else words.numpy()))


class BatchFeed:
    """Makes an epoch's batches (augmentation + features) in `workers` forked processes while this one
    trains. Worker w makes steps w, w + workers, ...; `get` reads their queues in that fixed order, so the
    sequence is the same for any worker count. Seeded per epoch, so a resumed epoch sees the same batches.
    `rows`: this rank's rows of each global batch (default: all cfg.batch rows). `wait_s`: time `get`
    spent waiting for a batch (the trainer outran the producers)."""

    def __init__(self, batches, aug, mfcc, fill, steps: int, seed, workers: int = 1, rows=None,
                 device: torch.device | None = None):
        import multiprocessing as mp
        ctx = mp.get_context("fork")
        rows = list(range(batches.cfg.batch) if rows is None else rows)
        n = max(1, min(workers, steps))
        self.qs = [ctx.Queue(maxsize=max(2, 6 // n)) for _ in range(n)]
        self.procs = [ctx.Process(target=_produce, args=(q, batches, aug, mfcc, fill, range(w, steps, n), seed, rows),
                                  daemon=True) for w, q in enumerate(self.qs)]
        for p in self.procs:
            p.start()
        self.step, self.wait_s, self.device = 0, 0.0, device or torch.device("cpu")

    def get(self):
        from .distributed import to_device
        w = self.step % len(self.qs)
        t0 = time.perf_counter()
        while True:
            try:
                feats, tgt, words = self.qs[w].get(timeout=5)
                break
            except Exception:
                if not self.procs[w].is_alive():
                    raise RuntimeError(f"batch producer died (exit code {self.procs[w].exitcode}; "
                                       "out of memory?)") from None
        self.step += 1
        self.wait_s += time.perf_counter() - t0
        return tuple(to_device(None if x is None else torch.from_numpy(x), self.device) for x in (feats, tgt, words))

    def close(self) -> None:
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()


def eval_audio(clips: ClipSet, noises, seed: int) -> np.ndarray:
    """Validation clips as float audio; `_silence_` items get background noise at U(0, 1) (TF), seeded."""
    rng = np.random.default_rng(seed)
    x = clips.audio.astype(np.float32) / 32768.0
    for i in np.flatnonzero(clips.is_silence):
        if noises:
            src = noises[rng.integers(len(noises))]
            s = rng.integers(0, max(1, len(src) - CLIP))
            seg = src[s:s + CLIP]
            x[i, :len(seg)] = seg * rng.uniform(0, 1)
    return np.clip(x, -1, 1)


@torch.no_grad()
def evaluate(model, mfcc, audio: np.ndarray, y: np.ndarray, streams: int = 8) -> dict:
    """Offline: each 1 s clip from zero state, label at its last frame. Streaming: the clips played
    back to back in `streams` long streams, state carried, label at each clip's last frame."""
    model.eval()
    dev = model.feat_mean.device
    feats = torch.cat([mfcc(torch.from_numpy(audio[i:i + 512])) for i in range(0, len(audio), 512)])
    off = torch.cat([model(feats[i:i + 512].to(dev)) for i in range(0, len(feats), 512)]).argmax(-1).cpu().numpy()
    n = len(audio) // streams * streams
    per = n // streams
    stream_pred = np.zeros(n, np.int64)
    if per:
        wave = torch.from_numpy(audio[:n].reshape(streams, per * CLIP))
        logits, _ = model.forward_all(mfcc(wave).to(dev))
        last = (np.arange(1, per + 1) * CLIP - mfcc.cfg.n_fft) // mfcc.cfg.hop   # last frame inside each clip
        s = model.cfg.stack
        last = (last - s + 1) // s                                                # its model output
        stream_pred = logits[:, last].argmax(-1).reshape(-1).cpu().numpy()
    return {"acc": float((off == y).mean()), "stream_acc": float((stream_pred == y[:n]).mean()) if per else float("nan"),
            "n": int(len(y)), "stream_clips_per_stream": int(per), "pred": off}


# ------------------------------------------------------------------ checkpoints and reports

def add_weights(total: dict | None, state: dict) -> dict:
    """The running sum of floating-point weights (epoch averaging); integer buffers are not summed."""
    if total is None:
        return {k: v.detach().double().clone() for k, v in state.items() if v.is_floating_point()}
    return {k: total[k] + state[k].detach().double() for k in total}


def mean_weights(total: dict, n: int, like: dict) -> dict:
    """The mean of n summed weight sets, as a state dict shaped and typed like `like` (its other buffers kept).
    Averaging the weights at several points of one run (as in SWA) lands in a flatter spot than any one of
    them; a GRU without batch norm needs no statistics pass afterwards."""
    return {k: (total[k] / n).to(v.dtype) if k in total else v for k, v in like.items()}


def save_checkpoint(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train loss")
    a.set_xlabel("epoch"); a.set_ylabel("loss"); a.legend(); a.grid(alpha=.3)
    b.plot(ep, [h["train_acc"] for h in history], "o-", label="train (frame) acc")
    b.plot(ep, [h["val_acc"] for h in history], "s-", label="val acc (offline)")
    b.plot(ep, [h["val_stream_acc"] for h in history], "^-", label="val acc (streaming)")
    b.set_xlabel("epoch"); b.set_ylabel("accuracy"); b.set_ylim(0, 1); b.legend(); b.grid(alpha=.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ main loop

class TrainStep(torch.nn.Module):
    """The training forward pass as one module (what DistributedDataParallel wraps): the GRU's outputs,
    dropout, the head and the optional word head -> (logits, word logits or None, final state)."""

    def __init__(self, model: GRUClassifier, word_head: torch.nn.Module | None = None):
        super().__init__()
        self.model, self.word_head = model, word_head

    def forward(self, feats, h0=None):
        hidden, hT = self.model.hidden_all(feats, h0)
        hidden = self.model.drop(hidden)
        return self.model.head(hidden), (self.word_head(hidden) if self.word_head is not None else None), hT


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, command: str = "") -> dict:
    """One process, or one rank of a torchrun launch (distributed.setup reads its environment)."""
    ddp = setup(cfg.device)
    try:
        with ddp.quiet():
            return _train(cfg, ddp, resume, progress and ddp.main, command)
    finally:
        ddp.close()


def _train(cfg: TrainConfig, ddp: Dist, resume: bool, progress: bool, command: str) -> dict:
    t_begin = time.monotonic()            # cfg.deadline_s counts from here
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)           # the same initial weights on every rank
    reproducible(ddp.device)
    if cfg.workers < 1:
        raise KwsError(f"--workers must be >= 1 (got {cfg.workers})")
    if cfg.deadline_s and ddp.ddp:
        raise KwsError("a training deadline is for one process (ranks would stop at different steps)")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.data:
        raise KwsError("no --data root given")
    for r in cfg.data:
        if not parse_root(r)[0].is_dir():
            raise KwsError(f"data root not found: {parse_root(r)[0]}")
    if cfg.weights and len(cfg.weights) != len(cfg.data):
        raise KwsError(f"--weights has {len(cfg.weights)} values for {len(cfg.data)} data roots")
    if not cfg.target_start < cfg.target_end:
        raise KwsError(f"--target-start ({cfg.target_start:g} s) must be before --target-end ({cfg.target_end:g} s)")
    for name in ("stream_pack", "reversed_negatives"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise KwsError(f"--{name.replace('_', '-')} is a share: between 0 and 1 (got {getattr(cfg, name):g})")
    for name in ("hard_negatives", "word_aux", "weight_decay"):
        if getattr(cfg, name) < 0:
            raise KwsError(f"--{name.replace('_', '-')} must be >= 0 (got {getattr(cfg, name):g})")
    if cfg.frontend not in FRONTENDS:
        raise KwsError(f"--frontend {cfg.frontend!r}: choose one of {', '.join(FRONTENDS)}")
    labels = task_labels(cfg.task, cfg.words or None)
    if not cfg.pcen_time_s > 0:
        raise KwsError(f"--pcen-time-s must be positive (got {cfg.pcen_time_s:g})")
    fcfg = FeatureConfig(frontend=cfg.frontend, pcen_time_s=cfg.pcen_time_s)
    scanned = [scan_root(r) for r in cfg.data]          # each root read once
    train_items, root_of = [], []
    for ri, items in enumerate(scanned):               # every unknown clip kept; sampling weights balance
        part = select(items, labels, "training", unknown_pct=None, silence_pct=10, seed=cfg.seed)
        train_items += part
        root_of += [ri] * len(part)
    # validation: TF-style 10% unknown/silence over all roots
    val_items = select([it for items in scanned for it in items], labels, "validation", seed=cfg.seed)
    root_of_path = {it.path: ri for ri, items in enumerate(scanned) for it in items}
    print(f"labels: {' '.join(labels)}", file=sys.stderr)
    print(f"training: {len(train_items)} clips ({summary(train_items)})", file=sys.stderr)
    print(f"validation: {len(val_items)} clips ({summary(val_items)})", file=sys.stderr)
    missing = [l for l in labels if l not in {it.label for it in train_items}]
    if missing:
        raise KwsError(f"no training clips for label(s): {', '.join(missing)}")
    with ddp.local_first():    # one process per machine decodes and writes the cache; the others read it
        train_set = ClipSet(train_items, labels, cfg.cache, "training", progress)
        val_set = ClipSet(val_items, labels, cfg.cache, "validation", progress) if val_items else None
    root_of = np.array(root_of)[train_set.kept]
    noises = load_noises(cfg.data)
    unk = labels.index(UNKNOWN) if UNKNOWN in labels else -1
    babble = train_set.audio[train_set.y == unk] if unk >= 0 and (train_set.y == unk).any() else None
    aug = (Augmenter(AugmentConfig(**cfg.augment_overrides), fcfg, noises, babble, seed=cfg.seed)
           if cfg.augment else None)
    batches = BatchMaker(train_set, root_of, cfg, labels, fcfg, aug)
    mfcc = MFCC(fcfg)

    mcfg = ModelConfig(n_input=fcfg.n_mfcc, n_classes=len(labels), hidden=cfg.hidden, layers=cfg.layers,
                       dropout=cfg.dropout, stack=cfg.stack)
    model = GRUClassifier(mcfg)
    with torch.no_grad():   # input normalisation from clean training clips
        sample = train_set.audio[np.random.default_rng(cfg.seed).choice(len(train_set), min(2000, len(train_set)), replace=False)]
        f = mfcc(torch.from_numpy(sample.astype(np.float32) / 32768.0)).reshape(-1, fcfg.n_mfcc)
        model.feat_mean.copy_(f.mean(0)); model.feat_std.copy_(f.std(0).clamp_min(1e-3))
    if cfg.init:
        from .modelfile import load_bundle
        src = load_bundle(cfg.init)
        # dropout is training behaviour, not shape: a fine-tune may change it; a new head may change n_classes
        free = {"dropout": mcfg.dropout, **({"n_classes": mcfg.n_classes} if cfg.init_new_head else {})}
        if src.labels != labels and not cfg.init_new_head:
            raise KwsError(f"--init {cfg.init}: its labels ({', '.join(src.labels)}) differ from this run's "
                           f"({', '.join(labels)}); --init-new-head starts a new output head")
        theirs = replace(src.model.cfg, **free)
        if theirs != mcfg:
            diff = [f"{k} {getattr(theirs, k)} vs {getattr(mcfg, k)}" for k in vars(mcfg)
                    if getattr(theirs, k) != getattr(mcfg, k)]
            raise KwsError(f"--init {cfg.init}: its architecture differs from this run's ({', '.join(diff)})")
        if src.features != fcfg:
            theirs, ours = src.features.to_dict(), fcfg.to_dict()
            diff = ", ".join(f"{k} {theirs.get(k)}, not {v}" for k, v in ours.items() if theirs.get(k) != v)
            raise KwsError(f"--init {cfg.init}: its features differ from this run's: {diff}")
        keep = {k: v for k, v in src.model.state_dict().items()
                if not (cfg.init_new_head and src.labels != labels and k.startswith("head."))}
        model.load_state_dict(keep, strict=len(keep) == len(src.model.state_dict()))   # new head: freshly initialised
        if len(keep) < len(src.model.state_dict()):    # the new head starts from the old rows of labels both have
            with torch.no_grad():
                for i, lab in enumerate(labels):
                    old = lab if lab in src.labels else cfg.init_rows.get(lab)
                    if old is not None:
                        if old not in src.labels:
                            raise KwsError(f"--init {cfg.init}: no label {old!r} to start {lab!r}'s row from")
                        model.head.weight[i] = src.model.head.weight[src.labels.index(old)]
                        model.head.bias[i] = src.model.head.bias[src.labels.index(old)]
        print(f"initialised from {cfg.init}" + (" (a new output head)" if len(keep) < len(src.model.state_dict()) else ""),
              file=sys.stderr)
        if cfg.hard_negatives > 0 and unk >= 0:
            if set(labels) - set(src.labels):
                raise KwsError(f"--hard-negatives mines the near-misses of the --init model's keywords, and it has no "
                               f"{', '.join(sorted(set(labels) - set(src.labels)))}: fine-tune once without it, "
                               "then mine with that model as --init")
            mine_hard_negatives(batches, src, train_set, unk, cfg.hard_negatives, progress)
    elif cfg.hard_negatives > 0:
        raise KwsError("--hard-negatives needs --init MODEL: the model whose near-misses are mined")
    # --word-aux: a second linear head names the word (yes, cat, bed, happy, ...) on the frames that carry
    # its label, so the GRU must tell apart the words that `_unknown_` lumps together. Training only:
    # the model file holds GRUClassifier alone, so the run time and its cost are unchanged.
    word_head = None
    if cfg.word_aux > 0:
        if len(batches.words) < 2:
            raise KwsError(f"--word-aux: fewer than 2 words with >= {WORD_AUX_MIN_CLIPS} training clips")
        word_head = torch.nn.Linear(cfg.hidden, len(batches.words))
        print(f"auxiliary word head: {len(batches.words)} words (weight {cfg.word_aux:g})", file=sys.stderr)
    model.to(ddp.device)
    if word_head is not None:
        word_head.to(ddp.device)
    net = ddp.wrap(TrainStep(model, word_head))    # several ranks: DDP averages the gradients over them
    prec = precision(cfg.amp, ddp.device)
    params = list(model.parameters()) + (list(word_head.parameters()) if word_head is not None else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    epoch_clips = cfg.epoch_clips or len(train_set)
    steps = max(1, math.ceil(epoch_clips / (ddp.world * cfg.batch * cfg.seq_clips)))   # global batch: world x batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.15)
    val_audio = eval_audio(val_set, noises, cfg.seed) if val_set else None
    # accuracy per data root too (silence items count with no root): a synthetic root can hide a
    # drop on the real-voice root, and real voices are what users have
    val_root = np.array([root_of_path.get(it.path, -1) for it in val_set.items]) if val_set else None
    root_names = [root_label(r) for r in cfg.data]
    if cfg.select_root and cfg.select_root not in root_names:
        raise KwsError(f"--select-root {cfg.select_root!r} is not one of the data roots ({', '.join(root_names)})")
    if cfg.select_root and (val_root is None or not (val_root == root_names.index(cfg.select_root)).any()):
        raise KwsError(f"--select-root {cfg.select_root!r} has no validation clips")
    history, best, start_epoch = [], -math.inf, 0     # the score may be -loss (no validation set)
    avg_sum, avg_n = None, 0      # running sum of the epoch-end weights that cfg.average_epochs averages
    ckpt = out / "checkpoint.pt"
    # rank 0 reads the checkpoint and sends it to the others (no shared file system needed)
    c = ddp.broadcast(torch.load(ckpt, weights_only=True, map_location="cpu") if ddp.main and ckpt.exists()
                      else None) if resume else None
    if c is not None:
        if (word_head is not None) != ("word_head" in c):
            raise KwsError(f"--resume: {ckpt} was trained with{'out' if word_head is not None else ''} --word-aux; "
                           "resume with the same options")
        model.load_state_dict(c["model"]); opt.load_state_dict(c["opt"]); sched.load_state_dict(c["sched"])
        if word_head is not None:
            word_head.load_state_dict(c["word_head"])
        history, best, start_epoch = json.loads(c["history"]), c["best"], c["epoch"] + 1
        if "avg_sum" in c:
            avg_sum, avg_n = c["avg_sum"], int(c["avg_n"])
        torch.set_rng_state(c["torch_rng"])
        print(f"resumed from {ckpt} after epoch {c['epoch'] + 1}", file=sys.stderr)
    print(f"model: {count_parameters(model)} parameters; {steps} steps/epoch of "
          + (f"{ddp.world} ranks x " if ddp.ddp else "") + f"{cfg.batch}x{cfg.seq_clips} clips; device {ddp.device}, "
          f"{prec.name}, {cfg.workers} producer(s)" + (f" per rank" if ddp.ddp else ""), file=sys.stderr)
    acc_dtype = torch.float32 if ddp.device.type == "mps" else torch.float64
    stopped = False          # cfg.deadline_s reached: this epoch is cut short, and it is the last
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        # dropout's stream per (seed, epoch, rank): a resumed epoch replays, and ranks draw different masks
        torch.manual_seed(int(np.random.SeedSequence((cfg.seed, epoch, ddp.rank, 11)).generate_state(1)[0]))
        t0, tot = time.time(), torch.zeros(3, dtype=acc_dtype, device=ddp.device)   # loss, right, labelled frames
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, file=sys.stderr,
                   mininterval=2.0)
        # this rank's rows r, r + world, ... of each global batch, made by cfg.workers producers
        feed = BatchFeed(batches, aug, mfcc, model.feat_mean.cpu().clone(), steps, seed=(cfg.seed, epoch),
                         workers=cfg.workers, rows=ddp.rows(cfg.batch), device=ddp.device)
        state = None   # each epoch starts afresh, so a resumed epoch replays exactly
        carry_rng = np.random.default_rng((cfg.seed, epoch, 7))     # the same on every rank
        done = 0
        for _ in bar:
            if cfg.deadline_s and time.monotonic() - t_begin > cfg.deadline_s:
                stopped = True
                break
            done += 1
            feats, tgt, words = feed.get()
            h0 = state if state is not None and carry_rng.random() < cfg.carry_prob else None
            with prec.autocast():
                logits, word_logits, hT = net(feats, h0)
            state = hT.detach()
            s = model.cfg.stack
            T = min(logits.shape[1], tgt.shape[1] // s)
            tgt = tgt[:, s - 1::s][:, :T]              # target of output j: that of its last input frame
            wt = words[:, s - 1::s][:, :T] if word_logits is not None else tgt
            # mean over the labelled frames of the whole global batch (the ranks' counts summed), times world:
            # DDP's gradient average then gives exactly the gradient of one process on the global batch
            n = ddp.all_sum(torch.stack([(tgt >= 0).sum(), (wt >= 0).sum()]).float()).clamp_min(1) / ddp.world
            loss = F.cross_entropy(logits[:, :T].float().reshape(-1, len(labels)), tgt.reshape(-1),
                                   ignore_index=-100, reduction="sum") / n[0]
            if word_logits is not None:
                loss = loss + cfg.word_aux * F.cross_entropy(
                    word_logits[:, :T].float().reshape(-1, len(batches.words)), wt.reshape(-1),
                    ignore_index=-100, reduction="sum") / n[1]
            opt.zero_grad(set_to_none=True)
            prec.scaler.scale(loss).backward()         # the scaler: fp16 only (a pass-through otherwise)
            prec.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            prec.scaler.step(opt); prec.scaler.update(); sched.step()
            m = tgt >= 0
            tot += torch.stack([loss.detach(), (logits[:, :T].argmax(-1)[m] == tgt[m]).sum(), m.sum()]).to(acc_dtype)
            if progress and bar.n % 10 == 0:           # reading the sums waits for the device: not every step
                bar.set_postfix(loss=f"{tot[0] / (bar.n + 1):.3f}", acc=f"{tot[1] / tot[2].clamp_min(1):.3f}")
        feed.close()
        tot_loss, tot_ok, tot_n = ddp.all_sum(tot).tolist()
        tot_loss /= ddp.world                          # each rank's loss is world x its share of the global mean
        dt = time.time() - t0
        rec = {"epoch": epoch + 1, "train_loss": tot_loss / max(1, done), "train_acc": tot_ok / max(1, tot_n),
               "clips_per_s": done * ddp.world * cfg.batch * cfg.seq_clips / dt, "epoch_s": dt,
               "feed_wait_s": feed.wait_s, "lr": sched.get_last_lr()[0]}
        if stopped:
            print(f"training deadline ({cfg.deadline_s:.0f} s) reached: epoch {epoch + 1} stopped after {done} of "
                  f"{steps} steps", file=sys.stderr)
        if not ddp.main:
            ddp.barrier()                              # rank 0 evaluates and writes the files meanwhile
            continue
        per_root = {}   # validation accuracy of each root that has validation clips
        if val_set is not None:
            v = evaluate(model, mfcc, val_audio, val_set.y)
            rec.update(val_acc=v["acc"], val_stream_acc=v["stream_acc"])
            for ri, name in enumerate(root_names):
                m = val_root == ri
                if m.any():
                    per_root[name] = float((v["pred"][m] == val_set.y[m]).mean())
                rec[f"val_acc[{name}]"] = per_root.get(name, float("nan"))
        else:
            rec.update(val_acc=float("nan"), val_stream_acc=float("nan"))
        score = rec["val_stream_acc"] if val_set is not None else -rec["train_loss"]
        if cfg.select_root:     # e.g. the real-voice validation speakers, which is what users have
            score = per_root[cfg.select_root]
        elif len(per_root) > 1:   # several roots: the mean over roots, so a small real-voice root counts
            score = float(np.mean(list(per_root.values())))
        if not math.isfinite(score):   # too few validation clips for the streaming reading: the clip one, else -loss
            score = rec["val_acc"] if math.isfinite(rec["val_acc"]) else -rec["train_loss"]
        rec["select_score"] = score
        history.append(rec)
        print(f"epoch {epoch + 1}: loss {rec['train_loss']:.3f} val acc {rec['val_acc']:.4f} "
              f"(streaming {rec['val_stream_acc']:.4f}; per root: "
              + " ".join(f"{n} {a:.3f}" for n, a in per_root.items())
              + f") {rec['clips_per_s']:.0f} clips/s", file=sys.stderr)
        meta = {"command": command, "train_config": json.dumps(asdict(cfg)), "epoch": epoch + 1,
                "val_acc": rec["val_acc"], "val_stream_acc": rec["val_stream_acc"],
                "trained": time.strftime("%Y-%m-%d %H:%M:%S"), "parameters": count_parameters(model)}
        bundle = Bundle(model=cpu_copy(model), features=fcfg, labels=labels, detector=DetectorConfig().to_dict(), meta=meta)
        if score > best:
            best = score
            save_bundle(bundle, out / "model.npz")
        # the latest weights too: clip accuracy moves by noise late in the schedule, and the annealed last
        # epoch can be the better detector on streams (choose between them on dev streams)
        save_bundle(bundle, out / "last.npz")
        if cfg.keep_epochs:
            save_bundle(bundle, out / f"epoch{epoch + 1}.npz")
        if cfg.average_epochs > 0 and (epoch >= cfg.epochs - cfg.average_epochs or stopped):
            avg_sum, avg_n = add_weights(avg_sum, bundle.model.state_dict()), avg_n + 1
            averaged = Bundle(model=copy.deepcopy(bundle.model), features=fcfg, labels=labels,
                              detector=bundle.detector, meta={**meta, "averaged_epochs": avg_n})
            averaged.model.load_state_dict(mean_weights(avg_sum, avg_n, bundle.model.state_dict()))
            save_bundle(averaged, out / "averaged.npz")
        save_checkpoint(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                               "epoch": epoch, "best": best, "history": json.dumps(history),
                               **({"avg_sum": avg_sum, "avg_n": avg_n} if avg_sum is not None else {}),
                               "torch_rng": torch.get_rng_state(), **checkpoint_model(bundle),
                               **({"word_head": word_head.state_dict()} if word_head is not None else {})})
        with open(out / "metrics.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(history[0].keys()))
            w.writeheader(); w.writerows(history)
        (out / "metrics.json").write_text(json.dumps(history, indent=1))
        plot_curves(history, out / "training_curves.png")
        ddp.barrier()
        if stopped:
            break
    return {"history": history, "best": best, "model": str(out / "model.npz"), "stopped_early": stopped,
            **({"averaged": str(out / "averaged.npz")} if avg_n else {})}


# TrainConfig fields that are plain `--name VALUE` options, with their types (one list for parser and run)
PLAIN_OPTIONS = [  # (TrainConfig field, type, help)
    ("epochs", int, "training epochs"),
    ("batch", int, "sequences per batch"),
    ("seq_clips", int, "clips per training sequence (the GRU state is carried through them)"),
    ("lr", float, "peak learning rate of the one-cycle schedule"),
    ("weight_decay", float, "AdamW's decoupled weight decay (it also bounds how confident the model can get)"),
    ("hidden", int, "GRU units per layer"),
    ("layers", int, "GRU layers"),
    ("stack", int, "feature frames per GRU step (2: 50 Hz, 3: 33 Hz)"),
    ("dropout", float, "dropout between GRU layers"),
    ("epoch_clips", int, "clips per epoch (0: the size of the training split)"),
    ("seed", int, "random seed (sampling, augmentation, initial weights)"),
    ("threads", int, "torch threads of the trainer (--workers other processes make the batches)"),
    ("workers", int, "batch producer processes (augmentation + features) per trainer process; the batches "
                     "are the same for any number"),
    ("unknown_weight", float, "sampling weight of _unknown_ relative to one keyword"),
    ("carry_prob", float, "probability that a sequence starts from the previous batch's final state"),
    ("target_start", float, "a word's label starts this many seconds after its end (negative: inside it)"),
    ("target_end", float, "... and ends this many seconds after its end (or at the next word)"),
    ("pcen_time_s", float, "PCEN smoother time constant, seconds (--frontend pcen)"),
    ("hard_negatives", float, "with --init: sample each _unknown_ clip (1 + this x its highest keyword "
                              "posterior under the init model) times as often (0: off)"),
    ("reversed_negatives", float, "share of keyword clips (not no/on) played backwards and labelled "
                                  "_unknown_: real-voice negatives (0: off)"),
    ("stream_pack", float, "share of sequences packed like a live stream: words trimmed and placed "
                           "0.08-1.5 s apart over one noise bed (0: every clip in its own 1 s slot)"),
    ("word_aux", float, "weight of an auxiliary loss that names each word (cat, bed, yes...) on the frames "
                        "that carry its label; training only, the model file is unchanged (0: off)"),
    ("average_epochs", int, "also write OUT/averaged.npz, the mean of the weights at the end of the last N "
                            "epochs (SWA-like; a steadier model than any one epoch on few clips) (0: off)"),
]


def add_parser(sub) -> None:
    from ..commands import SUMMARY
    p = sub.add_parser("train", help=SUMMARY["train"],
                       description="Train the stateful GRU spotter. --data takes one or more roots in Speech "
                                   "Commands layout; ROOT@VAL,TEST sets the speaker split of a root without list files.")
    p.add_argument("--data", nargs="+", required=True, metavar="ROOT")
    p.add_argument("--weights", type=float, nargs="+", default=[], help="sampling weight per data root")
    p.add_argument("--root-share", action="store_true",
                   help="--weights give each root's share of every class, whatever its clip count "
                        "(e.g. half of each keyword from a small real-voice root)")
    p.add_argument("--task", default="12", choices=["12", "35"])
    p.add_argument("--words", default="", help="custom comma-separated keyword list (overrides --task)")
    p.add_argument("--out", default="runs/kws")
    for name, typ, help in PLAIN_OPTIONS:
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=getattr(TrainConfig, name),
                       help=f"{help} (default {getattr(TrainConfig, name):g})")
    p.add_argument("--select-root", default="", metavar="NAME",
                   help="choose the best epoch on this data root's validation accuracy (its folder name, "
                        "e.g. speech_commands_part); default: the mean over roots")
    p.add_argument("--cache", default=TrainConfig.cache, help="decoded-audio cache folder ('' for none)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--augment", default="", metavar="FIELD=VALUE,...",
                   help="change augmentation settings (kws/training/augment.py AugmentConfig), e.g. "
                        "reverb_prob=0.1,vtlp=0.94:1.06 (a range as LOW:HIGH)")
    p.add_argument("--frontend", default=TrainConfig.frontend, choices=FRONTENDS,
                   help="feature front end: log mel (default) or pcen (per-channel energy normalisation)")
    p.add_argument("--init", default="", metavar="MODEL", help="start from this model's weights (fine-tune)")
    p.add_argument("--init-new-head", action="store_true",
                   help="with --init: the labels may differ (e.g. --words marvin from the 12-class model); every "
                        "weight but the output head is copied, head rows of shared labels included")
    p.add_argument("--no-unknown-inside", action="store_true",
                   help="leave the inside of non-keyword words unlabelled (default: label it _unknown_)")
    p.add_argument("--device", default=TrainConfig.device, choices=DEVICES,
                   help="where the model trains: auto (CUDA where present, else CPU), cpu, cuda, mps; several "
                        "processes: torchrun --nproc-per-node N -m kws train ... (docs/training.md)")
    p.add_argument("--amp", default=TrainConfig.amp, choices=AMP,
                   help="mixed precision: auto (bf16 on CUDA where the GPU has it, else fp16 with a gradient "
                        "scaler; off on CPU and MPS), off, bf16, fp16")
    p.add_argument("--keep-epochs", action="store_true", help="also write OUT/epochN.npz after every epoch")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def parse_augment(spec: str) -> dict:
    """"a=0.5,b=1:2" -> {"a": 0.5, "b": (1.0, 2.0)} for AugmentConfig's fields; KwsError names a bad one."""
    fields = AugmentConfig.__dataclass_fields__
    out = {}
    for item in filter(None, (t.strip() for t in spec.split(","))):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or name not in fields:
            raise KwsError(f"--augment {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        default = fields[name].default
        try:
            if isinstance(default, tuple):
                lo, hi = value.split(":")
                out[name] = (float(lo), float(hi))
            else:
                out[name] = type(default)(value)
        except ValueError:
            want = "LOW:HIGH" if isinstance(default, tuple) else type(default).__name__
            raise KwsError(f"--augment {item!r}: {name} needs {want}") from None
    return out


def run(args) -> int:
    cfg = TrainConfig(data=args.data, weights=args.weights, root_share=args.root_share, task=args.task,
                      words=[w.strip() for w in args.words.split(",") if w.strip()], out=args.out,
                      cache=args.cache or None, augment=not args.no_augment, init=args.init, init_new_head=args.init_new_head, frontend=args.frontend,
                      augment_overrides=parse_augment(args.augment),
                      unknown_inside=not args.no_unknown_inside, select_root=args.select_root,
                      device=args.device, amp=args.amp, keep_epochs=args.keep_epochs, **{k: getattr(args, k) for k, _, _ in PLAIN_OPTIONS})
    try:
        r = train(cfg, resume=args.resume, progress=not args.no_progress and sys.stderr.isatty(),
                  command="kws " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    except FileNotFoundError as e:
        raise KwsError(str(e)) from None
    h = r["history"][-1] if r["history"] else {}
    print(f"best model: {r['model']} (selection score {r['best']:.4f}); last epoch: {json.dumps(h)}"
          + (f"; epoch average: {r['averaged']}" if r.get("averaged") else ""))
    return 0
