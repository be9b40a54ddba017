"""`kws serve`: a Wyoming protocol wake-word service (Home Assistant voice pipelines).

Protocol (https://github.com/OHF-Voice/wyoming): newline-terminated JSON headers, optional extra JSON
data and a binary payload. The service answers

- `describe` with `info`: a wake program "kws" with one wake model per keyword it serves;
- `detect` (optional `names`): which of those keywords the following audio sessions listen for;
- `audio-start` / `audio-chunk`* / `audio-stop`: one audio session. Audio comes at any rate, sample
  width (1: unsigned 8-bit, 2, 3, 4: signed little-endian) and channel count and is converted as
  `kws listen` converts its input (downmix, scaling, streaming resampler: `KeywordSpotter.process`).
  Each detection is sent as `detection` (name, timestamp in ms from the audio start) the moment it
  fires; after `audio-stop` the spotter is flushed and `not-detected` is sent if nothing fired;
- `ping` with `pong`, in order: after everything the connection sent before it has been answered.
  Other event types are ignored (named in the connection's log line), as Wyoming services do for
  forward compatibility.

Design:
- One `KeywordSpotter` per connection and sample rate (all share the model loaded once), reset at
  each `audio-start`: sessions and connections never share streaming state.
- Per connection a reader task parses events and queues audio; a processor task takes *everything
  queued* and runs `process` on it in one call (in the event loop; `--workers N` moves it to N
  threads). An idle server handles every 20 ms chunk at once; a loaded one coalesces the chunks that
  arrived meanwhile into one call, which costs little more than one chunk (the per-call overhead
  dominates), so under load the server trades a little latency for throughput instead of falling
  behind. Detections do not depend on how audio is chunked.
- Back-pressure, not drops: a connection with more than MAX_BACKLOG_S of unprocessed audio is not
  read from until the worker catches up (TCP flow control slows the client).
- Bad input (garbage, non-JSON header, oversized header/data/payload, bad audio format, chunk outside
  a session, a payload that never arrives, a client vanishing mid-event) closes that connection only,
  with one log line; the server and the other connections go on. Each connection logs one line when
  it ends and one per detection.

Only the public `KeywordSpotter` API is used (`process`, `flush`, `reset`, `labels`, `cfg`), and it is
imported lazily: this module itself needs numpy and wyoming only.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import stat
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from .errors import KwsError, first_line

log = logging.getLogger("kws.serve")

DEFAULT_URI = "tcp://127.0.0.1:10400"
MAX_LINE = 64 * 1024               # longest JSON header line
MAX_DATA = 1 << 20                 # longest extra JSON data (data_length)
MAX_PAYLOAD = 4 << 20              # longest binary payload (> 10 s of 48 kHz stereo 32-bit audio)
EVENT_TIMEOUT_S = 10.0             # once a header has arrived, its data and payload must follow this fast
MAX_BACKLOG_S = 2.0                # unprocessed audio per connection before its socket is no longer read
RATE_RANGE = (4000, 384000)        # accepted sample rates, Hz
WIDTHS = (1, 2, 3, 4)              # accepted sample widths, bytes
MAX_CHANNELS = 32
MAX_SPOTTERS = 4                   # cached spotters per connection (one per rate / keyword set)
EOF_DRAIN_S = 5.0                  # after the client half-closes, finish queued audio for this long


class ServeError(KwsError):
    """Bad `kws serve` arguments or a URI that cannot be served; one line."""


class BadInput(Exception):
    """The client sent something this server cannot accept: closes that connection."""


# --------------------------------------------------------------------------- event framing

async def read_event(reader: asyncio.StreamReader, timeout: float = EVENT_TIMEOUT_S):
    """One Wyoming event, or None at a clean end of stream (EOF between events).

    The framing of `wyoming.event.async_read_event`, but strict and bounded: every malformed or
    oversized header raises BadInput, and data/payload that do not follow within `timeout` too.
    A client that vanishes mid-event raises asyncio.IncompleteReadError."""
    from wyoming.event import Event
    try:
        line = await reader.readline()
    except ValueError:              # LimitOverrunError, re-raised by readline as ValueError
        raise BadInput(f"header line longer than {MAX_LINE} bytes (not Wyoming?)") from None
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise asyncio.IncompleteReadError(line, None)
    try:
        head = json.loads(line)
    except ValueError:
        raise BadInput(f"header is not JSON: {line[:40]!r}") from None
    if not isinstance(head, dict) or not isinstance(head.get("type"), str) or not head["type"]:
        raise BadInput(f"header has no event type: {line[:40]!r}")
    data = head.get("data") or {}
    if not isinstance(data, dict):
        raise BadInput(f"{head['type']}: data is not a JSON object")
    lengths = []
    for key, limit in (("data_length", MAX_DATA), ("payload_length", MAX_PAYLOAD)):
        n = head.get(key) or 0
        if not isinstance(n, int) or isinstance(n, bool) or not (0 <= n <= limit):
            raise BadInput(f"{head['type']}: {key} {n!r} is not an integer in 0..{limit}")
        lengths.append(n)
    n_data, n_payload = lengths
    payload = None
    if n_data or n_payload:
        # one timer for both reads (asyncio.wait_for would cost a task per event, ~30% of the framing)
        timer = asyncio.get_running_loop().call_later(timeout, reader.set_exception, _Late())
        try:
            if n_data:
                extra = await reader.readexactly(n_data)
                try:
                    more = json.loads(extra)
                except ValueError:
                    raise BadInput(f"{head['type']}: extra data is not JSON") from None
                if not isinstance(more, dict):
                    raise BadInput(f"{head['type']}: extra data is not a JSON object")
                data = {**data, **more}
            if n_payload:
                payload = await reader.readexactly(n_payload)
        except _Late:
            raise BadInput(f"{head['type']}: announced {n_data} data + {n_payload} payload bytes did not "
                           f"arrive within {timeout:g} s") from None
        finally:
            timer.cancel()
    return Event(type=head["type"], data=data, payload=payload)


class _Late(Exception):
    """Set on a connection's StreamReader when an announced data/payload is overdue."""


