"""Log-mel MFCC features, one implementation for the batch and the streaming path.

Defaults follow the Speech Commands literature (TensorFlow's speech_commands example and
kws_streaming): 16 kHz, 30 ms Hann window, 10 ms hop, 40 Slaney mel bands over 20-7600 Hz,
40 DCT-II (orthonormal) coefficients of the natural log of mel power.

Two choices make chunked and whole-signal features identical:
- the log has a fixed floor (`log(mel + floor)`): no dB relative to the input's maximum, no top_db;
- framing is `center=False`: a frame exists once `n_fft` samples have arrived, and the streaming
  extractor carries the leftover samples between chunks.
Both paths call `frames_to_mfcc`, so the arithmetic per frame is the same code.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


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


def mel_filterbank(cfg: FeatureConfig) -> torch.Tensor:
    """Slaney-scale, Slaney-normalised triangular filters [n_mels, n_fft//2+1], as librosa.filters.mel
    computes them (tests check equality). Written out here so running kws does not import librosa,
    which costs ~125 MB and seconds of start-up on a small board."""
    fft_freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max), cfg.n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:cfg.n_mels + 2] - mel_f[:cfg.n_mels]))[:, None]
    return torch.from_numpy(weights)


def dct_matrix(n_mfcc: int, n_mels: int) -> torch.Tensor:
    """Orthonormal DCT-II as a [n_mels, n_mfcc] matrix (scipy.fft.dct(type=2, norm='ortho'))."""
    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_mfcc, dtype=torch.float64)
    m = torch.cos(torch.pi / n_mels * (n[:, None] + 0.5) * k[None, :])
    m[:, 0] *= 1.0 / np.sqrt(2.0)
    m *= np.sqrt(2.0 / n_mels)
    return m


def frame_signal(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """[..., N] -> [..., n_frames, n_fft] with center=False (no padding)."""
    if x.shape[-1] < n_fft:
        return x.new_zeros(*x.shape[:-1], 0, n_fft)
    return x.unfold(-1, n_fft, hop)


def frames_to_mfcc(frames: torch.Tensor, window: torch.Tensor, mel_fb: torch.Tensor,
                   dct: torch.Tensor, log_floor: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[..., T, n_fft] windowable frames -> [..., T, n_mfcc] float32. The one place features are computed.

    float64 inside by default: float32 FFT/matmul results depend on batch shape by a few ulp, which
    c0 (magnitude ~80) turns into >1e-5; in float64 chunked and whole-signal frames agree exactly.
    Training augmentation passes float32 (speed; exactness across chunkings does not matter there)
    and a per-clip filterbank [B, n_mels, F] (VTLP warp and spectral tilt)."""
    if frames.shape[-2] == 0:  # MKL's FFT rejects empty batches
        return frames.new_zeros(*frames.shape[:-1], dct.shape[1], dtype=torch.float32)
    spec = torch.fft.rfft(frames.to(dtype) * window.to(dtype), dim=-1)
    power = spec.real.square() + spec.imag.square()
    mel = power @ mel_fb.to(dtype).transpose(-1, -2)
    return (torch.log(mel + log_floor) @ dct.to(dtype)).float()


class MFCC(nn.Module):
    """Batch MFCC: waveform [..., N] float in [-1, 1] at cfg.sample_rate -> [..., T, n_mfcc]."""

    def __init__(self, cfg: FeatureConfig | None = None):
        super().__init__()
        self.cfg = cfg or FeatureConfig()
        self.register_buffer("window", torch.hann_window(self.cfg.n_fft, periodic=True, dtype=torch.float64), persistent=False)
        self.register_buffer("mel_fb", mel_filterbank(self.cfg), persistent=False)
        self.register_buffer("dct", dct_matrix(self.cfg.n_mfcc, self.cfg.n_mels), persistent=False)

    def n_frames(self, n_samples: int) -> int:
        return max(0, (n_samples - self.cfg.n_fft) // self.cfg.hop + 1)

    def from_frames(self, frames: torch.Tensor) -> torch.Tensor:
        return frames_to_mfcc(frames, self.window, self.mel_fb, self.dct, self.cfg.log_floor)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.from_frames(frame_signal(wave, self.cfg.n_fft, self.cfg.hop))


class StreamingMFCC:
    """Feeds any-length chunks; returns the MFCC frames completed by each chunk.

    Carries the samples of the last partial window between calls, so the concatenation of all
    outputs equals `MFCC()(whole_signal)` for any chunking.
    """

    def __init__(self, mfcc: MFCC):
        self.mfcc = mfcc
        self.reset()

    def reset(self) -> None:
        self._buf = torch.zeros(0)
        self.frames_emitted = 0

    def __call__(self, chunk: torch.Tensor) -> torch.Tensor:
        cfg = self.mfcc.cfg
        buf = torch.cat([self._buf, chunk.reshape(-1).float()])
        n = max(0, (buf.shape[0] - cfg.n_fft) // cfg.hop + 1)
        if n == 0:
            self._buf = buf
            return torch.zeros(0, cfg.n_mfcc)
        out = self.mfcc.from_frames(frame_signal(buf[: (n - 1) * cfg.hop + cfg.n_fft], cfg.n_fft, cfg.hop))
        self._buf = buf[n * cfg.hop:].clone()
        self.frames_emitted += n
        return out
