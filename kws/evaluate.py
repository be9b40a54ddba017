"""Evaluation commands on clips and files: `kws detect` and `kws eval`.

- `detect`: stream audio files through `KeywordSpotter` in fixed chunks (memory flat on long files).
- `eval`: 12-class accuracy on labelled 1 s clips, offline (each clip from a zero state) and streaming
  (all clips through one stream, state carried), with per-class precision/recall/F1 and a confusion matrix.

`kws eval-stream` (long recordings, false rejects vs false alarms per hour) is in stream_eval.py.
See docs/evaluate.md for the metrics and the matching rule.
"""
from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import is_audio
from .data.index import NON_KEYWORDS, SILENCE, UNKNOWN
from .errors import KwsError, first_line

STREAM_LABEL_MS = 100.0
"""The streaming protocol reads each clip over its last 100 ms of outputs: the carried-state twin of the
last-frame protocol, so the two differ only by the state. It does not follow the detector's smoothing
window (a model shipped with 300 ms smoothing would otherwise be read over frames before its word ends);
the detector protocol is the one that smooths as the detector does."""


class EvalError(KwsError):
    """Bad input to an evaluation command; printed by the CLI as one line."""


def _warn(msg: str) -> None:
    print(f"kws: warning: {msg}", file=sys.stderr)


def _load_bundle(path):
    """The run time's model (numpy engine): a .npz, or a .pt where torch is installed."""
    from .enginefile import load_model
    return load_model(path)


# ----------------------------------------------------------------------------------------------------
# kws detect
# ----------------------------------------------------------------------------------------------------

def _expand_audio(paths) -> list[Path]:
    """Files as given; directories expand to the audio files under them (sorted)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_audio(f))
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
    from .audio import AudioError, info, wav_promised_frames
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
            sr, _ch, frames = info(f)
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
            promised = wav_promised_frames(f)
            if promised is not None and promised > frames:
                _warn(f"{f}: header promises {promised / sr:.2f} s ({promised} samples), the file holds "
                      f"{frames / sr:.2f} s ({frames}): processed what is there (truncated recording?)")
            if n == 0:     # say so: silence must not look like "did not run" (JSON: stdout stays detections only)
                line = f"{f}  no keyword detected in {frames / sr:.2f} s of audio"
                print(f"kws: {line}" if args.json else line, file=sys.stderr if args.json else sys.stdout, flush=True)
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
        split_spec = "@" in spec and not Path(spec).exists()
        src = parse_root(spec)[0] if split_spec else Path(spec)
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
            items = scan_root(spec if split_spec else src)
            if not has_lists and split is None:
                items = [Item(it.path, it.label, it.word, it.speaker, "all") for it in items]
            want = split or ("testing" if has_lists else "all")
            chosen = select(items, labels, want, unknown_pct=unknown_pct)
            clips += [Clip(it.path, it.label, it.word) for it in chosen]
            noise += background_files([src])
        else:
            lab = _map_label(src.name, labels)
            files = sorted(f for f in src.iterdir() if f.is_file() and is_audio(f))
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
    from .progress import progress as tqdm
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
    """Each clip from a zero state: argmax of the last model output's logits (many-to-one), on the
    numpy engine (`bundle`: an EngineModel, a torch Bundle or a model path)."""
    from .enginefile import as_engine_model
    from .features import NumpyMFCC
    m = as_engine_model(bundle)
    mfcc = NumpyMFCC(m.features)
    out = []
    for i in range(0, len(waves), batch):
        logits, _ = m.engine.forward_all(mfcc(np.ascontiguousarray(waves[i:i + batch])))
        out.append(logits[:, -1].argmax(-1))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def predict_streaming(bundle, waves: np.ndarray, group: int = 32, label_frames: int | None = None):
    """All clips, one after another, through ONE stream (state carried, never reset).

    A clip's frames (model outputs) are those completed while its samples arrive. Its label is the argmax
    of the raw posteriors averaged over its last `label_frames` outputs (default: STREAM_LABEL_MS of them).
    """
    from .stream import KeywordSpotter
    spotter = KeywordSpotter(bundle)
    cfg = bundle.features
    k = label_frames or _label_frames(spotter)
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


DETECTOR_TAIL_S = 0.3
"""Low-level noise appended to each clip in the detector view. A word ending at the clip's last sample
is heard by the detector only after its frame targets (30 ms after the word), the 20 ms frame stack and
the smoothing window (100 ms by default, 200 ms in the shipped model) have passed: ~150-250 ms. 300 ms
leaves margin for slow onsets of the smoothed posterior and stays far below the 1 s refractory time, so
no clip is judged by audio it does not hold."""
DETECTOR_TAIL_DBFS = -60.0      # RMS of the tail's white noise: a quiet room, not digital silence
DETECTOR_THRESHOLD = 0.5        # fixed, so the protocol does not move with a model's tuned threshold


def detector_tail(n_clips: int, seconds: float = DETECTOR_TAIL_S, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """The quiet noise appended to each clip in the detector view, [n_clips, samples], seeded."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    return (rng.standard_normal((n_clips, n)) * 10 ** (DETECTOR_TAIL_DBFS / 20)).astype(np.float32)


