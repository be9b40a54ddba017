"""`kws eval-stream`: the detector on long recordings with ground truth.

What users feel is missed keywords, false alarms per hour and latency, not clip accuracy. Each file is
streamed once through `KeywordSpotter` to get per-frame posteriors; the detector's rule (smoothing,
threshold, refractory time) is then replayed for every threshold of a sweep, which gives exactly the
detections the live detector would give (tests/test_evaluate.py checks it). Reports FRR, FA/h, wrong
labels, latency, the operating point at a FA/h budget and a DET curve; `--per-label` tunes a threshold
per keyword. Benchmark streams: data_scripts/make_stream_benchmark.py. Metrics: docs/evaluate.md.
"""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .audio import is_audio
from .data.index import NON_KEYWORDS
from .evaluate import EvalError, _load_bundle, _warn, _write_report
from .stream import detect_frames, smooth_posteriors

GROUND_TRUTH = "ground_truth.csv"
MATCH_AFTER_END_S = 1.0        # a detection may come up to this long after the keyword's end


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


def score_detections(per_file: dict[str, list[tuple[float, str]]], occs: dict, hours: float) -> dict:
    """Detections (time, label) per file against the occurrences per file (`match_detections`):
    hits, FRR, false alarms per hour, wrong labels, latency, misses per keyword. Any detector's output
    can be scored this way (benchmarks/peers uses it for the other spotters)."""
    n_occ = sum(len(v) for v in occs.values())
    n_det = n_fa = n_wrong = n_hit = 0
    lat = []
    per_label_miss: dict[str, int] = {}
    for name in sorted(set(per_file) | set(occs)):
        dets, occ = per_file.get(name, []), occs.get(name, [])
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


