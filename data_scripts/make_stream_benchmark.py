#!/usr/bin/env python3
"""Long test streams for `kws eval-stream`: keywords at known times among other words, pauses and noise.

Each stream (16 kHz mono WAV) is a timeline of
- keyword clips (voices held out of training), at least --min-gap seconds apart (end to next start);
- false-alarm bait: other words of the synthetic corpus's testing split and real non-keyword speech
  (bed/cat/happy clips of ../shared/real_speech's validation split), alone or in short runs;
- pauses of 0.3-8 s;
over background noise (../shared/real_speech/_background_noise_) that changes every 30-90 s, at an SNR drawn
from --snrs (default 20, 10, 5 dB: noise RMS relative to the file's speech level; a spiky noise such as
dude_miaowing has its gain capped so its peaks stay below -7 dBFS, and ground_truth.csv records the SNR
actually used) plus a faint floor at -70 dBFS (no digital silence).
Every clip is trimmed to its speech span by frame energy before it is placed, so start/end are the speech.

Keyword sources (--keywords-from): synth = the synthetic corpus's testing split (voices.csv split "testing",
never trained on); real = ../shared/real_speech testing split keyword clips (never used in training); both;
sc-validation = the validation speakers of ../shared/speech_commands_part (real voices, a DEV set: choose
thresholds there); real-validation = ../shared/real_speech's validation split (a DEV set too: for a
custom wake word such as happy, `--keywords happy`). With sc-validation or real-validation the real bait
also includes speech_commands_part's validation-speaker words that are not keywords (the ten commands
too, for a wake word), and `--real-bait 1` makes every bait word real.

Output: OUT/stream_XX.wav, OUT/ground_truth.csv with columns
    file,label,start,end,word,source,snr_db
where label is the keyword, or `_unknown_` for bait words (not targets), and start/end are seconds of the
speech span; OUT/benchmark.json records the arguments and totals.

    .venv/bin/python data_scripts/make_stream_benchmark.py --out data/streams --minutes 30 --files 6
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from kws.audio import AudioError, is_audio, load  # noqa: E402
from kws.data.dataset import speech_span as _speech_span  # noqa: E402
from kws.data.index import KEYWORDS10, read_list, speaker_of, which_set  # noqa: E402

SR = 16000
REAL = ROOT.parent / "shared" / "real_speech"
SYNTH = ROOT / "data" / "synth"
SC_PART = ROOT.parent / "shared" / "speech_commands_part"
REAL_WORDS = ROOT.parent / "shared" / "real_words"
REAL_BAIT_WORDS = ("bed", "cat", "happy")


def speech_span(x: np.ndarray):
    """(start, end) samples of the speech in a clip (None: silent): 25 ms frames within 35 dB of the
    loudest and above -60 dBFS, with a 20 ms margin (the training targets' definition, wider here)."""
    return _speech_span(x, SR, rel_db=35.0, floor_db=-60.0, win_s=0.025, hop_s=0.010, margin_s=0.02)


def active_rms(x: np.ndarray) -> float:
    """RMS over the louder half of 10 ms frames: a speech level that ignores pauses."""
    n = len(x) // 160
    if n == 0:
        return float(np.sqrt(np.mean(x ** 2) + 1e-12))
    fr = np.sqrt(np.mean(x[: n * 160].reshape(n, 160) ** 2, axis=1))
    return float(np.sqrt(np.mean(np.sort(fr)[n // 2:] ** 2)) + 1e-9)


def synth_testing(synth: Path, split: str = "testing") -> list[str]:
    """Relative paths of the synthetic corpus's testing (or validation) split (its list file, else voices.csv)."""
    lst = read_list(synth / f"{split}_list.txt")
    if lst:
        return sorted(lst)
    vc = synth / "voices.csv"
    if not vc.exists():
        sys.exit(f"{synth}: no testing_list.txt or voices.csv (is the synthetic corpus built?)")
    with open(vc, newline="") as fh:
        test = {r["hash"] for r in csv.DictReader(fh) if r["split"] == split}
    return sorted(f"{p.parent.name}/{p.name}" for p in synth.glob("*/*") if is_audio(p)
                  if not p.parent.name.startswith("_") and p.name.split("_nohash_")[0] in test)


def pools(args) -> tuple[list[tuple[str, str, Path]], list[tuple[str, str, Path]]]:
    """(keyword clips, bait clips) as (word, source, path)."""
    kws = set(args.keywords)
    keyword, bait = [], []
    # the synthetic split supplies bait words unless every bait word is real; keywords only if asked
    if args.keywords_from in ("synth", "both") or args.real_bait < 1:
        for rel in synth_testing(args.synth, args.split):
            w = rel.split("/")[0]
            p = args.synth / rel
            if not p.exists():
                continue
            if w in kws:
                if args.keywords_from in ("synth", "both"):
                    keyword.append((w, "synth", p))
            else:
                bait.append((w, "synth", p))
    if args.keywords_from in ("real", "both"):
        for rel in sorted(read_list(args.real / "testing_list.txt")):
            w = rel.split("/")[0]
            if w in kws and (args.real / rel).exists():
                keyword.append((w, "real", args.real / rel))
    real_dev = args.keywords_from in ("sc-validation", "real-validation")
    if args.keywords_from == "real-validation":      # e.g. a custom wake word: happy, bed, cat
        for rel in sorted(read_list(args.real / "validation_list.txt")):
            w = rel.split("/")[0]
            if w in kws and (args.real / rel).exists():
                keyword.append((w, "real", args.real / rel))
    if real_dev:
        for rel in sorted(read_list(args.sc / "validation_list.txt")):
            w = rel.split("/")[0]
            if not (args.sc / rel).exists():
                continue
            if w not in kws:
                bait.append((w, "real", args.sc / rel))
            elif args.keywords_from == "sc-validation":
                keyword.append((w, "real", args.sc / rel))
    for rel in sorted(read_list(args.real / "validation_list.txt")):
        w = rel.split("/")[0]
        if w in REAL_BAIT_WORDS and w not in kws and (args.real / rel).exists():
            bait.append((w, "real", args.real / rel))
    # real_words' other words (cut from real sentences), only its validation speakers: training reads it
    # as real_words@10,0, i.e. the same speaker-hash rule with 10% validation
    unk = args.real_words / "_unknown_" if args.real_words else None
    if real_dev and unk is not None and unk.is_dir():
        for p in sorted(unk.iterdir()):
            if is_audio(p) and which_set(speaker_of(p), 10, 0) == "validation":
                bait.append((p.name.split("_")[0], "real", p))
    return keyword, bait


class ClipCache:
    def __init__(self):
        self.cache = {}

    def get(self, path: Path):
        if path not in self.cache:
            try:
                x = load(path)
            except AudioError as e:
                print(f"warning: {e}", file=sys.stderr)
                self.cache[path] = None
                return None
            span = speech_span(x)
            self.cache[path] = None if span is None or span[1] - span[0] < 0.1 * SR else x[span[0]:span[1]].copy()
        return self.cache[path]


def noise_bed(n: int, noises: list[np.ndarray], snrs: list[float], speech_rms: float, rng: random.Random):
    """Background of n samples: segments of 30-90 s, each a random noise file at a random SNR, with
    50 ms crossfades. Returns (noise, per-sample SNR index array as segment list [(start, end, snr)])."""
    out = np.zeros(n, np.float32)
    segs = []
    t = 0
    fade = int(0.05 * SR)
    while t < n:
        L = min(n - t, int(rng.uniform(30, 90) * SR))
        snr = rng.choice(snrs)
        src = rng.choice(noises) if noises else None
        if src is None:
            seg = np.random.default_rng(rng.randrange(2 ** 32)).normal(0, 1, L + fade).astype(np.float32)
        else:
            reps = int(np.ceil((L + fade) / len(src))) + 1
            tiled = np.tile(src, reps)
            off = rng.randrange(len(src))
            seg = tiled[off:off + L + fade].copy()
        rms = float(np.sqrt(np.mean(seg ** 2))) + 1e-9
        gain = (speech_rms / 10 ** (snr / 20)) / rms
        gain = min(gain, 0.45 / (float(np.abs(seg).max()) + 1e-9))   # spiky noise (a cat): cap its peaks
        snr = round(20 * np.log10(speech_rms / (rms * gain)), 1)        # the SNR actually used
        seg *= gain
        env = np.ones(len(seg), np.float32)
        env[:fade] = np.linspace(0, 1, fade)
        env[-fade:] = np.linspace(1, 0, fade)
        seg *= env
        end = min(n, t + len(seg))
        out[t:end] += seg[: end - t]
        segs.append((t / SR, (t + L) / SR, snr))
        t += L
    return out, segs


def make_stream(idx: int, seconds: float, keyword, bait, cache: ClipCache, noises, args, rng: random.Random):
    n = int(seconds * SR)
    speech = np.zeros(n, np.float32)
    speech_level = 10 ** (rng.uniform(-28, -20) / 20)     # the file's speech level (active RMS)
    real_bait = [b for b in bait if b[1] == "real"]
    synth_bait = [b for b in bait if b[1] != "real"] or real_bait
    events = []
    t = rng.uniform(1.0, 3.0)
    last_kw_end = -1e9
    while True:
        r = rng.random()
        if r < args.keyword_rate:
            kind = "keyword"
        elif r < args.keyword_rate + 0.12:
            kind = "pause"
        else:
            kind = "bait"
        if kind == "pause":
            t += rng.uniform(*args.pause)
            continue
        if kind == "keyword":
            t = max(t, last_kw_end + args.min_gap)
            picks = [rng.choice(keyword)]
        else:
            picks = [rng.choice(real_bait if real_bait and rng.random() < args.real_bait else synth_bait)
                     for _ in range(rng.choice(args.bait_run))]
        placed_any = False
        for j, (word, src, path) in enumerate(picks):
            x = cache.get(path)
            if x is None:
                continue
            if kind == "bait" and j > 0:
                t += rng.uniform(0.08, 0.3)            # short gaps inside a run of words
            if kind == "bait" and t < last_kw_end + 0.3:
                t = last_kw_end + 0.3
            start = int(t * SR)
            if start + len(x) > n - int(0.5 * SR):
                break
            gain = speech_level * 10 ** (rng.uniform(-4, 4) / 20) / active_rms(x)
            gain = min(gain, 0.5 / (np.abs(x).max() + 1e-9))   # peaks <= -6 dBFS: no clipping
            speech[start:start + len(x)] += x * gain
            s, e = start / SR, (start + len(x)) / SR
            events.append({"label": word if kind == "keyword" else "_unknown_", "start": round(s, 3),
                           "end": round(e, 3), "word": word, "source": src})
            if kind == "keyword":
                last_kw_end = e
            t = e
            placed_any = True
        if t >= seconds - 1.5 or (not placed_any and int(t * SR) + SR > n - int(0.5 * SR)):
            break
        t += rng.uniform(*args.gap)
    noise, segs = noise_bed(n, noises, args.snrs, speech_level, rng)
    floor = np.random.default_rng(rng.randrange(2 ** 32)).normal(0, 10 ** (-70 / 20), n).astype(np.float32)
    y = speech + noise + floor
    peak = float(np.abs(y).max())
    if peak > 0.95:            # loud noise bursts: scale the whole file (keeps every SNR), never clip
        y *= 0.95 / peak
    for ev in events:
        mid = (ev["start"] + ev["end"]) / 2
        ev["snr_db"] = next((snr for a, b, snr in segs if a <= mid < b), segs[-1][2])
    name = f"stream_{idx:02d}.wav"
    sf.write(args.out / name, y, SR, subtype="PCM_16")
    return name, events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=30.0, help="total length of all streams (default 30)")
    ap.add_argument("--files", type=int, default=6, help="number of stream files (default 6)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=("testing", "validation"), default="testing",
                    help="synthetic voices to use: testing (the benchmark) or validation (a dev set for "
                         "choosing detector thresholds without touching the test streams)")
    ap.add_argument("--keywords-from", choices=("synth", "real", "both", "sc-validation", "real-validation"),
                    default="synth")
    ap.add_argument("--keywords", nargs="+", default=KEYWORDS10)
    ap.add_argument("--synth", type=Path, default=SYNTH, help=f"synthetic corpus (default {SYNTH})")
    ap.add_argument("--real", type=Path, default=REAL, help=f"real speech root (default {REAL})")
    ap.add_argument("--sc", type=Path, default=SC_PART,
                    help=f"real Speech Commands part for --keywords-from sc-validation (default {SC_PART})")
    ap.add_argument("--snrs", type=float, nargs="+", default=[20.0, 10.0, 5.0])
    ap.add_argument("--min-gap", type=float, default=2.0, help="seconds between keywords (default 2)")
    ap.add_argument("--real-bait", type=float, default=0.3,
                    help="share of bait words taken from real speech (default 0.3)")
    ap.add_argument("--keyword-rate", type=float, default=0.35, help="share of events that are keywords")
    ap.add_argument("--real-words", type=Path, default=REAL_WORDS,
                    help="real word tokens cut from sentences; with sc-validation its _unknown_ words of "
                         f"validation speakers (hash rule, 10%%) are bait too (default {REAL_WORDS}; '' for none)")
    ap.add_argument("--gap", type=float, nargs=2, default=[0.3, 2.5], metavar=("LO", "HI"),
                    help="seconds between events (default 0.3 2.5; smaller: denser speech)")
    ap.add_argument("--pause", type=float, nargs=2, default=[2.0, 8.0], metavar=("LO", "HI"),
                    help="length of a pause event, seconds (default 2 8)")
    ap.add_argument("--bait-run", type=int, nargs="+", default=[1, 1, 1, 2, 3], metavar="N",
                    help="words in a run of bait, drawn uniformly from this list (default 1 1 1 2 3)")
    args = ap.parse_args()
    if args.min_gap < 2.0:
        sys.exit("--min-gap must be at least 2 s")
    for name in ("gap", "pause"):
        lo, hi = getattr(args, name)
        if not 0 <= lo <= hi:
            sys.exit(f"--{name} LO HI needs 0 <= LO <= HI (got {lo:g} {hi:g})")
    if min(args.bait_run) < 1:
        sys.exit("--bait-run values must be at least 1")
    rng = random.Random(args.seed)
    keyword, bait = pools(args)
    if not keyword:
        sys.exit(f"no keyword clips found (--keywords-from {args.keywords_from})")
    if not bait:
        sys.exit("no non-keyword clips found for false-alarm bait")
    noise_files = sorted(f for f in (args.real / "_background_noise_").glob("*") if is_audio(f))
    noises = []
    for f in noise_files:
        try:
            noises.append(load(f))
        except AudioError as e:
            print(f"warning: {e}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = ClipCache()
    seconds = args.minutes * 60 / args.files
    rows = []
    for i in range(args.files):
        name, events = make_stream(i, seconds, keyword, bait, cache, noises, args, rng)
        rows += [{"file": name, **ev} for ev in events]
        nk = sum(ev["label"] != "_unknown_" for ev in events)
        print(f"{name}: {seconds / 60:.1f} min, {nk} keywords, {len(events) - nk} other words", flush=True)
    cols = ["file", "label", "start", "end", "word", "source", "snr_db"]
    with open(args.out / "ground_truth.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=cols)
        wr.writeheader()
        wr.writerows(rows)
    kw = Counter(r["label"] for r in rows if r["label"] != "_unknown_")
    meta = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "seconds_total": round(seconds * args.files, 1), "keyword_occurrences": sum(kw.values()),
            "per_keyword": dict(sorted(kw.items())),
            "bait_words": sum(r["label"] == "_unknown_" for r in rows),
            "bait_words_per_hour": round(sum(r["label"] == "_unknown_" for r in rows) * 3600 / (seconds * args.files)),
            "bait_sources": dict(Counter(r["source"] for r in rows if r["label"] == "_unknown_")),
            "keyword_pool": len(keyword), "bait_pool": len(bait),
            "noise_files": [f.name for f in noise_files]}
    (args.out / "benchmark.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{args.files} files, {args.minutes:g} min, {sum(kw.values())} keyword occurrences, "
          f"{meta['bait_words']} bait words -> {args.out}")


if __name__ == "__main__":
    main()
