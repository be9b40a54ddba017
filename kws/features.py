"""Log-mel MFCC features, one implementation for the batch and the streaming path.

Defaults follow the Speech Commands literature (TensorFlow's speech_commands example and
kws_streaming): 16 kHz, 30 ms Hann window, 10 ms hop, 40 Slaney mel bands over 20-7600 Hz,
40 DCT-II (orthonormal) coefficients of the natural log of mel power.

Two choices make chunked and whole-signal features identical:
- the log has a fixed floor (`log(mel + floor)`): no dB relative to the input's maximum, no top_db;
- framing is `center=False`: a frame exists once `n_fft` samples have arrived, and the streaming
  extractor carries the leftover samples between chunks.
Both paths run `arith.features_from_frames`, so the arithmetic per frame is the same code.

`frontend="pcen"` replaces the log by per-channel energy normalisation (arith.pcen), a causal automatic
gain control per mel band meant to make the features robust to background noise, microphone and gain.
Its smoother runs frame by frame and the streaming extractor carries it, so the same equality holds.

This module is numpy only (the run time imports it without torch). The torch twins used by training
and the tests (`MFCC`, `frames_to_mfcc`, `frame_signal`, and `mel_filterbank` / `dct_matrix` as
tensors) live in kws/training/features_torch.py, which imports this module (never the other way round).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import arith


FRONTENDS = ("log", "pcen")


@dataclass
class FeatureConfig:
    sample_rate: int = 16000
    win_ms: float = 30.0
    hop_ms: float = 10.0
    n_mels: int = 40
    n_mfcc: int = 40
    f_min: float = 20.0
    f_max: float = 7600.0
    log_floor: float = 1e-6
    # "log": log mel (stateless per frame); "pcen": per-channel energy normalisation of the mel power
    # (arith.pcen; causal, with a smoother carried from frame to frame), both followed by the DCT
    frontend: str = "log"
    pcen_time_s: float = 0.4       # the smoother's time constant (librosa.pcen's default)
    pcen_alpha: float = 0.98
    pcen_delta: float = 2.0
    pcen_r: float = 0.5
    pcen_eps: float = 1e-12        # on the power of [-1, 1] audio: about -120 dB, below any real noise

    def __post_init__(self):
        if self.frontend not in FRONTENDS:
            raise ValueError(f"unknown feature front end {self.frontend!r} (this kws knows: {', '.join(FRONTENDS)})")

    @property
    def stateful(self) -> bool:
        """True when a frame's features depend on earlier frames (PCEN's smoother)."""
        return self.frontend == "pcen"

    @property
    def pcen_s(self) -> float:
        """The smoother's coefficient per hop for pcen_time_s (librosa.pcen's formula)."""
        t = self.pcen_time_s * self.sample_rate / self.hop
        return float((np.sqrt(1 + 4 * t * t) - 1) / (2 * t * t))

    @property
    def n_fft(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))

    @property
    def hop(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def hz_to_mel(f):
    """Slaney's auditory-toolbox mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log_t = f >= 1000.0
    return np.where(log_t, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f = m * (200.0 / 3)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), f)


