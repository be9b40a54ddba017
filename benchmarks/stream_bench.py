"""Streaming cost, torch path vs the numpy engine, side by side in one run, on one thread.

    python benchmarks/stream_bench.py [--model models/kws12_gru.npz] [--minutes 10] [--repeats 3]

For 20 ms, 100 ms and 1 s chunks: the RTF (processing time / audio time) of KeywordSpotter.process and the
median and p99 time per chunk, for backend="torch" (the torch MFCC and GRUClassifier.step, as kws ran
before the engine), the engine all in numpy ("numpy": arith.gru_layer_folded and arith.mfcc_from_frames,
what runs where kws._gru is not built) and the engine as kws runs it ("engine": the compiled step and
log-mel tail of kws/_gru.c). All run in this process, interleaved, `--repeats` times; the fastest repeat of each counts (on a shared machine the slowest are other processes' time).
Times are this thread's CPU time by default (`--clock cpu`: what "% of a core" means, and steady on a
busy machine); `--clock wall` measures elapsed time instead.
Then, each in a fresh process: peak RSS while streaming 60 s in 100 ms chunks and the time from
`import kws` to the first posterior (model load included); the engine process has torch blocked.
--profile prints where the engine's time goes at 100 ms chunks (cProfile).
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

WORKER = r"""
import sys, time
t0 = time.perf_counter()
if sys.argv[1] == "engine":
    sys.modules["torch"] = None            # proves the engine path never imports torch
import numpy as np
from kws import KeywordSpotter
s = KeywordSpotter(sys.argv[2] if sys.argv[2] != "-" else None, backend=sys.argv[1])
s.process(np.zeros(1600, np.float32))
first = time.perf_counter() - t0
rng = np.random.default_rng(0)
x = (rng.normal(0, 0.05, 60 * 16000)).astype(np.float32)
for i in range(0, len(x), 1600):
    s.process(x[i:i + 1600])
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]   # per process image
print(first, int(hwm) / 1024)
"""


CLOCK = {"cpu": time.thread_time, "wall": time.perf_counter}


def bench_stream(spotter, audio, chunk: int, clock=time.thread_time, gap_s: float = 0.0) -> tuple[float, "np.ndarray"]:
    """-> (RTF, per-chunk times). gap_s > 0 sleeps between chunks, as a live stream does: the thread's
    caches and the core's state go cold, and each chunk costs what it costs in `kws listen`."""
    import numpy as np
    spotter.reset()
    times = []
    for i in range(0, len(audio) - chunk + 1, chunk):
        t0 = clock()
        spotter.process(audio[i:i + chunk])
        times.append(clock() - t0)
        if gap_s:
            time.sleep(gap_s)
    total = float(np.sum(times))
    return total / (len(audio) / 16000), np.array(times)


def fresh_process(backend: str, model: str | None) -> tuple[float, float, float]:
    """-> (import-to-first-posterior s, peak RSS MB, wall s of the whole process incl. interpreter start)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", WORKER, backend, model or "-"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{backend} worker failed: {r.stderr.strip()[-1500:]}")
    first, rss = map(float, r.stdout.split())
    return first, rss, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a .npz model file (default: the shipped one); the torch path builds its model from it")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clock", choices=list(CLOCK), default="cpu")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from conftest import speech_like
    from kws.training.modelfile import DEFAULT_MODEL, load_bundle
    from kws.stream import KeywordSpotter
    bundle = load_bundle(args.model or DEFAULT_MODEL)
    from kws.enginefile import from_bundle
    em = from_bundle(bundle)
    spotters = {"torch": KeywordSpotter(bundle, backend="torch"),
                "numpy": KeywordSpotter(em.with_kernel("numpy")),
                "engine": KeywordSpotter(em)}
    if em.engine.kernel != "c":
        print("note: kws._gru is not built, so 'engine' runs the numpy loop too (see setup.py)")
        del spotters["numpy"]
    minute = speech_like(60.0, seed=0)
    audio = np.tile(minute, int(np.ceil(args.minutes)))[: int(args.minutes * 60 * 16000)]
    params = sum(p.numel() for p in bundle.model.parameters())
    print(f"model: {args.model or DEFAULT_MODEL} ({params} parameters, {bundle.model.cfg}); audio: {args.minutes:g} min; "
          f"one thread; {args.clock} time; fastest of {args.repeats} interleaved repeats")
    print(f"{'chunk':<8}{'path':<8}{'RTF':>10}{'median ms':>11}{'p99 ms':>9}{'speed-up':>10}")
    for ms in (20, 100, 1000):
        best = {}
        for _ in range(args.repeats):
            for name, sp in spotters.items():
                rtf, t = bench_stream(sp, audio, 16 * ms, CLOCK[args.clock])
                if name not in best or rtf < best[name][0]:
                    best[name] = (rtf, t)
        for name in spotters:
            rtf, t = best[name]
            up = f"{best['torch'][0] / rtf:.2f}x" if name != "torch" else ""
            print(f"{str(ms) + ' ms':<8}{name:<8}{rtf:>10.5f}{np.median(t) * 1e3:>11.3f}{np.percentile(t, 99) * 1e3:>9.3f}{up:>10}")
    print("paced: 60 s in 100 ms chunks with a 10 ms sleep after each (a live stream's cold start per chunk):")
    paced = {name: bench_stream(sp, audio[: 60 * 16000], 1600, CLOCK[args.clock], gap_s=0.01) for name, sp in spotters.items()}
    for name, (rtf, t) in paced.items():
        up = f"{paced['torch'][0] / rtf:.2f}x" if name != "torch" else ""
        print(f"{'100 ms':<8}{name:<8}{rtf:>10.5f}{np.median(t) * 1e3:>11.3f}{np.percentile(t, 99) * 1e3:>9.3f}{up:>10}")
    print("fresh process, 60 s in 100 ms chunks:")
    print(f"{'path':<8}{'import->first posterior s':>27}{'process wall s':>16}{'peak RSS MB':>13}")
    for name in ("torch", "engine"):
        model = args.model
        if name == "engine" and model and Path(model).with_suffix(".npz").is_file():
            model = str(Path(model).with_suffix(".npz"))     # the file the torch-free engine reads
        first, rss, wall = fresh_process(name, model)
        print(f"{name:<8}{first:>27.3f}{wall:>16.2f}{rss:>13.1f}")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        bench_stream(spotters["engine"], audio[: 16000 * 60], 1600)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
