"""Streaming keyword detector: audio chunks in, detections out.

All streaming state lives here: the resampler's filter memory, the MFCC extractor's leftover
samples, the GRU hidden state, the posterior smoothing window, the refractory timer and the
re-arm state.
`reset()` clears all of it. Nothing here depends on how the audio is chunked.

It runs on the numpy engine (engine.py) and never imports torch. `backend="torch"` (or the environment
variable KWS_BACKEND=torch) runs the torch model instead: the reference path of the benchmarks and
the equivalence tests (kws/training/torch_stream.py). That lazy import is one of the two places where
the base side reaches into kws/training/ (the other: enginefile.load_model of an old .pt); it forms no
import cycle (tests/test_imports.py).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .audio import TARGET_RATE, StreamResampler, sanitize, to_float_mono
from .data.index import NON_KEYWORDS
from .enginefile import EngineModel, as_engine_model
from .features import NumpyMFCC, StreamingMFCC


def smooth_posteriors(post: np.ndarray, smooth: int, context: int = 0) -> np.ndarray:
    """Causal moving average of posteriors [T, C] over `smooth` frames (fewer at the start).

    The first `context` rows are earlier posteriors that only fill the window (the streaming spotter
    carries smooth - 1 of them between chunks); the result has T - context rows. With a full context
    (the steady state of a stream) the window sums skip the zero row, index arrays and partial windows:
    the same float64 cumsum differences, so the same values."""
    n = len(post) - context
    if context == smooth - 1 > 0 and n > 0:
        csum = np.cumsum(post, axis=0, dtype=np.float64)
        win = csum[context:].copy()
        np.subtract(win[1:], csum[:n - 1], out=win[1:])
        return (win / smooth).astype(np.float32)
    csum = np.concatenate([np.zeros((1, post.shape[1])), np.cumsum(post, axis=0, dtype=np.float64)])
    ends = np.arange(1, len(post) + 1)
    starts = np.maximum(0, ends - smooth)
    return ((csum[ends] - csum[starts]) / (ends - starts)[:, None]).astype(np.float32)[context:]


def detect_frames(sm: np.ndarray, thr: np.ndarray, refractory: int, first: int = 0,
                  held: int = -1) -> list[tuple[int, int, float]]:
    """The detection rule: fire at a frame t >= first where some column's smoothed posterior
    sm[t, k] >= thr[k] (the highest such column wins); then let nothing fire for `refractory` frames,
    nor before column k has fallen below thr[k] (re-arm: a word whose posterior stays up past the
    refractory time fires once, not twice). -> [(frame, column, score)]. KeywordSpotter runs it chunk
    by chunk, carrying `first` and `held` (a column that fired in an earlier chunk and has not fallen
    yet: `held_column`); `kws eval-stream` replays it over whole files for every threshold of a sweep."""
    above = sm >= thr
    cand = np.flatnonzero(above.any(axis=1))
    below: dict = {}

    def rearmed(k: int, t: int) -> int:
        """The first frame after t where column k is below its threshold (len(sm) if none)."""
        if k not in below:
            below[k] = np.flatnonzero(~above[:, k])
        j = int(np.searchsorted(below[k], t, side="right"))
        return int(below[k][j]) if j < len(below[k]) else len(sm)

    if held >= 0:
        first = max(first, rearmed(held, -1))
    dets = []
    i = int(np.searchsorted(cand, first, side="left"))
    while i < len(cand):
        t = int(cand[i])
        k = int(np.where(above[t], sm[t], -1.0).argmax())
        dets.append((t, k, float(sm[t, k])))
        i = int(np.searchsorted(cand, max(t + max(refractory, 1), rearmed(k, t)), side="left"))
    return dets


def held_column(sm: np.ndarray, thr: np.ndarray, dets: list, held: int = -1) -> int:
    """After detect_frames(sm, thr, ..., held=held) gave dets: the column that must still fall below its
    threshold before anything fires (the last one that fired, or `held`, if it stayed up to the end of
    sm), else -1. What a chunked detector carries into the next chunk."""
    k, t = (dets[-1][1], dets[-1][0]) if dets else (held, -1)
    return k if k >= 0 and bool((sm[t + 1:, k] >= thr[k]).all()) else -1


@dataclass
class DetectorConfig:
    """Detector defaults, stored in the model file and overridable per run."""
    threshold: float = 0.7            # on the smoothed posterior
    thresholds: dict = field(default_factory=dict)   # per-label overrides
    smooth_ms: float = 100.0          # causal moving average of posteriors
    refractory_s: float = 1.0         # no detection of any label this long after one

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DetectorConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class Detection:
    label: str
    score: float
    time: float          # seconds from stream start (end of the frame that fired)

    def to_dict(self) -> dict:
        return {"label": self.label, "score": round(float(self.score), 4), "time": round(float(self.time), 3)}


class KeywordSpotter:
    """The public streaming API: `process(chunk) -> [Detection]`, `reset()`.

    chunk: numpy array or tensor, int16/int32/uint8/float, shape [N] or [N, channels], at the
    `sample_rate` given here (any rate; resampled to 16 kHz with a streaming resampler).
    model: a model file (.npz; an old .pt where torch is installed), an EngineModel or a torch Bundle.
    """

    def __init__(self, model: "EngineModel | Bundle | str | Path | None" = None, sample_rate: int = TARGET_RATE,
                 keywords: list[str] | None = None, config: DetectorConfig | None = None,
                 backend: str | None = None, **overrides):
        backend = backend or os.environ.get("KWS_BACKEND", "engine")
        if backend == "torch":
            from .training.torch_stream import torch_parts
            self.bundle, self.net, self.features = torch_parts(model)
        elif backend == "engine":
            self.bundle = as_engine_model(model)
            self.net = self.bundle.engine    # its kernel (compiled or numpy) runs the features too
            self.features = StreamingMFCC(NumpyMFCC(self.bundle.features, kernel=self.net.kernel))
        else:
            raise ValueError(f"unknown backend {backend!r} (engine or torch)")
        self.backend = backend
        self.labels = self.bundle.labels
        self.cfg = config or DetectorConfig.from_dict(self.bundle.detector)
        for k, v in overrides.items():
            if v is not None:
                setattr(self.cfg, k, v)
        fcfg = self.bundle.features
        if fcfg.sample_rate != TARGET_RATE:
            raise ValueError(f"model expects {fcfg.sample_rate} Hz features; kws streams at {TARGET_RATE} Hz")
        self.sample_rate = int(sample_rate)
        self.stack = self.net.cfg.stack
        self.hop_s = fcfg.hop / fcfg.sample_rate * self.stack      # time between model outputs
        self.win_s = fcfg.n_fft / fcfg.sample_rate
        self.smooth = max(1, int(round(self.cfg.smooth_ms / 1000 / self.hop_s)))
        self.refractory = int(round(self.cfg.refractory_s / self.hop_s))
        wanted = set(keywords) if keywords else None
        if wanted:
            unknown = wanted - set(self.labels)
            if unknown:
                raise ValueError(f"keywords not in this model: {', '.join(sorted(unknown))} "
                                 f"(model labels: {', '.join(self.labels)})")
        thr = np.full(len(self.labels), np.inf, dtype=np.float32)
        for i, lab in enumerate(self.labels):
            if lab not in NON_KEYWORDS and (wanted is None or lab in wanted):
                thr[i] = float(self.cfg.thresholds.get(lab, self.cfg.threshold))
        self._thr = thr
        self.resampler = StreamResampler(self.sample_rate, TARGET_RATE)
        self.reset()

    @property
    def label_thresholds(self) -> np.ndarray:
        """Threshold per label in model order (inf: never fires: non-keywords, keywords not wanted)."""
        return self._thr.copy()

    def reset(self) -> None:
        self.resampler.reset()
        self.features.reset()
        self.state = self.net.initial_state(1)[:, 0]
        self._hist = np.zeros((0, len(self.labels)), np.float32)   # last smooth-1 raw posteriors
        self._pending = np.zeros((0, self.bundle.features.n_mfcc), np.float32)  # frames not yet a full stack
        self.frame = 0                      # model outputs so far
        self._blocked_until = -1            # refractory: no detection before this frame
        self._held = -1                     # re-arm: a column that fired and has not fallen below yet
        self.posteriors = np.zeros(len(self.labels), np.float32)   # latest smoothed, for live views

    def step_frames(self, wave16k: np.ndarray) -> np.ndarray:
        """16 kHz mono float samples -> raw posteriors [T, C], one per `stack` feature frames (state carried)."""
        feats = self.features(np.ascontiguousarray(wave16k, dtype=np.float32))
        if self.stack > 1:
            if self._pending.shape[0]:
                feats = np.concatenate([self._pending, feats])
            n = feats.shape[0] // self.stack * self.stack
            feats, self._pending = feats[:n], feats[n:]
        if feats.shape[0] == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        post, self.state = self.net.step(feats, self.state)
        return post

    def process(self, chunk) -> list[Detection]:
        if hasattr(chunk, "detach"):       # a torch tensor (without importing torch here)
            chunk = chunk.detach().cpu().numpy()
        x = sanitize(to_float_mono(chunk))
        x = self.resampler(x)
        if x.size == 0:
            return []
        post = self.step_frames(x)
        return self._detect(post)

    def flush(self) -> list[Detection]:
        """End of stream: drain the resampler's tail (for files; a live stream never ends)."""
        x = self.resampler(np.zeros(0, np.float32), last=True)
        return self._detect(self.step_frames(x)) if x.size else []

    def _detect(self, post: np.ndarray) -> list[Detection]:
        n = post.shape[0]
        if n == 0:
            return []
        both = np.concatenate([self._hist, post])
        smoothed = smooth_posteriors(both, self.smooth, context=self._hist.shape[0])
        self._hist = both[-(self.smooth - 1):] if self.smooth > 1 else both[:0]
        self.posteriors = smoothed[-1]
        if not (smoothed >= self._thr).any():         # the common case: no column reaches its threshold
            self.frame += n
            self._held = -1
            return []
        found = detect_frames(smoothed, self._thr, self.refractory, self._blocked_until - self.frame, self._held)
        self._held = held_column(smoothed, self._thr, found, self._held)
        dets = []
        for t, k, score in found:
            g = self.frame + t
            dets.append(Detection(self.labels[k], score, self.frame_time(g)))
            self._blocked_until = g + self.refractory
        self.frame += n
        return dets

    def frame_time(self, g: int) -> float:
        """Time (s) at which model output g is complete: the last sample of its last feature window."""
        return g * self.hop_s + (self.stack - 1) * self.hop_s / self.stack + self.win_s
