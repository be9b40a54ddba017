"""The torch side of the features: batch MFCC for training and tests, on the same arithmetic as the
numpy run time (`arith.features_from_frames`) and the same filterbank and DCT matrices (features.py)."""
from __future__ import annotations

import torch
from torch import nn

from .. import arith
from ..features import FeatureConfig, dct_weights, mel_weights


def mel_filterbank(cfg: FeatureConfig) -> torch.Tensor:
    """features.mel_weights as a float64 tensor [n_mels, n_fft//2+1]."""
    return torch.from_numpy(mel_weights(cfg))


def dct_matrix(n_mfcc: int, n_mels: int) -> torch.Tensor:
    """features.dct_weights as a float64 tensor [n_mels, n_mfcc]."""
    return torch.from_numpy(dct_weights(n_mfcc, n_mels))


def frame_signal(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """[..., N] -> [..., n_frames, n_fft] with center=False (no padding)."""
    if x.shape[-1] < n_fft:
        return x.new_zeros(*x.shape[:-1], 0, n_fft)
    return x.unfold(-1, n_fft, hop)


def frames_to_features(frames: torch.Tensor, window: torch.Tensor, mel_fb: torch.Tensor, dct: torch.Tensor,
                       cfg: FeatureConfig, dtype: torch.dtype = torch.float64, state: torch.Tensor | None = None):
    """[..., T, n_fft] frames -> ([..., T, n_mfcc] float32, front-end state) via arith.features_from_frames
    (`cfg.frontend`: log mel or PCEN; the state is PCEN's smoother, None for log).

    float64 inside by default (as the run time); training augmentation passes float32 (speed;
    exactness across chunkings does not matter there) and a per-clip filterbank [B, n_mels, F]
    (VTLP warp and spectral tilt)."""
    if frames.shape[-2] == 0:  # MKL's FFT rejects empty batches
        return frames.new_zeros(*frames.shape[:-1], dct.shape[1], dtype=torch.float32), state
    out, state = arith.features_from_frames(torch, frames.to(dtype), window.to(dtype),
                                            mel_fb.to(dtype).transpose(-1, -2), dct.to(dtype), cfg,
                                            None if state is None else state.to(dtype))
    return out.float(), state


def frames_to_mfcc(frames: torch.Tensor, window: torch.Tensor, mel_fb: torch.Tensor,
                   dct: torch.Tensor, cfg: FeatureConfig, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """`frames_to_features` of frames from a signal's start, without the state."""
    return frames_to_features(frames, window, mel_fb, dct, cfg, dtype)[0]


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
        return frames_to_mfcc(frames, self.window, self.mel_fb, self.dct, self.cfg)

    def run(self, frames: torch.Tensor, state: torch.Tensor | None = None):
        """-> (features, front-end state) for frames that follow `state` in one stream."""
        return frames_to_features(frames, self.window, self.mel_fb, self.dct, self.cfg, state=state)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.from_frames(frame_signal(wave, self.cfg.n_fft, self.cfg.hop))


class TorchStreamingMFCC:
    """The torch streaming front end kws ran on before the numpy engine: the reference path of
    benchmarks/stream_bench.py and of the engine equivalence tests."""

    def __init__(self, mfcc: MFCC):
        self.mfcc = mfcc
        self.reset()

    def reset(self) -> None:
        self._buf = torch.zeros(0)
        self._state = None

    def __call__(self, chunk) -> torch.Tensor:
        cfg = self.mfcc.cfg
        buf = torch.cat([self._buf, torch.as_tensor(chunk).reshape(-1).float()])
        n = max(0, (buf.shape[0] - cfg.n_fft) // cfg.hop + 1)
        if n == 0:
            self._buf = buf
            return torch.zeros(0, cfg.n_mfcc)
        out, self._state = self.mfcc.run(frame_signal(buf[: (n - 1) * cfg.hop + cfg.n_fft], cfg.n_fft, cfg.hop),
                                         self._state)
        self._buf = buf[n * cfg.hop:].clone()
        return out
