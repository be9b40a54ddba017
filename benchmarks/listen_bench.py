"""Steady-state cost of `kws listen` on a live input, torch path vs the engine: CPU (% of one core), peak RSS
and start-up time, side by side in one run.

    python benchmarks/listen_bench.py [--seconds 30] [--block-ms 100] [--rate 44100] [--python PY]

Starts a private PulseAudio server with a virtual microphone (tests/pulse.py; needs the Debian
packages pulseaudio, pulseaudio-utils, libasound2-plugins, libportaudio2) at --rate, then for each
backend runs `kws listen --json` on it (KWS_BACKEND=torch: the torch MFCC and model, as kws ran before
the engine; engine: what kws runs), records the time from launch to its "listening" line (start-up:
interpreter, imports, model load, audio stream open), waits 2 s, and samples the process's CPU time
over --seconds: start-up is left out of the CPU figure, as a user leaving it running would see it. Each
figure is taken twice, with the rig's pacat reader asking for 10 ms (it keeps the idle null sink running,
and makes the server hand every client 10 ms fragments: 100 wake-ups a second of kws's audio threads)
and asking for 100 ms, kws's own block, as when kws is the only client of a microphone. The
CPU figure is split into the main thread (the spotter: resampling, features, GRU, detection) and the
other threads (PortAudio's callback and the audio client's loop: what any sounddevice input pays).
--python runs kws with another interpreter, e.g. a base install without torch (engine only there).
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from pulse import VirtualMic  # noqa: E402


def cpu_seconds(pid: int) -> float:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread of a process (tid -> seconds); threads that ended are missing."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            f = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        out[int(tid)] = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return out


def measure(mic, python: str, backend: str, args) -> dict:
    cmd = [python, "-m", "kws", "listen", "--json", "--block-ms", str(args.block_ms)]
    if args.model:
        cmd += ["--model", args.model]
    env = {**os.environ, **mic.env, "KWS_BACKEND": backend}
    t_launch = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    line = p.stderr.readline()              # "kws: listening to ..." once the stream runs
    startup = time.perf_counter() - t_launch
    if "listening" not in line:
        p.kill()
        raise SystemExit(f"{backend}: kws listen did not start: {line.strip()} {p.stderr.read()[-500:]}")
    time.sleep(2.0)
    c0, th0, t0 = cpu_seconds(p.pid), thread_cpu(p.pid), time.time()
    time.sleep(args.seconds)
    c1, th1, t1 = cpu_seconds(p.pid), thread_cpu(p.pid), time.time()
    # the main thread runs KeywordSpotter.process; the others are the audio stack (PortAudio's callback
    # thread, the ALSA/PulseAudio client loop), which a bare sounddevice stream also pays
    main = th1.get(p.pid, 0.0) - th0.get(p.pid, 0.0)
    hwm = [l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmHWM")][0].split()[1]
    p.terminate()
    p.wait(timeout=10)
    return {"line": line.strip(), "startup_s": startup, "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
            "main_pct": 100 * main / (t1 - t0), "audio_pct": 100 * (c1 - c0 - main) / (t1 - t0),
            "rss_mb": int(hwm) / 1024, "seconds": t1 - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--block-ms", type=float, default=100.0)
    ap.add_argument("--rate", type=int, default=44100, help="virtual microphone rate (default 44100: resampled)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--backends", default="torch,engine")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs kws (default: this one)")
    ap.add_argument("--reader-latency-ms", default="10,100",
                    help="latencies (ms, comma-separated) asked by the virtual microphone's pacat reader, one "
                         "server each: 10 is the test rig's (every client of the source then gets 10 ms "
                         "fragments); 100 = kws's block, as when kws is the only client of a microphone")
    args = ap.parse_args()
    rows = {}
    for lat in [int(v) for v in args.reader_latency_ms.split(",")]:
        with VirtualMic(rate=args.rate, reader_latency_ms=lat) as mic:
            for backend in args.backends.split(","):
                rows[(backend, lat)] = measure(mic, args.python, backend, args)
    print(next(iter(rows.values()))["line"])
    print(f"block {args.block_ms:g} ms, {args.rate} Hz input, {args.seconds:g} s sampled, python {args.python}")
    print(f"{'path':<8}{'reader ms':>10}{'CPU % of one core':>19}{'main thread %':>15}{'audio threads %':>17}"
          f"{'peak RSS MB':>13}{'start-up to listening s':>25}")
    for (name, lat), r in rows.items():
        print(f"{name:<8}{lat:>10}{r['cpu_pct']:>19.2f}{r['main_pct']:>15.2f}{r['audio_pct']:>17.2f}"
              f"{r['rss_mb']:>13.0f}{r['startup_s']:>25.2f}")


if __name__ == "__main__":
    main()
