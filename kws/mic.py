"""Audio input for `kws listen`: the microphone (PortAudio via sounddevice) or a file replayed as one.

Both sources only copy blocks into a queue; the listener's worker does the rest, so a slow spotter never
blocks PortAudio's callback. The stream runs at the device's own default rate (44.1/48 kHz are fine: the
spotter resamples). Every problem a user can fix (no PortAudio, no device, unknown device, a device that
stalls or vanishes) becomes a `ListenError` with a one-line message.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

from .errors import KwsError, first_line

FALLBACK_RATES = (48000, 44100, 32000, 22050, 16000, 8000)
APT_HINT = "sudo apt install libportaudio2"
POLL_S = 0.1               # how often a blocked reader thread checks whether it should stop


class ListenError(KwsError):
    """Microphone / audio-device problem; one line, says what to do."""


class PortAudioMissing(ListenError):
    pass


class DeviceError(ListenError):
    pass


class DeviceStalled(ListenError):
    pass


# --------------------------------------------------------------------------- sounddevice access

def _sounddevice():
    """Import sounddevice, turning a missing PortAudio library into a one-line instruction."""
    try:
        import sounddevice
    except OSError as e:  # sounddevice raises OSError('PortAudio library not found')
        raise PortAudioMissing(
            f"cannot use the microphone: PortAudio library not found ({first_line(e)}); install it "
            f"(Debian/Ubuntu/Raspberry Pi OS: `{APT_HINT}`; macOS: `brew install portaudio`) "
            f"or replay a file with `kws listen --input FILE.wav`") from None
    except ImportError as e:
        raise PortAudioMissing(f"cannot use the microphone: python package sounddevice is missing "
                               f"({first_line(e)}); run `pip install sounddevice`") from None
    return sounddevice


def _pa_error_types(sd) -> tuple:
    return tuple(t for t in (getattr(sd, "PortAudioError", None),) if isinstance(t, type))


def input_devices(sd) -> list[dict]:
    """All devices with input channels: dicts with index, name, hostapi, channels, rate, default."""
    pa_errors = _pa_error_types(sd)
    try:
        devs = list(sd.query_devices())
    except pa_errors as e:
        raise DeviceError(f"cannot list audio devices: {first_line(e)}") from None
    default = _default_input_index(sd)
    out = []
    for i, d in enumerate(devs):
        if int(d.get("max_input_channels", 0)) <= 0:
            continue
        try:
            api = sd.query_hostapis(d["hostapi"])["name"]
        except Exception:
            api = "?"
        out.append({"index": int(d.get("index", i)), "name": d["name"], "hostapi": api,
                    "channels": int(d["max_input_channels"]), "rate": float(d["default_samplerate"]),
                    "default": int(d.get("index", i)) == default})
    return out


def _default_input_index(sd) -> int:
    try:
        dev = sd.default.device[0]
    except Exception:
        return -1
    if dev is None:
        return -1
    if isinstance(dev, str):
        try:
            return int(sd.query_devices(dev, "input")["index"])
        except Exception:
            return -1
    return int(dev)


NO_DEVICE_HINT = ("connect a microphone (check it is not muted and that your user is in the `audio` group), "
                  "or replay a file with `kws listen --input FILE.wav`")


def resolve_device(sd, spec: str | int | None) -> dict:
    """--device NAME|INDEX (or the default input) -> the device's entry from `input_devices`."""
    devs = input_devices(sd)
    if not devs:
        raise DeviceError(f"no audio input device found; {NO_DEVICE_HINT}")
    if spec is None or str(spec).strip() == "":
        idx = _default_input_index(sd)
        for d in devs:
            if d["index"] == idx:
                return d
        if len(devs) == 1:
            return devs[0]
        raise DeviceError("no default audio input device; pick one with --device NAME|INDEX "
                          "(run `kws devices` to list them)")
    s = str(spec).strip()
    if s.lstrip("-").isdigit():
        idx = int(s)
        for d in devs:
            if d["index"] == idx:
                return d
        raise DeviceError(f"no input device with index {idx}; run `kws devices` to list input devices")
    low = s.lower()
    exact = [d for d in devs if d["name"].lower() == low]
    if len(exact) == 1:
        return exact[0]
    matches = exact or [d for d in devs if low in d["name"].lower()
                        or low in f"{d['name']}, {d['hostapi']}".lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceError(f"no input device matches {s!r}; run `kws devices` to list input devices")
    names = "; ".join(f"{d['index']}: {d['name']}" for d in matches[:6])
    raise DeviceError(f"{len(matches)} input devices match {s!r} ({names}); "
                      f"give a longer name or the index (see `kws devices`)")


# --------------------------------------------------------------------------- sources

@dataclass
class Counters:
    overflows: int = 0          # PortAudio reported input overflow (samples lost before we saw them)
    dropped: int = 0            # blocks dropped because the queue was full (processing too slow)
    blocks: int = 0             # blocks processed
    samples: int = 0            # samples processed (at the source's rate)
    detections: int = 0


class _End:
    """Queue item: the source has ended (file done) or failed (error set)."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


class MicSource:
    """A sounddevice.InputStream whose callback only copies blocks into the queue."""

    def __init__(self, sd, device: dict, block_ms: float, q: queue.Queue, counters: Counters):
        self.sd, self.device, self.q, self.counters = sd, device, q, counters
        self.rate, self.channels = self._settings(device)
        self.blocksize = max(1, int(round(self.rate * block_ms / 1000.0)))
        self.finished = threading.Event()
        self.first_block = threading.Event()   # set by the callback: audio is really flowing
        self.stream = None
        self.label = f"{device['name']!r} (#{device['index']}, {device['hostapi']})"

    def _settings(self, d: dict) -> tuple[int, int]:
        """The device's default rate (never forced to 16 kHz), 1 channel unless the device refuses it."""
        check = getattr(self.sd, "check_input_settings", None)
        rates = [int(round(d["rate"]))] + [r for r in FALLBACK_RATES if r != int(round(d["rate"]))]
        chans = [1] if d["channels"] >= 1 else []
        if d["channels"] > 1:
            chans.append(d["channels"] if d["channels"] <= 8 else 2)
        if check is None:
            return rates[0], 1
        last = None
        for ch in chans:
            for r in rates:
                try:
                    check(device=d["index"], channels=ch, samplerate=r, dtype="float32")
                    return r, ch
                except Exception as e:  # PortAudioError / ValueError: try the next combination
                    last = e
        raise DeviceError(f"input device {d['name']!r} (#{d['index']}) accepts no usable format "
                          f"({first_line(last)}); try another --device (see `kws devices`)")

    def _callback(self, indata, frames, time_info, status):
        # PortAudio thread: copy and enqueue, nothing else.
        if status and getattr(status, "input_overflow", False):
            self.counters.overflows += 1
        try:
            self.q.put_nowait(indata.copy())
        except queue.Full:
            self.counters.dropped += 1
        if not self.first_block.is_set():
            self.first_block.set()

    def start(self) -> None:
        sd = self.sd
        pa_errors = _pa_error_types(sd) + (ValueError,)
        try:
            self.stream = sd.InputStream(device=self.device["index"], samplerate=self.rate,
                                         channels=self.channels, dtype="float32", blocksize=self.blocksize,
                                         callback=self._callback, finished_callback=self.finished.set)
            self.stream.start()
        except pa_errors as e:
            self.close()
            msg = first_line(e)
            hint = ("check that no other program holds the device exclusively and that your user is in "
                    "the `audio` group, or try another --device (see `kws devices`)")
            if "-1" in msg and "device" in msg.lower():
                raise DeviceError(f"no audio input device available ({msg}); {NO_DEVICE_HINT}") from None
            raise DeviceError(f"cannot open input device {self.label} at {self.rate} Hz: {msg}; {hint}") from None

    def wait_audio(self, timeout: float) -> None:
        """Block until the first audio block arrives. A started PortAudio stream can take a few hundred ms
        to deliver its first sample (seen with the PulseAudio ALSA plugin), so "listening" is announced
        only once audio flows: stream times then count from about when that line appears."""
        deadline = time.monotonic() + timeout
        while not self.first_block.wait(min(POLL_S, max(deadline - time.monotonic(), 0.0))):
            if self.finished.is_set():
                raise DeviceStalled(f"input stream from {self.label} stopped before delivering any audio "
                                    f"(device unplugged or disconnected?); check the device and run `kws devices`")
            if time.monotonic() >= deadline:
                raise DeviceStalled(f"no audio from {self.label} within {timeout:.1f} s of opening it "
                                    f"(device stalled or unplugged?); check the device and run `kws devices`")

    def alive(self) -> bool:
        if self.finished.is_set():
            return False
        try:
            return bool(self.stream.active)
        except Exception:
            return False

    def close(self) -> None:
        s, self.stream = self.stream, None
        if s is None:
            return
        for op in ("stop", "close"):
            try:
                getattr(s, op)()
            except Exception:
                pass


class FileSource:
    """Replays a file through the same queue at real-time pace (or as fast as possible)."""

    def __init__(self, path: str, block_ms: float, q: queue.Queue, fast: bool):
        from .audio import info
        self.rate, _, self.frames = info(path)        # AudioError (one line) for missing/corrupt files
        self.path, self.q, self.fast = path, q, fast
        self.block_s = block_ms / 1000.0
        self.blocksize = max(1, int(round(self.rate * self.block_s)))
        self.channels = 1
        self.label = f"file {path!r}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kws-file-source", daemon=True)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self.q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        from .audio import read_blocks
        try:
            t0, sent = time.monotonic(), 0
            for block, sr in read_blocks(self.path, self.block_s):
                if self._stop.is_set():
                    return
                sent += block.shape[0]
                if not self.fast:     # a block is available once its last sample has "arrived"
                    delay = t0 + sent / sr - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
                if not self._put(block):
                    return
            self._put(_End())
        except BaseException as e:  # hand the error to the worker thread
            self._put(_End(e))

    def start(self) -> None:
        self._thread.start()

    def wait_audio(self, timeout: float) -> None:
        """A file has audio from its first sample: nothing to wait for."""

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