def audio_format(data: dict, what: str) -> tuple[int, int, int]:
    """(rate, width, channels) of an audio-start/chunk, validated."""
    out = []
    for key, ok, desc in (("rate", lambda v: RATE_RANGE[0] <= v <= RATE_RANGE[1],
                           f"{RATE_RANGE[0]}..{RATE_RANGE[1]} Hz"),
                          ("width", lambda v: v in WIDTHS, "1, 2, 3 or 4 bytes"),
                          ("channels", lambda v: 1 <= v <= MAX_CHANNELS, f"1..{MAX_CHANNELS}")):
        v = data.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not ok(v):
            raise BadInput(f"{what}: {key} {v!r} not supported (want {desc})")
        out.append(v)
    return tuple(out)


def pcm_to_array(payload: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved little-endian PCM -> [frames, channels] array of a dtype `to_float_mono` scales
    (uint8 for 8-bit, as in WAV and Wyoming; 24-bit is widened to int32)."""
    frame = width * channels
    if len(payload) % frame:
        raise BadInput(f"audio-chunk: {len(payload)} payload bytes is not a whole number of "
                       f"{width}-byte x {channels}-channel frames")
    if width == 3:
        b = np.frombuffer(payload, np.uint8).reshape(-1, 3)
        x = np.zeros((b.shape[0], 4), np.uint8)
        x[:, 1:] = b                      # little-endian: the 24 bits become the top of an int32
        a = x.view("<i4").reshape(-1)
    else:
        a = np.frombuffer(payload, {1: np.uint8, 2: "<i2", 4: "<i4"}[width])
    a = a.astype(a.dtype.newbyteorder("="), copy=False)
    return a.reshape(-1, channels)


# --------------------------------------------------------------------------- the service

@dataclass
class Options:
    models: list | None = None         # models served at once (paths or loaded); None: the shipped model
    keywords: list[str] | None = None  # served keywords (None: all of the model's)
    threshold: float | None = None
    refractory: float | None = None
    event_timeout: float = EVENT_TIMEOUT_S
    max_connections: int = 256


@dataclass
class Stats:
    connections: int = 0
    active: int = 0
    detections: int = 0
    bad: int = 0


@dataclass
class _Served:
    """One served model file: its loaded model and the wake-word name of each keyword label it serves."""
    spec: object
    stem: str
    model: object
    labels: list
    wake: dict                          # keyword label -> wake-word name (served ones only)
    cfg: object
    meta: dict

    @property
    def n_keywords(self) -> int:
        from .data.index import NON_KEYWORDS
        return sum(1 for k in self.labels if k not in NON_KEYWORDS)


class _Multi:
    """Several models' spotters on one audio session: each chunk goes to every one; their detections are
    renamed to the wake-word names and merged in time order. Each model keeps its own refractory time."""

    def __init__(self, parts):
        self.parts = parts               # [(KeywordSpotter, {label: wake name})]

    def _merge(self, results) -> list:
        out = []
        for (_, names), dets in zip(self.parts, results):
            for d in dets:
                d.label = names[d.label]
                out.append(d)
        out.sort(key=lambda d: d.time)
        return out

    def process(self, x) -> list:
        return self._merge([sp.process(x) for sp, _ in self.parts])

    def flush(self) -> list:
        return self._merge([sp.flush() for sp, _ in self.parts])

    def reset(self) -> None:
        for sp, _ in self.parts:
            sp.reset()


class Service:
    """Everything shared by the connections: the model, the served keywords, the worker pool."""

    def __init__(self, opts: Options, workers: int = 0):
        from .stream import KeywordSpotter    # lazy: torch (or, later, the numpy engine) loads here
        self.KeywordSpotter = KeywordSpotter
        self.opts = opts
        self.served = self._load_models(opts)       # [_Served], in --model order
        self.keywords = [w for m in self.served for w in m.wake.values()]   # every served wake-word name
        # workers 0: process in the event loop (cheapest on one core: a thread hand-off costs ~20% of a
        # 20 ms chunk's processing); N > 0: N threads (torch releases the GIL in its kernels)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kws-serve") if workers > 0 else None
        self.stats = Stats()
        self.conns: set[Connection] = set()
        self.tasks: set[asyncio.Task] = set()      # connection tasks, cancelled at shutdown
        self._next_id = 0
        self.info_event = self._info().event()

    def _load_models(self, opts: Options) -> list["_Served"]:
        """Each model file once. A model with several keywords (the shipped commands model) offers one wake
        model per keyword, named by the keyword; a model with one keyword (a wake-word model such as
        marvin) offers one wake model named by its metadata's `wake_word`, else that keyword. A model's file
        stem is also accepted as a `detect` name (all of its wake words). `--keywords` filters the names."""
        from .data.index import NON_KEYWORDS
        specs = list(opts.models) if opts.models else [None]
        served, seen = [], {}
        for spec in specs:
            try:
                proto = self.KeywordSpotter(spec, threshold=opts.threshold, refractory_s=opts.refractory)
            except ValueError as e:
                raise ServeError(first_line(e)) from None
            model = getattr(proto, "bundle", spec)   # loaded once, shared by every connection's spotter
            meta = dict(getattr(model, "meta", {}) or {})
            kws = [k for k in proto.labels if k not in NON_KEYWORDS]
            if not kws:
                raise ServeError(f"model {spec or 'default'} has no keywords to serve (labels: {', '.join(proto.labels)})")
            if len(kws) == 1 and isinstance(meta.get("wake_word"), str) and meta["wake_word"].strip():
                wake = {kws[0]: meta["wake_word"].strip()}
            else:
                wake = {k: k for k in kws}
            if spec is None:
                from .enginefile import default_model_path
                stem = default_model_path().stem
            else:
                stem = Path(str(spec)).stem
            for w in wake.values():
                if w in seen:
                    raise ServeError(f"wake word {w!r} is offered by two models ({seen[w]} and {spec}); "
                                     f"serve them separately or filter with --keywords")
                seen[w] = spec or "the default model"
            served.append(_Served(spec, stem, model, list(proto.labels), wake, proto.cfg, meta))
        if opts.keywords:
            wanted = set(opts.keywords)
            known = {w for m in served for w in m.wake.values()} | {m.stem for m in served}
            unknown = sorted(wanted - known)
            if unknown:
                raise ServeError(f"keywords not in {'this model' if len(served) == 1 else 'the served models'}: "
                                 f"{', '.join(unknown)} "
                                 f"(models offer: {', '.join(w for m in served for w in m.wake.values())})")
            for m in served:
                keep = m.stem in wanted
                m.wake = {k: w for k, w in m.wake.items() if keep or w in wanted}
            served = [m for m in served if m.wake]
        return served

    def resolve(self, names: list[str]) -> tuple[list[str], list[str]]:
        """`detect` names -> (served wake names they choose, in serving order; names not served).
        A model's file stem chooses all of that model's wake words."""
        want, unknown = set(), []
        for n in names:
            hit = [w for m in self.served for w in m.wake.values() if n == w or n == m.stem]
            if hit:
                want.update(hit)
            else:
                unknown.append(n)
        return [w for w in self.keywords if w in want], unknown

    async def call(self, fn, *args):
        if self.pool is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def spotter(self, rate: int, keywords: list[str]):
        """A spotter for these served wake names: the model's own KeywordSpotter when they all come from one
        model under their own label names (the single-model case, unchanged); else one spotter per model
        that is asked for, run side by side on the same audio (_Multi)."""
        parts = []
        for m in self.served:
            labels = [k for k, w in m.wake.items() if w in keywords]
            if labels:
                sp = self.KeywordSpotter(m.model, sample_rate=rate, keywords=labels,
                                         threshold=self.opts.threshold, refractory_s=self.opts.refractory)
                parts.append((sp, m.wake))
        if not parts:
            raise ValueError(f"no served model offers {', '.join(keywords)}")
        if len(parts) == 1 and all(k == w for k, w in parts[0][1].items()):
            return parts[0][0]
        return _Multi(parts)

    def _info(self):
        from wyoming.info import Attribution, Info, WakeModel, WakeProgram
        from . import __version__
        attribution = Attribution(name="kws (Apache-2.0)", url="")
        models = []
        for m in self.served:
            langs = list(m.meta.get("languages") or ["en"])
            version = str(m.meta.get("trained") or "") or None
            for k, w in m.wake.items():
                desc = (f"kws keyword '{w}'" if m.n_keywords > 1 else f"kws wake word '{w}' ({m.stem})")
                models.append(WakeModel(name=w, description=desc, phrase=w.replace("_", " "), attribution=attribution,
                                        installed=True, languages=langs, version=version))
        prog = WakeProgram(name="kws", description="kws streaming keyword spotter (MFCC + stateful GRU)",
                           attribution=attribution, installed=True, version=__version__, models=models)
        return Info(wake=[prog])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._next_id += 1
        task = asyncio.current_task()
        self.tasks.add(task)
        conn = Connection(self, self._next_id, reader, writer)
        self.stats.connections += 1
        if len(self.conns) >= self.opts.max_connections:
            conn.log_end(f"refused: {len(self.conns)} connections open (--max-connections)")
            writer.close()
            self.tasks.discard(task)
            return
        self.conns.add(conn)
        self.stats.active = len(self.conns)
        try:
            await conn.run()
        except asyncio.CancelledError:
            pass          # shutdown fallback; asyncio's start_server callback would log a cancelled task
        finally:
            self.conns.discard(conn)
            self.tasks.discard(task)
            self.stats.active = len(self.conns)


def _peer(writer) -> str:
    p = writer.get_extra_info("peername")
    if isinstance(p, tuple) and len(p) >= 2:
        return f"{p[0]}:{p[1]}"
    return "unix"


@dataclass
class _Session:
    n: int
    rate: int
    width: int
    channels: int
    listening: bool
    spotter: object = None
    detections: int = 0
    samples: int = 0


@dataclass
class _Conn:
    sessions: int = 0
    chunks: int = 0
    audio_s: float = 0.0
    detections: int = 0
    ignored: set = field(default_factory=set)


class Connection:
    def __init__(self, service: Service, cid: int, reader, writer):
        self.svc, self.id, self.reader, self.writer = service, cid, reader, writer
        self.peer = _peer(writer)
        self.t0 = time.monotonic()
        self.st = _Conn()
        self.names: list[str] | None = None     # from `detect`; None: every served keyword
        self.session: _Session | None = None     # the reader's view (validation)
        self.queue: list = []   # ("start", _Session) | ("audio", array, rate) | ("stop", _Session) | ("ping", text) | ("eof",)
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.backlog_s = 0.0
        self.spotters: dict = {}
        self.reason: str | None = None
        self.closing = False                     # set by the server's shutdown
        self.warned_names = False
        self.proc: asyncio.Task | None = None

    def shutdown(self) -> None:
        """Server shutdown: end this connection at the next event boundary, without draining."""
        self.closing = True
        self.reason = "server shutdown"
        if self.proc is not None:
            self.proc.cancel()
        self.room.set()
        self.reader.feed_eof()

    def tag(self) -> str:
        return f"conn {self.id} {self.peer}"

    def log_end(self, reason: str) -> None:
        s = self.st
        msg = (f"{self.tag()}: {reason}; {time.monotonic() - self.t0:.1f} s, {s.sessions} session(s), "
               f"{s.chunks} chunk(s), {s.audio_s:.2f} s audio, {s.detections} detection(s)")
        if s.ignored:
            msg += f", ignored event type(s) {', '.join(sorted(s.ignored))}"
        (log.warning if reason.startswith(("bad input", "internal", "refused")) else log.info)(msg)

    async def send(self, event) -> None:
        from wyoming.event import async_write_event
        await async_write_event(event, self.writer)

    # ----------------------------------------------------------------- reader side

    async def run(self) -> None:
        proc = self.proc = asyncio.create_task(self._processor(), name=f"kws-serve-proc-{self.id}")
        reason = "closed by client"
        try:
            while not self.closing:
                ev = await read_event(self.reader, self.svc.opts.event_timeout)
                if ev is None or self.closing:
                    break
                await self._on_event(ev)
                if proc.done():
                    break
            if not proc.done() and not self.closing:   # clean EOF: answer what was queued (half-close)
                self._put(("eof",))
                try:
                    await asyncio.wait_for(asyncio.shield(proc), EOF_DRAIN_S)
                except asyncio.TimeoutError:
                    pass
        except BadInput as e:
            reason = f"bad input: {e}"
            self.svc.stats.bad += 1
        except asyncio.IncompleteReadError as e:
            reason = f"client disconnected mid-event ({len(e.partial)} of {e.expected or '?'} bytes)"
        except (ConnectionError, OSError) as e:
            reason = f"connection lost ({first_line(e)})"
        except asyncio.CancelledError:
            reason = "server shutdown"
            raise
        except Exception as e:                      # a bug: cost this connection, not the server
            reason = f"internal error: {type(e).__name__}: {first_line(e)}"
            log.debug("internal error", exc_info=True)
        finally:
            if not proc.done():
                proc.cancel()
            try:
                await proc
            except BaseException:
                pass
            if self.reason:                          # the processor failed first (e.g. write error)
                reason = self.reason
            self.writer.close()
            self.log_end(reason)

    def _put(self, item) -> None:
        self.queue.append(item)
        self.wake.set()

    async def _on_event(self, ev) -> None:
        t, data = ev.type, ev.data
        if t == "audio-chunk":
            s = self.session
            if s is None:
                raise BadInput("audio-chunk before audio-start")
            if any(k in data and data[k] != v for k, v in
                   (("rate", s.rate), ("width", s.width), ("channels", s.channels))):
                raise BadInput(f"audio-chunk format {data.get('rate')} Hz/{data.get('width')} B/"
                               f"{data.get('channels')} ch differs from audio-start's "
                               f"{s.rate} Hz/{s.width} B/{s.channels} ch")
            x = pcm_to_array(ev.payload or b"", s.width, s.channels)
            self.st.chunks += 1
            if x.shape[0] == 0:
                return
            self.st.audio_s += x.shape[0] / s.rate
            if not s.listening:
                return
            self.backlog_s += x.shape[0] / s.rate
            self._put(("audio", x, s.rate))
            if self.backlog_s > MAX_BACKLOG_S:      # back-pressure: stop reading until the worker catches up
                self.room.clear()
                await self.room.wait()
        elif t == "audio-start":
            rate, width, channels = audio_format(data, "audio-start")
            self.st.sessions += 1
            names = self.svc.keywords if self.names is None else self.names
            s = _Session(self.st.sessions, rate, width, channels, listening=bool(names))
            if s.listening:
                key = (rate, tuple(names))
                sp = self.spotters.pop(key, None)
                if sp is None:
                    try:
                        sp = self.svc.spotter(rate, list(names))
                    except ValueError as e:
                        raise BadInput(f"audio-start: {first_line(e)}") from None
                self.spotters[key] = sp               # most recently used last
                while len(self.spotters) > MAX_SPOTTERS:
                    self.spotters.pop(next(iter(self.spotters)))
                s.spotter = sp
            self.session = s
            self._put(("start", s))
        elif t == "audio-stop":
            if self.session is None:
                raise BadInput("audio-stop before audio-start")
            self._put(("stop", self.session))
            self.session = None
        elif t == "detect":
            names = data.get("names")
            if names is None:
                self.names = None
            elif not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise BadInput(f"detect: names must be a list of strings, got {names!r}")
            else:
                chosen, unknown = self.svc.resolve(names)    # wake names, or a model's file stem
                if unknown and not self.warned_names:       # once per connection
                    self.warned_names = True
                    log.warning(f"{self.tag()}: detect: not served here: {', '.join(map(repr, unknown))} "
                                f"(serving {', '.join(self.svc.keywords)})")
                self.names = chosen if names else None
        elif t == "describe":
            await self.send(self.svc.info_event)
        elif t == "ping":
            self._put(("ping", data.get("text")))     # answered in order, after the audio before it
        elif t not in self.st.ignored:
            if len(self.st.ignored) < 8:              # reported in the connection's end line
                self.st.ignored.add(t[:40])
                log.debug(f"{self.tag()}: ignoring event type {t[:40]!r}")

    # ----------------------------------------------------------------- processor side

    async def _processor(self) -> None:
        cur: _Session | None = None
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                while self.queue:
                    items, self.queue = self.queue, []
                    i = 0
                    while i < len(items):
                        kind = items[i][0]
                        if kind == "audio":
                            j = i
                            while j < len(items) and items[j][0] == "audio":
                                j += 1
                            parts = [it[1] for it in items[i:j]]
                            x = parts[0] if len(parts) == 1 else np.concatenate(parts)
                            i = j
                            if cur is not None and cur.spotter is not None:
                                dets = await self.svc.call(cur.spotter.process, x)
                                await self._detections(cur, dets)
                            self.backlog_s -= sum(it[1].shape[0] / it[2] for it in items[j - len(parts):j])
                            if self.backlog_s <= MAX_BACKLOG_S / 2:
                                self.room.set()
                            continue
                        i += 1
                        if kind == "start":
                            cur = items[i - 1][1]
                            if cur.spotter is not None:
                                cur.spotter.reset()
                        elif kind == "stop":
                            s = items[i - 1][1]
                            if s.spotter is not None:
                                dets = await self.svc.call(s.spotter.flush)
                                await self._detections(s, dets)
                            if s.detections == 0:
                                from wyoming.wake import NotDetected
                                await self.send(NotDetected().event())
                            cur = None
                        elif kind == "ping":
                            from wyoming.ping import Pong
                            await self.send(Pong(text=items[i - 1][1]).event())
                        elif kind == "eof":
                            return
                    if self.backlog_s < 1e-9:
                        self.backlog_s = 0.0
                        self.room.set()
        except (ConnectionError, OSError) as e:
            self.reason = f"connection lost ({first_line(e)})"
            self.reader.feed_eof()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.reason = f"internal error: {type(e).__name__}: {first_line(e)}"
            log.debug("internal error", exc_info=True)
            self.reader.feed_eof()
        finally:
            self.room.set()

    async def _detections(self, s: _Session, dets) -> None:
        from wyoming.wake import Detection
        for d in dets:
            s.detections += 1
            self.st.detections += 1
            self.svc.stats.detections += 1
            ms = int(round(d.time * 1000))
            log.info(f"{self.tag()}: detection {d.label} score {d.score:.2f} at {d.time:.3f} s "
                     f"(session {s.n})")
            await self.send(Detection(name=d.label, timestamp=ms).event())


# --------------------------------------------------------------------------- listening sockets

def parse_uri(uri: str) -> tuple[str, object]:
    """tcp://HOST:PORT or unix://PATH -> ("tcp", (host, port)) | ("unix", path)."""
    u = urlparse(uri)
    if u.scheme == "tcp":
        try:
            port = u.port
        except ValueError:
            port = None
        if not u.hostname or port is None:
            raise ServeError(f"--uri {uri!r}: give a host and a port, e.g. {DEFAULT_URI}")
        return "tcp", (u.hostname, port)
    if u.scheme == "unix":
        path = (u.netloc + u.path) if u.netloc else u.path
        if not path:
            raise ServeError(f"--uri {uri!r}: give a socket path, e.g. unix:///run/kws/kws.sock")
        return "unix", path
    raise ServeError(f"--uri {uri!r}: only tcp://HOST:PORT and unix://PATH are supported")


def _stale_unix_socket(path: str) -> None:
    """Remove a socket file left by a dead server; refuse to touch a live one or a non-socket."""
    p = Path(path)
    if not p.exists():
        return
    if not stat.S_ISSOCK(p.stat().st_mode):
        raise ServeError(f"{path} exists and is not a socket; choose another path")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(0.5)
        s.connect(path)
    except OSError:
        p.unlink()                                  # nobody listens: stale
        return
    finally:
        s.close()
    raise ServeError(f"another server is listening on {path}")


async def serve(service: Service, uri: str, stop: asyncio.Event, ready=None, zeroconf_name: str | None = None,
                zeroconf_factory=None) -> str:
    """Serve until `stop` is set; returns the URI actually served (port 0 -> the bound port).
    `ready(uri)` is called once listening."""
    kind, where = parse_uri(uri)
    try:
        if kind == "tcp":
            host, port = where
            server = await asyncio.start_server(service.handle, host=host, port=port, limit=MAX_LINE)
            bound = server.sockets[0].getsockname()
            shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
            actual = f"tcp://{shown}:{bound[1]}"
        else:
            _stale_unix_socket(where)
            server = await asyncio.start_unix_server(service.handle, path=where, limit=MAX_LINE)
            actual = f"unix://{where}"
    except OSError as e:
        raise ServeError(f"cannot listen on {uri}: {first_line(e)}") from None
    zc = None
    try:
        if zeroconf_name is not None:
            zc = await _register_zeroconf(kind, where, server, zeroconf_name, zeroconf_factory)
        if ready:
            ready(actual)
        await stop.wait()
    finally:
        server.close()
        tasks = list(service.tasks)
        for c in list(service.conns):
            c.shutdown()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=2.0)
            for t in pending:                          # a connection stuck in a write: cancel it
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        try:
            await asyncio.wait_for(server.wait_closed(), 2.0)
        except (asyncio.TimeoutError, Exception):
            pass
        if zc is not None:
            try:
                await asyncio.wait_for(zc._aiozc.async_close(), 2.0)
            except Exception:
                pass
        if kind == "unix":
            try:
                os.unlink(where)
            except OSError:
                pass
    return actual


