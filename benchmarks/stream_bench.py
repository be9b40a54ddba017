"""Streaming cost: real-time factor and per-chunk latency of KeywordSpotter.process on one thread.

    python benchmarks/stream_bench.py [--model models/kws12_gru.pt] [--minutes 10]

Prints, for 20 ms, 100 ms and 1 s chunks, the RTF (processing time / audio time) and the median and
p99 time per chunk, next to the offline batch path (MFCC + forward over the same audio in 10 s pieces).
With --profile it also prints where the time of the 100 ms case goes (cProfile, top functions).
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from kws.features import MFCC  # noqa: E402
from kws.modelfile import DEFAULT_MODEL, load_bundle  # noqa: E402
from kws.stream import KeywordSpotter  # noqa: E402


def bench_stream(bundle, audio: np.ndarray, chunk: int) -> tuple[float, np.ndarray]:
    s = KeywordSpotter(bundle)
    times = []
    t_all = time.perf_counter()
    for i in range(0, len(audio) - chunk + 1, chunk):
        t0 = time.perf_counter()
        s.process(audio[i:i + chunk])
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_all
    return total / (len(audio) / 16000), np.array(times)


def bench_offline(bundle, audio: np.ndarray) -> float:
    mfcc = MFCC(bundle.features)
    piece = 16000 * 10
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(audio), piece):
            f = mfcc(torch.from_numpy(audio[i:i + piece]))
            bundle.model.forward_all(f[None])
    return (time.perf_counter() - t0) / (len(audio) / 16000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if Path(args.model).exists():
        bundle = load_bundle(args.model)
    else:
        from conftest import random_bundle
        print(f"(no model at {args.model}: using a random default-size model)")
        bundle = random_bundle()
        from kws.model import GRUClassifier, ModelConfig
        bundle.model = GRUClassifier(ModelConfig()).eval()
    from conftest import speech_like
    minute = speech_like(60.0, seed=0)
    audio = np.tile(minute, int(np.ceil(args.minutes)))[: int(args.minutes * 60 * 16000)]
    params = sum(p.numel() for p in bundle.model.parameters())
    print(f"model: {params} parameters; audio: {args.minutes:g} min; torch threads: {torch.get_num_threads()}")
    print(f"{'path':<22}{'RTF':>10}{'median ms':>12}{'p99 ms':>10}")
    for ms in (20, 100, 1000):
        rtf, t = bench_stream(bundle, audio, 16 * ms)
        print(f"{'stream ' + str(ms) + ' ms chunks':<22}{rtf:>10.5f}{np.median(t) * 1e3:>12.3f}{np.percentile(t, 99) * 1e3:>10.3f}")
    print(f"{'offline (10 s pieces)':<22}{bench_offline(bundle, audio):>10.5f}")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        bench_stream(bundle, audio[: 16000 * 60], 1600)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