@dataclass
class Streams:
    """Evaluated files ready to be scored at any thresholds: smoothed keyword posteriors, computed once,
    with the ground truth and the detector's timing."""
    sm: dict                 # file name -> smoothed keyword posteriors [T, K]
    occs: dict               # file name -> keyword occurrences
    labels: list
    kw_idx: np.ndarray       # model label index of each keyword column
    refractory: int
    frame_time: Callable[[int], float]
    hours: float
    words: dict = field(default_factory=dict)   # file name -> every ground-truth row, other words too

    @classmethod
    def build(cls, files: dict, occs: dict, labels: list[str], smooth: int, refractory: int, frame_time,
              hours: float, words: dict | None = None) -> "Streams":
        """files: name -> raw posteriors [T, C]; occs: name -> keyword occurrences; words: name -> all
        ground-truth rows (non-keywords too), only to say what each false alarm fell on."""
        kw_idx = np.array([i for i, l in enumerate(labels) if l not in NON_KEYWORDS])
        sm = {name: smooth_posteriors(post, smooth)[:, kw_idx] if len(post) else np.zeros((0, len(kw_idx)))
              for name, post in files.items()}
        return cls(sm, occs, labels, kw_idx, refractory, frame_time, hours, words or {})

    def detections(self, thr: np.ndarray) -> dict:
        """file name -> the detector's (time, label) list at thresholds thr (one per keyword)."""
        return {name: [(self.frame_time(t), self.labels[self.kw_idx[k]])
                       for t, k, _ in detect_frames(sm, thr, self.refractory)]
                for name, sm in self.sm.items()}

    def score(self, thr: np.ndarray) -> dict:
        """One operating point (a threshold per keyword) over all files: hits, FRR, FA/h, latency."""
        per_file = self.detections(thr)
        return {"threshold": round(float(thr.min()), 4) if np.ptp(thr) == 0 else None,
                **score_detections(per_file, self.occs, self.hours)}

    def missed(self, thr: np.ndarray) -> dict:
        """file name -> one bool per keyword occurrence (True: no detection matched it) at thresholds thr."""
        per_file, out = self.detections(thr), {}
        for name, occ in self.occs.items():
            hit = {o for _, o in match_detections(per_file.get(name, []), occ)[0]}
            out[name] = [i not in hit for i in range(len(occ))]
        return out

    def false_alarm_sources(self, thr: np.ndarray) -> list[dict]:
        """What was said under each false alarm at thresholds thr: the latest-starting ground-truth row
        with start <= time <= end + MATCH_AFTER_END_S (its `word` column, else its label; "(no word)" for
        noise or silence). A keyword heard as another shows as e.g. "down" on "no", a repeat as "yes" on
        "yes". -> [{"label", "on", "count"}], most frequent first. Tells which words to train against."""
        count: dict = {}
        for name, dets in self.detections(thr).items():
            _, fa, _ = match_detections(dets, self.occs.get(name, []))
            rows = self.words.get(name, [])
            for di in fa:
                t, lab = dets[di]
                under = [o for o in rows if o.start <= t <= o.end + MATCH_AFTER_END_S]
                o = max(under, key=lambda o: o.start) if under else None
                on = "(no word)" if o is None else (o.extra.get("word") or o.label)
                count[lab, on] = count.get((lab, on), 0) + 1
        return [{"label": lab, "on": on, "count": c}
                for (lab, on), c in sorted(count.items(), key=lambda kv: (-kv[1], kv[0]))]

    def sweep(self, thresholds) -> list[dict]:
        """One row per threshold, the same for every keyword."""
        return [self.score(np.full(len(self.kw_idx), float(t))) for t in thresholds]

    def tune(self, thresholds, max_fa_per_hour: float) -> tuple[dict, dict] | None:
        """A threshold per keyword that maximises hits within the false-alarm budget (choose it on dev data).

        Each keyword is swept alone (others off) to get its own hits and false alarms per threshold; a
        small knapsack then spends the budget (max_fa_per_hour * hours false alarms, rounded down) where it
        buys the most hits. Keywords interact only through the refractory time and argmax, so the chosen
        set is scored again jointly. -> ({label: threshold}, joint row), or None if nothing fits."""
        K = len(self.kw_idx)
        budget = int(np.floor(max_fa_per_hour * self.hours + 1e-9))
        thresholds = np.sort(np.asarray(thresholds, float))
        curves = []   # per keyword: list of (threshold, hits, false alarms)
        for k in range(K):
            lab = self.labels[self.kw_idx[k]]
            alone = replace(self, occs={n: [o for o in v if o.label == lab] for n, v in self.occs.items()})
            row_of = []
            for t in thresholds:
                thr = np.full(K, np.inf)
                thr[k] = t
                r = alone.score(thr)
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
        return {self.labels[self.kw_idx[k]]: round(float(thr[k]), 4) for k in range(K)}, self.score(thr)


def sweep(files: dict, occs: dict, labels: list[str], thresholds, smooth: int, refractory: int,
          frame_time, hours: float) -> list[dict]:
    """`Streams.sweep` from raw posteriors (files: name -> [T, C]; occs: name -> keyword occurrences)."""
    return Streams.build(files, occs, labels, smooth, refractory, frame_time, hours).sweep(thresholds)


def tune_label_thresholds(files: dict, occs: dict, labels: list[str], thresholds, smooth: int, refractory: int,
                          frame_time, hours: float, max_fa_per_hour: float) -> tuple[dict, dict] | None:
    """`Streams.tune` from raw posteriors."""
    return Streams.build(files, occs, labels, smooth, refractory, frame_time, hours).tune(thresholds,
                                                                                         max_fa_per_hour)


FA_BUDGETS = (0.5, 2.0, 5.0)     # false alarms per hour at which every report gives the best FRR


def snr_band(snr_db: float) -> str:
    """Ground-truth SNRs (make_stream_benchmark.py's --snrs, or what a spiky noise allowed) to the nearest
    5 dB, 25 dB and above together: the bands a report of misses by noise level uses."""
    return "25+" if snr_db >= 22.5 else f"{int(5 * round(snr_db / 5))}"


