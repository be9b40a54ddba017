"""Speech Commands dataset index: which file is which label in which split.

Reads the dataset's layout (`<word>/<speaker>_nohash_<n>.wav` or any other format in audio.AUDIO_EXT, `validation_list.txt`,
`testing_list.txt`, `_background_noise_/`) and the looser layouts built the same way (word folders
without list files, e.g. ../shared/real_words, where the speaker is read from the file name).
Conventions follow TensorFlow's speech_commands/input_data.py, which kws_streaming copies.
"""
from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..audio import is_audio
from ..errors import KwsError

SILENCE, UNKNOWN = "_silence_", "_unknown_"
NON_KEYWORDS = (SILENCE, UNKNOWN)      # labels a detector never reports
KEYWORDS10 = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
WORDS35 = ["backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four",
           "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right",
           "seven", "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero"]
SPLITS = ("training", "validation", "testing")
MAX_NUM_WAVS_PER_CLASS = 2 ** 27 - 1  # ~134M, TensorFlow's constant
BACKGROUND = "_background_noise_"
SKIP_DIRS = {BACKGROUND, "_test_set_"}


@dataclass(frozen=True)
class Item:
    path: str | None      # None for a `_silence_` item made from background noise at load time
    label: str
    word: str
    speaker: str
    split: str


def task_labels(task: str = "12", words: list[str] | None = None) -> list[str]:
    """Label list, silence and unknown first: '12' (10 keywords), '35' (all words), or custom words."""
    if words:
        return [SILENCE, UNKNOWN] + list(words)
    if str(task) == "12":
        return [SILENCE, UNKNOWN] + KEYWORDS10
    if str(task) == "35":
        return [SILENCE, UNKNOWN] + WORDS35
    raise ValueError(f"unknown task {task!r}: use 12, 35 or --words")


def speaker_of(path: str | Path) -> str:
    """Speaker id from a file name: `<speaker>_nohash_<n>.wav` (Speech Commands), else the name with its
    trailing `_<n>` (and, in `_unknown_/<word>_...` files, the leading word) removed."""
    p = Path(path)
    name = p.stem
    if "_nohash_" in name:
        return name.split("_nohash_")[0]
    name = re.sub(r"_\d+$", "", name)
    if p.parent.name == UNKNOWN and "_" in name:
        name = name.split("_", 1)[1]
    return name


def which_set(speaker: str, validation_percentage: float = 10, testing_percentage: float = 10) -> str:
    """TensorFlow's deterministic split: SHA-1 of the speaker part of the file name."""
    h = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16)
    pct = (h % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if pct < validation_percentage:
        return "validation"
    if pct < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def read_list(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {ln.strip().replace("\\", "/") for ln in path.read_text().splitlines() if ln.strip()}


def parse_root(spec: str | Path) -> tuple[Path, float, float]:
    """`ROOT` or `ROOT@VAL,TEST`: percentages for the speaker-hash split of a root without list files
    (e.g. `../shared/real_words@10,0` keeps 90% of its speakers for training, none for testing)."""
    spec = str(spec)
    if "@" in spec:
        root, pct = spec.rsplit("@", 1)
        try:
            v, t = (float(x) for x in pct.split(","))
        except ValueError:
            raise KwsError(f"bad data root {spec!r}: expected ROOT@VAL,TEST percentages") from None
        return Path(root), v, t
    return Path(spec), 10.0, 10.0


def scan_root(spec: str | Path) -> list[Item]:
    """Every clip under one root, with its word, speaker and split. Labels are filled in by `select`."""
    root, val_pct, test_pct = parse_root(spec)
    if not root.is_dir():
        raise FileNotFoundError(f"data root not found: {root}")
    val, test = read_list(root / "validation_list.txt"), read_list(root / "testing_list.txt")
    has_lists = bool(val or test)
    items = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in SKIP_DIRS):
        for f in sorted(f for f in d.iterdir() if f.is_file() and is_audio(f)):
            rel = f"{d.name}/{f.name}"
            spk = speaker_of(f)
            if has_lists:
                split = "validation" if rel in val else "testing" if rel in test else "training"
            else:
                split = which_set(spk, val_pct, test_pct)
            items.append(Item(str(f), d.name, d.name, spk, split))
    return items


def background_files(roots) -> list[str]:
    dirs = [parse_root(r)[0] / BACKGROUND for r in roots]
    return [str(f) for d in dirs if d.is_dir() for f in sorted(d.iterdir()) if f.is_file() and is_audio(f)]


def select(items: list[Item], labels: list[str], split: str, silence_pct: float = 10.0,
           unknown_pct: float = 10.0, seed: int = 59185) -> list[Item]:
    """One split for a task, TensorFlow style: all target-word clips, plus `_unknown_` and `_silence_`
    each `ceil(n_target * pct / 100)` (unknown drawn at random from non-target words). A percentage
    of None keeps every unknown clip. Folders named `_unknown_`/`_silence_` count as those labels."""
    rng = random.Random(f"{seed}-{split}")
    targets = set(labels) - {SILENCE, UNKNOWN}
    chosen, unknown, silence = [], [], []
    for it in items:
        if it.split != split:
            continue
        if it.word in targets:
            chosen.append(Item(it.path, it.word, it.word, it.speaker, split))
        elif it.word == SILENCE:
            silence.append(Item(it.path, SILENCE, it.word, it.speaker, split))
        elif UNKNOWN in labels:
            unknown.append(Item(it.path, UNKNOWN, it.word, it.speaker, split))
    n = len(chosen)
    if UNKNOWN in labels:
        if unknown_pct is not None:
            rng.shuffle(unknown)
            unknown = unknown[: math.ceil(n * unknown_pct / 100)]
        chosen += unknown
    if SILENCE in labels:
        want = math.ceil(n * silence_pct / 100) if silence_pct is not None else len(silence)
        chosen += silence[:want]
        chosen += [Item(None, SILENCE, SILENCE, "noise", split) for _ in range(max(0, want - len(silence)))]
    rng.shuffle(chosen)
    return chosen


def build_index(roots, labels: list[str], splits=SPLITS, **kw) -> dict[str, list[Item]]:
    """Several roots in one run (e.g. a synthetic corpus plus real clips): scan, then select per split."""
    items = [it for r in roots for it in scan_root(r)]
    return {s: select(items, labels, s, **kw) for s in splits}


def summary(items: list[Item]) -> str:
    c = Counter(it.label for it in items)
    return ", ".join(f"{k}={c[k]}" for k in sorted(c))
