"""Evaluation commands: `kws detect`, `kws eval` and `kws eval-stream`.

- `detect`: stream audio files through `KeywordSpotter` in fixed chunks (memory flat on long files).
- `eval`: 12-class accuracy on labelled 1 s clips, offline (each clip from a zero state) and streaming
  (all clips through one stream, state carried), with per-class precision/recall/F1 and a confusion matrix.
- `eval-stream`: false rejects / false alarms per hour / latency of the detector on long recordings with
  ground truth (see data_scripts/make_stream_benchmark.py), swept over thresholds, with a DET curve.

See docs/evaluate.md for the metrics and the matching rule.
"""
from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import KwsError, first_line

SILENCE, UNKNOWN = "_silence_", "_unknown_"
NON_KEYWORDS = (SILENCE, UNKNOWN)
AUDIO_EXT = (".wav", ".flac", ".ogg", ".aiff", ".aif")
GROUND_TRUTH = "ground_truth.csv"
MATCH_AFTER_END_S = 1.0        # a detection may come up to this long after the keyword's end
STREAM_LABEL_FRAMES = None     # None: the model's smoothing window (smooth_ms) decides


class EvalError(KwsError):
    """Bad input to an evaluation command; printed by the CLI as one line."""


def _warn(msg: str) -> None:
    print(f"kws: warning: {msg}", file=sys.stderr)


def _load_bundle(path):
    from .modelfile import load_bundle
    return load_bundle(path)


# ----------------------------------------------------------------------------------------------------
# kws detect
# ----------------------------------------------------------------------------------------------------

