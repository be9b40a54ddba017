"""Shared plumbing of the side-by-side benchmark (GitHub issue #7).

Every peer script (peer_kws.py, peer_pocketsphinx.py, peer_openwakeword.py) is run by run_all.py in its own
subprocess, in two modes:
  --mode eval   : accuracy on the clip sets + FRR / FA-per-hour sweep on the long streams -> JSON
  --mode speed  : stream one WAV in 100 ms chunks on one thread -> real-time factor, per-chunk latency and
                  the peak RSS of that process (model + runtime only, no evaluation data held)
Clip sets are .npz files made once by run_all.py (float32 waves [N, 16000] + label strings), so every system
sees exactly the same samples (including the made-up `_silence_` clips).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

# One thread everywhere (set before numpy/torch/onnxruntime spin up pools): fair RTF on a shared 2-core box.
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

# kws.evaluate is imported lazily: importing the `kws` package loads torch, which must not inflate the
# peak RSS of the peers' speed runs.
NON_KEYWORDS = ("_silence_", "_unknown_")
LABELS = ["_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
KEYWORDS = [l for l in LABELS if l not in NON_KEYWORDS]
REFRACTORY_S = 1.0      # every system: no detection (any label) within 1 s of the previous one
MAX_FA = 0.5            # operating point: lowest FRR at <= 0.5 false alarms per hour
CHUNK_S = 0.1


def peer_args(extra=None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("eval", "speed"), required=True)
    p.add_argument("--inputs", required=True, help="inputs.json written by run_all.py")
    p.add_argument("--out", required=True, help="JSON result")
    p.add_argument("--cache", default="data/peers_cache", help="cache folder (embeddings, trained heads)")
    if extra:
        extra(p)
    return p.parse_args()


def load_inputs(path) -> dict:
    return json.loads(Path(path).read_text())


def load_clipset(npz) -> tuple[np.ndarray, list[str]]:
    z = np.load(npz, allow_pickle=False)
    return z["waves"].astype(np.float32), [str(s) for s in z["labels"]]


def clip_metrics(true: list[str], pred: list[str]) -> dict:
    from kws.evaluate import classification_metrics
    idx = {l: i for i, l in enumerate(LABELS)}
    m = classification_metrics(np.array([idx[t] for t in true]), np.array([idx[p] for p in pred]), LABELS)
    m.pop("per_class", None)
    return m


def stream_files(stream_dir) -> tuple[list[Path], dict]:
    from kws.stream_eval import read_ground_truth
    d = Path(stream_dir)
    wavs = sorted(f for f in d.iterdir() if f.suffix.lower() == ".wav")
    occs: dict = {}
    for o in read_ground_truth(d / "ground_truth.csv"):
        if o.label in KEYWORDS:
            occs.setdefault(o.file, []).append(o)
    return wavs, occs


def read_wav(path) -> np.ndarray:
    """float32 mono 16 kHz (the benchmark streams and clips are 16 kHz already)."""
    import soundfile as sf
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if sr != 16000:
        raise ValueError(f"{path}: {sr} Hz, expected 16000")
    return x.mean(1)


def refractory(dets: list[tuple[float, str, float]], gap: float = REFRACTORY_S):
    """dets sorted by time: drop any detection within `gap` s of the previous kept one."""
    out, last = [], -1e9
    for d in sorted(dets, key=lambda d: d[0]):
        if d[0] - last >= gap:
            out.append(d)
            last = d[0]
    return out


def score_detections(per_file: dict[str, list[tuple[float, str]]], occs: dict, hours: float) -> dict:
    """kws eval-stream's own scoring (kws.stream_eval.score_detections) of one detection set."""
    from kws.stream_eval import score_detections
    return score_detections(per_file, occs, hours)


def sweep_report(rows: list[dict], hours: float, n_occ: int, protocol: str) -> dict:
    from kws.stream_eval import operating_point
    return {"hours": round(hours, 4), "occurrences": n_occ, "max_fa_per_hour": MAX_FA,
            "operating_point": operating_point(rows, MAX_FA), "protocol": protocol, "sweep": rows}


def run_streams(wavs, detect_file) -> tuple[dict, float]:
    """detect_file(file name, samples) for each stream WAV -> ({file name: its result}, hours of audio)."""
    out, secs = {}, 0.0
    for w in wavs:
        x = read_wav(w)
        secs += len(x) / 16000
        out[w.name] = detect_file(w.name, x)
    return out, secs / 3600


def sweep_streams(settings, detections_at, occs: dict, hours: float, protocol: str) -> dict:
    """The sweep report of one peer on the streams. settings: [(row name, value)] from strict to permissive;
    detections_at(value) -> {file: [(time, label, score)]}; the 1 s refractory is applied here."""
    rows = [{"threshold": name,
             **score_detections({f: [(t, l) for t, l, _ in refractory(d)] for f, d in detections_at(v).items()},
                                occs, hours)}
            for name, v in settings]
    return sweep_report(rows, hours, sum(len(v) for v in occs.values()), protocol)


def peak_rss_mb() -> float:
    """Peak resident set of this process (VmHWM, else ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def speed_test(make_step, wav, seconds: float) -> dict:
    """make_step() -> step(chunk_float32_16k) (model loaded, state fresh). Feeds `seconds` of `wav`
    in 100 ms chunks on this thread; wall-clock per chunk."""
    x = read_wav(wav)[: int(seconds * 16000)]
    step = make_step()
    n = int(CHUNK_S * 16000)
    for i in range(0, min(len(x), 10 * n), n):      # warm-up (1 s), not timed
        step(x[i:i + n])
    step = make_step()
    times = []
    t0 = time.perf_counter()
    for i in range(0, len(x) - n + 1, n):
        t = time.perf_counter()
        step(x[i:i + n])
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    audio = len(times) * CHUNK_S
    ms = np.array(times) * 1000
    return {"audio_s": round(audio, 1), "rtf": round(total / audio, 4),
            "chunk_ms_median": round(float(np.median(ms)), 3), "chunk_ms_p99": round(float(np.percentile(ms, 99)), 3),
            "chunk_ms_max": round(float(ms.max()), 3)}


def file_size_mb(paths) -> float:
    return round(sum(Path(p).stat().st_size for p in paths) / 1e6, 3)


def write_json(obj, path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=1) + "\n")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
