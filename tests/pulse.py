"""A private PulseAudio server with a virtual microphone, for end-to-end tests of `kws listen`.

Recipe (design notes §5): a null sink `vmic` whose monitor is the default source; PortAudio reaches it
through ALSA's pulse plugin. A `pacat --record --latency-msec=10` reader stays attached so the idle sink
runs in low-latency mode (without it the first capture stalls 1-2 s and loses samples).

    with VirtualMic() as mic:            # sets PULSE_SERVER / PULSE_RUNTIME_PATH for subprocesses
        proc = subprocess.Popen(["kws", "listen", ...])
        t0 = mic.play("speech.wav")       # wall-clock time at which paplay was started

Debian packages: pulseaudio pulseaudio-utils libasound2-plugins libportaudio2.
If they are missing the tests are skipped, unless the environment variable CI is set: then they fail,
so CI can never silently skip the end-to-end test.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

TOOLS = ("pulseaudio", "pactl", "pacat", "paplay")
APT = "pulseaudio pulseaudio-utils libasound2-plugins libportaudio2"


def _missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def require_pulseaudio() -> None:
    """pytest.skip when PulseAudio is not installed; pytest.fail instead when $CI is set."""
    missing = _missing_tools()
    if not missing:
        return
    msg = f"PulseAudio tools not installed ({', '.join(missing)}): apt-get install -y {APT}"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the virtual-microphone test cannot run: {msg}", pytrace=False)
    pytest.skip(msg)


class VirtualMic:
    """Context manager: start a private PulseAudio server with null sink `vmic` as the default source."""

    def __init__(self, rate: int = 16000, channels: int = 1, start_timeout: float = 10.0,
                 reader_latency_ms: int = 10):
        """reader_latency_ms: the latency the attached pacat reader asks for. The server then cuts the source
        into fragments that short for every client, kws included (10 ms: 100 wake-ups a second of its
        audio threads); benchmarks/listen_bench.py also measures a reader that asks for kws's own block."""
        self.rate, self.channels, self.start_timeout = rate, channels, start_timeout
        self.reader_latency_ms = int(reader_latency_ms)
        self.runtime: Path | None = None
        self.server = self.reader = None
        self.env: dict[str, str] = {}
        self._saved_env: dict[str, str | None] = {}

    # -- lifecycle
    def __enter__(self) -> "VirtualMic":
        require_pulseaudio()
        self.runtime = Path(tempfile.mkdtemp(prefix="kws-pulse-"))
        sock = self.runtime / "native"
        self.env = {"PULSE_RUNTIME_PATH": str(self.runtime), "PULSE_SERVER": f"unix:{sock}"}
        try:
            self._start(sock)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self, sock: Path) -> None:
        for k, v in self.env.items():
            self._saved_env[k] = os.environ.get(k)
            os.environ[k] = v
        # --daemonize=no keeps the server our child, so teardown knows its pid.
        self.server = subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no",
             "--disable-shm=yes", f"--log-target=file:{self.runtime / 'log'}",
             f"--load=module-native-protocol-unix socket={sock} auth-anonymous=1",
             f"--load=module-null-sink sink_name=vmic rate={self.rate} channels={self.channels} format=s16le"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.server.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self.server.returncode}: {self.log_tail()}")
            if sock.exists() and self.pactl("info", check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"pulseaudio did not start within {self.start_timeout} s: {self.log_tail()}")
            time.sleep(0.05)
        self.pactl("set-default-sink", "vmic")
        self.pactl("set-default-source", "vmic.monitor")
        self.reader = subprocess.Popen(["pacat", "--record", "--raw", f"--latency-msec={self.reader_latency_ms}",
                                        "-d", "vmic.monitor"],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        time.sleep(0.3)   # let the sink settle into low-latency mode
        if self.reader.poll() is not None:
            raise RuntimeError(f"pacat reader exited with {self.reader.returncode}: {self.log_tail()}")

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.pactl("exit", check=False, timeout=5)
        for p in (self.reader, self.server):
            if p is None:
                continue
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.terminate()
                try:
                    p.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.reader = self.server = None
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env = {}
        if self.runtime is not None:
            shutil.rmtree(self.runtime, ignore_errors=True)
            self.runtime = None

    # -- helpers
    def subprocess_env(self, base: dict | None = None) -> dict:
        env = dict(os.environ if base is None else base)
        env.update(self.env)
        return env

    def pactl(self, *args: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess:
        r = subprocess.run(["pactl", *args], env=self.subprocess_env(), capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {r.stderr.strip()}")
        return r

    def play(self, wav_path, wait: bool = True, timeout: float = 120) -> float:
        """Play a WAV into the virtual microphone; returns the wall-clock time just before paplay started.

        paplay zeroes up to ~7 ms at the start: pad the WAV with >= 0.1 s of silence at both ends."""
        t0 = time.time()
        p = subprocess.Popen(["paplay", "--device=vmic", str(wav_path)], env=self.subprocess_env(),
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if wait:
            _, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise RuntimeError(f"paplay {wav_path} failed ({p.returncode}): {err.decode(errors='replace')}")
        else:
            self._last_play = p
        return t0

    def log_tail(self, n: int = 5) -> str:
        try:
            lines = (self.runtime / "log").read_text(errors="replace").splitlines()
            return " | ".join(lines[-n:])
        except Exception:
            return "(no log)"


@pytest.fixture
def virtual_mic():
    """A fresh virtual microphone per test (≈ 0.5 s to start)."""
    with VirtualMic() as mic:
        yield mic


def wait_for_line(proc, lines: list, pattern: str, count: int = 1, timeout: float = 30.0) -> None:
    """Wait until `count` of `lines` (appended by a reader thread of proc's output) match `pattern`;
    otherwise kill proc and fail with the tail of what it printed. Bounded by `timeout`."""
    import re
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if sum(bool(re.search(pattern, l)) for l in lines) >= count:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no {pattern!r} x{count} within {timeout} s (rc {proc.poll()}):\n{''.join(lines)[-3000:]}")