def mel_weights(cfg: FeatureConfig) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filters [n_mels, n_fft//2+1] float64, as
    librosa.filters.mel computes them (tests check equality). Written out here so running kws does
    not import librosa, which costs ~125 MB and seconds of start-up on a small board."""
    fft_freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max), cfg.n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:cfg.n_mels + 2] - mel_f[:cfg.n_mels]))[:, None]
    return weights


def dct_weights(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II as a [n_mels, n_mfcc] float64 matrix (scipy.fft.dct(type=2, norm='ortho'))."""
    n = np.arange(n_mels, dtype=np.float64)
    k = np.arange(n_mfcc, dtype=np.float64)
    m = np.cos(np.pi / n_mels * (n[:, None] + 0.5) * k[None, :])
    m[:, 0] *= 1.0 / np.sqrt(2.0)
    m *= np.sqrt(2.0 / n_mels)
    return m


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann (torch.hann_window(periodic=True), scipy's 'hann' for spectra) in float64."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


class NumpyMFCC:
    """Batch MFCC in numpy, float64 inside: waveform [..., N] at cfg.sample_rate -> [..., T, n_mfcc] float32.

    float64 because float32 FFT/matmul results depend on batch shape by a few ulp, which c0 (magnitude
    ~80) turns into >1e-5; in float64 chunked and whole-signal frames agree exactly."""

    def __init__(self, cfg: FeatureConfig | None = None, kernel: str | None = None):
        self.cfg = cfg or FeatureConfig()
        self.window = hann_window(self.cfg.n_fft)
        fb = mel_weights(self.cfg)
        self.mel_fb_t = np.ascontiguousarray(fb.T)
        self.dct = dct_weights(self.cfg.n_mfcc, self.cfg.n_mels)
        # the front end after the FFT in one compiled call (kws/_gru.c mel_log_dct / mel_pcen_dct) where
        # it was built: the float64 arithmetic of arith.features_from_frames, on each filter's nonzero bins
        from .engine import _gru, resolve_kernel
        self.kernel = resolve_kernel(kernel)
        if self.kernel == "c":
            nz = [np.flatnonzero(row) for row in fb]
            bands = np.array([(b[0], b[-1] + 1) if b.size else (0, 0) for b in nz], np.int32)
            self._tail = (np.ascontiguousarray(fb), bands, np.ascontiguousarray(self.dct))
            self._pcen = np.array([self.cfg.pcen_s, self.cfg.pcen_alpha, self.cfg.pcen_delta, self.cfg.pcen_r,
                                   self.cfg.pcen_eps], np.float64)
            self._c = _gru

    def n_frames(self, n_samples: int) -> int:
        return max(0, (n_samples - self.cfg.n_fft) // self.cfg.hop + 1)

    def from_frames(self, frames: np.ndarray, state: np.ndarray | None = None) -> np.ndarray:
        """Frames [..., T, n_fft] of one signal (from its start, or after `state`) -> features."""
        return self.run(frames, state)[0]

    def run(self, frames: np.ndarray, state: np.ndarray | None = None):
        """-> (features [..., T, n_mfcc] float32, the front end's state after them: None for "log", PCEN's
        smoother for "pcen"; pass it with the next frames of the same stream)."""
        if frames.shape[-2] == 0:
            return np.zeros((*frames.shape[:-1], self.cfg.n_mfcc), np.float32), state
        if self.kernel == "c":
            return self._run_compiled(frames, state)
        out, state = arith.features_from_frames(np, frames.astype(np.float64, copy=False), self.window,
                                                self.mel_fb_t, self.dct, self.cfg, state)
        return out.astype(np.float32), state

    def _run_compiled(self, frames: np.ndarray, state: np.ndarray | None):
        """`run` with everything after numpy's FFT in one kernel call (per signal for PCEN, whose
        smoother runs along each signal)."""
        spec = np.fft.rfft(frames.astype(np.float64, copy=False) * self.window)
        out = np.empty((*frames.shape[:-1], self.cfg.n_mfcc), np.float32)
        if self.cfg.frontend == "log":
            self._c.mel_log_dct(spec.reshape(-1, spec.shape[-1]).view(np.float64), *self._tail,
                                self.cfg.log_floor, out)
            return out, None
        spec = spec.reshape(-1, *spec.shape[-2:])
        n, M = spec.shape[0], self.cfg.n_mels
        new = np.zeros((n, M)) if state is None else np.array(np.broadcast_to(state, (n, M)), np.float64)
        flat = out.reshape(n, *out.shape[-2:])
        for i in range(n):
            self._c.mel_pcen_dct(spec[i].view(np.float64), *self._tail, self._pcen, new[i], state is None, flat[i])
        return out, new.reshape(*frames.shape[:-2], M)

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        return self.from_frames(frame_view(np.asarray(wave), self.cfg.n_fft, self.cfg.hop))


def frame_view(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """[..., N] -> [..., n_frames, n_fft] strided view (no copy), center=False: a frame exists once
    n_fft samples have arrived."""
    n = max(0, (x.shape[-1] - n_fft) // hop + 1)
    if n == 0:
        return np.zeros((*x.shape[:-1], 0, n_fft), x.dtype)
    if x.ndim == 1 and x.flags.c_contiguous and x.base is None:   # the streaming buffer: a plain
        v = np.ndarray((n, n_fft), x.dtype, buffer=x, strides=(hop * x.itemsize, x.itemsize))  # as_strided's
        v.flags.writeable = False                                                                 # view, 1/3 the cost
        return v
    return np.lib.stride_tricks.as_strided(x, shape=(*x.shape[:-1], n, n_fft),
                                           strides=(*x.strides[:-1], hop * x.strides[-1], x.strides[-1]),
                                           writeable=False)


class StreamingMFCC:
    """Feeds any-length chunks; returns the MFCC frames [T, n_mfcc] completed by each chunk.

    Carries the samples of the last partial window between calls (in float64, the features' own
    precision) and the front end's state (PCEN's smoother), so the concatenation of all outputs equals `NumpyMFCC(cfg)(whole_signal)` for any chunking.
    """

    def __init__(self, mfcc: NumpyMFCC | FeatureConfig | None = None):
        self.mfcc = mfcc if isinstance(mfcc, NumpyMFCC) else NumpyMFCC(mfcc)
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0, np.float64)
        self._state = None              # the front end's state (PCEN's smoother), None at a stream's start
        self.frames_emitted = 0

    def __call__(self, chunk) -> np.ndarray:
        cfg = self.mfcc.cfg
        buf = np.concatenate([self._buf, np.asarray(chunk, np.float32).reshape(-1)])
        n = max(0, (buf.shape[0] - cfg.n_fft) // cfg.hop + 1)
        if n == 0:
            self._buf = buf
            return np.zeros((0, cfg.n_mfcc), np.float32)
        out, self._state = self.mfcc.run(frame_view(buf, cfg.n_fft, cfg.hop), self._state)
        self._buf = buf[n * cfg.hop:]
        self.frames_emitted += n
        return out