def _detector_posteriors(m, waves: np.ndarray, tail_s: float, seed: int, batch: int):
    """Each clip from a zero state + `tail_s` of quiet noise through the engine, smoothed as the
    detector smooths: yields (clip index, smoothed posteriors [T, C])."""
    from .features import NumpyMFCC
    from .stream import KeywordSpotter, smooth_posteriors
    smooth = KeywordSpotter(m).smooth             # the detector's smoothing window, in model outputs
    tails = detector_tail(len(waves), tail_s, m.features.sample_rate, seed)
    mfcc = NumpyMFCC(m.features)
    for i in range(0, len(waves), batch):
        w = waves[i:i + batch]
        x = np.ascontiguousarray(np.concatenate([w, tails[i:i + batch]], axis=1), dtype=np.float32)
        f = mfcc(x)
        post, _ = m.engine.step(f[:, : f.shape[1] // m.cfg.stack * m.cfg.stack])   # whole GRU steps, as the spotter
        for j, p in enumerate(post):
            yield i + j, smooth_posteriors(p, smooth)


def predict_detector(bundle, waves: np.ndarray, tail_s: float = DETECTOR_TAIL_S,
                     threshold: "float | str" = DETECTOR_THRESHOLD, seed: int = 0, batch: int = 256) -> np.ndarray:
    """The detector's view of each clip: the clip from a zero state followed by `tail_s` of quiet noise,
    posteriors smoothed as the detector smooths them (`stream.smooth_posteriors`), and the detection
    rule (`stream.detect_frames`) run with one fixed threshold on the keywords (or, with threshold
    "model", the model file's own per-keyword thresholds: what a live detector fires on). Label: the
    first keyword that fires; if none fires, `_unknown_` when its smoothed posterior reaches the
    threshold, else `_silence_` (a detector reports neither; this keeps the 12-class score comparable)."""
    from .enginefile import as_engine_model
    from .stream import KeywordSpotter, detect_frames
    m = as_engine_model(bundle)
    labels = m.labels
    if threshold == "model":
        sp = KeywordSpotter(m)
        kw_thr, threshold = sp.label_thresholds.astype(np.float32), sp.cfg.threshold
    else:
        kw_thr = np.array([np.inf if l in NON_KEYWORDS else threshold for l in labels], np.float32)
    unk = labels.index(UNKNOWN) if UNKNOWN in labels else -1
    sil = labels.index(SILENCE) if SILENCE in labels else unk
    out = np.zeros(len(waves), np.int64)
    for i, sm in _detector_posteriors(m, waves, tail_s, seed, batch):
        dets = detect_frames(sm, kw_thr, refractory=len(sm) + 1)
        if dets:
            out[i] = dets[0][1]
        elif unk >= 0 and sm[:, unk].max() >= threshold:
            out[i] = unk
        else:
            out[i] = sil
    return out


def keyword_peaks(bundle, waves: np.ndarray, tail_s: float = DETECTOR_TAIL_S, seed: int = 0,
                  batch: int = 256) -> np.ndarray:
    """Per clip, the highest smoothed keyword posterior in the detector's view: how close the clip comes
    to firing the detector at any threshold (for a non-keyword clip, how hard a negative it is)."""
    from .enginefile import as_engine_model
    m = as_engine_model(bundle)
    kw = np.array([i for i, l in enumerate(m.labels) if l not in NON_KEYWORDS])
    out = np.zeros(len(waves), np.float32)
    for i, sm in _detector_posteriors(m, waves, tail_s, seed, batch):
        out[i] = sm[:, kw].max() if len(sm) and kw.size else 0.0
    return out


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
    return {SILENCE: "silence", UNKNOWN: "unknown"}.get(lab, lab)


def save_confusion_png(results: dict, labels: list[str], path) -> None:
    from .errors import require
    matplotlib = require("matplotlib", "--confusion (a PNG)")
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
    per = Table(title="per class (" + " | ".join(results) + ")")
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
    from .stream import KeywordSpotter
    thr = _detector_threshold(args.threshold)
    bundle = _load_bundle(args.model)
    labels = bundle.labels
    if thr == "model":
        thr_note = "the model's own threshold(s) " + _threshold_text(KeywordSpotter(bundle))
    else:
        thr_note = f"{thr:g}"
    clips, noise = collect_clips(args.data, labels, split=args.split, all_unknown=args.all_unknown)
    if args.noise:
        noise = _noise_files(args.noise)
    progress = not args.quiet
    waves, clips, skipped = load_clips(clips, noise, progress=progress, seed=args.seed)
    if not clips:
        raise EvalError("no readable clips to evaluate")
    y = np.array([labels.index(c.label) for c in clips])
    results = {"offline": classification_metrics(y, predict_offline(bundle, waves), labels),
               "streaming": classification_metrics(y, predict_streaming(bundle, waves), labels),
               "detector": classification_metrics(y, predict_detector(bundle, waves, threshold=thr, seed=args.seed),
                                                    labels)}
    console = Console(file=sys.stderr if args.json == "-" else sys.stdout, width=max(100, 12 * len(labels) + 20))
    _print_eval(results, labels, console)
    console.print(f"detector view at threshold {thr_note}")
    if skipped:
        console.print(f"skipped {skipped} unreadable file(s)")
    report = {"model": str(args.model) if args.model else "default", "data": [str(d) for d in args.data],
              "split": args.split, "all_unknown": bool(args.all_unknown), "labels": labels,
              "noise": args.noise, "detector_threshold": thr_note,
              "skipped": skipped, "protocols": {
                  "offline": "last frame: each clip from a zero state, argmax of its last frame's logits "
                             "(the published many-to-one protocol)",
                  "streaming": "argmax of raw posteriors averaged over the last "
                               f"{_label_frames(KeywordSpotter(bundle))} outputs ({STREAM_LABEL_MS:g} ms) of "
                               "each clip, state carried across clips",
                  "detector": f"each clip from a zero state + {DETECTOR_TAIL_S:g} s of {DETECTOR_TAIL_DBFS:g} dBFS "
                              f"white noise; the first keyword whose smoothed posterior reaches "
                              f"{thr_note} (the detector's rule), else _unknown_ if its smoothed "
                              f"posterior reaches it, else _silence_"},
              **results}
    if args.confusion:
        save_confusion_png(results, labels, args.confusion)
        console.print(f"confusion matrix -> {args.confusion}")
    if args.json:
        _write_report(report, args.json, console)
    return 0


def _detector_threshold(value: str | None) -> "float | str":
    """--threshold of kws eval: None -> the fixed protocol threshold, 'model' -> the model's own, else a number."""
    if value is None:
        return DETECTOR_THRESHOLD
    if value == "model":
        return value
    try:
        t = float(value)
    except ValueError:
        raise EvalError(f"--threshold must be a number in (0, 1] or 'model', got {value!r}") from None
    _check_threshold(t)
    return t


def _threshold_text(spotter) -> str:
    thr = spotter.cfg.threshold
    extra = {k: v for k, v in spotter.cfg.thresholds.items() if v != thr}
    return f"{thr:g}" + (" (" + ", ".join(f"{k} {v:g}" for k, v in sorted(extra.items())) + ")" if extra else "")


def _noise_files(folder) -> list[str]:
    p = Path(folder)
    if not p.is_dir():
        raise EvalError(f"--noise: no such folder: {p}")
    files = sorted(str(f) for f in p.iterdir() if f.is_file() and is_audio(f))
    if not files:
        raise EvalError(f"--noise: no audio files in {p}")
    return files


def _label_frames(spotter) -> int:
    """STREAM_LABEL_MS in model outputs."""
    return max(1, int(round(STREAM_LABEL_MS / 1000 / spotter.hop_s)))


def _write_json(obj, path) -> None:
    if str(path) == "-":
        print(json.dumps(obj, indent=1))
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=1) + "\n")


