"""Steady-state cost of `kws listen` on a live input: CPU (% of one core) and peak RSS.

    python benchmarks/listen_bench.py [--seconds 30] [--block-ms 50]

Starts a private PulseAudio server with a virtual microphone (tests/pulse.py; needs the Debian
packages pulseaudio, pulseaudio-utils, libasound2-plugins, libportaudio2), runs `kws listen --json`
on it, waits until it is listening, then samples the process's CPU time over `--seconds`: start-up
(imports, model load) is left out, as a user leaving it running would see it.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--block-ms", type=float, default=50.0)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    with VirtualMic() as mic:
        cmd = [sys.executable, "-m", "kws.cli", "listen", "--json", "--block-ms", str(args.block_ms)]
        if args.model:
            cmd += ["--model", args.model]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, **mic.env})
        line = p.stderr.readline()              # "kws: listening to ..." once the stream runs
        time.sleep(2.0)
        c0, t0 = cpu_seconds(p.pid), time.time()
        time.sleep(args.seconds)
        c1, t1 = cpu_seconds(p.pid), time.time()
        hwm = [l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmHWM")][0].split()[1]
        p.terminate()
        p.wait(timeout=10)
    print(line.strip())
    print(f"block {args.block_ms:g} ms: CPU {100 * (c1 - c0) / (t1 - t0):.1f}% of one core over {t1 - t0:.0f} s; "
          f"peak RSS {int(hwm) / 1024:.0f} MB")


if __name__ == "__main__":
    main()
