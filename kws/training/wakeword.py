"""`kws wakeword WORD`: your own wake word, end to end: a small training set built on this machine, a
fine-tune from the shipped model within a time budget, a model file with a threshold chosen on what
it measured.

    kws record marvin --out data/mywords --takes 20          # your takes (kws/record.py)
    kws wakeword marvin --takes data/mywords --out models/marvin.npz

The training set (under --work, Speech Commands layout, so kws.training.train reads it as any root):
- WORD/: your takes (a quarter of them, at least one, held out for the summary), repeated so that they
  weigh about as much as the synthetic ones, plus synthetic takes of WORD from the TTS voices on the
  machine (espeak-ng at least: accents x voice variants x pitch/rate, driven by
  data_scripts/make_synthetic_commands.py) so that the model learns the word and not your voice;
- one folder per confuser word (label `_unknown_`): words that sound like WORD (same first letters, same
  ending, its first syllable and its end alone: for "marvin": "martin", "marvel", "marble",
  "mar", ...) and a few generic words, said by the same voices;
- real speech from the Speech Commands-layout roots the machine has (--negatives; by default whichever
  of ../shared/real_speech, ../shared/real_words, ../shared/speech_commands_part, data/speech_commands
  exist), any word but WORD, as more `_unknown_`;
- `_background_noise_/`: the roots' noise files and generated white/pink noise (`_silence_` and mixing).

The fine-tune starts from the shipped wake-word model (marvin.npz; `default_init`) with labels
[_silence_, _unknown_, WORD]: every weight but the WORD row of the output head is copied
(TrainConfig.init_new_head). Its length comes from the time budget (--minutes,
10 by default, for the whole command): the cost of one training step is measured first, on this machine.

At the end: recall on your held-out takes (and on held-out synthetic voices), false alarms per hour on a
negative stream of held-out real speech over noise (the sound-alikes too where the machine has little
real speech; otherwise they are scored on their own), and the threshold chosen
(the lowest one at which that stream gives at most --max-fa-per-hour, 0.5 minimum); the model file
carries it as its detector threshold.
"""
from __future__ import annotations

import importlib.util
import json
import math
import multiprocessing as mp
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import KwsError

REPO = Path(__file__).resolve().parents[2]
SYNTH_SCRIPT = REPO / "data_scripts" / "make_synthetic_commands.py"
DEFAULT_NEGATIVE_ROOTS = (REPO.parent / "shared" / "real_speech", REPO.parent / "shared" / "real_words",
                          REPO.parent / "shared" / "speech_commands_part", REPO / "data" / "speech_commands")
SR = 16000
MIN_REAL_STREAM_CLIPS = 100      # fewer real negatives for the threshold's stream: the sound-alikes join it
STREAM_NEGATIVES = 2000          # real clips of the threshold's negative stream (about an hour)
# generic words a wake word meets in any conversation
GENERIC_CONFUSERS = ["hello", "okay", "hey", "sorry", "thanks", "maybe", "never", "morning", "music", "number",
                     "weather", "kitchen", "again", "seven", "open", "listen", "computer", "alright"]
# a small vocabulary to find words that look (and mostly sound) like the wake word
VOCABULARY = """
about above after again alarm album alive alright always amazing animal answer apple april army arrive
artist autumn baby bacon banana barber barking barn basket battle beach before begin better birthday
blanket border bottle brother butter button cabin camera candle candy carbon garden carpet carrot carving
castle chicken children circle city coffee colour common corner cotton cousin darling dinner doctor
dollar dragon dream driver evening father finger flower follow forest garlic garment harbor harvest
hammer happy heaven helmet honey hotel kevin kitten lemon letter level little london magic margin market
marble march marching marin marina marker marlin married marry marshal martin marvel marvellous marvin
mary master matter melvin member middle minute mister mitten modern monday money monkey morgan mother
movie muffin napkin never number ocean orange order oven paper parcel parking pardon partner party
pencil people pepper person picture pillow planet pocket potato pumpkin question rabbit raven river
robin rocket salmon silver simple sister starving carving seven sheila something spider summer sunday
table tablet tennis thank timber today tomorrow turning under vermin virgin visual water weather window
winter without wonder yellow yesterday zero happen hobby hippie puppy poppy copy heavy hockey snappy
sappy nappy harpy hefty jumpy lucky funny sunny bunny money penny pepper copper chopper shopping
""".split()


