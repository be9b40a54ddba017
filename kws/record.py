"""`kws record WORD`: record (or import) takes of your own word into a Speech Commands-layout word folder.

    kws record marvin --out data/mywords --takes 20       # prompts through 20 takes from the microphone
    kws record marvin --out data/mywords --from a.wav b.m4a.wav ...   # or imports existing audio files

Each take is checked before it is kept (`check_take`): silent, clipped, cut off at either end of the
recording, too short or too long for a 1 s clip, or no clear word above the background noise: the take
is rejected with the reason and, from the microphone, asked for again. A kept take is trimmed to the word,
centred in a 1 s, 16 kHz, 16-bit clip (the Speech Commands format) and written as
`OUT/WORD/<speaker>_nohash_<n>.wav`, numbered after the takes already there. `kws wakeword WORD --takes OUT`
then trains a wake-word model on them (docs/wake-words.md).

The microphone side reuses `kws listen`'s source (mic.py: device default rate, a queue filled by the
PortAudio callback, one-line device errors); the live view is a rich level meter.
"""
from __future__ import annotations

import math
import queue
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import TARGET_RATE
from .errors import KwsError

CLIP_S = 1.0                 # Speech Commands clip length
SILENT_PEAK_DB = -40.0       # a take whose loudest 10 ms is quieter than this is silent
CLIP_LEVEL = 0.985           # samples at or above this magnitude count as clipped...
CLIP_MAX_FRACTION = 0.001    # ...more than this share of the word's samples (or 3 in a row) is clipping
WORD_REL_DB = -30.0          # a 10 ms frame belongs to the word when within this of the loudest frame
MIN_SNR_DB = 15.0            # the loudest frame must stand this far above the background (10th percentile)
EDGE_S = 0.05                # sound in the first/last 50 ms of the recording: the word was cut off
MIN_WORD_S = 0.15
MAX_WORD_S = 0.95            # must fit a 1 s clip with a little room
PAD_S = 0.05                 # kept around the word when trimming
HOP = 160                    # 10 ms at 16 kHz


class RecordError(KwsError):
    pass


@dataclass
class Take:
    ok: bool
    reason: str                  # why rejected ("" when kept)
    clip: np.ndarray | None      # the 1 s 16 kHz float32 clip (kept takes)
    peak_db: float = -120.0
    word_s: float = 0.0


def _db(x: float) -> float:
    return 20.0 * math.log10(max(x, 1e-6))


def frame_rms(x: np.ndarray, hop: int = HOP) -> np.ndarray:
    n = len(x) // hop
    if n == 0:
        return np.zeros(0)
    return np.sqrt(np.mean(np.square(x[: n * hop].reshape(n, hop), dtype=np.float64), axis=1) + 1e-12)


def check_take(x: np.ndarray, rate: int = TARGET_RATE, edges: bool = True) -> Take:
    """One take (float samples in [-1, 1], any rate) -> kept (trimmed 1 s clip) or rejected with a reason.
    `edges`: reject a word that touches the start or end of the recording (cut off); imported files
    that were already trimmed tightly pass with edges=False."""
    from .audio import sanitize, to_float_mono
    x = sanitize(to_float_mono(np.asarray(x)))
    if rate != TARGET_RATE:
        import soxr
        x = soxr.resample(x, rate, TARGET_RATE).astype(np.float32)
    if len(x) < int(0.2 * TARGET_RATE):
        return Take(False, f"too short a recording ({len(x) / TARGET_RATE:.2f} s)", None)
    rms = frame_rms(x)
    peak_frame = float(rms.max())
    peak = float(np.max(np.abs(x)))
    peak_db = _db(peak)
    if _db(peak_frame) < SILENT_PEAK_DB:
        return Take(False, f"silent (loudest {_db(peak_frame):.0f} dBFS): speak up or move closer to the microphone",
                    None, peak_db)
    floor = float(np.percentile(rms, 10))
    snr = _db(peak_frame) - _db(floor)
    if snr < MIN_SNR_DB:
        return Take(False, f"no clear word above the background noise ({snr:.0f} dB over it; want {MIN_SNR_DB:.0f}): "
                           "a quieter room, or closer to the microphone", None, peak_db)
    active = np.flatnonzero(rms >= peak_frame * 10 ** (WORD_REL_DB / 20))
    a, b = int(active[0]), int(active[-1]) + 1          # frames of the word
    word = x[a * HOP: b * HOP]
    word_s = (b - a) * HOP / TARGET_RATE
    hot = np.abs(word) >= CLIP_LEVEL
    run3 = hot.size >= 3 and bool((hot[:-2] & hot[1:-1] & hot[2:]).any())
    if hot.mean() > CLIP_MAX_FRACTION or run3:
        return Take(False, f"clipped ({int(hot.sum())} samples at full scale): lower the input gain or move back",
                    None, peak_db, word_s)
    edge = int(round(EDGE_S * TARGET_RATE / HOP))
    if edges and a < edge:
        return Take(False, "cut off at the start: start speaking a moment after the recording starts", None,
                    peak_db, word_s)
    if edges and b > len(rms) - edge:
        return Take(False, "cut off at the end: finish the word before the recording stops", None, peak_db, word_s)
    if word_s < MIN_WORD_S:
        return Take(False, f"too short ({word_s:.2f} s of sound): a click or a breath, not the word?", None,
                    peak_db, word_s)
    if word_s > MAX_WORD_S:
        return Take(False, f"too long ({word_s:.2f} s of sound; a take holds one word of at most "
                           f"{MAX_WORD_S:g} s): say only the word", None, peak_db, word_s)
    pad = int(PAD_S * TARGET_RATE)
    s, e = max(0, a * HOP - pad), min(len(x), b * HOP + pad)
    seg = x[s:e]
    n = int(CLIP_S * TARGET_RATE)
    if len(seg) > n:                                    # the pads do not fit: keep the word centred
        cut = (len(seg) - n) // 2
        seg = seg[cut: cut + n]
    clip = np.zeros(n, np.float32)
    off = (n - len(seg)) // 2
    clip[off: off + len(seg)] = seg
    return Take(True, "", clip, peak_db, word_s)


