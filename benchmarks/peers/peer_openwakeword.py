"""openWakeWord 0.5.1: its frozen front end (melspectrogram.onnx + Google speech_embedding, embedding_model.onnx,
both shipped in the wheel, pretrained on large amounts of real speech) + a small head trained here.

Head: StandardScaler + multinomial LogisticRegression on the 9 embeddings (9 x 96, flattened) of a 1.5 s window,
12 classes. Training data (never the test voices/speakers):
  - data/synth training split (not in validation_list.txt / testing_list.txt): 150 clips per keyword,
    600 `_unknown_` clips of the other words;
  - 150 `_silence_` windows from /work/shared/real_speech/_background_noise_ (volume U(0, 1));
  - /work/shared/real_words: all keyword tokens + 300 `_unknown_` tokens (real voices on both sides, so the
    head cannot learn "real voice means keyword");
  augmentation: random placement of the 1 s clip in the 1.5 s window, background noise at 5-30 dB SNR on 80%.
Embeddings and the head are cached under --cache.
clips   : each 1 s clip centred in a 1.5 s window -> argmax of the head.
streams : embeddings every 80 ms over the whole file; head on the last 9; detection when the best keyword
          probability >= threshold (sweep 0.30..0.999999), 1 s refractory, time = end of the 100 ms chunk that
          completes the window; operating point = lowest FRR at <= 0.5 FA/h (same protocol as kws eval-stream).
A -60 dBFS noise floor is added to every input (as for pocketsphinx) so digital zeros never reach the front end.
"""
from __future__ import annotations

import pickle
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

WIN = 24000          # 1.5 s window -> 9 embeddings
N_EMB = 9
THRESHOLDS = ([round(float(t), 3) for t in np.arange(0.30, 0.9901, 0.01)]
              + [0.992, 0.994, 0.996, 0.998, 0.999, 0.9995, 0.9998, 0.9999, 0.99995, 0.99999, 0.999995, 0.999999])
ROOT = Path(__file__).resolve().parents[2]          # the repository
SYNTH = ROOT / "data/synth"
REAL_WORDS = ROOT.parent / "shared/real_words"      # ../shared beside the checkout
REAL_NOISE = ROOT.parent / "shared/real_speech/_background_noise_"


def features():
    from openwakeword.utils import AudioFeatures
    return AudioFeatures(inference_framework="onnx", ncpu=1)


def front_end_files():
    import openwakeword
    d = Path(openwakeword.__file__).parent / "resources" / "models"
    return [d / "melspectrogram.onnx", d / "embedding_model.onnx"]


def to_i16(x: np.ndarray, rng) -> np.ndarray:
    y = x + rng.normal(0, 1e-3, len(x))
    return (np.clip(y, -1, 1) * 32767).astype(np.int16)


def embed(F, windows: list[np.ndarray], rng, batch: int = 64) -> np.ndarray:
    """float windows of WIN samples -> [N, 9*96]."""
    out = []
    for i in range(0, len(windows), batch):
        b = np.stack([to_i16(w, rng) for w in windows[i:i + batch]])
        out.append(F.embed_clips(b, batch_size=len(b), ncpu=1).reshape(len(b), -1))
    return np.concatenate(out) if out else np.zeros((0, N_EMB * 96), np.float32)


def centre(x: np.ndarray) -> np.ndarray:
    w = np.zeros(WIN, np.float32)
    o = (WIN - len(x)) // 2
    w[o:o + len(x)] = x[:WIN]
    return w


TRAIN_DEFAULT = {"synth": str(SYNTH), "real_words": str(REAL_WORDS), "noise": str(REAL_NOISE),
                 "per_keyword": 150, "unknown": 600, "silence": 150, "real_unknown": 300}


def train_config(inp: dict) -> dict:
    return {**TRAIN_DEFAULT, **(inp.get("openwakeword_train") or {})}