def _write_report(report: dict, dest: str, console) -> None:
    """--json: to stdout for '-', else to the file, saying where."""
    _write_json(report, dest)
    if dest != "-":
        console.print(f"report -> {dest}")


# ----------------------------------------------------------------------------------------------------
# CLI registration
# ----------------------------------------------------------------------------------------------------

def add_parser(sub) -> None:
    from .commands import SUMMARY
    p = sub.add_parser("detect", help=SUMMARY["detect"],
                       description="Stream each file through the detector in fixed chunks and print "
                                   "detections: FILE  TIME  LABEL  SCORE.")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files or folders of them")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--chunk-ms", type=float, default=100.0, help="chunk length fed to the detector (default 100)")
    p.add_argument("--threshold", type=float, default=None, help="detection threshold (default: the model's)")
    p.add_argument("--keywords", default=None, help="comma-separated subset of keywords to report")
    p.add_argument("--json", action="store_true", help="JSON lines {file, time, label, score}")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("eval", help=SUMMARY["eval"],
                       description="Accuracy, keyword accuracy, per-class P/R/F1 and confusion matrix on "
                                   "labelled clips, three ways: offline (each clip from a zero state, read at "
                                   "its last frame), streaming (all clips through one stream, state carried) "
                                   f"and detector (each clip + {DETECTOR_TAIL_S:g} s of quiet noise, labelled by "
                                   f"the detection rule at threshold {DETECTOR_THRESHOLD:g}).")
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
    p.add_argument("--noise", default=None, metavar="DIR",
                   help="background-noise folder for the made-up _silence_ clips (default: the data roots' "
                        "_background_noise_; a root without one gets silent zeros)")
    p.add_argument("--seed", type=int, default=0, help="seed for the made-up silence clips")
    p.add_argument("--threshold", default=None, metavar="T|model",
                   help=f"threshold of the detector view (default {DETECTOR_THRESHOLD:g}, fixed so that models "
                        "compare; 'model': the model file's own, i.e. what fires live)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)