def sanitize_name(s: str, what: str) -> str:
    t = re.sub(r"[^a-z0-9]+", "", s.lower())
    if not t:
        raise RecordError(f"{what} {s!r} has no letters or digits; give e.g. {'marvin' if what == 'word' else 'alice'}")
    return t


def next_index(folder: Path, speaker: str) -> int:
    used = [int(m.group(1)) for p in folder.glob(f"{speaker}_nohash_*.wav")
            if (m := re.fullmatch(rf"{re.escape(speaker)}_nohash_(\d+)", p.stem))]
    return max(used) + 1 if used else 0


def write_take(folder: Path, speaker: str, clip: np.ndarray) -> Path:
    import soundfile as sf
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{speaker}_nohash_{next_index(folder, speaker)}.wav"
    sf.write(path, np.clip(clip, -1, 1), TARGET_RATE, subtype="PCM_16")
    return path


# --------------------------------------------------------------------------- the microphone

class Meter:
    """A live level meter (rich) on a terminal; plain lines otherwise."""

    def __init__(self, live: bool):
        self.live = None
        if live:
            from rich.console import Console
            from rich.live import Live
            self.console = Console(stderr=True)
            self.live = Live(console=self.console, refresh_per_second=15, transient=True, auto_refresh=False)

    def __enter__(self):
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)
        return False

    def say(self, text: str) -> None:
        if self.live is not None:
            self.console.print(text)
        else:
            print(re.sub(r"\[/?[a-z ]*\]", "", text), file=sys.stderr, flush=True)

    def show(self, title: str, level_db: float, peak_db: float, left_s: float) -> None:
        if self.live is None:
            return
        from rich.text import Text
        lvl = max(-60.0, min(0.0, level_db))
        n = int(round((lvl + 60) / 60 * 40))
        style = "red" if peak_db > -1.0 else ("yellow" if level_db > -12 else "green")
        t = Text(f"{title}  ")
        t.append("█" * n + "·" * (40 - n), style=style)
        t.append(f"  {level_db:6.1f} dBFS (peak {peak_db:6.1f})  {left_s:4.1f} s left")
        self.live.update(t, refresh=True)


def record_takes(word: str, out: Path, speaker: str, takes: int, seconds: float, device, prompt: bool,
                 pause_s: float, max_tries: int) -> list[Path]:
    from .listen import level_dbfs
    from .mic import MicSource, _sounddevice, resolve_device, Counters
    sd = _sounddevice()
    dev = resolve_device(sd, device)
    q: queue.Queue = queue.Queue(maxsize=4096)
    src = MicSource(sd, dev, 50.0, q, Counters())
    folder = out / word
    kept: list[Path] = []
    meter = Meter(sys.stderr.isatty())
    try:
        src.start()
        src.wait_audio(2.0)
        with meter:
            meter.say(f"kws record: {takes} take(s) of '{word}' from {src.label} at {src.rate} Hz into {folder}/")
            tries = 0
            while len(kept) < takes:
                k = len(kept) + 1
                if tries >= max_tries:
                    raise RecordError(f"{tries} takes in a row were rejected; check the microphone and its level "
                                      f"(kws listen shows a level meter) and try again")
                if prompt:
                    meter.say(f"take {k}/{takes}: press Enter, wait a moment, then say '{word}' once")
                    input()
                while True:                          # what came in before the take starts is not part of it
                    try:
                        q.get_nowait()
                    except queue.Empty:
                        break
                meter.say(f"take {k}/{takes}: recording {seconds:g} s: say '{word}' now")
                got, need, blocks, peak = 0, int(round(seconds * src.rate)), [], -120.0
                t_end = time.monotonic() + seconds + 2.0
                while got < need:
                    try:
                        b = q.get(timeout=0.1)
                    except queue.Empty:
                        if time.monotonic() > t_end or not src.alive():
                            raise RecordError(f"no audio from {src.label} (device stalled or unplugged?); "
                                              "check it with `kws devices`")
                        continue
                    mono = b.mean(axis=1) if b.ndim == 2 else b
                    blocks.append(mono)
                    got += len(mono)
                    peak = max(peak, _db(float(np.max(np.abs(mono))) if mono.size else 0.0))
                    meter.show(f"take {k}/{takes}", level_dbfs(mono), peak, max(0.0, (need - got) / src.rate))
                x = np.concatenate(blocks)[:need]
                t = check_take(x, src.rate)
                if t.ok:
                    p = write_take(folder, speaker, t.clip)
                    kept.append(p)
                    tries = 0
                    meter.say(f"[green]take {k}/{takes}: kept[/] ({t.word_s:.2f} s of sound, peak {t.peak_db:.0f} dBFS) -> {p}")
                else:
                    tries += 1
                    meter.say(f"[yellow]take {k}/{takes}: rejected: {t.reason}[/]; once more")
                if pause_s > 0 and len(kept) < takes:
                    time.sleep(pause_s)
    finally:
        src.close()
    return kept