def training_window(x: np.ndarray, noise_window, rng: np.random.Generator) -> np.ndarray:
    """A clip at a random place of a 1.5 s window, over background noise (noise_window(n)) at 5-30 dB SNR
    on 80% of the windows: the head's augmentation."""
    w = np.zeros(WIN, np.float32)
    o = int(rng.integers(0, WIN - len(x) + 1))
    w[o:o + len(x)] = x[:WIN]
    if noise_window is not None and rng.random() < 0.8:
        nz = noise_window(WIN)
        snr = rng.uniform(5, 30)
        ps, pn = np.mean(w ** 2) + 1e-12, np.mean(nz ** 2) + 1e-12
        w = w + nz * np.sqrt(ps / pn / 10 ** (snr / 10))
    return np.clip(w, -1, 1).astype(np.float32)


def training_set(rng: np.random.Generator, cfg: dict):
    from kws.audio import load_clip
    from kws.data.index import scan_root
    r = random.Random(7)
    items = [it for it in scan_root(cfg["synth"]) if it.split == "training"]
    by_word: dict[str, list] = {}
    for it in items:
        by_word.setdefault(it.word, []).append(it.path)
    chosen = []
    for w in C.KEYWORDS:
        ps = by_word.get(w, [])
        chosen += [(p, w) for p in r.sample(ps, min(cfg["per_keyword"], len(ps)))]
    others = [p for w, ps in by_word.items() if w not in C.KEYWORDS for p in ps]
    chosen += [(p, "_unknown_") for p in r.sample(others, min(cfg["unknown"], len(others)))]
    rw = Path(cfg["real_words"]) if cfg.get("real_words") else None
    if rw is not None and rw.is_dir():
        for w in C.KEYWORDS:
            chosen += [(str(p), w) for p in sorted((rw / w).glob("*.wav"))]
        unk = sorted((rw / "_unknown_").glob("*.wav"))
        chosen += [(str(p), "_unknown_") for p in r.sample(unk, min(cfg["real_unknown"], len(unk)))]
    real_noise = [C.read_wav(f) for f in sorted(Path(cfg["noise"]).glob("*.wav"))]
    noises = real_noise + [C.read_wav(f) for f in sorted((Path(cfg["synth"]) / "_background_noise_").glob("*.wav"))]

    def noise_window(pool, n):
        z = pool[int(rng.integers(len(pool)))]
        o = int(rng.integers(0, len(z) - n))
        return z[o:o + n]

    waves, labels = [], []
    for p, lab in chosen:
        waves.append(training_window(load_clip(p), lambda n: noise_window(noises, n), rng))
        labels.append(lab)
    for _ in range(cfg["silence"] if real_noise else 0):
        waves.append((noise_window(real_noise, WIN) * rng.uniform(0, 1)).astype(np.float32))
        labels.append("_silence_")
    return waves, labels


def train_head(cache: Path, cfg: dict | None = None):
    import hashlib
    import json
    cfg = cfg or dict(TRAIN_DEFAULT)
    key = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]
    head_path = cache / f"oww_head_{key}.pkl"
    if head_path.exists():
        return pickle.loads(head_path.read_bytes()), head_path
    emb_path = cache / f"oww_train_embeddings_{key}.npz"
    if emb_path.exists():
        z = np.load(emb_path)
        X, y = z["X"], [str(s) for s in z["y"]]
    else:
        rng = np.random.default_rng(0)
        waves, y = training_set(rng, cfg)
        C.log(f"openwakeword: embedding {len(waves)} training windows")
        X = embed(features(), waves, rng)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(emb_path, X=X.astype(np.float32), y=np.array(y))
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    head = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    head.fit(X, y)
    C.log(f"openwakeword: head trained on {len(y)} windows, train acc {head.score(X, y):.3f}")
    (cache / f"oww_head_{key}.json").write_text(json.dumps({"config": cfg, "n": len(y)}, indent=1))
    head_path.write_bytes(pickle.dumps(head))
    return head, head_path