def zeroconf_class():
    """wyoming's HomeAssistantZeroconf, or a one-line error when the zeroconf package is missing."""
    import importlib.util
    if importlib.util.find_spec("zeroconf") is None:
        raise ServeError("--zeroconf needs the zeroconf package: pip install zeroconf  (or pip install 'kws[zeroconf]')")
    from wyoming.zeroconf import HomeAssistantZeroconf
    return HomeAssistantZeroconf


def _check_zeroconf_host(host: str, port: int) -> None:
    if host == "localhost" or host.startswith("127.") or host == "::1":
        raise ServeError(f"--zeroconf: {host} is not reachable from other machines; "
                         f"listen on tcp://0.0.0.0:{port} (or this machine's address)")


async def _register_zeroconf(kind, where, server, name, factory=None):
    """Advertise `_wyoming._tcp` over mDNS like the Wyoming add-ons, so Home Assistant discovers it."""
    if kind != "tcp":
        raise ServeError("--zeroconf needs a tcp:// URI (Home Assistant connects over TCP)")
    host, port = where
    port = server.sockets[0].getsockname()[1]
    _check_zeroconf_host(host, port)
    cls = factory or zeroconf_class()
    zc = cls(port=port, name=name, host=None if host in ("0.0.0.0", "::") else host)
    await zc.register_server()
    log.info(f"kws serve: zeroconf: advertising _wyoming._tcp '{name}' on {zc.host}:{port}")
    return zc