def frr_by_snr(streams: "Streams", thr: np.ndarray) -> dict | None:
    """Misses by SNR band at thresholds thr, where every occurrence has an `snr_db` column; else None."""
    occs = [o for v in streams.occs.values() for o in v]
    try:
        bands = {id(o): snr_band(float(o.extra["snr_db"])) for o in occs}
    except (KeyError, TypeError, ValueError):
        return None
    if not occs:
        return None
    count: dict = {}
    for name, miss in streams.missed(thr).items():
        for o, m in zip(streams.occs[name], miss):
            n, k = count.get(bands[id(o)], (0, 0))
            count[bands[id(o)]] = (n + 1, k + int(m))
    order = sorted(count, key=lambda b: float(b.rstrip("+")))
    return {b: {"keywords": count[b][0], "misses": count[b][1], "frr": round(count[b][1] / count[b][0], 4)}
            for b in order}


def operating_point(rows: list[dict], max_fa_per_hour: float = 0.5) -> dict | None:
    """Lowest FRR among thresholds with FA/h <= max (ties: fewer FA/h, then the lower threshold)."""
    ok = [r for r in rows if r["fa_per_hour"] is not None and r["fa_per_hour"] <= max_fa_per_hour
          and r["frr"] is not None]
    if not ok:
        return None
    return min(ok, key=lambda r: (r["frr"], r["fa_per_hour"], r["threshold"]))


def zero_fa_x(hours: float, max_fa: float) -> float:
    """Where a DET plot (log x) draws 0 FA/h: at half of one false alarm, but left of the budget line (on
    30 min, half a false alarm is 1 FA/h, and a zero-FA point must not look like it missed 0.5 FA/h)."""
    return min(0.5 / hours, max_fa / 2) if hours > 0 else 0.01