def stream_windows(F, x: np.ndarray, rng, seg_s: float | None = None, context_s: float = 3.0):
    """-> detection times [T] and head inputs [T, 9*96], one per 80 ms step with a full 9-embedding window.
    seg_s: embed in segments of seg_s with context_s of audio before each (their outputs dropped): one pass
    over a 10-minute file took 8 GB in onnxruntime. None: the whole file in one pass."""
    sr = 16000
    seg = len(x) if seg_s is None else int(seg_s * sr)
    times, feats = [], []
    for s in range(0, max(len(x), 1), max(seg, 1)):
        a = max(0, s - int(context_s * sr)) if seg_s is not None else s
        emb = F._get_embeddings(to_i16(x[a:s + seg], rng))          # [n, 96], window i = mel frames 8i..8i+76
        n = len(emb)
        if n < N_EMB:
            continue
        idx = np.arange(N_EMB - 1, n)
        t_end = a / sr + ((8 * idx + 76) * 160 + 400) / sr        # last sample of the window's last mel frame
        keep = ((t_end >= s / sr) | (a == 0)) & (t_end < (s + seg) / sr) if seg_s is not None else slice(None)
        idx, t_end = idx[keep], t_end[keep]
        if len(idx):
            feats.append(np.stack([emb[i - N_EMB + 1:i + 1].reshape(-1) for i in idx]))
            times.append(np.ceil(t_end / C.CHUNK_S - 1e-9) * C.CHUNK_S)
    if not times:
        return np.zeros(0), np.zeros((0, N_EMB * 96), np.float32)
    return np.concatenate(times), np.concatenate(feats)


def stream_scores(F, head, x: np.ndarray, rng):
    """-> times [T], best keyword [T], its probability [T] for every 80 ms step with a full window."""
    t, X = stream_windows(F, x, rng)
    if not len(t):
        return np.zeros(0), np.zeros(0, int), np.zeros(0)
    P = head.predict_proba(X)
    cls = list(head.classes_)
    pk = np.zeros((len(P), len(C.KEYWORDS)), np.float32)   # a class the head never saw: probability 0
    for j, k in enumerate(C.KEYWORDS):
        if k in cls:
            pk[:, j] = P[:, cls.index(k)]
    best = pk.argmax(1)
    return t, best, pk[np.arange(len(pk)), best]


def main() -> int:
    a = C.peer_args()
    inp = C.load_inputs(a.inputs)
    cache = Path(a.cache)
    if a.mode == "speed":
        head, _ = train_head(cache, train_config(inp))

        def make_step():
            F = features()
            rng = np.random.default_rng(0)
            seen = {"n": 0}

            def step(x):
                F(to_i16(x, rng))
                n = F.feature_buffer.shape[0]
                if n != seen["n"]:
                    seen["n"] = n
                    head.predict_proba(F.get_features(N_EMB).reshape(1, -1))
            return step
        res = C.speed_test(make_step, inp["speed_wav"], inp["speed_seconds"])
        res["peak_rss_mb"] = C.peak_rss_mb()
        res["note"] = "openwakeword.utils.AudioFeatures streaming (onnxruntime, 1 thread) + head per new embedding"
        C.write_json(res, a.out)
        return 0

    head, head_path = train_head(cache, train_config(inp))
    F = features()
    out = {"system": "openwakeword", "model": "openWakeWord 0.5.1 melspectrogram.onnx + embedding_model.onnx + "
                                              "logistic-regression head",
           "model_size_mb": C.file_size_mb(front_end_files() + [head_path]),
           "setup": "frozen openWakeWord front end (pretrained on real speech) + LogisticRegression head trained "
                    "here on synth training split subset + real_words tokens", "clips": {}}
    for name, npz in inp["clip_sets"].items():
        waves, labels = C.load_clipset(npz)
        X = embed(F, [centre(x) for x in waves], np.random.default_rng(0))
        pred = [str(p) for p in head.predict(X)]
        out["clips"][name] = C.clip_metrics(labels, pred)
        C.log(f"openwakeword {name}: acc {out['clips'][name]['accuracy']:.3f}")
    for key in ("streams", "streams_dev"):
        if not inp.get(key):
            continue
        wavs, occs = C.stream_files(inp[key])
        rng = np.random.default_rng(1)
        scored, hours = C.run_streams(wavs, lambda name, x: stream_scores(F, head, x, rng))

        def detections_at(thr):
            return {name: [(float(t[i]), C.KEYWORDS[best[i]], float(p[i])) for i in np.flatnonzero(p >= thr)]
                    for name, (t, best, p) in scored.items()}
        out[key] = C.sweep_streams([(thr, thr) for thr in THRESHOLDS], detections_at, occs, hours,
                                   "keyword-probability threshold 0.30..0.999999 swept on these streams, "
                                   "operating point = lowest FRR at <= 0.5 FA/h; 1 s refractory")
    C.write_json(out, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
