"""Few-shot custom wake word, measured on real voices it never heard, kws beside openWakeWord (issue 23).

What a user does, played with real recordings instead of a microphone:
1. enrollment: N clips of WORD (default 10) from at most S speakers (default 3) of ROOT's training split,
   copied into OUT/enroll/WORD/ as if `kws record` had written them;
2. kws: `kws wakeword WORD --takes OUT/enroll` (TTS takes, sound-alike confusers, real negatives of the
   training splits, the fine-tune within its --minutes budget), timed as a whole;
3. openWakeWord 0.5.1: its frozen front end (melspectrogram.onnx + embedding_model.onnx) and a
   logistic-regression head trained on exactly the training set kws's flow built (OUT/kws/data, its
   training split: the same takes, TTS takes, confusers, real negatives and noise), WORD against the rest;
4. both scored on the same held-out inputs: ROOT's validation-split clips of WORD (speakers never enrolled),
   and real-voice streams where WORD is the only target and every other real word is bait
   (data_scripts/make_stream_benchmark.py --keywords WORD --keywords-from real-validation ...).

Figures: clip recall at the threshold that gives <= 1 FA/h on the streams (pooled), FRR at <= 0.5 / 1 / 2
FA/h on the streams (the sweep), and what the user gets at the threshold kws wakeword chose by itself.
The streams are built from validation speakers: a dev measurement (no test split is touched).

    pip install '.[peers]'                       # openwakeword==0.5.1 onnxruntime scikit-learn
    python data_scripts/make_stream_benchmark.py --out data/streams_happy --keywords happy \\
        --keywords-from real-validation --real-bait 1 --minutes 60 --files 6 --seed 21 --keyword-rate 0.15
    python benchmarks/wakeword_fewshot.py --word happy --root ../shared/real_speech \\
        --streams data/streams_happy data/streams_happy2 --out runs/fewshot_happy
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks" / "peers"))
SR = 16000
BUDGETS = (0.5, 1.0, 2.0)


def enrollment(root: Path, word: str, n: int, max_speakers: int, seed: int) -> list:
    """n training-split clips of word from at most max_speakers speakers (those with the most clips first,
    ties broken by the seed): a user and a couple of housemates."""
    from kws.data.index import scan_root
    by_spk: dict[str, list] = {}
    for it in scan_root(root):
        if it.split == "training" and it.word == word and it.path:
            by_spk.setdefault(it.speaker, []).append(it)
    if not by_spk:
        sys.exit(f"{root}: no training-split clips of '{word}'")
    rng = random.Random(seed)
    spk = list(by_spk)
    rng.shuffle(spk)
    spk.sort(key=lambda s: -len(by_spk[s]))
    chosen = []
    for s in spk[:max_speakers]:
        chosen += sorted(by_spk[s], key=lambda it: it.path)[: n - len(chosen)]
    return chosen[:n]


def heldout_clips(root: Path, word: str, exclude_speakers: set) -> list:
    from kws.data.index import scan_root
    items = [it for it in scan_root(root) if it.split == "validation" and it.word == word and it.path]
    bad = {it.speaker for it in items} & exclude_speakers
    if bad:
        sys.exit(f"enrolled speakers {sorted(bad)} are in the validation split")
    return items


def at_budgets(rows: list[dict]) -> dict:
    from kws.stream_eval import operating_point
    return {str(b): operating_point(rows, b) for b in BUDGETS}


def recall_at(scores: np.ndarray, thr) -> float | None:
    return None if thr is None else float((scores >= thr).mean())


# ------------------------------------------------------------------ kws

def run_kws(word: str, enroll_dir: Path, out: Path, minutes: float, seed: int, extra: list[str]) -> dict:
    model = out / f"kws_{word}.npz"
    cmd = [sys.executable, "-m", "kws", "wakeword", word, "--takes", str(enroll_dir), "--out", str(model),
           "--work", str(out / "kws"), "--minutes", f"{minutes:g}", "--seed", str(seed), "--no-progress", *extra]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=REPO)
    if r.returncode != 0:
        sys.exit(f"kws wakeword failed (exit {r.returncode})")
    summary = json.loads((out / "kws" / "summary.json").read_text())
    summary["wall_s"] = time.monotonic() - t0
    return {"model": str(model), "summary": summary}


def kws_scores(model_path: str, word: str, clips: list[np.ndarray], streams: list[Path], out: Path) -> dict:
    from kws.enginefile import load_model
    from kws.training.wakeword import peak_scores
    model = load_model(model_path)
    peaks = peak_scores(model, clips, word)
    rep = out / "kws_streams.json"
    cmd = [sys.executable, "-m", "kws", "eval-stream", "--model", model_path, "--data", *map(str, streams),
           "--max-fa", "1", "--quiet", "--json", str(rep)]
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    report = json.loads(rep.read_text())
    return {"peaks": peaks, "rows": report["sweep"], "own_threshold": float(model.detector["threshold"]),
            "hours": report["hours"], "occurrences": report["occurrences"]}


# ------------------------------------------------------------------ openWakeWord

def oww_training_windows(data: Path, word: str, rng: np.random.Generator):
    """The training split of the root kws wakeword built: WORD (its takes and TTS takes) against every other
    folder (confusers, real negatives); plus noise-only windows. Augmentation as benchmarks/peers does:
    a random place in the 1.5 s window, background noise at 5-30 dB SNR on 80% of the windows."""
    from kws.audio import load_clip
    from kws.data.index import scan_root
    import common as C
    import peer_openwakeword as OW
    items = [it for it in scan_root(data) if it.split == "training" and it.path]
    noise_files = sorted((data / "_background_noise_").glob("*.wav"))
    noises = [C.read_wav(f) for f in noise_files]
    noises = [z for z in noises if len(z) > OW.WIN]

    def noise_window(n):
        z = noises[int(rng.integers(len(noises)))]
        o = int(rng.integers(0, len(z) - n))
        return z[o:o + n]

    waves, y = [], []
    for it in items:
        waves.append(OW.training_window(load_clip(it.path), noise_window if noises else None, rng))
        y.append(int(it.word == word))
    for _ in range(150 if noises else 0):
        waves.append((noise_window(OW.WIN) * rng.uniform(0, 1)).astype(np.float32))
        y.append(0)
    return waves, np.array(y)


def oww_stream_probs(F, head, x: np.ndarray, rng):
    """(detection times [T], P(word) [T]), embedded in 60 s segments (peer_openwakeword.stream_windows)."""
    import peer_openwakeword as OW
    t, X = OW.stream_windows(F, x, rng, seg_s=60.0)
    return t, (head.predict_proba(X)[:, list(head.classes_).index(1)] if len(t) else np.zeros(0))


def run_oww(word: str, data: Path, clips: list[np.ndarray], streams: list[Path], out: Path) -> dict:
    import common as C
    import peer_openwakeword as OW
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    t0 = time.monotonic()
    rng = np.random.default_rng(0)
    waves, y = oww_training_windows(data, word, rng)
    F = OW.features()
    print(f"openwakeword: embedding {len(waves)} training windows ({int(y.sum())} of '{word}')", file=sys.stderr,
          flush=True)
    X = OW.embed(F, waves, rng)
    head = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000, class_weight="balanced"))
    head.fit(X, y)
    train_s = time.monotonic() - t0
    Xc = OW.embed(F, [OW.centre(c[:OW.WIN]) for c in clips], np.random.default_rng(1))
    peaks = head.predict_proba(Xc)[:, list(head.classes_).index(1)]
    scored, occs, hours = {}, {}, 0.0
    srng = np.random.default_rng(2)
    for d in streams:
        wavs, _ = C.stream_files(d)
        from kws.stream_eval import read_ground_truth
        for o in read_ground_truth(d / "ground_truth.csv"):
            if o.label == word:
                occs.setdefault(f"{d.name}/{o.file}", []).append(o)
        for w in wavs:
            x = C.read_wav(w)
            hours += len(x) / SR / 3600
            scored[f"{d.name}/{w.name}"] = oww_stream_probs(F, head, x, srng)
    thresholds = ([round(float(t), 3) for t in np.arange(0.30, 0.9901, 0.01)]
                  + [0.992, 0.994, 0.996, 0.998, 0.999, 0.9995, 0.9998, 0.9999, 0.99995, 0.99999])

    def detections_at(thr):
        return {name: [(float(t[i]), word, float(p[i])) for i in np.flatnonzero(p >= thr)]
                for name, (t, p) in scored.items()}
    rep = C.sweep_streams([(t, t) for t in thresholds], detections_at, occs, hours, "P(word) threshold swept")
    return {"peaks": peaks, "rows": rep["sweep"], "hours": hours, "train_s": train_s,
            "occurrences": sum(len(v) for v in occs.values()), "training_windows": len(y),
            "positive_windows": int(y.sum())}


# ------------------------------------------------------------------ report

def summarise(name: str, r: dict) -> dict:
    b = at_budgets(r["rows"])
    thr1 = b["1.0"]["threshold"] if b["1.0"] else None
    row = {"system": name, "heldout_clips": len(r["peaks"]),
           "clip_recall_at_1fa": recall_at(r["peaks"], thr1), "threshold_at_1fa": thr1,
           **{f"stream_frr_at_{k}fa": (None if v is None else v["frr"]) for k, v in b.items()},
           "stream_hours": round(r["hours"], 3), "stream_occurrences": r["occurrences"]}
    if "own_threshold" in r:
        own = min(r["rows"], key=lambda x: abs(x["threshold"] - r["own_threshold"]))
        row.update(own_threshold=r["own_threshold"], clip_recall_at_own=recall_at(r["peaks"], r["own_threshold"]),
                   stream_frr_at_own=own["frr"], stream_fa_per_hour_at_own=own["fa_per_hour"])
    return row


def pct(v) -> str:
    return "none" if v is None else f"{100 * v:.1f}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--word", required=True)
    ap.add_argument("--root", type=Path, required=True, help="Speech Commands-layout root with WORD/ and split lists")
    ap.add_argument("--streams", type=Path, nargs="+", required=True, help="stream folders, WORD the only target")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--enroll", type=int, default=10, help="enrollment clips (default 10)")
    ap.add_argument("--speakers", type=int, default=3, help="at most this many enrolled speakers (default 3)")
    ap.add_argument("--minutes", type=float, default=10.0, help="kws wakeword's time budget (default 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--systems", default="kws,openwakeword")
    ap.add_argument("--reuse-kws", action="store_true", help="score OUT/kws_WORD.npz again, no new training")
    ap.add_argument("--kws-args", default="", help="more arguments for kws wakeword, e.g. '--voices 12'")
    a = ap.parse_args()
    from kws.audio import load_clip
    systems = a.systems.split(",")
    a.out.mkdir(parents=True, exist_ok=True)
    enrolled = enrollment(a.root, a.word, a.enroll, a.speakers, a.seed)
    edir = a.out / "enroll" / a.word
    if edir.exists():
        shutil.rmtree(edir)
    edir.mkdir(parents=True)
    for it in enrolled:
        shutil.copy(it.path, edir / Path(it.path).name)
    spk = {it.speaker for it in enrolled}
    held = heldout_clips(a.root, a.word, spk)
    clips = [load_clip(it.path) for it in held]
    print(f"enrollment: {len(enrolled)} clips of '{a.word}' from {len(spk)} speaker(s); held out: {len(held)} "
          f"validation clips of {len({it.speaker for it in held})} speakers", file=sys.stderr, flush=True)
    res = {"word": a.word, "root": str(a.root), "enrolled": [str(it.path) for it in enrolled],
           "enrolled_speakers": sorted(spk), "streams": [str(s) for s in a.streams], "systems": []}
    kws_run = None
    if "kws" in systems or "openwakeword" in systems:
        model = a.out / f"kws_{a.word}.npz"
        if a.reuse_kws and model.exists():
            kws_run = {"model": str(model), "summary": json.loads((a.out / "kws" / "summary.json").read_text())}
        else:
            kws_run = run_kws(a.word, a.out / "enroll", a.out, a.minutes, a.seed, a.kws_args.split())
        res["kws_wakeword_summary"] = kws_run["summary"]
    if "kws" in systems:
        r = kws_scores(kws_run["model"], a.word, clips, a.streams, a.out)
        row = summarise("kws", r)
        row["minutes"] = round(kws_run["summary"].get("wall_s", kws_run["summary"]["seconds"]) / 60, 2)
        res["systems"].append(row)
    if "openwakeword" in systems:
        r = run_oww(a.word, a.out / "kws" / "data", clips, a.streams, a.out)
        row = summarise("openwakeword", r)
        row.update(minutes_head=round(r["train_s"] / 60, 2), training_windows=r["training_windows"],
                   positive_windows=r["positive_windows"])
        res["systems"].append(row)
    (a.out / "results.json").write_text(json.dumps(res, indent=1))
    lines = [f"# Few-shot wake word '{a.word}': {len(enrolled)} enrollment clips, {len(spk)} speakers, + TTS",
             "", f"held-out: {len(held)} validation clips of {a.root}; streams: {', '.join(map(str, a.streams))}", "",
             "| system | clip recall at <= 1 FA/h | FRR <= 0.5 FA/h | FRR <= 1 FA/h | FRR <= 2 FA/h | "
             "own threshold: clip recall / FRR / FA/h | minutes |", "|---|---|---|---|---|---|---|"]
    for r in res["systems"]:
        own = (f"{r['own_threshold']:.2f}: {pct(r['clip_recall_at_own'])} / {pct(r['stream_frr_at_own'])} / "
               f"{r['stream_fa_per_hour_at_own']:.2f}") if "own_threshold" in r else "-"
        lines.append(f"| {r['system']} | {pct(r['clip_recall_at_1fa'])} | {pct(r['stream_frr_at_0.5fa'])} | "
                     f"{pct(r['stream_frr_at_1.0fa'])} | {pct(r['stream_frr_at_2.0fa'])} | {own} | "
                     f"{r.get('minutes', r.get('minutes_head', '-'))} |")
    (a.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
