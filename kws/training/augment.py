"""Training-time augmentation, seeded and off at evaluation.

The gap that matters is synthetic/few voices vs real users (../shared/design-notes.md §8), so
besides TensorFlow's defaults (±100 ms shift, background noise at U(0, 0.1) on 80% of clips) this
widens voice and channel variety: speed perturbation, vocal-tract-length perturbation (a warped mel
filterbank per clip), random spectral tilt/colour (microphone response), reverberation from
synthetic room impulse responses, level and clipping changes, babble from real non-keyword speech,
and SpecAugment masks on the features.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.signal
import torch

from ..features import FeatureConfig
from .features_torch import mel_filterbank


@dataclass
class AugmentConfig:
    shift_ms: float = 100.0
    speed: tuple = (0.85, 1.15)
    noise_prob: float = 0.8
    noise_volume: float = 0.1          # TF: background at U(0, 0.1)
    silence_volume: float = 1.0        # TF: silence clips at U(0, 1)
    snr_db: tuple = (0.0, 25.0)        # used instead of volume on half of the noisy clips
    babble_prob: float = 0.15
    reverb_prob: float = 0.3
    gain_db: tuple = (-30.0, 0.0)      # peak level of the clip before noise
    clip_prob: float = 0.08            # saturation / hard clipping (loud close-mic clips)
    vtlp: tuple = (0.88, 1.12)         # mel frequency warp factor
    tilt_db: float = 8.0               # max spectral tilt across the band, per clip
    time_masks: int = 2
    time_mask_frames: int = 10
    freq_masks: int = 2
    freq_mask_bins: int = 5

    def to_dict(self) -> dict:
        return asdict(self)


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (pitch and tempo together), keep the length (centre crop/pad)."""
    n = len(x)
    m = max(2, int(round(n / factor)))
    y = np.interp(np.linspace(0, n - 1, m), np.arange(n), x).astype(np.float32)
    if m >= n:
        s = (m - n) // 2
        return y[s:s + n]
    out = np.zeros(n, np.float32)
    s = (n - m) // 2
    out[s:s + m] = y
    return out


def shift(x: np.ndarray, k: int) -> np.ndarray:
    """Shift by k samples with zero fill (TF's time_shift)."""
    if k == 0:
        return x
    out = np.zeros_like(x)
    if k > 0:
        out[k:] = x[:-k]
    else:
        out[:k] = x[-k:]
    return out


def noise_at_snr(noise: np.ndarray, signal_power: float, snr_db: float) -> np.ndarray:
    """`noise` scaled so that signal_power / its power is snr_db."""
    return noise * np.sqrt(signal_power / (np.mean(noise ** 2) + 1e-10) / 10 ** (snr_db / 10))


def synthetic_rir(rng: np.random.Generator, sr: int = 16000) -> np.ndarray:
    """Exponentially decaying noise tail with a direct path: RT60 0.15-0.9 s, random direct/reverb ratio."""
    rt60 = rng.uniform(0.15, 0.9)
    n = int(sr * min(rt60, 0.6))
    t = np.arange(n) / sr
    tail = rng.normal(0, 1, n) * np.exp(-6.9 * t / rt60)
    tail[: int(sr * 0.003)] = 0
    h = tail * 10 ** (rng.uniform(-18, -3) / 20) / (np.sqrt((tail ** 2).sum()) + 1e-9)
    h[0] = 1.0
    return h.astype(np.float32)


