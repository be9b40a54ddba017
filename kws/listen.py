"""`kws listen` (live keyword spotting from a microphone or a replayed file) and `kws devices`.

Audio path: the PortAudio callback (or, for `--input FILE`, a reader thread; both in mic.py) only copies
blocks into a queue; the main thread pops them, runs `KeywordSpotter.process` and prints each detection
the moment it happens. The stream runs at the device's own default rate (44.1/48 kHz are fine: the
spotter resamples).

Every problem a user can fix (no PortAudio, no device, unknown device, a device that stalls or vanishes)
becomes a `ListenError` with a one-line message; the CLI prints it and exits non-zero.
"""
from __future__ import annotations

import json
import math
import queue
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import KwsError, first_line
from .mic import (NO_DEVICE_HINT, Counters, DeviceError, DeviceStalled, FileSource, ListenError, MicSource,
                  _End, _sounddevice, input_devices, resolve_device)

STALL_S = 2.0              # no block for this long -> the device is reported as stalled
POLL_S = 0.1               # worker wake-up interval while waiting for blocks
MAX_QUEUE_S = 30.0         # audio buffered before blocks are dropped (processing far slower than real time)
RETRY_FIRST_S = 0.5        # --retry: first wait after the input is lost; doubled after each failed try...
RETRY_MAX_S = 10.0         # ...up to this


# --------------------------------------------------------------------------- output