class WakeWordError(KwsError):
    pass


# --------------------------------------------------------------------------- confusers

def _vowel_groups(w: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"[aeiouy]+", w)]


def first_syllable(w: str) -> str:
    """The letters up to the first vowel group and one consonant after it: marvin -> mar, computer -> com."""
    g = _vowel_groups(w)
    if not g:
        return w
    end = min(len(w), g[0][1] + 1)
    return w[:end]


def confusers(word: str, n_similar: int = 10, n_generic: int = 6, seed: int = 0) -> list[str]:
    """Words that sound like `word` (its negatives), most similar first; never `word` itself."""
    word = word.lower()
    rng = random.Random(seed)

    def score(v: str) -> float:
        pre = len(os.path.commonprefix([word, v]))
        suf = len(os.path.commonprefix([word[::-1], v[::-1]]))
        return pre + 0.8 * suf - 0.3 * abs(len(word) - len(v))
    vocab = sorted({v for v in VOCABULARY if v != word and v not in word and word not in v},
                   key=lambda v: (-score(v), v))
    def one_deletion(v: str) -> bool:     # "marin" for "marvin": heard as the word itself, not a negative
        return len(v) == len(word) - 1 and any(word[:i] + word[i + 1:] == v for i in range(len(word)))
    similar = [v for v in vocab if score(v) >= 2 and not one_deletion(v)][:n_similar]
    made = []
    syl = first_syllable(word)
    if 2 <= len(syl) < len(word):
        made.append(syl)                                   # the word's start alone: "mar"
        rest = word[len(syl):]
        if len(rest) >= 2:
            made.append(rest)                              # and its end: "vin"
    generic = [g for g in GENERIC_CONFUSERS if g != word and g not in similar]
    rng.shuffle(generic)
    out = []
    for w in similar + made + generic[:n_generic]:
        if w != word and w not in out and re.fullmatch(r"[a-z]+", w):
            out.append(w)
    return out


# --------------------------------------------------------------------------- synthetic takes

def synth_module():
    """data_scripts/make_synthetic_commands.py (the voices and their rendering), loaded from the checkout."""
    name = "kws_make_synthetic_commands"
    if name in sys.modules:
        return sys.modules[name]
    if not SYNTH_SCRIPT.exists():
        return None
    spec = importlib.util.spec_from_file_location(name, SYNTH_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod                # its dataclasses (and pickling them to the workers) need the name
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


def _synth_one(task):
    """One voice setting: every word, `renders` renditions each -> (setting name, family, {word: [clips]})."""
    vs, words, renders, seed = task
    mod = synth_module()
    rng = random.Random(f"{seed}:{vs.name}")
    out = {}
    with tempfile.TemporaryDirectory(prefix="kws-tts-") as tmp:
        import contextlib
        import io
        with contextlib.redirect_stderr(io.StringIO()):    # the script's per-word notes
            raw = mod.synth_raw(vs, words, tmp)
            for w, x in raw.items():
                clips = []
                for _ in range(renders.get(w, 1)):
                    try:
                        y = mod.render(x, vs, rng, tmp)
                    except Exception:
                        y = None
                    if y is not None:
                        clips.append(y)
                out[w] = clips
    return vs.hash, vs.family, out


def synthesize(words: list[str], renders: dict, max_voices: int, seed: int, progress: bool, jobs: int = 2):
    """{word: [(setting hash, family, clip)]} from the TTS voices on this machine; notes for the summary."""
    mod = synth_module()
    if mod is None:
        return {}, [f"no {SYNTH_SCRIPT.relative_to(REPO)} (not a checkout): no synthetic takes"], []
    settings, notes = mod.detect_settings(seed)
    if not settings:
        return {}, ["no TTS engine found (install espeak-ng; data_scripts/install_tts.sh installs more)"], []
    rng = random.Random(seed)
    rng.shuffle(settings)
    if max_voices and len(settings) > max_voices:          # keep the engines' mix: round robin over engines
        by = {}
        for s in settings:
            by.setdefault(s.engine, []).append(s)
        picked = []
        while len(picked) < max_voices:
            for lst in by.values():
                if lst and len(picked) < max_voices:
                    picked.append(lst.pop())
        settings = picked
    tasks = [(vs, words, renders, seed) for vs in settings]
    from ..progress import progress as bar
    res: dict[str, list] = {w: [] for w in words}
    with mp.get_context("fork").Pool(max(1, jobs)) as pool:
        for h, fam, out in bar(pool.imap_unordered(_synth_one, tasks), total=len(tasks), desc="synthetic takes",
                               unit="voice", disable=not progress, file=sys.stderr):
            for w, clips in out.items():
                res[w] += [(h, fam, c) for c in clips]
        pool.close()      # let the workers exit by themselves: the with-block's terminate() kills them with
        pool.join()       # SIGTERM, which a process started with SIGTERM ignored (nohup, some CI runners) never sees
    engines = sorted({s.engine for s in settings})
    return res, [], [f"{len(settings)} voice settings ({', '.join(engines)})"]


# --------------------------------------------------------------------------- the training set

def _write(path: Path, x: np.ndarray) -> None:
    import soundfile as sf
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(x, -1, 1).astype(np.float32), SR, subtype="PCM_16")