class Augmenter:
    """Waveform augmentation per 1 s clip (numpy), plus feature-level VTLP/tilt/SpecAugment (torch)."""

    def __init__(self, cfg: AugmentConfig, fcfg: FeatureConfig, noises: list[np.ndarray],
                 babble: np.ndarray | None = None, seed: int = 0):
        self.cfg, self.fcfg = cfg, fcfg
        self.noises = [n for n in noises if len(n) > fcfg.sample_rate]
        self.babble = babble
        self.rng = np.random.default_rng(seed)
        lo, hi = cfg.vtlp
        self.warps = np.linspace(lo, hi, 13)
        self.fbanks = torch.stack([self._warped_fb(a) for a in self.warps]).float()

    def _warped_fb(self, alpha: float) -> torch.Tensor:
        """Mel filters on a frequency axis scaled by alpha (VTLP): the same voice, a different vocal tract."""
        fb = mel_filterbank(self.fcfg)                       # [M, F] float64
        nf = fb.shape[1]
        src = np.clip(np.arange(nf) / alpha, 0, nf - 1)
        fbn = fb.numpy()
        warped = np.stack([np.interp(src, np.arange(nf), row) for row in fbn])
        return torch.from_numpy(warped)

    def noise_window(self, n: int) -> np.ndarray:
        src = self.noises[self.rng.integers(len(self.noises))]
        s = self.rng.integers(0, len(src) - n)
        return src[s:s + n]

    def wave(self, x: np.ndarray, is_silence: bool, span: tuple[int, int],
             noise: bool = True) -> tuple[np.ndarray, tuple[int, int]]:
        """One clip -> augmented clip and its moved speech span (samples). noise=False leaves the
        background out (a packed stream sequence lays one noise bed under all its words)."""
        c, rng, n = self.cfg, self.rng, len(x)
        start, end = span
        x = x.astype(np.float32, copy=True)
        if not is_silence:
            f = rng.uniform(*c.speed)
            x = speed_perturb(x, f)
            m = int(round(n / f))
            off = (m - n) // 2
            start, end = int(start / f) - off, int(end / f) - off
            k = int(rng.integers(-c.shift_ms, c.shift_ms + 1) * self.fcfg.sample_rate / 1000)
            x = shift(x, k)
            start, end = max(0, start + k), min(n, end + k)
            if rng.random() < c.reverb_prob:
                x = scipy.signal.fftconvolve(x, synthetic_rir(rng))[:n].astype(np.float32)
            peak = np.abs(x).max()
            if peak > 1e-5:
                x *= 10 ** (rng.uniform(*c.gain_db) / 20) / peak
            if rng.random() < c.clip_prob:
                drive = rng.uniform(1.5, 6.0)
                x = np.tanh(x * drive) / np.tanh(drive) * min(1.0, np.abs(x).max() * drive)
        if noise and self.noises and (is_silence or rng.random() < c.noise_prob):
            noise = self.noise_window(n)
            if is_silence:
                x = x + noise * rng.uniform(0, c.silence_volume)
            elif rng.random() < 0.5:
                x = x + noise * rng.uniform(0, c.noise_volume)
            else:
                x = x + noise_at_snr(noise, np.mean(x ** 2) + 1e-10, rng.uniform(*c.snr_db))
        if self.babble is not None and not is_silence and rng.random() < c.babble_prob:
            b = self.babble[rng.integers(len(self.babble))].astype(np.float32) / 32768.0
            x = x + shift(b, int(rng.integers(-n // 2, n // 2))) * rng.uniform(0.05, 0.3)
        return np.clip(x, -1.0, 1.0), (start, end)

    def noise_bed(self, speech: np.ndarray) -> np.ndarray:
        """One continuous background under a whole packed sequence, at an SNR from snr_db relative to
        the speech's active level (as in a real recording, the noise does not restart at each word)."""
        c, rng, n = self.cfg, self.rng, len(speech)
        if not self.noises or rng.random() >= c.noise_prob:
            return speech
        active = speech[np.abs(speech) > 1e-4]
        p_sig = float(np.mean(active ** 2)) if active.size else 1e-10
        return np.clip(speech + noise_at_snr(self.noise_window(n), p_sig, rng.uniform(*c.snr_db)), -1.0, 1.0)

    def features(self, mfcc, wave: torch.Tensor, rngs=None) -> torch.Tensor:
        """[B, N] -> [B, T, F] with a random VTLP warp and spectral tilt per sequence: both are folded
        into a per-sequence filterbank (a gain per FFT bin commutes into the mel matrix), so the
        features come from the same `frames_to_mfcc` as inference, in float32. `rngs`: one generator
        per row (the trainer's: a row's draws then do not depend on the other rows); default self.rng."""
        from .features_torch import frame_signal, frames_to_mfcc
        B = wave.shape[0]
        nf = self.fbanks.shape[-1]
        if rngs is None:
            tilt, warp = self.rng.uniform(-1, 1, (B, 1, 1)), self.rng.integers(0, len(self.warps), B)
        else:
            tilt = np.array([r.uniform(-1, 1) for r in rngs]).reshape(B, 1, 1)
            warp = np.array([r.integers(0, len(self.warps)) for r in rngs], np.int64)
        tilt = torch.from_numpy(tilt.astype(np.float32) * self.cfg.tilt_db)
        gain = 10 ** (tilt * torch.linspace(-0.5, 0.5, nf) / 10)                          # [B, 1, F]
        fb = self.fbanks[torch.from_numpy(warp)] * gain                                   # [B, M, F]
        frames = frame_signal(wave, self.fcfg.n_fft, self.fcfg.hop)
        return frames_to_mfcc(frames, mfcc.window, fb, mfcc.dct, self.fcfg, dtype=torch.float32)

    def spec_augment(self, feats: torch.Tensor, fill: torch.Tensor, rngs=None) -> torch.Tensor:
        """Time and frequency masks (SpecAugment), filled with the feature mean (`rngs`: as `features`)."""
        c = self.cfg
        B, T, F = feats.shape
        feats = feats.clone()
        for b in range(B):
            rng = self.rng if rngs is None else rngs[b]
            for _ in range(c.time_masks * max(1, T // 100)):
                w = int(rng.integers(0, c.time_mask_frames + 1))
                t0 = int(rng.integers(0, max(1, T - w)))
                feats[b, t0:t0 + w] = fill
            for _ in range(c.freq_masks):
                w = int(rng.integers(0, c.freq_mask_bins + 1))
                f0 = int(rng.integers(0, max(1, F - w)))
                feats[b, :, f0:f0 + w] = fill[f0:f0 + w]
        return feats
