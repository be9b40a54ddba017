"""Audio in: reading WAV files (whole or in blocks), downmixing, scaling, streaming resampling.

Every user-facing problem (missing, empty, corrupt, non-finite audio) becomes an `AudioError`
with a one-line message; the CLI prints it and exits non-zero.
"""
from __future__ import annotations

from .errors import KwsError, first_line

from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

TARGET_RATE = 16000
# Every container soundfile (libsndfile) decodes: data roots, list files, `kws detect` folders and the
# stream benchmark all accept these, so a corpus kept as Ogg Opus or FLAC needs no conversion.
AUDIO_EXT = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")


def is_audio(path: str | Path) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXT


class AudioError(KwsError):
    """Audio that cannot be used; the message is one line meant for the user."""


def to_float_mono(x, channels_last: bool = True) -> np.ndarray:
    """int16/int32/uint8/float array, [N] or [N, C] -> float32 mono [N] in about [-1, 1]."""
    a = np.asarray(x)
    if a.dtype == np.int16:
        a = a.astype(np.float32) / 32768.0
    elif a.dtype == np.int32:
        a = a.astype(np.float32) / 2147483648.0
    elif a.dtype == np.uint8:
        a = (a.astype(np.float32) - 128.0) / 128.0
    else:
        a = a.astype(np.float32, copy=False)
    if a.ndim == 2:
        a = a.mean(axis=1 if channels_last else 0)
    elif a.ndim != 1:
        raise AudioError(f"audio must be 1-D or 2-D (samples x channels), got shape {a.shape}")
    return a


def sanitize(x: np.ndarray) -> np.ndarray:
    """Replace NaN/inf samples by 0 so one bad sample cannot poison the carried state."""
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x


def _open(path: str | Path) -> sf.SoundFile:
    p = Path(path)
    if not p.exists():
        raise AudioError(f"no such file: {p}")
    if p.is_dir():
        raise AudioError(f"is a directory, not an audio file: {p}")
    if p.stat().st_size == 0:
        raise AudioError(f"empty file: {p}")
    try:
        f = sf.SoundFile(str(p))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError for bad headers
        raise AudioError(f"cannot read audio {p}: {first_line(e)}") from None
    if f.frames == 0:
        f.close()
        raise AudioError(f"no audio samples in {p}")
    return f


def info(path: str | Path) -> tuple[int, int, int]:
    """(sample_rate, channels, frames) without reading samples."""
    with _open(path) as f:
        return f.samplerate, f.channels, f.frames


def wav_promised_frames(path: str | Path) -> int | None:
    """Sample frames a RIFF/WAVE header's data chunk promises (None: not a plain WAV, or size unknown).
    libsndfile quietly clamps its frame count to what the file holds, so a truncated recording (an
    interrupted write) is only visible here."""
    import struct
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            align = None
            while True:
                ch = fh.read(8)
                if len(ch) < 8:
                    return None
                cid, size = ch[:4], struct.unpack("<I", ch[4:])[0]
                if cid == b"fmt ":
                    fmt = fh.read(size + (size & 1))
                    align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
                elif cid == b"data":
                    if not align or size in (0, 0xFFFFFFFF):     # streamed WAVs leave the size open
                        return None
                    return size // align
                else:
                    fh.seek(size + (size & 1), 1)
    except OSError:
        return None


def read_blocks(path: str | Path, block_s: float = 1.0) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (float32 mono block, sample_rate) pieces of a file; memory stays flat on long files."""
    with _open(path) as f:
        block = max(1, int(f.samplerate * block_s))
        try:
            for data in f.blocks(blocksize=block, dtype="float32", always_2d=True):
                yield sanitize(data.mean(axis=1)), f.samplerate
        except sf.LibsndfileError as e:
            raise AudioError(f"cannot read audio {path}: {e}") from None


def load(path: str | Path, rate: int = TARGET_RATE) -> np.ndarray:
    """Whole file -> float32 mono at `rate` (offline resample)."""
    parts, sr = [], rate
    for block, sr in read_blocks(path, block_s=30.0):
        parts.append(block)
    x = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if sr != rate:
        x = soxr.resample(x, sr, rate, quality="HQ").astype(np.float32)
    return x


class StreamResampler:
    """Stateful resampler: chunk boundaries leave no clicks; output matches offline resampling."""

    def __init__(self, in_rate: int, out_rate: int = TARGET_RATE):
        if in_rate <= 0:
            raise AudioError(f"invalid sample rate {in_rate}")
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self.reset()

    def reset(self) -> None:
        self._rs = None if self.in_rate == self.out_rate else soxr.ResampleStream(
            self.in_rate, self.out_rate, 1, dtype="float32", quality="HQ")

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self._rs is None:
            return x
        return self._rs.resample_chunk(np.ascontiguousarray(x, dtype=np.float32), last=last)


def load_clip(path: str | Path, n_samples: int = TARGET_RATE, rate: int = TARGET_RATE) -> np.ndarray:
    """A dataset clip as float32 mono at `rate`, zero-padded or cut to `n_samples` (TF pads at the end)."""
    x = load(path, rate)
    if len(x) < n_samples:
        x = np.pad(x, (0, n_samples - len(x)))
    return x[:n_samples]