# --------------------------------------------------------------------------- the command

def _parse_keywords(s: str | None) -> list[str] | None:
    if not s:
        return None
    kws = [k.strip() for k in s.split(",") if k.strip()]
    return kws or None


def run_serve(args) -> int:
    if args.threshold is not None and not (0.0 < args.threshold <= 1.0):
        raise ServeError(f"--threshold must be in (0, 1], got {args.threshold:g}")
    if args.refractory is not None and not (0.0 <= args.refractory <= 60.0):
        raise ServeError(f"--refractory must be between 0 and 60 s, got {args.refractory:g}")
    if not (0 < args.event_timeout <= 3600):
        raise ServeError(f"--event-timeout must be in (0, 3600] s, got {args.event_timeout:g}")
    if not (0 <= args.workers <= 64):
        raise ServeError(f"--workers must be in 0..64, got {args.workers}")
    if not (1 <= args.max_connections <= 65536):
        raise ServeError(f"--max-connections must be in 1..65536, got {args.max_connections}")
    kind, where = parse_uri(args.uri)
    if args.zeroconf is not None:               # fail before loading the model
        if kind != "tcp":
            raise ServeError("--zeroconf needs a tcp:// URI (Home Assistant connects over TCP)")
        zeroconf_class()
        _check_zeroconf_host(*where)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    opts = Options(models=list(args.model) if args.model else None, keywords=_parse_keywords(args.keywords), threshold=args.threshold,
                   refractory=args.refractory, event_timeout=args.event_timeout,
                   max_connections=args.max_connections)
    service = Service(opts, workers=args.workers)
    got = {"signal": None}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(signame):
            got["signal"] = signame
            stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal, sig.name)
            except (NotImplementedError, RuntimeError, ValueError):   # not the main thread / Windows
                pass

        def ready(actual):
            what = "; ".join(f"{'model ' + m.stem + ': ' if len(service.served) > 1 else ''}keywords "
                             f"{','.join(m.wake.values())}, threshold {m.cfg.threshold:g}, "
                             f"refractory {m.cfg.refractory_s:g} s" for m in service.served)
            log.info(f"kws serve: listening on {actual} ({what})")
        await serve(service, args.uri, stop, ready=ready, zeroconf_name=args.zeroconf)

    try:
        asyncio.run(main())
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):    # a second Ctrl-C while exiting: no traceback
            try:
                signal.signal(sig, signal.SIG_IGN)
            except ValueError:                          # not the main thread
                pass
        if service.pool is not None:
            service.pool.shutdown(wait=True, cancel_futures=True)
    st = service.stats
    log.info(f"kws serve: stopped ({got['signal'] or 'done'}): {st.connections} connection(s), "
             f"{st.detections} detection(s), {st.bad} closed for bad input")
    return 0