def level_dbfs(block: np.ndarray) -> float:
    if block.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(block, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 1e-6 else -120.0


class LineOutput:
    """Plain lines or JSON lines on stdout, flushed immediately."""

    def __init__(self, as_json: bool, stream=None):
        self.as_json = as_json
        self.out = stream or sys.stdout

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def detection(self, det, wall: float) -> None:
        if self.as_json:
            d = det.to_dict()
            line = json.dumps({"time": d["time"], "label": d["label"], "score": d["score"], "wall": round(wall, 3)})
        else:
            line = f"{det.time:7.2f}s  {det.label}  {det.score:.2f}"
        self.out.write(line + "\n")
        self.out.flush()

    def update(self, state: "ViewState") -> None:
        pass


@dataclass
class ViewState:
    source: str = ""
    rate: int = 0
    level: float = -120.0
    peak: float = -120.0
    top: list = field(default_factory=list)           # [(label, p)] top-3 smoothed posteriors
    recent: deque = field(default_factory=lambda: deque(maxlen=5))
    overflows: int = 0
    dropped: int = 0
    backlog: int = 0
    seconds: float = 0.0


class LiveOutput(LineOutput):
    """rich.live terminal view: level meter, top-3 posteriors, recent detections, overflow count."""

    REFRESH_S = 0.1

    def __init__(self):
        super().__init__(as_json=False)
        from rich.console import Console
        from rich.live import Live
        self.console = Console()
        self.live = Live(console=self.console, refresh_per_second=10, transient=True, auto_refresh=False)
        self._last = 0.0

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.__exit__(*exc)
        return False

    def detection(self, det, wall: float) -> None:
        self.console.print(f"[bold green]{det.time:7.2f}s  {det.label}  {det.score:.2f}[/]")

    def update(self, st: ViewState, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.REFRESH_S:
            return
        self._last = now
        self.live.update(self.render(st), refresh=True)

    @staticmethod
    def render(st: ViewState):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        def bar(frac: float, width: int = 30, style: str = "green") -> Text:
            n = int(round(max(0.0, min(1.0, frac)) * width))
            return Text("█" * n + "·" * (width - n), style=style)

        lvl = max(-60.0, min(0.0, st.level))
        style = "red" if st.peak > -1.0 else ("yellow" if st.level > -12 else "green")
        t = Table.grid(padding=(0, 1))
        t.add_row(Text("source", style="dim"), Text(f"{st.source}  {st.rate} Hz  {st.seconds:7.1f} s"))
        t.add_row(Text("level", style="dim"), bar((lvl + 60) / 60, style=style),
                  Text(f"{st.level:6.1f} dBFS  (peak {st.peak:6.1f})"))
        for lab, p in st.top:
            t.add_row(Text(lab, style="bold" if not lab.startswith("_") else "dim"), bar(p, style="cyan"),
                      Text(f"{p:.2f}"))
        warn = "red" if st.overflows or st.dropped else "dim"
        t.add_row(Text("overflows", style="dim"),
                  Text(f"{st.overflows} overflow(s), {st.dropped} dropped block(s), backlog {st.backlog}", style=warn))
        rec = "  ".join(f"{d.time:.1f}s {d.label} {d.score:.2f}" for d in reversed(st.recent)) or "-"
        t.add_row(Text("recent", style="dim"), Text(rec, style="green"))
        t.add_row(Text(""), Text("Ctrl-C to stop", style="dim"))
        return Group(t)


# --------------------------------------------------------------------------- the worker

class _Stop(Exception):
    pass


def listen(spotter, source, q: queue.Queue, out: LineOutput, counters: Counters,
           duration: float | None = None, stall_s: float | None = None, time_offset: float = 0.0) -> None:
    """Main-thread worker: pop blocks, run the spotter, emit detections; progress goes to `counters`.
    `duration`: seconds of audio from this source; `time_offset`: added to detection times (the audio of
    earlier sources, after a --retry reconnect).

    Raises DeviceStalled when the microphone delivers nothing for `stall_s` or its stream ends.
    """
    stall_s = STALL_S if stall_s is None else stall_s
    is_mic = isinstance(source, MicSource)
    rate = source.rate
    st = ViewState(source=source.label, rate=rate)
    limit = None if duration is None else int(round(duration * rate))
    start = counters.samples
    last_block = time.monotonic()
    top = min(3, len(spotter.labels))

    def emit(dets):
        for det in dets:
            if time_offset:
                det = replace(det, time=det.time + time_offset)
            out.detection(det, time.time())
            st.recent.append(det)
            counters.detections += 1

    while limit is None or counters.samples - start < limit:
        try:
            item = q.get(timeout=POLL_S)
        except queue.Empty:
            if is_mic:
                waited = time.monotonic() - last_block
                if not source.alive():
                    raise DeviceStalled(f"input stream from {source.label} stopped (device unplugged or "
                                        f"disconnected?); check the device and run `kws devices`")
                if waited >= stall_s:
                    raise DeviceStalled(f"no audio from {source.label} for {waited:.1f} s (device stalled or "
                                        f"unplugged?); check the device and run `kws devices`")
            continue
        if isinstance(item, _End):
            if item.error is not None:
                if isinstance(item.error, KwsError):
                    raise item.error
                raise ListenError(f"cannot read {source.label}: {first_line(item.error)}")
            emit(spotter.flush())
            break
        last_block = time.monotonic()
        block = item
        if limit is not None and counters.samples - start + block.shape[0] > limit:
            block = block[: limit - (counters.samples - start)]
        counters.samples += block.shape[0]
        counters.blocks += 1
        emit(spotter.process(block))
        if isinstance(out, LiveOutput):
            mono = block if block.ndim == 1 else block.mean(axis=1)
            st.level = level_dbfs(mono)
            st.peak = 20 * math.log10(max(float(np.max(np.abs(mono))) if mono.size else 0.0, 1e-6))
            p = spotter.posteriors
            st.top = [(spotter.labels[i], float(p[i])) for i in np.argsort(-p)[:top]]
            st.overflows, st.dropped, st.backlog = counters.overflows, counters.dropped, q.qsize()
            st.seconds = time_offset + (counters.samples - start) / rate
            out.update(st)


# --------------------------------------------------------------------------- commands

def _parse_keywords(s: str | None) -> list[str] | None:
    if not s:
        return None
    kws = [k.strip() for k in s.split(",") if k.strip()]
    return kws or None


def _summary(seconds: float, counters: Counters, interrupted: bool) -> str:
    s = (f"kws: {'interrupted' if interrupted else 'done'} after {seconds:.1f} s of audio: "
         f"{counters.detections} detection(s), {counters.overflows} input overflow(s)")
    if counters.dropped:
        s += f", {counters.dropped} block(s) dropped (processing slower than real time)"
    return s


def run_listen(args) -> int:
    from .stream import KeywordSpotter

    if not (0.0 < args.block_ms <= 1000.0):
        raise ListenError(f"--block-ms must be in (0, 1000], got {args.block_ms:g} (20-100 is typical)")
    if args.threshold is not None and not (0.0 <= args.threshold <= 1.0):
        raise ListenError(f"--threshold must be between 0 and 1, got {args.threshold:g}")
    if args.duration is not None and args.duration <= 0:
        raise ListenError(f"--duration must be positive, got {args.duration:g}")
    if args.fast and not args.input:
        raise ListenError("--fast only applies to --input FILE")
    if args.input and args.device is not None:
        raise ListenError("give either --input FILE or --device, not both")

    if getattr(args, "retry", False) and args.input:
        raise ListenError("--retry applies to a microphone, not to --input FILE")
    retry = bool(getattr(args, "retry", False))
    keywords = _parse_keywords(args.keywords)
    counters = Counters()
    sd = None
    if args.input:
        q: queue.Queue = queue.Queue(maxsize=64)      # back-pressure: the reader waits for the worker
        source = FileSource(args.input, args.block_ms, q, args.fast)
    else:
        sd = _sounddevice()
        q = queue.Queue(maxsize=max(16, int(MAX_QUEUE_S * 1000 / args.block_ms)))
        try:
            source = _open_mic(sd, args, q, counters, retry, rescan=False)
        except DeviceError:
            if not retry:
                raise
            source = None                              # --retry: not there yet; the loop below waits for it
    rate = source.rate if source is not None else 48000

    try:
        spotter = KeywordSpotter(args.model, sample_rate=rate, keywords=keywords, threshold=args.threshold)
    except ValueError as e:
        raise ListenError(first_line(e)) from None

    live_view = (not args.json) and sys.stdout.isatty() and not args.no_view
    out = LiveOutput() if live_view else LineOutput(args.json)

    # SIGTERM ends the run like Ctrl-C (summary, exit 0); only the main thread may set handlers.
    old_term = None
    if threading.current_thread() is threading.main_thread():
        def _term(signum, frame):
            raise KeyboardInterrupt
        old_term = signal.signal(signal.SIGTERM, _term)
    interrupted = False
    audio_s = 0.0                 # seconds of audio from earlier sources (before a --retry reconnect)
    lost_at = None                # monotonic time the input was lost (--retry)
    delay = RETRY_FIRST_S
    try:
        with out:
            while True:
                samples0 = counters.samples
                try:
                    if source is None:
                        source = _open_mic(sd, args, q, counters, retry, rescan=True)
                    source.start()
                    source.wait_audio(STALL_S)
                    if source.rate != spotter.sample_rate:     # a different device came back
                        spotter = KeywordSpotter(spotter.bundle, sample_rate=source.rate, keywords=keywords,
                                                 threshold=args.threshold)
                    if lost_at is None:
                        print(f"kws: listening to {source.label} at {source.rate} Hz, {source.channels} ch, "
                              f"{source.blocksize}-sample blocks; Ctrl-C to stop", file=sys.stderr, flush=True)
                    else:
                        print(f"kws: input back after {time.monotonic() - lost_at:.1f} s: listening to "
                              f"{source.label} at {source.rate} Hz (spotter state reset)", file=sys.stderr, flush=True)
                        lost_at, delay = None, RETRY_FIRST_S
                    left = None if args.duration is None else args.duration - audio_s
                    listen(spotter, source, q, out, counters, duration=left, time_offset=audio_s)
                    audio_s += (counters.samples - samples0) / source.rate
                    break
                except (DeviceError, DeviceStalled) as e:
                    if not retry:
                        raise
                    if source is not None:
                        audio_s += (counters.samples - samples0) / source.rate
                        source.close()
                        source = None
                    _drain(q)
                    spotter.reset()
                    if lost_at is None:
                        lost_at = time.monotonic()
                        what = "input lost" if counters.blocks else "no input yet"
                        print(f"kws: {what}: {e}; retrying every {RETRY_FIRST_S:g}-{RETRY_MAX_S:g} s "
                              f"until it is back (--retry)", file=sys.stderr, flush=True)
                    time.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if source is not None:
            source.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    print(_summary(audio_s, counters, interrupted), file=sys.stderr, flush=True)
    return 0


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def _open_mic(sd, args, q, counters, retry: bool, rescan: bool):
    """Resolve --device and make its MicSource (not started). rescan: re-read PortAudio's device list
    first (a device that went away and came back may have a new index)."""
    if rescan:
        term, init = getattr(sd, "_terminate", None), getattr(sd, "_initialize", None)
        if term is not None and init is not None:
            try:
                term()
                init()
            except Exception:
                pass
    device = resolve_device(sd, args.device)
    return MicSource(sd, device, args.block_ms, q, counters)


def run_devices(args) -> int:
    sd = _sounddevice()
    devs = input_devices(sd)
    if not devs:
        raise DeviceError(f"no audio input device found; {NO_DEVICE_HINT}")
    if getattr(args, "json", False):
        for d in devs:
            print(json.dumps(d))
        return 0
    w = max(len(d["name"]) for d in devs)
    print(f"  {'#':>3}  {'name':<{w}}  {'host API':<10} {'in':>3}  {'rate':>6}")
    for d in devs:
        mark = "*" if d["default"] else " "
        print(f"{mark} {d['index']:>3}  {d['name']:<{w}}  {d['hostapi']:<10} {d['channels']:>3}  {d['rate']:>6.0f}")
    if any(d["default"] for d in devs):
        print("* = default input (used when --device is not given)")
    return 0


def add_parser(sub) -> None:
    from .commands import SUMMARY
    p = sub.add_parser("listen", help=SUMMARY["listen"],
                       description="Spot keywords live from a microphone. Each detection is printed as it "
                                   "happens: `TIME  LABEL  SCORE`, or a JSON line with --json.")
    p.add_argument("--model", default=None, help="model file (default: the shipped models/kws12_gru.npz; a .pt needs torch)")
    p.add_argument("--device", default=None, metavar="NAME|INDEX",
                   help="input device index or (part of its) name; see `kws devices` (default: system default)")
    p.add_argument("--threshold", type=float, default=None, help="detection threshold on the smoothed posterior")
    p.add_argument("--keywords", default=None, metavar="yes,stop", help="comma-separated keywords to report")
    p.add_argument("--json", action="store_true",
                   help='one JSON line per detection: {"time","label","score","wall"}')
    p.add_argument("--block-ms", type=float, default=100.0, help="audio block length in ms (default 100: fewer wake-ups; 20-100 is sensible)")
    p.add_argument("--input", default=None, metavar="FILE.wav",
                   help="replay a file through the live path at real-time pace instead of a microphone")
    p.add_argument("--fast", action="store_true", help="with --input: replay as fast as possible")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds of audio")
    p.add_argument("--no-view", action="store_true", help="plain lines even on a terminal (no live view)")
    p.add_argument("--retry", action="store_true",
                   help="wake-word daemon mode: when the microphone goes away or stalls, log one line and retry "
                        f"({RETRY_FIRST_S:g} s, doubling up to {RETRY_MAX_S:g} s) until it is back, instead of exiting")
    p.set_defaults(func=run_listen)

    d = sub.add_parser("devices", help=SUMMARY["devices"], description="List audio input devices "
                       "(index, name, host API, input channels, default sample rate); * marks the default.")
    d.add_argument("--json", action="store_true", help="one JSON object per device")
    d.set_defaults(func=run_devices)
