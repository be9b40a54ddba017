#!/usr/bin/env python3
"""Build a Speech Commands-like corpus from the local (offline) TTS voices.

Layout written under --out (identical to Google Speech Commands v0.02):

    OUT/<word>/<speakerhash>_nohash_<n>.wav     1 s, 16 kHz, mono, int16
    OUT/_background_noise_/{white,pink,brown}_noise.wav
    OUT/validation_list.txt, OUT/testing_list.txt
    OUT/voices.csv                              hash,engine,voice,family,gender,split,setting

One *voice setting* (engine + voice + accent/variant + base pitch/rate) is one
"speaker" and gets its own 8-hex speaker hash (sha1 of the setting name).
Validation/testing hold out whole speaker *families*: the underlying speaker,
shared across engines (kal = flite kal/kal16 + festival kal_diphone; slt =
flite slt + festival cmu_us_slt_arctic_hts + RHVoice slt; us1/us2/us3/en1 =
MBROLA voice via espeak-ng and festival). For espeak-ng formant voices the
family is the variant (+m3, +f2, +croak, ...), shared across all accents,
because the variant defines the voice timbre while the accent only changes
pronunciation.

The run is resumable: clips that already exist are skipped.

Usage:
    python data_scripts/make_synthetic_commands.py --out data/synth --variants 10 --jobs 2
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

SR = 16000
CLIP = SR  # 1 s

ALL_WORDS = (
    "backward bed bird cat dog down eight five follow forward four go happy house learn left marvin nine no "
    "off on one right seven sheila six stop three tree two up visual wow yes zero"
).split()

ESPEAK_ACCENTS = ["en", "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
ESPEAK_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                   "croak", "whisper", "klatt", "klatt2", "klatt3"]
ESPEAK_ACCENTS_PER_VARIANT = 3

# espeak-ng MBROLA voice -> (mbrola database dir, family, gender)
ESPEAK_MBROLA = {
    "mb-us1": ("us1", "us1", "F"),
    "mb-us2": ("us2", "us2", "M"),
    "mb-us3": ("us3", "us3", "M"),
    "mb-en1": ("en1", "en1", "M"),
    "mb-de2-en": ("de2", "de2", "M"),
    "mb-fr1-en": ("fr1", "fr1", "M"),
    "mb-nl2-en": ("nl2", "nl2", "M"),
}
# Known defects: these voice/word pairs render (partly) silent.
BAD_PAIRS = {("mb-us3", "on"), ("mb-us3", "off"), ("mb-us3", "visual")}

# flite voice -> (family, gender)
FLITE_VOICES = {"kal": ("kal", "M"), "kal16": ("kal", "M"), "awb": ("awb", "M"),
                "rms": ("rms", "M"), "slt": ("slt", "F")}
# festival voice -> (voice dir, family, gender, short diphone voice?)
FESTIVAL_VOICES = {
    "kal_diphone": ("kal_diphone", "kal", "M", True),
    "ked_diphone": ("ked_diphone", "ked", "M", True),
    "rab_diphone": ("rab_diphone", "rab", "M", True),
    "don_diphone": ("don_diphone", "don", "M", True),
    "us1_mbrola": ("us1_mbrola", "us1", "F", False),
    "us2_mbrola": ("us2_mbrola", "us2", "M", False),
    "us3_mbrola": ("us3_mbrola", "us3", "M", False),
    "en1_mbrola": ("en1_mbrola", "en1", "M", False),
    "cmu_us_slt_arctic_hts": ("cmu_us_slt_arctic_hts", "slt", "F", False),
}
PICO_VOICES = {"en-US": ("pico-us", "F"), "en-GB": ("pico-gb", "F")}
RHVOICE_VOICES = {"alan": ("alan", "M"), "bdl": ("bdl", "M"), "clb": ("clb", "F"), "slt": ("slt", "F"),
                  "evgeniy-eng": ("evgeniy", "M"), "lyubov": ("lyubov", "F")}
NATURAL_ENGINES = {"pico", "rhvoice"}


@dataclass
class VoiceSetting:
    name: str            # unique setting name, hashed into the speaker id
    engine: str          # espeak | espeak-mbrola | flite | festival | pico | rhvoice
    voice: str
    family: str
    gender: str
    params: dict = field(default_factory=dict)
    short: bool = False  # engine says words too fast: always stretch to natural length

    @property
    def hash(self) -> str:
        return hashlib.sha1(self.name.encode()).hexdigest()[:8]


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, timeout=60, **kw)


# ---------------------------------------------------------------- detection
def detect_settings(seed: int) -> tuple[list[VoiceSetting], list[str]]:
    rng = random.Random(seed)
    notes: list[str] = []
    out: list[VoiceSetting] = []

    if shutil.which("espeak-ng"):
        for var in ESPEAK_VARIANTS:
            accents = rng.sample(ESPEAK_ACCENTS, ESPEAK_ACCENTS_PER_VARIANT)
            gender = "F" if var.startswith("f") else "M"
            for acc in accents:
                p = rng.randint(30, 70)
                s = rng.randint(135, 175)
                out.append(VoiceSetting(f"espeak:{acc}+{var}:p{p}:s{s}", "espeak", f"{acc}+{var}",
                                        f"espeak+{var}", gender, {"v": f"{acc}+{var}", "p": p, "s": s}))
        mbdirs = ["/usr/share/mbrola", "/usr/lib/x86_64-linux-gnu/espeak-ng-data/voices/mb"]
        for v, (db, fam, g) in ESPEAK_MBROLA.items():
            if not (shutil.which("mbrola") and os.path.isdir(os.path.join(mbdirs[0], db))):
                notes.append(f"espeak-ng MBROLA voice {v}: mbrola database '{db}' not installed, skipped")
                continue
            for p, s in ((rng.randint(35, 50), rng.randint(140, 160)), (rng.randint(55, 70), rng.randint(150, 175))):
                out.append(VoiceSetting(f"espeak-mbrola:{v}:p{p}:s{s}", "espeak-mbrola", v, fam, g,
                                        {"v": v, "p": p, "s": s}))
    else:
        notes.append("espeak-ng not found: espeak and MBROLA voices skipped")

    if shutil.which("flite"):
        r = run(["flite", "-lv"])
        have = set(r.stdout.decode(errors="replace").split())
        for v, (fam, g) in FLITE_VOICES.items():
            if v not in have:
                notes.append(f"flite voice {v} not available, skipped")
                continue
            for st, f0 in ((1.0, 0), (1.25, 1)):
                base = (110 if g == "M" else 180) * (0.88 if f0 == 0 else 1.12)
                base = int(base)
                out.append(VoiceSetting(f"flite:{v}:ds{st}:f0{base}", "flite", v, fam, g,
                                        {"v": v, "stretch": st, "f0": base}, short=True))
    else:
        notes.append("flite not found: flite voices skipped")

    if shutil.which("festival"):
        for v, (d, fam, g, short) in FESTIVAL_VOICES.items():
            found = any(os.path.isdir(os.path.join("/usr/share/festival/voices", lang, d))
                        for lang in ("english", "us"))
            if not found:
                notes.append(f"festival voice {v} not installed, skipped")
                continue
            for st, cents in ((1.0, -150), (1.2, 150)):
                out.append(VoiceSetting(f"festival:{v}:ds{st}:c{cents}", "festival", v, fam, g,
                                        {"v": v, "stretch": st, "cents": cents}, short=short))
    else:
        notes.append("festival not found: festival voices skipped")

    if shutil.which("pico2wave"):
        for v, (fam, g) in PICO_VOICES.items():
            for cents in (-250, 0, 250):
                out.append(VoiceSetting(f"pico:{v}:c{cents}", "pico", v, fam, g, {"v": v, "cents": cents}))
    else:
        notes.append("pico2wave not found (libttspico-utils): pico voices skipped")

    if shutil.which("RHVoice-test"):
        rdirs = ["/usr/share/RHVoice/voices", "/usr/local/share/RHVoice/voices"]
        for v, (fam, g) in RHVOICE_VOICES.items():
            if not any(os.path.isdir(os.path.join(d, v)) for d in rdirs):
                notes.append(f"RHVoice voice {v} not installed, skipped")
                continue
            for t, r in ((rng.randint(30, 45), rng.randint(40, 60)), (rng.randint(55, 70), rng.randint(45, 70))):
                out.append(VoiceSetting(f"rhvoice:{v}:t{t}:r{r}", "rhvoice", v, fam, g, {"v": v, "t": t, "r": r}))
    else:
        notes.append("RHVoice-test not found (rhvoice): RHVoice voices skipped")
    return out, notes


# ---------------------------------------------------------------- synthesis
def _load(path: str) -> np.ndarray:
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != SR:
        x = soxr.resample(x, sr, SR)
    return x.astype(np.float32)


def synth_raw(vs: VoiceSetting, words: list[str], tmp: str) -> dict[str, np.ndarray]:
    """Return {word: float32 16 kHz audio}; words that fail are missing (warned)."""
    res: dict[str, np.ndarray] = {}
    p = vs.params
    if vs.engine == "festival":
        # one festival process for all words (start-up costs ~0.5 s)
        lines = [f"(voice_{p['v']})", f"(Parameter.set 'Duration_Stretch {p['stretch']})"]
        for w in words:
            lines.append(f'(set! u (utt.synth (Utterance Text "{w}")))')
            lines.append(f'(utt.save.wave u "{tmp}/fest_{w}.wav" \'riff)')
        try:
            run(["festival", "--pipe"], input="\n".join(lines).encode())
        except Exception as e:  # noqa: BLE001
            print(f"WARNING: festival {vs.name}: {e}", file=sys.stderr)
        for w in words:
            f = f"{tmp}/fest_{w}.wav"
            if os.path.exists(f):
                try:
                    res[w] = _load(f)
                except Exception as e:  # noqa: BLE001
                    print(f"WARNING: {vs.name} {w}: {e}", file=sys.stderr)
                os.remove(f)
            else:
                print(f"WARNING: {vs.name}: no audio for '{w}'", file=sys.stderr)
        return res

    for w in words:
        f = f"{tmp}/raw.wav"
        if os.path.exists(f):
            os.remove(f)
        try:
            if vs.engine in ("espeak", "espeak-mbrola"):
                if (p["v"], w) in BAD_PAIRS:
                    continue
                r = run(["espeak-ng", "-v", p["v"], "-p", str(p["p"]), "-s", str(p["s"]), "-w", f, w],
                        stdin=subprocess.DEVNULL)
                err = r.stderr.decode(errors="replace").strip()
                if err:  # e.g. "mbrola: Warning: Z-u: unknown, replaced with _-_" -> unsayable
                    print(f"note: {vs.name} cannot say '{w}' ({err.splitlines()[0]}), dropped", file=sys.stderr)
                    continue
            elif vs.engine == "flite":
                run(["flite", "-voice", p["v"], "--setf", f"duration_stretch={p['stretch']}",
                     "--setf", f"int_f0_target_mean={p['f0']}", "-t", w, "-o", f], stdin=subprocess.DEVNULL)
            elif vs.engine == "pico":
                run(["pico2wave", "-l", p["v"], "-w", f, w], stdin=subprocess.DEVNULL)
            elif vs.engine == "rhvoice":
                run(["RHVoice-test", "-p", p["v"], "-t", str(p["t"]), "-r", str(p["r"]), "-o", f],
                    input=w.encode())
            if not os.path.exists(f):
                print(f"WARNING: {vs.name}: no audio for '{w}'", file=sys.stderr)
                continue
            res[w] = _load(f)
        except Exception as e:  # noqa: BLE001
            print(f"WARNING: {vs.name} '{w}': {e}", file=sys.stderr)
    return res


def trim(x: np.ndarray, top_db: float = 38.0, hop: int = 160) -> np.ndarray:
    n = len(x) // hop
    if n < 2:
        return x
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    thr = rms.max() * 10 ** (-top_db / 20)
    idx = np.nonzero(rms > thr)[0]
    if len(idx) == 0:
        return x[:0]
    a = max(0, (idx[0] - 1) * hop)
    b = min(len(x), (idx[-1] + 2) * hop)
    return x[a:b]


def sox_effects(x: np.ndarray, effects: list[str], tmp: str) -> np.ndarray:
    fi, fo = f"{tmp}/in.wav", f"{tmp}/out.wav"
    sf.write(fi, x, SR, subtype="FLOAT")
    r = run(["sox", "-q", fi, fo] + effects, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.decode(errors="replace")[:200])
    y, _ = sf.read(fo, dtype="float32")
    return y


def render(raw: np.ndarray, vs: VoiceSetting, rng: random.Random, tmp: str) -> np.ndarray | None:
    x = trim(raw)
    d = len(trim(x, top_db=30.0)) / SR  # core duration (quiet tails excluded) drives the stretch
    if d < 0.08 or np.max(np.abs(x)) < 1e-3:
        return None
    cents = vs.params.get("cents", 0) + rng.uniform(-250, 250)
    tempo = rng.uniform(0.85, 1.18)  # >1 = faster
    if vs.short or d / tempo < 0.42:
        tempo = d / rng.uniform(0.45, 0.8)
    if len(x) / SR / tempo > 0.93:
        tempo = len(x) / SR / rng.uniform(0.75, 0.93)
    tempo = float(np.clip(tempo, 0.3, 3.0))
    eff = ["pitch", f"{cents:.0f}"]
    if abs(tempo - 1) > 0.01:
        eff += ["tempo", "-s", f"{tempo:.4f}"]
    y = trim(sox_effects(x, eff, tmp))
    if len(y) > int(0.95 * SR):
        y = trim(sox_effects(y, ["tempo", "-s", f"{len(y) / (0.9 * SR):.4f}"], tmp))
    y = y[: int(0.97 * SR)]
    peak = np.max(np.abs(y)) if len(y) else 0.0
    if len(y) < int(0.08 * SR) or peak < 1e-3:
        return None
    level = 10 ** (rng.uniform(-20, -3) / 20)
    y = y / peak * level
    # short fades avoid clicks at the trim points
    f = min(80, len(y) // 4)
    ramp = np.linspace(0, 1, f, dtype=np.float32)
    y[:f] *= ramp
    y[-f:] *= ramp[::-1]
    out = np.zeros(CLIP, dtype=np.float32)
    off = rng.randint(0, CLIP - len(y))
    out[off: off + len(y)] = y
    return out


def work(task) -> tuple[str, int, int, int]:
    """Synthesise all renditions of all words for one voice setting. Returns (name, written, skipped, failed)."""
    vs, words, variants, out_dir, seed = task
    written = skipped = failed = 0
    todo = {}
    for w in words:
        paths = [os.path.join(out_dir, w, f"{vs.hash}_nohash_{n}.wav") for n in range(variants)]
        missing = [(n, pth) for n, pth in enumerate(paths) if not os.path.exists(pth)]
        skipped += variants - len(missing)
        if missing:
            todo[w] = missing
    if not todo:
        return vs.name, 0, skipped, 0
    try:
        with tempfile.TemporaryDirectory(prefix="kws_tts_") as tmp:
            raws = synth_raw(vs, list(todo), tmp)
            for w, missing in todo.items():
                if w not in raws:
                    failed += len(missing)
                    continue
                for n, pth in missing:
                    rng = random.Random(f"{seed}:{vs.name}:{w}:{n}")
                    try:
                        y = render(raws[w], vs, rng, tmp)
                    except Exception as e:  # noqa: BLE001
                        print(f"WARNING: {vs.name} '{w}' #{n}: {e}", file=sys.stderr)
                        y = None
                    if y is None:
                        failed += 1
                        continue
                    os.makedirs(os.path.dirname(pth), exist_ok=True)
                    part = pth + ".part.wav"
                    sf.write(part, y, SR, subtype="PCM_16")
                    os.replace(part, pth)
                    written += 1
    except Exception as e:  # noqa: BLE001
        print(f"WARNING: voice setting {vs.name} failed: {e}", file=sys.stderr)
    return vs.name, written, skipped, failed


# ---------------------------------------------------------------- splits
def assign_splits(settings: list[VoiceSetting], seed: int, test_frac=0.15, val_frac=0.10) -> dict[str, str]:
    fams: dict[str, dict] = {}
    for vs in settings:
        f = fams.setdefault(vs.family, {"gender": vs.gender, "engines": set()})
        f["engines"].add(vs.engine)
    names = sorted(fams)
    random.Random(seed).shuffle(names)
    n_test = max(1, round(test_frac * len(names)))
    n_val = max(1, round(val_frac * len(names))) if len(names) > 2 else 0
    test: list[str] = []
    nat = [f for f in names if fams[f]["engines"] & NATURAL_ENGINES]
    if nat:
        test.append(nat[0])
    fem = [f for f in names if fams[f]["gender"] == "F" and f not in test]
    if fem and not any(fams[f]["gender"] == "F" for f in test):
        test.append(fem[0])
    for f in names:
        if len(test) >= n_test:
            break
        if f not in test:
            test.append(f)
    rest = [f for f in names if f not in test]
    val = rest[:n_val]
    split = {f: "train" for f in names}
    split.update({f: "testing" for f in test})
    split.update({f: "validation" for f in val})
    return split


def write_noise(out_dir: str, seed: int) -> None:
    d = os.path.join(out_dir, "_background_noise_")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = 60 * SR
    white = rng.standard_normal(n)
    spec = np.fft.rfft(rng.standard_normal(n))
    fr = np.fft.rfftfreq(n, 1 / SR)
    fr[0] = fr[1]
    pink = np.fft.irfft(spec / np.sqrt(fr), n)
    brown = np.cumsum(rng.standard_normal(n))
    brown = brown - np.convolve(brown, np.ones(SR) / SR, mode="same")  # remove drift
    for name, x in (("white_noise", white), ("pink_noise", pink), ("brown_noise", brown)):
        p = os.path.join(d, f"{name}.wav")
        if os.path.exists(p):
            continue
        x = x / np.max(np.abs(x)) * 0.5
        sf.write(p, x.astype(np.float32), SR, subtype="PCM_16")


def write_lists(out_dir: str, settings: list[VoiceSetting], split: dict[str, str]) -> Counter:
    by_hash = {vs.hash: vs for vs in settings}
    lists = {"validation": [], "testing": []}
    counts: Counter = Counter()
    for w in sorted(os.listdir(out_dir)):
        wd = os.path.join(out_dir, w)
        if not os.path.isdir(wd) or w.startswith("_"):
            continue
        for fn in sorted(os.listdir(wd)):
            if not fn.endswith(".wav") or ".part" in fn:
                continue
            vs = by_hash.get(fn.split("_nohash_")[0])
            s = split[vs.family] if vs else "train"
            counts[s] += 1
            if s in lists:
                lists[s].append(f"{w}/{fn}")
    for s, items in lists.items():
        with open(os.path.join(out_dir, f"{s}_list.txt"), "w") as fh:
            fh.write("".join(i + "\n" for i in items))
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output root (Speech Commands layout)")
    ap.add_argument("--variants", type=int, default=10, help="renditions per word per voice setting")
    ap.add_argument("--words", nargs="+", default=ALL_WORDS, help="words (default: all 35 v0.02 words)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel processes (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engines", nargs="+", default=None,
                    help="restrict to engines (espeak espeak-mbrola flite festival pico rhvoice)")
    ap.add_argument("--list-voices", action="store_true", help="print the voice settings and exit")
    args = ap.parse_args()

    settings, notes = detect_settings(args.seed)
    for n in notes:
        print("note:", n)
    if args.engines:
        settings = [s for s in settings if s.engine in args.engines]
    if not settings:
        sys.exit("no TTS voices found: run data_scripts/install_tts.sh")
    hashes = Counter(s.hash for s in settings)
    assert max(hashes.values()) == 1, "speaker hash collision"
    split = assign_splits(settings, args.seed)

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "voices.csv"), "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["hash", "engine", "voice", "family", "gender", "split", "setting"])
        for s in settings:
            wr.writerow([s.hash, s.engine, s.voice, s.family, s.gender, split[s.family], s.name])
    if args.list_voices:
        for s in settings:
            print(s.hash, split[s.family], s.name)
        return
    write_noise(args.out, args.seed)

    tasks = [(s, args.words, args.variants, args.out, args.seed) for s in settings]
    # interleave slow engines (festival, rhvoice) with fast ones
    random.Random(args.seed).shuffle(tasks)
    total = len(tasks) * len(args.words) * args.variants
    written = skipped = failed = 0
    with mp.Pool(max(1, args.jobs)) as pool, tqdm(total=total, unit="clip", smoothing=0.05) as bar:
        for name, wr_, sk, fa in pool.imap_unordered(work, tasks):
            written += wr_
            skipped += sk
            failed += fa
            bar.update(wr_ + sk + fa)
        pool.close()      # workers exit by themselves (terminate()'s SIGTERM is lost where SIGTERM is ignored)
        pool.join()
    counts = write_lists(args.out, settings, split)

    # summary
    print(f"\nwritten {written}, already present {skipped}, dropped/failed {failed}")
    eng_settings = Counter(s.engine for s in settings)
    eng_voices = defaultdict(set)
    for s in settings:
        eng_voices[s.engine].add(s.voice)
    print(f"\n{'engine':<15}{'voices':>8}{'settings':>10}")
    for e in sorted(eng_settings):
        print(f"{e:<15}{len(eng_voices[e]):>8}{eng_settings[e]:>10}")
    print(f"{'total':<15}{sum(len(v) for v in eng_voices.values()):>8}{len(settings):>10}")
    fam_by_split = defaultdict(list)
    for f, s in sorted(split.items()):
        fam_by_split[s].append(f)
    print(f"\n{'split':<12}{'families':>9}{'clips':>8}  families")
    for s in ("train", "validation", "testing"):
        print(f"{s:<12}{len(fam_by_split[s]):>9}{counts[s]:>8}  {' '.join(fam_by_split[s])}")


if __name__ == "__main__":
    main()