def import_files(files: list[str], word: str, out: Path, speaker: str, edges: bool) -> tuple[list[Path], list[str]]:
    from .audio import load
    kept, rejected = [], []
    for f in files:
        x = load(f)                                    # AudioError: one line
        t = check_take(x, TARGET_RATE, edges=edges)
        if t.ok:
            kept.append(write_take(out / word, speaker, t.clip))
        else:
            rejected.append(f"{f}: {t.reason}")
    return kept, rejected


def run_record(args) -> int:
    word = sanitize_name(args.word, "word")
    speaker = sanitize_name(args.speaker, "speaker")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise RecordError(f"--out {out} exists and is not a folder")
    if not (1 <= args.takes <= 1000):
        raise RecordError(f"--takes must be in 1..1000, got {args.takes}")
    if not (1.0 <= args.seconds <= 10.0):
        raise RecordError(f"--seconds must be between 1 and 10, got {args.seconds:g}")
    if args.files:
        missing = [f for f in args.files if not Path(f).is_file()]
        if missing:
            raise RecordError(f"audio file not found: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        kept, rejected = import_files(args.files, word, out, speaker, edges=not args.no_edge_check)
        for r in rejected:
            print(f"kws record: rejected {r}", file=sys.stderr)
        print(f"kws record: imported {len(kept)} of {len(args.files)} file(s) into {out / word}/", file=sys.stderr)
        if not kept:
            raise RecordError("no file was kept (see the reasons above)")
        return 0
    prompt = sys.stdin.isatty() and not args.no_prompt
    kept = record_takes(word, out, speaker, args.takes, args.seconds, args.device, prompt, args.pause,
                        max_tries=args.max_rejects)
    print(f"kws record: {len(kept)} take(s) of '{word}' in {out / word}/; next: "
          f"kws wakeword {word} --takes {out}", file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    import getpass
    from .commands import SUMMARY
    p = sub.add_parser("record", help=SUMMARY["record"],
                       description="Record takes of a word from the microphone (or import audio files) into a "
                                   "Speech Commands-layout folder OUT/WORD/<speaker>_nohash_<n>.wav: each take is "
                                   "checked (silent, clipped, cut off, too short/long), trimmed and centred in 1 s.")
    p.add_argument("word", help="the word, e.g. marvin")
    p.add_argument("--out", default="data/mywords", help="the folder that gets WORD/ (default data/mywords)")
    p.add_argument("--takes", type=int, default=20, help="takes to keep (default 20)")
    p.add_argument("--seconds", type=float, default=2.0, help="length of each recording (default 2 s)")
    try:
        user = getpass.getuser()
    except Exception:
        user = "me"
    p.add_argument("--speaker", default=user, help="speaker name in the file names (default: your login name)")
    p.add_argument("--device", default=None, metavar="NAME|INDEX", help="input device (see `kws devices`)")
    p.add_argument("--from", dest="files", nargs="+", default=None, metavar="FILE",
                   help="import these audio files (one take each) instead of recording")
    p.add_argument("--no-edge-check", action="store_true",
                   help="with --from: accept words that touch the start or end of the file (already trimmed)")
    p.add_argument("--no-prompt", action="store_true",
                   help="do not wait for Enter before each take (the default when stdin is not a terminal)")
    p.add_argument("--pause", type=float, default=0.7, metavar="S", help="seconds between takes without prompts")
    p.add_argument("--max-rejects", type=int, default=10, help="give up after this many rejected takes in a row")
    p.set_defaults(func=run_record)
