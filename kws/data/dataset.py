"""Clips in memory: decode once, cache to disk, find each clip's speech span.

Training re-reads every clip each epoch; decoding WAVs each time would dominate the cost on two
cores, so the decoded int16 audio of an index is cached in one .npy file keyed by the file list.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..audio import AudioError, load_clip
from ..errors import KwsError
from .index import SILENCE, Item

CLIP = 16000


def speech_span(x: np.ndarray, sr: int = 16000, rel_db: float = 30.0, floor_db: float = -55.0,
                win_s: float = 0.010, hop_s: float = 0.010, margin_s: float = 0.0) -> tuple[int, int] | None:
    """(start, end) samples of the speech in a clip: from the first to the last `win_s` frame (every
    `hop_s`) whose energy is within rel_db of the loudest frame's and above floor_db dBFS, widened by
    margin_s each side. None when no frame is (silence). One definition for the training targets (the
    defaults) and the stream benchmark's word boundaries (data_scripts/make_stream_benchmark.py)."""
    win, hop = int(round(win_s * sr)), int(round(hop_s * sr))
    if len(x) < win:
        return 0, len(x)
    n = 1 + (len(x) - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    db = 20 * np.log10(np.sqrt(np.mean(x[idx].astype(np.float64) ** 2, axis=1) + 1e-12))
    active = np.flatnonzero((db > db.max() - rel_db) & (db > floor_db))
    if len(active) == 0:
        return None
    m = int(margin_s * sr)
    return max(0, int(active[0]) * hop - m), min(len(x), int(active[-1]) * hop + win + m)


def _key(items: list[Item]) -> str:
    h = hashlib.sha1()
    for it in items:
        if it.path:
            st = os.stat(it.path)
            h.update(f"{it.path}|{st.st_size}|{int(st.st_mtime)}\n".encode())
        else:
            h.update(b"-\n")
    return h.hexdigest()[:16]


class ClipSet:
    """int16 audio [N, 16000], speech spans [N, 2] and label indices for one split."""

    def __init__(self, items: list[Item], labels: list[str], cache_dir: str | Path | None = None,
                 desc: str = "clips", progress: bool = True):
        lab = {l: i for i, l in enumerate(labels)}
        cache = Path(cache_dir) / f"{_key(items)}.npz" if cache_dir else None
        if cache is not None and cache.exists():
            z = np.load(cache)
            audio, spans, ok = z["audio"], z["spans"], z["ok"]
        else:
            audio = np.zeros((len(items), CLIP), np.int16)
            spans = np.zeros((len(items), 2), np.int32)
            ok = np.ones(len(items), bool)
            bad = 0
            for i, it in enumerate(tqdm(items, desc=f"decoding {desc}", unit="clip", disable=not progress,
                                        file=sys.stderr, mininterval=1.0)):
                if it.path is None:
                    spans[i] = (0, CLIP)
                    continue
                try:
                    x = load_clip(it.path, CLIP)
                except (AudioError, OSError, RuntimeError) as e:
                    ok[i] = False
                    bad += 1
                    if bad <= 3:
                        warnings.warn(f"skipping unreadable clip: {e}")
                    continue
                audio[i] = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
                spans[i] = speech_span(x) or (0, len(x))
            if bad:
                print(f"warning: skipped {bad} unreadable clip(s) of {len(items)} in {desc}", file=sys.stderr)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                # a temp name of this process's own: two trainers may build the same cache at once
                fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.stem + ".", suffix=".tmp.npz")
                try:
                    with os.fdopen(fd, "wb") as f:
                        np.savez(f, audio=audio, spans=spans, ok=ok)
                    os.replace(tmp, cache)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
        self.kept = ok
        self.items = [it for it, k in zip(items, ok) if k]
        self.audio, self.spans = audio[ok], spans[ok]
        self.y = np.array([lab[it.label] for it in self.items], np.int64)
        self.is_silence = np.array([it.label == SILENCE for it in self.items], bool)
        if len(self.items) == 0:
            raise KwsError(f"no usable clips in {desc}")

    def __len__(self) -> int:
        return len(self.items)
