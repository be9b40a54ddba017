"""A fake `sounddevice` for the `kws listen` tests (no PortAudio, no microphone): devices, defaults,
check_input_settings and an InputStream whose thread plays given audio through the callback.
FakeSD ends its audio as a test asks (stall, finish, interrupt, loop); FlakySD is a microphone that goes
away and comes back (`kws listen --retry`)."""
from __future__ import annotations

import _thread
import threading
import time

import numpy as np


class FakePortAudioError(Exception):
    pass


class FakeStatus:
    def __init__(self, overflow=False):
        self.input_overflow = overflow

    def __bool__(self):
        return self.input_overflow


class _Stream:
    """What the fake InputStreams share: start() runs `_run` on a thread until stop() or close()."""

    def __init__(self, callback, finished_callback, blocksize, channels=1):
        self.callback, self.finished_callback = callback, finished_callback
        self.blocksize, self.channels = blocksize, channels
        self.active, self._stop = False, threading.Event()

    def start(self):
        self.active = True
        threading.Thread(target=self._run, daemon=True).start()

    def stop(self):
        self._stop.set()
        self.active = False

    def close(self):
        self._stop.set()


class FakeSD:
    """Just enough of sounddevice: devices, defaults, check_input_settings and an InputStream that
    plays `audio` through the callback, then does `after` ('stall', 'finish', 'interrupt', 'loop')."""
    PortAudioError = FakePortAudioError

    def __init__(self, devices=(), default=-1, audio=None, after="stall", overflow_every=0,
                 mono_ok=True, open_error=None, pace=0.0):
        self.devices = [dict(index=i, hostapi=0, max_output_channels=0, default_low_input_latency=0.01,
                             **d) for i, d in enumerate(devices)]
        self.default = type("default", (), {"device": [default, default]})()
        self.audio, self.after, self.overflow_every = audio, after, overflow_every
        self.mono_ok, self.open_error, self.pace = mono_ok, open_error, pace
        self.opened = {}
        self.rescans = 0
        fake = self

        class InputStream(_Stream):
            def __init__(self, device, samplerate, channels, dtype, blocksize, callback, finished_callback):
                if fake.open_error:
                    raise FakePortAudioError(fake.open_error)
                fake.opened = dict(device=device, samplerate=samplerate, channels=channels, dtype=dtype,
                                   blocksize=blocksize)
                super().__init__(callback, finished_callback, blocksize, channels)

            def _run(self):
                x = fake.audio if fake.audio is not None else np.zeros((48000, self.channels), np.float32)
                if x.ndim == 1:
                    x = np.repeat(x[:, None], self.channels, 1)
                while not self._stop.is_set():
                    for k, s in enumerate(range(0, len(x) - self.blocksize + 1, self.blocksize)):
                        if self._stop.is_set():
                            return
                        ov = bool(fake.overflow_every and k % fake.overflow_every == 0)
                        self.callback(x[s:s + self.blocksize].astype(np.float32), self.blocksize, None,
                                      FakeStatus(ov))
                        if fake.pace:
                            time.sleep(fake.pace)
                    if fake.after == "loop":
                        continue
                    if fake.after == "finish":
                        self.active = False
                        self.finished_callback()
                    elif fake.after == "interrupt":
                        time.sleep(0.2)
                        _thread.interrupt_main()
                    return   # 'stall': stays active, never calls back again

        self.InputStream = InputStream

    def query_devices(self, device=None, kind=None):
        if device is None and kind is None:
            return list(self.devices)
        return self.devices[device if device is not None else self.default.device[0]]

    def query_hostapis(self, i):
        return {"name": "ALSA"}

    def check_input_settings(self, device, channels, samplerate, dtype):
        d = self.devices[device]
        if channels > d["max_input_channels"] or (channels == 1 and not self.mono_ok):
            raise FakePortAudioError("Invalid number of channels")

    def _terminate(self):      # sounddevice's PortAudio re-initialisation (a device rescan)
        self.rescans += 1

    def _initialize(self):
        pass


class FlakySD(FakeSD):
    """sounddevice with one microphone that plays `audio`, then goes away (its stream finishes and the
    next `fail_opens` opens fail, as an unplugged USB microphone does), then comes back and plays `audio`
    again followed by silence."""

    def __init__(self, audio: np.ndarray, rate: int = 48000, fail_opens: int = 2):
        super().__init__(devices=[dict(name="USB Mic: Audio (hw:1,0)", max_input_channels=1,
                                       default_samplerate=float(rate))], default=0, audio=audio)
        self.rate, self.fail_opens = rate, fail_opens
        self.opens = 0
        fake = self

        class InputStream(_Stream):
            def __init__(self, device, samplerate, channels, dtype, blocksize, callback, finished_callback):
                fake.opens += 1
                if 1 < fake.opens <= 1 + fake.fail_opens:
                    raise FakePortAudioError("Device unavailable [PaErrorCode -9985]")
                self.n = fake.opens
                super().__init__(callback, finished_callback, blocksize)

            def _run(self):
                x, b = fake.audio, self.blocksize
                for s in range(0, len(x) - b + 1, b):
                    if self._stop.is_set():
                        return
                    self.callback(x[s:s + b, None].copy(), b, None, None)
                    time.sleep(0.001)
                if self.n == 1:                      # the device goes away
                    self.active = False
                    self.finished_callback()
                    return
                while not self._stop.is_set():       # back: silence from now on
                    self.callback(np.zeros((b, 1), np.float32), b, None, None)
                    time.sleep(0.001)

        self.InputStream = InputStream