def _noise(kind: str, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    w = rng.normal(0, 1, n)
    if kind == "pink":
        f = np.fft.rfft(w)
        f /= np.sqrt(np.maximum(np.arange(len(f)), 1))
        w = np.fft.irfft(f, n)
    return (w / np.max(np.abs(w)) * 0.3).astype(np.float32)


def real_negatives(roots: list[Path], word: str, n: int, seed: int) -> list:
    """Up to n real clips of any word but `word` from Speech Commands-layout roots, from their training split
    only: their validation and testing speakers stay unheard, so what is measured on them holds."""
    from ..data.index import scan_root
    items = []
    for r in roots:
        items += [it for it in scan_root(r) if it.path and it.split == "training" and it.word != word
                  and it.label != word and not Path(it.path).name.startswith(f"{word}_")]
    random.Random(seed).shuffle(items)
    return items[:n]


def user_takes(folder: Path, word: str) -> list[Path]:
    from ..audio import is_audio
    d = folder / word if (folder / word).is_dir() else folder
    return sorted(p for p in d.iterdir() if p.is_file() and is_audio(p)) if d.is_dir() else []


def build_set(word: str, takes: list[Path], work: Path, tts: bool, max_voices: int, negative_roots: list[Path],
              n_real: int, seed: int, progress: bool, holdout: int | None = None) -> dict:
    """The training root under work/data and the held-out material for the summary. `holdout`: user takes
    kept out of training to measure recall on (None: a quarter of them, at least one of two or more)."""
    from ..audio import load_clip
    from ..progress import progress as bar
    data = work / "data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    rng = random.Random(seed)
    takes = list(takes)
    rng.shuffle(takes)
    n_test = (max(1, len(takes) // 4) if len(takes) >= 2 else 0) if holdout is None else min(holdout, len(takes))
    test_takes, train_takes = takes[:n_test], takes[n_test:]
    confs = confusers(word, seed=seed)
    notes, val = [], []
    synth = {}
    if tts:
        synth, notes, info = synthesize([word] + confs, {word: 3}, max_voices, seed, progress)
        notes += info
    # hold out the synthetic voices of two families: validation during training and the summary
    fams = sorted({fam for lst in synth.values() for _, fam, _ in lst})
    held = set(random.Random(seed + 1).sample(fams, min(2, max(0, len(fams) - 1)))) if len(fams) > 1 else set()
    held_pos, held_neg = [], []
    counts = {"synthetic positives": 0, "confuser clips": 0}
    for w, lst in synth.items():
        for i, (h, fam, clip) in enumerate(lst):
            rel = f"{w}/{h}_nohash_{i}.wav"
            _write(data / rel, clip)
            if fam in held:
                val.append(rel)
                (held_pos if w == word else held_neg).append(clip)
            else:
                counts["synthetic positives" if w == word else "confuser clips"] += 1
    n_synth = counts["synthetic positives"]
    # the user's takes: repeated so they weigh about as much as the synthetic takes (at least twice)
    rep = max(2, min(20, round(max(n_synth, 1) / max(len(train_takes), 1)))) if train_takes else 0
    train_audio = []
    for i, p in enumerate(train_takes):
        x = load_clip(p)
        train_audio.append(x)
        for r in range(rep):
            _write(data / word / f"user{r}_nohash_{i}.wav", x)
    test_audio = [load_clip(p) for p in test_takes]
    # real speech as negatives; a separate draw for the negative stream
    # the threshold's stream: about an hour of real words, so that "<= 1 FA/h" can be told from "none fired"
    # (with 300 clips, ten minutes, the threshold was the score of the single worst clip)
    reals = real_negatives(negative_roots, word, n_real + STREAM_NEGATIVES, seed) if n_real > 0 else []
    stream_real = reals[n_real:]
    for i, it in enumerate(bar(reals[:n_real], desc="real negatives", unit="clip", disable=not progress,
                               file=sys.stderr, mininterval=1.0)):
        try:
            _write(data / f"real_{it.word or it.label}" / f"{it.speaker}_nohash_{i}.wav", load_clip(it.path))
        except Exception:
            continue
    # the threshold's stream is everyday speech: sound-alikes said back to back would set it for a room
    # where everyone says "happen" and "puppy" all day (it missed most real takes, measured); they are
    # scored on their own in the summary. Without real roots the sound-alikes are all there is.
    stream_neg = []
    for it in stream_real:
        try:
            stream_neg.append(load_clip(it.path))
        except Exception:
            continue
    stream_soundalikes = len(stream_neg) < MIN_REAL_STREAM_CLIPS
    if stream_soundalikes:
        stream_neg += held_neg
    noise_dir = data / "_background_noise_"
    for r in negative_roots:
        for f in sorted((r / "_background_noise_").glob("*.wav"))[:6]:
            try:
                from ..audio import load
                _write(noise_dir / f"{r.name}_{f.name}", load(f)[: 60 * SR])
            except Exception:
                continue
    for k, kind in enumerate(("white", "pink")):
        _write(noise_dir / f"{kind}_noise.wav", _noise(kind, 30, seed + k))
    (data / "validation_list.txt").write_text("".join(v + "\n" for v in val))
    (data / "testing_list.txt").write_text("")
    return {"root": data, "train_takes": len(train_takes), "repeat": rep, "test_takes": test_audio,
            "train_audio": train_audio,
            "test_names": [str(p) for p in test_takes], "held_pos": held_pos, "stream_neg": stream_neg,
            "held_neg": held_neg, "stream_soundalikes": stream_soundalikes,
            "confusers": confs, "notes": notes, "real": min(len(reals), n_real), "held_families": sorted(held),
            **counts}


# --------------------------------------------------------------------------- measuring

def peak_scores(model, clips: list[np.ndarray], word: str, pad_s: float = 0.5, tail_s: float = 1.0) -> np.ndarray:
    """Each clip streamed alone (silence before and after): the highest smoothed posterior of `word`."""
    from ..stream import KeywordSpotter, smooth_posteriors
    sp = KeywordSpotter(model)
    k = sp.labels.index(word)
    out = []
    for c in clips:
        sp.reset()
        x = np.concatenate([np.zeros(int(pad_s * SR), np.float32), c, np.zeros(int(tail_s * SR), np.float32)])
        post = sp.step_frames(x)
        out.append(float(smooth_posteriors(post, sp.smooth)[:, k].max()) if len(post) else 0.0)
    return np.array(out)


def negative_stream(clips: list[np.ndarray], seed: int, noise_db: float = -45.0) -> np.ndarray:
    """The negative clips one after another, 0.3-1.5 s apart, over faint pink noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for c in clips:
        parts += [c, np.zeros(int(rng.uniform(0.3, 1.5) * SR), np.float32)]
    x = np.concatenate(parts) if parts else np.zeros(SR, np.float32)
    return (x + _noise("pink", len(x) / SR, seed)[: len(x)] * 10 ** (noise_db / 20) / 0.3).astype(np.float32)


def stream_false_alarms(model, x: np.ndarray, word: str, thresholds: np.ndarray) -> np.ndarray:
    from ..stream import KeywordSpotter, detect_frames, smooth_posteriors
    sp = KeywordSpotter(model)
    k = sp.labels.index(word)
    sm = smooth_posteriors(sp.step_frames(x), sp.smooth)
    col = sm[:, k:k + 1]
    return np.array([len(detect_frames(col, np.array([t], np.float32), sp.refractory)) for t in thresholds])


def choose_threshold(test_peaks, fa_counts, thresholds, hours, max_fa_h) -> float:
    ok = [t for t, n in zip(thresholds, fa_counts) if n / max(hours, 1e-9) <= max_fa_h]
    return float(ok[0]) if ok else float(thresholds[-1])


# --------------------------------------------------------------------------- training

def probe_step_s(root: Path, labels, cfg, progress: bool) -> float:
    """Seconds per training step here: one batch made (augmentation + features, as a producer makes it)
    and one step of the model; the producer runs beside the trainer, so the larger counts."""
    import torch
    from ..data.dataset import ClipSet
    from ..data.index import scan_root, select
    from ..features import FeatureConfig
    from .augment import AugmentConfig, Augmenter
    from .features_torch import MFCC
    from .model import GRUClassifier, ModelConfig
    from .train import BatchMaker, load_noises
    fcfg = FeatureConfig()
    items = select(scan_root(root), labels, "training", unknown_pct=None, silence_pct=10, seed=cfg.seed)
    clips = ClipSet(items, labels, cfg.cache, "training", progress)        # the cache train() then reads
    aug = Augmenter(AugmentConfig(), fcfg, load_noises([str(root)]), None, seed=0)
    batches = BatchMaker(clips, np.zeros(len(clips), int), cfg, labels, fcfg, aug)
    mfcc = MFCC(fcfg)
    model = GRUClassifier(ModelConfig(n_input=fcfg.n_mfcc, n_classes=len(labels), hidden=cfg.hidden,
                                      layers=cfg.layers, stack=cfg.stack))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times_p, times_t = [], []
    for t in range(3):
        rngs = [np.random.default_rng((99, t, g)) for g in range(cfg.batch)]
        t0 = time.perf_counter()
        with torch.no_grad():
            wave, tgt, _ = batches(rngs)
            feats = aug.features(mfcc, wave, rngs)
        t1 = time.perf_counter()
        hidden, _ = model.hidden_all(feats, None)
        loss = model.head(hidden).float().logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if t:                                              # the first is warm-up
            times_p.append(t1 - t0)
            times_t.append(t2 - t1)
    # x1.4: two timed steps vary, and a busy machine runs the real ones slower (one run here: 0.26 s probed, 0.36 s run)
    return max(np.median(times_p), np.median(times_t)) * 1.4 + 0.01


def default_init() -> Path:
    """What a new wake word is fine-tuned from: the shipped wake word (marvin.npz), a one-word spotter that
    already learned to let every other real word through unfired, which is most of a new wake word's job
    (few-shot "happy", clip recall at <= 1 FA/h, epoch-1 models: 96.2 / 88.6 / 79.3% from it, 84.2 / 80.4 /
    52.2% from the 12-class model; docs/wake-words.md); the 12-class model where it is missing."""
    from ..enginefile import WAKEWORD_ENGINE, default_model_path, shipped_model_path
    p = shipped_model_path(WAKEWORD_ENGINE)
    return p if p.exists() else default_model_path()


def inherited_rows(init: Path, word: str) -> dict:
    """{word: the init model's wake word} where the init is a one-word spotter ([_silence_, _unknown_, X]):
    the new word's output row starts as X's, already scaled to fire with confidence, instead of from noise."""
    from ..enginefile import load_model
    from ..data.index import SILENCE, UNKNOWN
    labels = list(load_model(init).labels)
    words = [l for l in labels if l not in (SILENCE, UNKNOWN)]
    return {word: words[0]} if len(words) == 1 and words[0] != word else {}


def run_wakeword(args) -> int:
    t_start = time.monotonic()
    from ..record import sanitize_name
    word = sanitize_name(args.word, "word")
    if not (0.5 <= args.minutes <= 600):
        raise WakeWordError(f"--minutes must be between 0.5 and 600, got {args.minutes:g}")
    if not (0.0 <= args.max_fa_per_hour <= 100):
        raise WakeWordError(f"--max-fa-per-hour must be between 0 and 100, got {args.max_fa_per_hour:g}")
    if args.holdout is not None and args.holdout < 0:
        raise WakeWordError(f"--holdout must be 0 or more, got {args.holdout}")
    from .train import parse_augment
    aug_overrides = parse_augment(args.augment)     # a bad field fails before the TTS work
    out = Path(args.out or f"models/{word}.npz")
    if out.suffix != ".npz":
        raise WakeWordError(f"--out {out}: a model file is a .npz")
    takes = []
    if args.takes:
        tdir = Path(args.takes)
        if not tdir.is_dir():
            raise WakeWordError(f"--takes {tdir}: no such folder (record takes with: kws record {word} --out {tdir})")
        takes = user_takes(tdir, word)
        if not takes:
            raise WakeWordError(f"--takes {tdir}: no audio in {tdir / word} (record some: kws record {word} --out {tdir})")
    if not takes and not args.tts:
        raise WakeWordError("nothing to learn the word from: give --takes DIR (kws record) and/or --tts")
    if args.negatives is None:
        roots = [r for r in DEFAULT_NEGATIVE_ROOTS if r.is_dir()]
    else:
        roots = [Path(r) for r in args.negatives if r != "none"]
        for r in roots:
            if not r.is_dir():
                raise WakeWordError(f"--negatives {r}: no such folder")
    from ..enginefile import default_model_path
    init = Path(args.init) if args.init else default_init()
    if not init.exists():
        raise WakeWordError(f"--init {init}: model file not found")
    progress = sys.stderr.isatty() and not args.no_progress
    work = Path(args.work or f"runs/wakeword_{word}")
    print(f"kws wakeword: '{word}': {len(takes)} take(s) of yours, TTS {'on' if args.tts else 'off'}, "
          f"negative roots: {', '.join(map(str, roots)) or 'none'}; budget {args.minutes:g} min", file=sys.stderr)

    built = build_set(word, takes, work, args.tts, args.voices, roots, args.real_negatives, args.seed, progress,
                      holdout=args.holdout)
    if not (built["root"] / word).is_dir():
        raise WakeWordError(f"no takes of '{word}' to train on (all were held out, or TTS made none): "
                            "record more takes or use --tts")
    t_built = time.monotonic()
    print(f"kws wakeword: training set in {t_built - t_start:.0f} s: {built['train_takes']} take(s) of yours "
          f"(x{built['repeat']}), {built['synthetic positives']} synthetic takes, {built['confuser clips']} clips of "
          f"{len(built['confusers'])} confusers ({', '.join(built['confusers'])}), {built['real']} real negatives"
          + (f"; {'; '.join(built['notes'])}" if built["notes"] else ""), file=sys.stderr)

    from ..data.index import task_labels
    from .train import TrainConfig, train
    labels = task_labels("12", [word])
    cfg = TrainConfig(data=[str(built["root"])], words=[word], out=str(work / "run"), init=str(init),
                      init_new_head=True, init_rows=inherited_rows(init, word) if args.inherit else {},
                      cache=str(work / "cache"), lr=args.lr, batch=32, seq_clips=4,
                      seed=args.seed, device="cpu", amp="off", threads=1, workers=1,
                      augment_overrides=aug_overrides)
    step_s = probe_step_s(built["root"], labels, cfg, progress)
    eval_reserve = 20.0 + 0.04 * len(built["stream_neg"])      # 86 s measured for 2000 clips
    left = args.minutes * 60 - (time.monotonic() - t_start) - eval_reserve
    epochs = args.epochs or 4
    per_epoch_overhead = 3.0
    steps = int((left - epochs * per_epoch_overhead) / step_s / epochs) if args.steps is None else args.steps
    if steps < 5:
        raise WakeWordError(f"the time budget leaves {max(left, 0):.0f} s for training ({step_s:.2f} s a step here): "
                            f"raise --minutes or use fewer --voices / --real-negatives")
    cfg.epochs, cfg.epoch_clips = epochs, steps * cfg.batch * cfg.seq_clips
    cfg.average_epochs, cfg.keep_epochs = epochs, True     # run/averaged.npz and run/epochN.npz
    # a hard stop too: the probe can misjudge a machine that gets busier, and the budget is a promise
    cfg.deadline_s = max(10.0, left)
    print(f"kws wakeword: fine-tuning from {init}: {epochs} epoch(s) x {steps} steps ({step_s:.2f} s a step "
          f"measured here, ~{epochs * steps * step_s / 60:.1f} min)", file=sys.stderr)
    t_train = time.monotonic()
    res = train(cfg, progress=progress, command=" ".join(["kws", "wakeword", *sys.argv[2:]]))
    t_trained = time.monotonic()
    if res.get("stopped_early"):
        print(f"kws wakeword: the time budget ran out before the planned steps: the model is the one at the "
              f"deadline (raise --minutes for the full schedule)", file=sys.stderr)

    from ..enginefile import load_model, save_engine
    # few held-out clips tie (8 synthetic takes all detected), so "the best epoch" on them is the first one
    # by accident; the mean of every epoch's weights is the steadier rule across enrollments (docs/wake-words.md)
    picked = {"average": res["averaged"], "last": str(Path(res["model"]).with_name("last.npz")),
              "best": res["model"]}[args.pick]
    model = load_model(picked)
    thresholds = np.round(np.arange(0.5, 0.995, 0.01), 2)
    test_peaks = peak_scores(model, built["test_takes"], word)
    # no held-out take (--holdout 0): the trained-on takes still show a take the model cannot hear
    own = (peak_scores(model, built["train_audio"], word) if not len(test_peaks) and built["train_audio"]
           else np.zeros(0))
    held_peaks = peak_scores(model, built["held_pos"], word) if built["held_pos"] else np.zeros(0)
    alike_peaks = peak_scores(model, built["held_neg"], word) if built["held_neg"] else np.zeros(0)
    x = negative_stream(built["stream_neg"], args.seed)
    hours = len(x) / SR / 3600
    fa = stream_false_alarms(model, x, word, thresholds)
    thr = choose_threshold(test_peaks, fa, thresholds, hours, args.max_fa_per_hour)
    if args.threshold is not None:
        thr = float(args.threshold)
    i = int(np.argmin(np.abs(thresholds - thr)))
    recall = float((test_peaks >= thr).mean()) if len(test_peaks) else float("nan")
    held_recall = float((held_peaks >= thr).mean()) if len(held_peaks) else float("nan")
    fa_h = fa[i] / hours if hours > 0 else float("nan")
    model.detector = {**model.detector, "threshold": thr}
    model.meta = {**model.meta, "kind": "wake-word", "word": word, "threshold_chosen_on":
                  f"{len(x) / SR / 60:.1f} min negative stream of held-out real speech (+ sound-alikes where little), "
                  f"<= {args.max_fa_per_hour:g} FA/h", "heldout_user_takes": len(test_peaks),
                  "heldout_recall": recall, "stream_fa_per_hour": fa_h, "languages": ["en"]}
    save_engine(model, out)
    total = time.monotonic() - t_start
    print(f"\nkws wakeword: wrote {out} ('{word}', labels {', '.join(model.labels)})", file=sys.stderr)
    print(f"  measured at the chosen threshold {thr:.2f}:", file=sys.stderr)
    if len(test_peaks):
        print(f"  - your held-out takes: {int((test_peaks >= thr).sum())} of {len(test_peaks)} detected "
              f"(recall {recall:.0%}; their scores {', '.join(f'{p:.2f}' for p in sorted(test_peaks))})", file=sys.stderr)
    elif len(own):
        print(f"  - your takes: none held out (--holdout 0); of the {len(own)} trained on, {int((own >= thr).sum())} "
              f"are detected (scores from {own.min():.2f}; not a measure of new takes)", file=sys.stderr)
    else:
        print("  - your held-out takes: none (record takes with kws record to measure recall on your voice)", file=sys.stderr)
    if len(held_peaks):
        print(f"  - held-out synthetic voices ({', '.join(built['held_families'])}): {held_recall:.0%} of "
              f"{len(held_peaks)} detected", file=sys.stderr)
    print(f"  - false alarms: {fa[i]} in a {len(x) / SR / 60:.1f} min negative stream ({fa_h:.1f} per hour; "
          f"{len(built['stream_neg'])} held-out {'confuser and real-speech' if built['stream_soundalikes'] else 'real-speech'} "
          f"clips over noise)", file=sys.stderr)
    if len(alike_peaks):
        print(f"  - sound-alikes ({', '.join(built['confusers'][:6])}, ...) of held-out voices: "
              f"{int((alike_peaks >= thr).sum())} of {len(alike_peaks)} fire", file=sys.stderr)
    zero = [t for t, n in zip(thresholds, fa) if n == 0]
    print(f"  - threshold: {thr:.2f} (the lowest with <= {args.max_fa_per_hour:g} FA/h on that stream"
          + (f"; none fire from {zero[0]:.2f}" if zero else "; it fires even at 0.99") + ")", file=sys.stderr)
    print(f"  time: {total / 60:.1f} min in all (set {t_built - t_start:.0f} s, training {t_trained - t_train:.0f} s, "
          f"measuring {time.monotonic() - t_trained:.0f} s)", file=sys.stderr)
    print(f"  use it: kws listen --model {out}   |   kws serve --model {default_model_path()} --model {out}"
          f"   |   fires by itself? --threshold {min(0.99, thr + 0.03):.2f} (docs/wake-words.md)", file=sys.stderr)
    summary = {"model": str(out), "weights": args.pick, "word": word, "threshold": thr, "heldout_takes": len(test_peaks),
               "heldout_recall": recall, "heldout_scores": [round(float(p), 4) for p in test_peaks],
               "trained_takes": len(own), "trained_takes_detected": int((own >= thr).sum()),
               "synthetic_heldout_recall": held_recall, "stream_minutes": len(x) / SR / 60,
               "stream_false_alarms": int(fa[i]), "fa_per_hour": fa_h, "seconds": total,
               "seconds_training": t_trained - t_train, "steps": epochs * steps, "step_s": step_s,
               "stopped_at_deadline": bool(res.get("stopped_early")),
               "soundalike_clips": len(alike_peaks), "soundalike_fires": int((alike_peaks >= thr).sum())}
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


def add_parser(sub) -> None:
    from ..commands import SUMMARY
    p = sub.add_parser("wakeword", help=SUMMARY["wakeword"],
                       description="Train a wake-word model for your own word: your takes (kws record) plus "
                                   "synthetic takes and sound-alike negatives from the machine's TTS voices and "
                                   "the real speech roots it has; fine-tunes the shipped model within a time "
                                   "budget and reports recall on your held-out takes, false alarms per hour and "
                                   "the threshold it chose (docs/wake-words.md).")
    p.add_argument("word", help="the wake word, e.g. marvin")
    p.add_argument("--takes", default=None, metavar="DIR", help="folder with WORD/ of your takes (kws record --out DIR)")
    p.add_argument("--tts", action=__import__("argparse").BooleanOptionalAction, default=True,
                   help="synthetic takes and confusers from the TTS voices on this machine (default on)")
    p.add_argument("--voices", type=int, default=48, help="TTS voice settings to use at most (default 48)")
    p.add_argument("--negatives", nargs="+", default=None, metavar="ROOT",
                   help="Speech Commands-layout roots of real speech used as negatives ('none': none; "
                        "default: those of ../shared/real_speech, real_words, speech_commands_part that exist)")
    p.add_argument("--real-negatives", type=int, default=1500, metavar="N", help="real negative clips to use (1500)")
    p.add_argument("--holdout", type=int, default=None, metavar="N",
                   help="takes kept out of training to measure recall on (default: a quarter of them; 0: train "
                        "on every take; the summary then scores the trained-on takes, not a measure of new ones)")
    p.add_argument("--out", default=None, help="model file to write (default models/WORD.npz)")
    p.add_argument("--work", default=None, help="working folder (default runs/wakeword_WORD)")
    p.add_argument("--init", default=None, help="model to fine-tune from (default: the shipped wake word, "
                                                "models/marvin.npz; the 12-class model where it is missing)")
    p.add_argument("--inherit", action=__import__("argparse").BooleanOptionalAction, default=False,
                   help="start the word's output row from the init model's wake word (a one-word model's)")
    p.add_argument("--minutes", type=float, default=10.0, help="time budget for the whole command (default 10)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 4; the budget sets their length)")
    p.add_argument("--steps", type=int, default=None, help="steps per epoch (default: from the time budget)")
    p.add_argument("--pick", default="average", choices=["average", "last", "best"],
                   help="which weights to ship: the mean of every epoch's (default), the last epoch's, or the "
                        "epoch best on the held-out synthetic takes (few clips: often a tie, kept for comparison)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--augment", default="", metavar="FIELD=VALUE,...",
                   help="change augmentation settings as in kws train (kws/training/augment.py AugmentConfig), "
                        "e.g. vtlp=0.8:1.2")
    p.add_argument("--max-fa-per-hour", type=float, default=1.0,
                   help="the threshold chosen: the lowest with at most this many false alarms per hour on the "
                        "negative stream (default 1)")
    p.add_argument("--threshold", type=float, default=None, help="store this threshold instead of choosing one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_wakeword)