def _expand_audio(paths) -> list[Path]:
    """Files as given; directories expand to the audio files under them (sorted)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXT)
            if not found:
                raise EvalError(f"no audio files (*.wav, *.flac, ...) in directory {p}")
            out += found
        else:
            out.append(p)
    return out


def _parse_keywords(s: str | None) -> list[str] | None:
    if not s:
        return None
    kws = [k.strip() for k in s.split(",") if k.strip()]
    return kws or None


def _check_threshold(t):
    if t is not None and not (0.0 < t <= 1.0):
        raise EvalError(f"--threshold must be in (0, 1], got {t}")


def detect_file(spotter, path, chunk_s: float = 0.1):
    """Yield Detections for one file, streamed in `chunk_s` blocks (never the whole file in memory)."""
    from .audio import read_blocks
    spotter.reset()
    for block, _sr in read_blocks(path, block_s=chunk_s):
        yield from spotter.process(block)
    yield from spotter.flush()


def cmd_detect(args) -> int:
    from .audio import AudioError, info
    from .stream import KeywordSpotter
    _check_threshold(args.threshold)
    if args.chunk_ms <= 0:
        raise EvalError(f"--chunk-ms must be positive, got {args.chunk_ms}")
    files = _expand_audio(args.files)
    bundle = _load_bundle(args.model)
    keywords = _parse_keywords(args.keywords)
    spotters = {}
    failed = 0
    for f in files:
        try:
            sr = info(f)[0]
            if sr not in spotters:
                try:
                    spotters[sr] = KeywordSpotter(bundle, sample_rate=sr, keywords=keywords, threshold=args.threshold)
                except ValueError as e:
                    raise EvalError(first_line(e)) from None
            n = 0
            for d in detect_file(spotters[sr], f, args.chunk_ms / 1000.0):
                n += 1
                if args.json:
                    print(json.dumps({"file": str(f), **d.to_dict()}), flush=True)
                else:
                    print(f"{f}  {d.time:8.2f}s  {d.label:<10s} {d.score:.2f}", flush=True)
        except AudioError as e:
            if len(files) == 1:
                raise
            print(f"kws: error: {e}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


# ----------------------------------------------------------------------------------------------------
# kws eval: labelled clips
# ----------------------------------------------------------------------------------------------------

@dataclass
class Clip:
    path: str | None      # None: a silence clip made from background noise
    label: str
    word: str = ""


def _map_label(word: str, labels: list[str]) -> str | None:
    if word in labels and word not in NON_KEYWORDS:
        return word
    if word == SILENCE:
        return SILENCE if SILENCE in labels else None
    return UNKNOWN if UNKNOWN in labels else None


def _read_csv_list(path: Path, labels: list[str]) -> list[Clip]:
    clips = []
    with open(path, newline="") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if not row or row[0].strip().startswith("#"):
                continue
            if len(row) < 2:
                raise EvalError(f"{path}:{i + 1}: expected 'path,label', got {','.join(row)!r}")
            p, word = row[0].strip(), row[1].strip()
            if i == 0 and p.lower() == "path":
                continue
            lab = _map_label(word, labels)
            if lab is None:
                continue
            fp = Path(p)
            if not fp.is_absolute():
                fp = path.parent / fp
            clips.append(Clip(str(fp), lab, word))
    return clips


def collect_clips(sources, labels: list[str], split: str | None = "testing", all_unknown: bool = False,
                  ) -> tuple[list[Clip], list[str]]:
    """Labelled clips from data sources, and background-noise files for made-up silence clips.

    A source is: a Speech Commands root (list files -> `split`), a folder of word-named subfolders
    (every clip, or the speaker-hash `split` if one is given), a CSV list `path,label`, a single audio
    file (label = parent folder name) or a folder of audio files (label = folder name).
    """
    from .data.index import SKIP_DIRS, Item, background_files, parse_root, scan_root, select
    unknown_pct = None if all_unknown else 10.0
    clips: list[Clip] = []
    noise: list[str] = []
    for spec in map(str, sources):
        # ROOT@VAL,TEST: the speaker split `kws train` used for a root without list files
        src = parse_root(spec)[0] if "@" in spec and not Path(spec).exists() else Path(spec)
        if not src.exists():
            raise EvalError(f"no such file or directory: {src}")
        if src.is_file():
            if src.suffix.lower() == ".csv":
                clips += _read_csv_list(src, labels)
            else:
                lab = _map_label(src.parent.name, labels)
                if lab is not None:
                    clips.append(Clip(str(src), lab, src.parent.name))
            continue
        subdirs = [d for d in src.iterdir() if d.is_dir() and d.name not in SKIP_DIRS]
        has_lists = (src / "testing_list.txt").exists() or (src / "validation_list.txt").exists()
        if subdirs:
            items = scan_root(spec if "@" in spec and src != Path(spec) else src)
            if not has_lists and split is None:
                items = [Item(it.path, it.label, it.word, it.speaker, "all") for it in items]
            want = split or ("testing" if has_lists else "all")
            chosen = select(items, labels, want, unknown_pct=unknown_pct)
            clips += [Clip(it.path, it.label, it.word) for it in chosen]
            noise += background_files([src])
        else:
            lab = _map_label(src.name, labels)
            files = sorted(f for f in src.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_EXT)
            if lab is not None:
                clips += [Clip(str(f), lab, src.name) for f in files]
    if not clips:
        raise EvalError(f"no labelled audio clips found in {', '.join(map(str, sources))}"
                        + (f" (split {split!r})" if split else ""))
    return clips, noise


class SilenceMaker:
    """Deterministic `_silence_` clips: a random 1 s window of a background-noise file at volume U(0, 1)
    (TF's recipe), or zeros when there is no noise file."""

    def __init__(self, noise_files: list[str], seed: int = 0, n: int = 16000):
        from .audio import AudioError, load
        self.rng = np.random.default_rng(seed)
        self.n = n
        self.noise = []
        for f in noise_files:
            try:
                x = load(f)
            except AudioError as e:
                _warn(f"skipping background noise file: {e}")
                continue
            if len(x) >= n:
                self.noise.append(x)

    def __call__(self) -> np.ndarray:
        if not self.noise:
            return np.zeros(self.n, np.float32)
        x = self.noise[int(self.rng.integers(len(self.noise)))]
        off = int(self.rng.integers(0, len(x) - self.n + 1))
        return (x[off:off + self.n] * self.rng.uniform(0, 1)).astype(np.float32)


def load_clips(clips: list[Clip], noise_files: list[str], progress: bool = True, seed: int = 0):
    """-> (waves [N, 16000] float32, kept clips, skipped count). Unreadable files are skipped."""
    from .audio import AudioError, load_clip
    from tqdm import tqdm
    make_silence = SilenceMaker(noise_files, seed=seed)
    waves, kept, reasons = [], [], []
    for c in tqdm(clips, desc="loading", unit="clip", disable=not progress or len(clips) < 500,
                  file=sys.stderr, leave=False):
        if c.path is None:
            waves.append(make_silence())
        else:
            try:
                waves.append(load_clip(c.path))
            except AudioError as e:
                reasons.append(str(e))
                continue
        kept.append(c)
    skipped = len(reasons)
    if skipped and not any(c.path for c in kept):   # nothing readable: one error line, no warnings before it
        raise EvalError(f"no readable clips to evaluate ({reasons[0]}" + (
            f"; {skipped - 1} more unreadable)" if skipped > 1 else ")"))
    for r in reasons[:5]:
        _warn(f"skipped: {r}")
    if skipped:
        _warn(f"skipped {skipped} unreadable file(s) of {len(clips)}")
    w = np.stack(waves) if waves else np.zeros((0, 16000), np.float32)
    return w, kept, skipped


def predict_offline(bundle, waves: np.ndarray, batch: int = 256) -> np.ndarray:
    """Each clip from a zero state: argmax of the last frame's logits of `model.forward`."""
    import torch
    from .features import MFCC
    mfcc = MFCC(bundle.features)
    model = bundle.model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(waves), batch):
            feats = mfcc(torch.from_numpy(np.ascontiguousarray(waves[i:i + batch])))
            out.append(model(feats).argmax(-1).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def predict_streaming(bundle, waves: np.ndarray, group: int = 32, label_frames: int | None = None):
    """All clips, one after another, through ONE stream (state carried, never reset).

    A clip's frames (model outputs) are those completed while its samples arrive. Its label is the argmax
    of the raw posteriors averaged over its last `label_frames` outputs (default: the detector's smoothing window,
    i.e. what the detector's smoothed posterior says at the clip's end).
    """
    from .stream import KeywordSpotter
    spotter = KeywordSpotter(bundle)
    cfg = bundle.features
    k = label_frames or spotter.smooth
    n = waves.shape[1] if waves.ndim == 2 else 0
    preds = np.zeros(len(waves), np.int64)
    total = 0

    stack = getattr(spotter, "stack", 1)     # feature frames per model output

    def frames_done(samples: int) -> int:
        """Model outputs completed once `samples` samples have arrived."""
        return max(0, (samples - cfg.n_fft) // cfg.hop + 1) // stack

    for g0 in range(0, len(waves), group):
        chunk = waves[g0:g0 + group]
        post = spotter.step_frames(chunk.reshape(-1))          # [frames, C], state carried
        base = frames_done(total)
        for j in range(len(chunk)):
            a = frames_done(total + j * n) - base
            b = frames_done(total + (j + 1) * n) - base
            seg = post[max(a, b - k):b]
            preds[g0 + j] = int(seg.mean(0).argmax()) if len(seg) else 0
        total += len(chunk) * n
    return preds


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    c = len(labels)
    cm = np.zeros((c, c), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    per = {}
    for i, lab in enumerate(labels):
        tp = int(cm[i, i])
        p = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        r = tp / cm[i].sum() if cm[i].sum() else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        per[lab] = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "support": int(cm[i].sum())}
    kw = np.array([labels[t] not in NON_KEYWORDS for t in y_true], bool) if len(y_true) else np.zeros(0, bool)
    acc = float((y_true == y_pred).mean()) if len(y_true) else 0.0
    kacc = float((y_true[kw] == y_pred[kw]).mean()) if kw.any() else float("nan")
    return {"accuracy": round(acc, 4), "keyword_accuracy": round(kacc, 4) if not math.isnan(kacc) else None,
            "n": int(len(y_true)), "n_keyword": int(kw.sum()), "per_class": per, "confusion": cm.tolist()}


def _short(lab: str) -> str:
    return {"_silence_": "silence", "_unknown_": "unknown"}.get(lab, lab)


def save_confusion_png(results: dict, labels: list[str], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    modes = list(results)
    n = len(labels)
    size = max(5.0, 0.45 * n + 2)
    fig, axes = plt.subplots(1, len(modes), figsize=(size * len(modes), size), squeeze=False)
    names = [_short(l) for l in labels]
    for ax, mode in zip(axes[0], modes):
        cm = np.asarray(results[mode]["confusion"])
        rows = cm.sum(1, keepdims=True).clip(min=1)
        ax.imshow(cm / rows, cmap="Blues", vmin=0, vmax=1)
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7 if n <= 14 else 5,
                            color="white" if cm[i, j] / rows[i, 0] > 0.5 else "black")
        ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        r = results[mode]
        ka = r["keyword_accuracy"]
        ax.set_title(f"{mode}: acc {100 * r['accuracy']:.1f}%"
                     + (f", keyword acc {100 * ka:.1f}%" if ka is not None else ""), fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print_eval(results: dict, labels: list[str], console) -> None:
    from rich.table import Table
    summary = Table(title="kws eval")
    summary.add_column("mode")
    summary.add_column("clips", justify="right")
    summary.add_column("accuracy", justify="right")
    summary.add_column("keyword accuracy", justify="right")
    for mode, r in results.items():
        ka = r["keyword_accuracy"]
        summary.add_row(mode, str(r["n"]), f"{100 * r['accuracy']:.2f}%", "-" if ka is None else f"{100 * ka:.2f}%")
    console.print(summary)
    per = Table(title="per class (offline | streaming)")
    per.add_column("label")
    per.add_column("support", justify="right")
    for mode in results:
        for m in ("P", "R", "F1"):
            per.add_column(f"{m} {mode[:3]}", justify="right")
    for lab in labels:
        row = [lab, str(results[next(iter(results))]["per_class"][lab]["support"])]
        for mode in results:
            pc = results[mode]["per_class"][lab]
            row += [f"{pc['precision']:.2f}", f"{pc['recall']:.2f}", f"{pc['f1']:.2f}"]
        per.add_row(*row)
    console.print(per)
    names = [_short(l)[:7] for l in labels]
    for mode, r in results.items():
        t = Table(title=f"confusion ({mode}; rows true, columns predicted)")
        t.add_column("true \\ pred")
        for nm in names:
            t.add_column(nm, justify="right")
        for i, lab in enumerate(labels):
            t.add_row(_short(lab), *[(str(v) if v else "·") for v in r["confusion"][i]])
        console.print(t)


def cmd_eval(args) -> int:
    from rich.console import Console
    bundle = _load_bundle(args.model)
    labels = bundle.labels
    clips, noise = collect_clips(args.data, labels, split=args.split, all_unknown=args.all_unknown)
    progress = not args.quiet
    waves, clips, skipped = load_clips(clips, noise, progress=progress, seed=args.seed)
    if not clips:
        raise EvalError("no readable clips to evaluate")
    y = np.array([labels.index(c.label) for c in clips])
    results = {"offline": classification_metrics(y, predict_offline(bundle, waves), labels),
               "streaming": classification_metrics(y, predict_streaming(bundle, waves), labels)}
    console = Console(file=sys.stderr if args.json == "-" else sys.stdout, width=max(100, 12 * len(labels) + 20))
    _print_eval(results, labels, console)
    if skipped:
        console.print(f"skipped {skipped} unreadable file(s)")
    report = {"model": str(args.model) if args.model else "default", "data": [str(d) for d in args.data],
              "split": args.split, "all_unknown": bool(args.all_unknown), "labels": labels,
              "skipped": skipped, "streaming_label": "argmax of raw posteriors averaged over the last "
              f"{_smooth_frames(bundle)} frames of each clip, state carried across clips", **results}
    if args.confusion:
        save_confusion_png(results, labels, args.confusion)
        console.print(f"confusion matrix -> {args.confusion}")
    if args.json:
        _write_json(report, args.json)
        if args.json != "-":
            console.print(f"report -> {args.json}")
    return 0


def _smooth_frames(bundle) -> int:
    """The detector's smoothing window in model outputs (KeywordSpotter's rule)."""
    from .stream import KeywordSpotter
    return KeywordSpotter(bundle).smooth


def _write_json(obj, path) -> None:
    if str(path) == "-":
        print(json.dumps(obj, indent=1))
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=1) + "\n")


# ----------------------------------------------------------------------------------------------------
# kws eval-stream: long recordings with ground truth
# ----------------------------------------------------------------------------------------------------

@dataclass
class Occurrence:
    file: str
    label: str
    start: float
    end: float
    extra: dict = field(default_factory=dict)


def read_ground_truth(path: Path) -> list[Occurrence]:
    occ = []
    with open(path, newline="") as fh:
        rd = csv.DictReader(fh)
        need = {"file", "label", "start", "end"}
        if not rd.fieldnames or not need <= set(rd.fieldnames):
            raise EvalError(f"{path}: expected a CSV with columns file,label,start,end")
        for i, row in enumerate(rd):
            try:
                occ.append(Occurrence(row["file"], row["label"], float(row["start"]), float(row["end"]),
                                      {k: v for k, v in row.items() if k not in need}))
            except (TypeError, ValueError):
                raise EvalError(f"{path}:{i + 2}: bad start/end") from None
    return occ


def stream_posteriors(bundle, path, block_s: float = 1.0) -> np.ndarray:
    """Raw per-frame posteriors [T, C] of one file streamed through a fresh KeywordSpotter."""
    from .audio import info, read_blocks
    from .stream import KeywordSpotter
    sp = KeywordSpotter(bundle, sample_rate=info(path)[0])
    out = []
    for block, _ in read_blocks(path, block_s):
        x = sp.resampler(block)
        if x.size:
            out.append(sp.step_frames(x))
    tail = sp.resampler(np.zeros(0, np.float32), last=True)
    if tail.size:
        out.append(sp.step_frames(tail))
    return np.concatenate(out) if out else np.zeros((0, len(bundle.labels)), np.float32)


def smooth_posteriors(post: np.ndarray, smooth: int) -> np.ndarray:
    """Causal moving average over `smooth` frames (fewer at the start), as KeywordSpotter does."""
    csum = np.concatenate([np.zeros((1, post.shape[1])), np.cumsum(post, axis=0, dtype=np.float64)])
    ends = np.arange(1, len(post) + 1)
    starts = np.maximum(0, ends - smooth)
    return ((csum[ends] - csum[starts]) / (ends - starts)[:, None]).astype(np.float32)


def simulate_detections(kw_score: np.ndarray, kw_label: np.ndarray, threshold: float, refractory: int):
    """Detections (frame, label index, score) of KeywordSpotter's rule for one global threshold:
    fire at a frame whose best keyword score >= threshold unless within `refractory` frames of the
    previous detection. kw_score/kw_label: best keyword's smoothed posterior and index per frame."""
    cand = np.flatnonzero(kw_score >= threshold)
    dets = []
    i = 0
    while i < len(cand):
        t = int(cand[i])
        dets.append((t, int(kw_label[t]), float(kw_score[t])))
        i = int(np.searchsorted(cand, t + max(refractory, 1), side="left"))
    return dets


def match_detections(dets: list[tuple[float, str]], occ: list[Occurrence], after_s: float = MATCH_AFTER_END_S):
    """Match detections (time, label) of one file to occurrences: a detection of L matches an unmatched
    occurrence of L with start <= time <= end + after_s (earliest such occurrence; each at most once).
    -> (matched: list of (det index, occ index), false alarms: det indices, wrong label: det indices)."""
    used = [False] * len(occ)
    matched, fa, wrong = [], [], []
    for di, (t, lab) in sorted(enumerate(dets), key=lambda x: x[1][0]):
        hit = None
        for oi, o in enumerate(occ):
            if not used[oi] and o.label == lab and o.start <= t <= o.end + after_s:
                hit = oi
                break
        if hit is None:
            fa.append(di)
            if any(o.label != lab and o.start <= t <= o.end + after_s for o in occ):
                wrong.append(di)
        else:
            used[hit] = True
            matched.append((di, hit))
    return matched, fa, wrong


def simulate_label_thresholds(sm: np.ndarray, thr: np.ndarray, refractory: int):
    """Detections (frame, column, score) of KeywordSpotter's rule with one threshold per keyword:
    fire at a frame where some keyword's smoothed posterior sm[t, k] >= thr[k] (the highest of those
    wins) unless within `refractory` frames of the previous detection. sm: [T, K] keyword columns."""
    above = sm >= thr
    cand = np.flatnonzero(above.any(axis=1))
    dets = []
    i = 0
    while i < len(cand):
        t = int(cand[i])
        k = int(np.where(above[t], sm[t], -1.0).argmax())
        dets.append((t, k, float(sm[t, k])))
        i = int(np.searchsorted(cand, t + max(refractory, 1), side="left"))
    return dets


def _prepare(files: dict, labels: list[str], smooth: int) -> tuple[np.ndarray, dict]:
    kw_idx = np.array([i for i, l in enumerate(labels) if l not in NON_KEYWORDS])
    return kw_idx, {name: (smooth_posteriors(post, smooth)[:, kw_idx] if len(post) else np.zeros((0, len(kw_idx))))
                    for name, post in files.items()}


def score_thresholds(prepared: dict, occs: dict, labels: list[str], kw_idx: np.ndarray, thr: np.ndarray,
                     refractory: int, frame_time, hours: float) -> dict:
    """One operating point (a threshold per keyword) over all files: hits, FRR, FA/h, latency."""
    n_occ = sum(len(v) for v in occs.values())
    n_det = n_fa = n_wrong = n_hit = 0
    lat = []
    per_label_miss: dict[str, int] = {}
    for name, sm in prepared.items():
        raw = simulate_label_thresholds(sm, thr, refractory)
        dets = [(frame_time(t), labels[kw_idx[k]]) for t, k, _ in raw]
        occ = occs.get(name, [])
        matched, fa, wrong = match_detections(dets, occ)
        n_det += len(dets)
        n_fa += len(fa)
        n_wrong += len(wrong)
        n_hit += len(matched)
        lat += [dets[d][0] - occ[o].end for d, o in matched]
        hit_occ = {o for _, o in matched}
        for oi, o in enumerate(occ):
            if oi not in hit_occ:
                per_label_miss[o.label] = per_label_miss.get(o.label, 0) + 1
    return {
        "threshold": round(float(thr.min()), 4) if np.ptp(thr) == 0 else None,
        "detections": n_det,
        "hits": n_hit,
        "misses": n_occ - n_hit,
        "frr": round((n_occ - n_hit) / n_occ, 4) if n_occ else None,
        "false_alarms": n_fa,
        "fa_per_hour": round(n_fa / hours, 3) if hours > 0 else None,
        "wrong_label": n_wrong,
        "latency_median_s": round(float(np.median(lat)), 3) if lat else None,
        "latency_p90_s": round(float(np.percentile(lat, 90)), 3) if lat else None,
        "misses_by_label": dict(sorted(per_label_miss.items())),
    }


def sweep(files: dict, occs: dict, labels: list[str], thresholds, smooth: int, refractory: int,
          frame_time, hours: float) -> list[dict]:
    """files: name -> raw posteriors [T, C]; occs: name -> keyword occurrences. One row per threshold
    (the same for every keyword)."""
    kw_idx, prepared = _prepare(files, labels, smooth)
    return [score_thresholds(prepared, occs, labels, kw_idx, np.full(len(kw_idx), float(t)), refractory,
                             frame_time, hours) for t in thresholds]


def tune_label_thresholds(files: dict, occs: dict, labels: list[str], thresholds, smooth: int, refractory: int,
                          frame_time, hours: float, max_fa_per_hour: float) -> tuple[dict, dict] | None:
    """A threshold per keyword that maximises hits within the false-alarm budget (choose it on dev data).

    Each keyword is swept alone (others off) to get its own hits and false alarms per threshold; a
    small knapsack then spends the budget (max_fa_per_hour * hours false alarms, rounded down) where it
    buys the most hits. Keywords interact only through the refractory time and argmax, so the chosen
    set is scored again jointly. -> ({label: threshold}, joint row), or None if nothing fits."""
    kw_idx, prepared = _prepare(files, labels, smooth)
    K = len(kw_idx)
    budget = int(np.floor(max_fa_per_hour * hours + 1e-9))
    thresholds = np.sort(np.asarray(thresholds, float))
    curves = []   # per keyword: list of (threshold, hits, false alarms)
    for k in range(K):
        lab = labels[kw_idx[k]]
        sub = {n: [o for o in v if o.label == lab] for n, v in occs.items()}
        row_of = []
        for t in thresholds:
            thr = np.full(K, np.inf)
            thr[k] = t
            r = score_thresholds(prepared, sub, labels, kw_idx, thr, refractory, frame_time, hours)
            row_of.append((float(t), r["hits"], r["false_alarms"]))
        curves.append(row_of)
    # knapsack over keywords: best[b] = (hits, choice) using at most b false alarms
    best = {0: (0, [])}
    for k in range(K):
        nxt = {}
        for b, (h, ch) in best.items():
            for t, hk, fk in curves[k]:
                nb = b + fk
                if nb > budget:
                    continue
                cand = (h + hk, ch + [t])
                if nb not in nxt or cand[0] > nxt[nb][0] or (cand[0] == nxt[nb][0] and cand[1] > nxt[nb][1]):
                    nxt[nb] = cand
        best = nxt
        if not best:
            return None
    _, choice = max(best.values(), key=lambda v: (v[0], v[1]))
    thr = np.array(choice)
    row = score_thresholds(prepared, occs, labels, kw_idx, thr, refractory, frame_time, hours)
    return {labels[kw_idx[k]]: round(float(thr[k]), 4) for k in range(K)}, row


def operating_point(rows: list[dict], max_fa_per_hour: float = 0.5) -> dict | None:
    """Lowest FRR among thresholds with FA/h <= max (ties: fewer FA/h, then the lower threshold)."""
    ok = [r for r in rows if r["fa_per_hour"] is not None and r["fa_per_hour"] <= max_fa_per_hour
          and r["frr"] is not None]
    if not ok:
        return None
    return min(ok, key=lambda r: (r["frr"], r["fa_per_hour"], r["threshold"]))


def save_det_png(rows: list[dict], path, hours: float, op: dict | None, default_thr: float | None,
                 title: str = "", extra: list[tuple[dict, str, str]] = ()) -> None:
    """FRR vs FA/h of the sweep; `extra`: (row, legend, matplotlib format) points such as per-keyword
    thresholds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    floor = 0.5 / hours if hours > 0 else 0.01   # FA/h of 0 plotted at half of one false alarm
    xs = np.array([max(r["fa_per_hour"], floor) for r in rows])
    ys = np.array([100 * r["frr"] for r in rows])
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    ax.plot(xs, ys, "o-", ms=3, label="threshold sweep")
    for r, x, y in zip(rows, xs, ys):
        if abs(r["threshold"] * 10 - round(r["threshold"] * 10)) < 1e-6:
            ax.annotate(f"{r['threshold']:.1f}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if op is not None:
        ax.plot([max(op["fa_per_hour"], floor)], [100 * op["frr"]], "r*", ms=14,
                label=f"≤0.5 FA/h: thr {op['threshold']:.2f}, FRR {100 * op['frr']:.1f}%")
    if default_thr is not None:
        d = min(rows, key=lambda r: abs(r["threshold"] - default_thr))
        ax.plot([max(d["fa_per_hour"], floor)], [100 * d["frr"]], "ks", ms=7, mfc="none",
                label=f"model default thr {d['threshold']:.2f}")
    for r, name, fmt in extra:
        ax.plot([max(r["fa_per_hour"], floor)], [100 * r["frr"]], fmt, ms=9,
                label=f"{name}: FRR {100 * r['frr']:.1f}%, {r['fa_per_hour']:.2f} FA/h")
    ax.axvline(0.5, color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel(f"false alarms per hour (log; 0 drawn at {floor:.2g})")
    ax.set_ylabel("false-reject rate (%)")
    ax.set_title(title or "kws detector: DET curve")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parse_thresholds(s: str | None) -> np.ndarray:
    if not s:   # finer near 1, where the low false-alarm operating points lie
        return np.round(np.concatenate([np.arange(0.30, 0.9451, 0.01), np.arange(0.95, 0.9991, 0.002)]), 3)
    try:
        if ":" in s:
            a, b, step = (float(v) for v in s.split(":"))
            thr = np.round(np.arange(a, b + step / 2, step), 4)
        else:
            thr = np.array([float(v) for v in s.split(",") if v.strip()])
    except ValueError:
        raise EvalError(f"bad --thresholds {s!r}: use START:STOP:STEP or a comma list") from None
    if len(thr) == 0 or (thr <= 0).any() or (thr > 1).any():
        raise EvalError(f"bad --thresholds {s!r}: values must be in (0, 1]")
    return thr


def cmd_eval_stream(args) -> int:
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm
    from .audio import AudioError, info
    from .stream import DetectorConfig, KeywordSpotter
    data = Path(args.data)
    if not data.exists():
        raise EvalError(f"no such file or directory: {data}")
    gt_path = Path(args.ground_truth) if args.ground_truth else (data / GROUND_TRUTH if data.is_dir() else None)
    if gt_path is None or not gt_path.exists():
        raise EvalError(f"ground truth not found: {gt_path or data} (a CSV file,label,start,end; "
                        "see data_scripts/make_stream_benchmark.py)")
    thresholds = _parse_thresholds(args.thresholds)
    bundle = _load_bundle(args.model)
    labels = bundle.labels
    keywords = [l for l in labels if l not in NON_KEYWORDS]
    base = data if data.is_dir() else data.parent
    wavs = [data] if data.is_file() else sorted(f for f in data.iterdir() if f.suffix.lower() in AUDIO_EXT)
    if not wavs:
        raise EvalError(f"no audio files in {data}")
    all_occ = read_ground_truth(gt_path)
    foreign = sorted({o.label for o in all_occ if o.label not in labels and o.label not in NON_KEYWORDS})
    if foreign:
        _warn(f"ground-truth labels not in the model, ignored as targets: {', '.join(foreign)}")
    occs: dict[str, list[Occurrence]] = {}
    for o in all_occ:
        if o.label in keywords:
            occs.setdefault(o.file, []).append(o)
    if args.smooth_ms is not None:
        bundle.detector["smooth_ms"] = args.smooth_ms
    spotter = KeywordSpotter(bundle)
    cfg = spotter.cfg
    posts, seconds, skipped = {}, 0.0, 0
    for w in tqdm(wavs, desc="streaming", unit="file", disable=args.quiet or len(wavs) < 2, file=sys.stderr,
                  leave=False):
        name = str(w.relative_to(base)) if w.is_relative_to(base) else str(w)
        try:
            sr, _ch, frames = info(w)
            posts[name] = stream_posteriors(bundle, w)
        except AudioError as e:
            skipped += 1
            _warn(f"skipped: {e}")
            continue
        seconds += frames / sr
    if not posts:
        raise EvalError(f"no readable audio files in {data}")
    missing = sorted(set(occs) - set(posts))
    if missing:
        _warn(f"{len(missing)} ground-truth file(s) not evaluated (missing or unreadable): {', '.join(missing[:3])}")
        for m in missing:
            occs.pop(m)
    hours = seconds / 3600.0
    rows = sweep(posts, occs, labels, thresholds, spotter.smooth, spotter.refractory, spotter.frame_time, hours)
    op = operating_point(rows, args.max_fa)
    kw_idx, prepared = _prepare(posts, labels, spotter.smooth)
    own_thr = spotter.label_thresholds[kw_idx]
    own = score_thresholds(prepared, occs, labels, kw_idx, own_thr, spotter.refractory, spotter.frame_time, hours)
    own["thresholds"] = {labels[i]: round(float(t), 4) for i, t in zip(kw_idx, own_thr)}
    tuned = None
    if args.per_label:
        tuned = tune_label_thresholds(posts, occs, labels, thresholds, spotter.smooth, spotter.refractory,
                                      spotter.frame_time, hours, args.max_fa)
        if tuned is not None:
            tuned = {**tuned[1], "thresholds": tuned[0]}
    n_occ = sum(len(v) for v in occs.values())

    console = Console(file=sys.stderr if args.json == "-" else sys.stdout, width=110)
    t = Table(title=f"kws eval-stream: {len(posts)} file(s), {seconds / 60:.1f} min, {n_occ} keywords\n"
                    f"smoothing {cfg.smooth_ms:g} ms, refractory {cfg.refractory_s:g} s")
    for col in ("threshold", "FRR", "FA/h", "false alarms", "wrong label", "latency p50", "latency p90"):
        t.add_column(col, justify="right")
    step = max(1, len(rows) // 14) if not args.all_rows else 1
    shown = {id(r) for r in rows[::step]} | {id(r) for r in (op, rows[-1]) if r is not None}
    per_label_model = own["threshold"] is None
    d_row = own if per_label_model else min(rows, key=lambda r: abs(r["threshold"] - cfg.threshold))
    shown.add(id(d_row))
    lat = lambda v: "-" if v is None else f"{v:.2f}s"

    def add(r, name):
        t.add_row(name, "-" if r["frr"] is None else f"{100 * r['frr']:.1f}%",
                  f"{r['fa_per_hour']:.2f}", str(r["false_alarms"]), str(r["wrong_label"]),
                  lat(r["latency_median_s"]), lat(r["latency_p90_s"]))
    for r in rows:
        if id(r) in shown:
            add(r, f"{r['threshold']:.2f}" + (" *" if r is op else (" d" if r is d_row else "")))
    if per_label_model:
        add(own, "model's d")
    if tuned is not None:
        add(tuned, "per-label t")
    console.print(t)
    console.print("* operating point (lowest FRR at ≤ %g FA/h), d the model's own threshold(s)" % args.max_fa
                  + (", t thresholds tuned per keyword here" if tuned is not None else ""))
    if per_label_model:
        console.print("model thresholds: " + " ".join(f"{k} {v:.2f}" for k, v in own["thresholds"].items()))
    if args.per_label:
        console.print("per-keyword thresholds at ≤ %g FA/h: " % args.max_fa + (
            "none fits" if tuned is None else " ".join(f"{k} {v:.2f}" for k, v in tuned["thresholds"].items())
            + f": FRR {100 * tuned['frr']:.1f}%, {tuned['fa_per_hour']:.2f} FA/h"))
    if op is None:
        console.print(f"no threshold reaches ≤ {args.max_fa:g} false alarms per hour")
    else:
        console.print(f"operating point: threshold {op['threshold']:.2f}: FRR {100 * op['frr']:.1f}%, "
                      f"{op['fa_per_hour']:.2f} FA/h, latency median "
                      + ("-" if op["latency_median_s"] is None else f"{op['latency_median_s']:.2f} s"))
    report = {"model": str(args.model) if args.model else "default", "data": str(data),
              "ground_truth": str(gt_path), "files": len(posts), "skipped": skipped,
              "hours": round(hours, 6), "occurrences": n_occ,
              "detector": {"smooth_ms": cfg.smooth_ms, "refractory_s": cfg.refractory_s,
                           "default_threshold": cfg.threshold},
              "matching": f"detection of L matches an unmatched occurrence of L with start <= time <= end + "
                          f"{MATCH_AFTER_END_S} s",
              "max_fa_per_hour": args.max_fa, "operating_point": op, "default": d_row, "model_setting": own,
              "per_label": tuned, "sweep": rows}
    if args.save_model:
        from .modelfile import save_bundle
        if args.per_label:
            if tuned is None:
                raise EvalError(f"no per-keyword thresholds fit <= {args.max_fa:g} FA/h: model not written")
            bundle.detector = {**cfg.to_dict(), "thresholds": tuned["thresholds"],
                               "threshold": round(float(max(tuned["thresholds"].values())), 4)}
            what = "per-keyword thresholds"
        else:
            if op is None:
                raise EvalError(f"no operating point at <= {args.max_fa:g} FA/h: model not written")
            bundle.detector = {**cfg.to_dict(), "thresholds": {}, "threshold": round(float(op["threshold"]), 4)}
            what = f"threshold {op['threshold']:.2f}"
        bundle.meta = {**bundle.meta, "threshold_chosen_on": f"{data} ({what} at <= {args.max_fa:g} FA/h)"}
        save_bundle(bundle, args.save_model)
        console.print(f"model with {what} -> {args.save_model}")
    if args.png:
        extra = ([(own, "model's per-keyword thresholds", "gD")] if per_label_model else []) + \
                ([(tuned, "per-keyword thresholds tuned here", "mP")] if tuned is not None else [])
        save_det_png(rows, args.png, hours, op, None if per_label_model else cfg.threshold,
                     title=f"DET: {len(posts)} file(s), {seconds / 60:.0f} min, {n_occ} keywords", extra=extra)
        console.print(f"DET curve -> {args.png}")
    if args.json:
        _write_json(report, args.json)
        if args.json != "-":
            console.print(f"report -> {args.json}")
    return 0


# ----------------------------------------------------------------------------------------------------
# CLI registration
# ----------------------------------------------------------------------------------------------------

def add_parser(sub) -> None:
    p = sub.add_parser("detect", help="detect keywords in audio files (streamed in chunks)",
                       description="Stream each file through the detector in fixed chunks and print "
                                   "detections: FILE  TIME  LABEL  SCORE.")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files or folders of them")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--chunk-ms", type=float, default=100.0, help="chunk length fed to the detector (default 100)")
    p.add_argument("--threshold", type=float, default=None, help="detection threshold (default: the model's)")
    p.add_argument("--keywords", default=None, help="comma-separated subset of keywords to report")
    p.add_argument("--json", action="store_true", help="JSON lines {file, time, label, score}")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("eval", help="accuracy on labelled 1 s clips (offline and streaming)",
                       description="Accuracy, keyword accuracy, per-class P/R/F1 and confusion matrix on "
                                   "labelled clips, offline (each clip from a zero state) and streaming "
                                   "(all clips through one stream, state carried).")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--data", nargs="+", required=True, metavar="SRC",
                   help="Speech Commands root, folder of word folders, CSV list (path,label) or audio files")
    p.add_argument("--split", default=None,
                   help="split to use (default: testing where the root has list files, else every clip)")
    p.add_argument("--all-unknown", action="store_true",
                   help="keep every non-target clip as _unknown_ (default: TF's 10%% sample)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT",
                   help="write a JSON report to OUT (no OUT: print it to stdout)")
    p.add_argument("--confusion", default=None, metavar="PNG", help="save the confusion matrices as PNG")
    p.add_argument("--seed", type=int, default=0, help="seed for the made-up silence clips")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("eval-stream", help="false rejects / false alarms per hour on long recordings",
                       description="Run the detector over long recordings with ground truth, sweep the "
                                   "threshold and report FRR, FA/h, wrong labels and latency.")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--data", required=True, metavar="DIR", help=f"folder of WAVs with {GROUND_TRUTH}")
    p.add_argument("--ground-truth", default=None, metavar="CSV", help=f"default DIR/{GROUND_TRUTH}")
    p.add_argument("--thresholds", default=None, help="START:STOP:STEP or a comma list (default 0.30:0.94:0.01, then 0.950:0.998:0.002)")
    p.add_argument("--max-fa", type=float, default=0.5, help="FA/h budget of the operating point (default 0.5)")
    p.add_argument("--png", default=None, metavar="PNG", help="save the DET curve")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT",
                   help="write a JSON report to OUT (no OUT: print it to stdout)")
    p.add_argument("--all-rows", action="store_true", help="print every threshold")
    p.add_argument("--smooth-ms", type=float, default=None, help="posterior smoothing window (default: the model's)")
    p.add_argument("--per-label", action="store_true",
                   help="also tune one threshold per keyword for the most hits within --max-fa")
    p.add_argument("--save-model", default=None, metavar="OUT",
                   help="write a copy of the model whose default threshold is the operating point's "
                        "(with --per-label: the per-keyword thresholds; choose them on a dev set, "
                        "never on the test streams)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval_stream)