def save_det_png(rows: list[dict], path, hours: float, op: dict | None, default_thr: float | None,
                 title: str = "", extra: list[tuple[dict, str, str]] = (), max_fa: float = 0.5) -> None:
    """FRR vs FA/h of the sweep; `extra`: (row, legend, matplotlib format) points such as per-keyword
    thresholds."""
    from .errors import require
    matplotlib = require("matplotlib", "--png (a DET plot)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    floor = zero_fa_x(hours, max_fa)
    xs = np.array([max(r["fa_per_hour"], floor) for r in rows])
    ys = np.array([100 * r["frr"] for r in rows])
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    ax.plot(xs, ys, "o-", ms=3, label="threshold sweep")
    for r, x, y in zip(rows, xs, ys):
        if abs(r["threshold"] * 10 - round(r["threshold"] * 10)) < 1e-6:
            ax.annotate(f"{r['threshold']:.1f}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if op is not None:
        ax.plot([max(op["fa_per_hour"], floor)], [100 * op["frr"]], "r*", ms=14,
                label=f"≤{max_fa:g} FA/h: thr {fmt_thr(op['threshold'])}, FRR {100 * op['frr']:.1f}%")
    if default_thr is not None:
        d = min(rows, key=lambda r: abs(r["threshold"] - default_thr))
        ax.plot([max(d["fa_per_hour"], floor)], [100 * d["frr"]], "ks", ms=7, mfc="none",
                label=f"model default thr {fmt_thr(d['threshold'])}")
    for r, name, fmt in extra:
        ax.plot([max(r["fa_per_hour"], floor)], [100 * r["frr"]], fmt, ms=9,
                label=f"{name}: FRR {100 * r['frr']:.1f}%, {r['fa_per_hour']:.2f} FA/h")
    ax.axvline(max_fa, color="gray", ls=":", lw=1)
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


def fmt_thr(t: float) -> str:
    """0.8 -> '0.80', 0.976 -> '0.976': two decimals, three where the fine grid near 1 needs them."""
    return f"{t:.3f}" if abs(t * 100 - round(t * 100)) > 1e-6 else f"{t:.2f}"


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


def _stream_set(data: Path, ground_truth: str | None, prefix: str = ""):
    """One --data folder (or file): -> ([(name, audio path)], ground-truth path, occurrences), names
    and the occurrences' files prefixed by `prefix` so several folders can be scored as one set."""
    if not data.exists():
        raise EvalError(f"no such file or directory: {data}")
    gt_path = Path(ground_truth) if ground_truth else (data / GROUND_TRUTH if data.is_dir() else None)
    if gt_path is None or not gt_path.exists():
        raise EvalError(f"ground truth not found: {gt_path or data} (a CSV file,label,start,end; "
                        "see data_scripts/make_stream_benchmark.py)")
    base = data if data.is_dir() else data.parent
    files = [data] if data.is_file() else sorted(f for f in data.iterdir() if is_audio(f))
    if not files:
        raise EvalError(f"no audio files in {data}")
    named = [(prefix + (str(w.relative_to(base)) if w.is_relative_to(base) else str(w)), w) for w in files]
    occ = read_ground_truth(gt_path)
    if prefix:
        occ = [replace(o, file=prefix + o.file) for o in occ]
    return named, gt_path, occ


def cmd_eval_stream(args) -> int:
    from rich.console import Console
    from rich.table import Table
    from .progress import progress as tqdm
    from .audio import AudioError, info
    from .stream import KeywordSpotter
    datas = [Path(d) for d in args.data]
    if args.ground_truth and len(datas) > 1:
        raise EvalError("--ground-truth applies to one --data folder; give each folder its own "
                        f"{GROUND_TRUTH}")
    if args.save_model and Path(args.save_model).suffix != ".npz":      # before the sweep, not after it
        raise EvalError(f"--save-model {args.save_model}: kws model files are .npz; name it "
                        f"{Path(args.save_model).with_suffix('.npz').name}")
    thresholds = _parse_thresholds(args.thresholds)
    sets = [_stream_set(d, args.ground_truth, prefix=f"{d}/" if len(datas) > 1 else "") for d in datas]
    data = datas[0] if len(datas) == 1 else " + ".join(map(str, datas))
    gt_path = sets[0][1] if len(datas) == 1 else " + ".join(str(s[1]) for s in sets)
    bundle = _load_bundle(args.model)
    labels = bundle.labels
    keywords = [l for l in labels if l not in NON_KEYWORDS]
    wavs = [(name, w) for ws, _, _ in sets for name, w in ws]
    all_occ = [o for _, _, occ in sets for o in occ]
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
    for name, w in tqdm(wavs, desc="streaming", unit="file", disable=args.quiet or len(wavs) < 2, file=sys.stderr,
                        leave=False):
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
    words: dict[str, list[Occurrence]] = {}
    for o in all_occ:
        words.setdefault(o.file, []).append(o)
    streams = Streams.build(posts, occs, labels, spotter.smooth, spotter.refractory, spotter.frame_time, hours,
                            words)
    rows = streams.sweep(thresholds)
    op = operating_point(rows, args.max_fa)
    own_thr = spotter.label_thresholds[streams.kw_idx]
    own = streams.score(own_thr)
    own["thresholds"] = {labels[i]: round(float(t), 4) for i, t in zip(streams.kw_idx, own_thr)}
    tuned = None
    if args.per_label:
        tuned = streams.tune(thresholds, args.max_fa)
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
            add(r, f"{fmt_thr(r['threshold'])}" + (" *" if r is op else (" d" if r is d_row else "")))
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
        console.print(f"operating point: threshold {fmt_thr(op['threshold'])}: FRR {100 * op['frr']:.1f}%, "
                      f"{op['fa_per_hour']:.2f} FA/h, latency median "
                      + ("-" if op["latency_median_s"] is None else f"{op['latency_median_s']:.2f} s"))
    by_snr = None if op is None else frr_by_snr(streams, np.full(len(streams.kw_idx), op["threshold"]))
    if by_snr:
        console.print(f"FRR by SNR at threshold {fmt_thr(op['threshold'])}: " + ", ".join(
            f"{b} dB {100 * v['frr']:.1f}% ({v['misses']}/{v['keywords']})" for b, v in by_snr.items()))
    fa_on = None if op is None else streams.false_alarm_sources(np.full(len(streams.kw_idx), op["threshold"]))
    if fa_on:
        top = ", ".join(f"{r['label']} on {r['on']} {r['count']}" for r in fa_on[:8])
        more = sum(r["count"] for r in fa_on[8:])
        console.print(f"false alarms at threshold {fmt_thr(op['threshold'])}, by what was said under them: {top}"
                      + (f", {more} more" if more else ""))
    budgets = {f"{b:g}": operating_point(rows, b) for b in FA_BUDGETS}
    console.print("FRR at ≤ " + ", ≤ ".join(
        f"{b} FA/h: " + ("none" if o is None else f"{100 * o['frr']:.1f}% (thr {fmt_thr(o['threshold'])})")
        for b, o in budgets.items()))
    report = {"model": str(args.model) if args.model else "default", "data": str(data),
              "ground_truth": str(gt_path), "files": len(posts), "skipped": skipped,
              "hours": round(hours, 6), "occurrences": n_occ,
              "detector": {"smooth_ms": cfg.smooth_ms, "refractory_s": cfg.refractory_s,
                           "default_threshold": cfg.threshold},
              "matching": f"detection of L matches an unmatched occurrence of L with start <= time <= end + "
                          f"{MATCH_AFTER_END_S} s",
              "max_fa_per_hour": args.max_fa, "operating_point": op, "default": d_row, "model_setting": own,
              "per_label": tuned, "at_fa_budgets": budgets, "frr_by_snr_at_operating_point": by_snr,
              "false_alarms_at_operating_point": fa_on,
              "sweep": rows}
    if args.save_model:
        from .enginefile import save_model
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
            what = f"threshold {fmt_thr(op['threshold'])}"
        bundle.meta = {**bundle.meta, "threshold_chosen_on": f"{data} ({what} at <= {args.max_fa:g} FA/h)"}
        save_model(bundle, args.save_model)
        console.print(f"model with {what} -> {args.save_model}")
    if args.png:
        extra = ([(own, "model's per-keyword thresholds", "gD")] if per_label_model else []) + \
                ([(tuned, "per-keyword thresholds tuned here", "mP")] if tuned is not None else [])
        save_det_png(rows, args.png, hours, op, None if per_label_model else cfg.threshold,
                     title=f"DET: {len(posts)} file(s), {seconds / 60:.0f} min, {n_occ} keywords", extra=extra,
                     max_fa=args.max_fa)
        console.print(f"DET curve -> {args.png}")
    if args.json:
        _write_report(report, args.json, console)
    return 0


def add_parser(sub) -> None:
    from .commands import SUMMARY
    p = sub.add_parser("eval-stream", help=SUMMARY["eval-stream"],
                       description="Run the detector over long recordings with ground truth, sweep the "
                                   "threshold and report FRR, FA/h, wrong labels and latency.")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--data", required=True, nargs="+", metavar="DIR",
                   help=f"folder of WAVs with {GROUND_TRUTH}; several folders are scored as one set (their "
                        "hours, keywords and false alarms pooled)")
    p.add_argument("--ground-truth", default=None, metavar="CSV", help=f"default DIR/{GROUND_TRUTH}")
    p.add_argument("--thresholds", default=None,
                   help="START:STOP:STEP or a comma list (default 0.30:0.94:0.01, then 0.950:0.998:0.002)")
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
                        "never on the test streams); a .npz model file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval_stream)