def add_parser(sub) -> None:
    from .commands import SUMMARY
    p = sub.add_parser("serve", help=SUMMARY["serve"],
                       description="Serve keyword detection over the Wyoming protocol, as Home Assistant's "
                                   "voice pipelines expect from a wake-word service (see docs/home-assistant.md).")
    p.add_argument("--uri", default=DEFAULT_URI, help=f"tcp://HOST:PORT or unix://PATH (default {DEFAULT_URI}; "
                   "tcp://0.0.0.0:10400 to accept other machines; port 0 picks a free port)")
    p.add_argument("--model", action="append", default=None, metavar="MODEL",
                   help="model file; repeat to serve several at once, e.g. --model models/kws12_gru.npz "
                        "--model models/marvin.npz (default: the shipped commands model)")
    p.add_argument("--keywords", default=None, metavar="yes,stop",
                   help="comma-separated wake words (or model file stems) to serve (default: all of the models')")
    p.add_argument("--threshold", type=float, default=None, help="detection threshold on the smoothed posterior")
    p.add_argument("--refractory", type=float, default=None, metavar="S",
                   help="seconds after a detection in which nothing fires (default: the model's)")
    p.add_argument("--zeroconf", nargs="?", const="kws", default=None, metavar="NAME",
                   help="advertise the service over mDNS for Home Assistant discovery (needs the zeroconf package)")
    p.add_argument("--workers", type=int, default=0,
                   help="processing threads (default 0: in the event loop, the cheapest on one core)")
    p.add_argument("--max-connections", type=int, default=256, help="connections served at once (default 256)")
    p.add_argument("--event-timeout", type=float, default=EVENT_TIMEOUT_S, metavar="S",
                   help=f"a header's data and payload must arrive within S seconds (default {EVENT_TIMEOUT_S:g})")
    p.add_argument("--debug", action="store_true", help="debug logging")
    p.set_defaults(func=run_serve)
