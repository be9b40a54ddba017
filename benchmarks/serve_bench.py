"""Load benchmark of `kws serve`: N concurrent real-time Wyoming clients on loopback.

    python benchmarks/serve_bench.py [--clients 1,8,32,64] [--seconds 20] [--server-cpu 0]
                                     [--cycles 200] [--json-out runs/serve_bench.json]

For each N a fresh `kws serve` process listens on 127.0.0.1 (a free port); N clients (one asyncio
process, the wyoming library's AsyncTcpClient) each stream `--seconds` of spoken keywords (espeak-ng,
made here; a different word order and spacing per client, starts staggered over 1 s) as 16 kHz 16-bit
mono in 20 ms chunks at real-time pace: chunk k leaves at t0 + (k+1) * 20 ms, when its last sample
would have come out of a microphone. With `--server-cpu C` the server is pinned to core C and the
clients to the other cores ("one core" for the server).

Reported per N:
- latency after word end: wall time a `detection` arrives minus the wall time the word's last sample
  was sent, p50 / p99 / max over all detections that match a spoken word (this includes how long the
  model itself waits after the word: its stream-time delay, also reported, as "model delay");
- server delay: the time of the server's detection log line minus the time the client actually sent
  the chunk holding the detection's timestamp (what the server adds: queueing + processing; free of
  the clients' own scheduling), p50 / p99; also "serving delay" in the JSON: the same seen by the client;
- how long the server's thread waited for a CPU (/proc/PID/schedstat): other load on its core;
- server CPU (% of one core, over the streaming window), peak RSS (VmHWM, whole server life);
- late chunks: sent more than 20 ms after their schedule (client starved or server back-pressure);
  dropped chunks: sent minus processed, from the server's per-connection log lines;
- detections vs the streaming API on the same audio (missed / extra / equal).
Then `--cycles` connection cycles (connect, describe, a 1 s session, disconnect; every other one
dropped without waiting) against one server: RSS and open fds before and after.

Loopback only; every loop is bounded in count and time. Timings depend on the machine and on whatever
else runs on it: compare rows of one run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

SR = 16000
CHUNK_S = 0.02
CHUNK = int(SR * CHUNK_S)


def cpu_seconds(pid: int) -> float:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def run_delay(pid: int) -> float:
    """Seconds the server's main thread (where it processes, by default) sat runnable but not running."""
    try:
        return int(open(f"/proc/{pid}/schedstat").read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def proc_status(pid: int, key: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


class Server:
    def __init__(self, log_path: Path, cpu: int | None, extra=()):
        cmd = [sys.executable, "-m", "kws.cli", "serve", "--uri", "tcp://127.0.0.1:0", *extra]
        if cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(cpu)] + cmd
        self.log_path = log_path
        self._err = open(log_path, "w")
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._err, env=env, cwd=str(ROOT))
        t_end = time.monotonic() + 120
        while True:
            m = re.search(r"listening on tcp://127\.0\.0\.1:(\d+)", log_path.read_text())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None or time.monotonic() > t_end:
                raise SystemExit(f"kws serve did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.05)

    def text(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._err.close()


def make_streams(clips, n: int, seconds: float, words) -> list[dict]:
    from test_serve import compose
    out = []
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        seq, total = [], 0.5
        while total < seconds - 2.5:
            w = words[int(rng.integers(len(words)))]
            seq.append(w)
            total += len(clips[w]) / SR + 1.5
        gap = float(rng.uniform(1.3, 1.8))
        x, marks = compose(clips, seq, gap_s=gap, lead_s=float(rng.uniform(0.3, 0.8)), tail_s=1.0, seed=200 + i)
        pcm = np.round(np.clip(x, -1, 1) * 32767).astype("<i2")
        out.append({"pcm": pcm, "marks": marks, "delay": float(rng.uniform(0, 1.0))})
    return out


def reference(pcm: np.ndarray) -> list[tuple[str, float]]:
    from kws.stream import KeywordSpotter
    sp = KeywordSpotter(sample_rate=SR)
    dets = [d for i in range(0, len(pcm), 4096) for d in sp.process(pcm[i:i + 4096])] + sp.flush()
    return [(d.label, int(round(d.time * 1000))) for d in dets]


async def run_client(port: int, stream: dict, t_start: float, deadline: float) -> dict:
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.ping import Ping
    from wyoming.wake import Detect
    pcm = stream["pcm"]
    res = {"dets": [], "late": 0, "chunks": 0, "max_late_ms": 0.0, "error": None, "stop_to_pong_ms": None,
           "sent_wall": [], "port": None}
    try:
        await asyncio.sleep(max(0.0, t_start + stream["delay"] - time.monotonic()))
        async with AsyncTcpClient("127.0.0.1", port, connect_timeout=10) as c:
            async def reader():
                while True:
                    ev = await c.read_event()
                    if ev is None:
                        return
                    now = time.monotonic()
                    if ev.type == "detection":
                        res["dets"].append((ev.data["name"], ev.data["timestamp"], now))
                    elif ev.type == "pong":
                        res["pong"] = now
                        return
            res["port"] = c._writer.get_extra_info("sockname")[1]
            await c.write_event(Detect(names=None).event())
            await c.write_event(AudioStart(rate=SR, width=2, channels=1).event())
            rd = asyncio.create_task(reader())
            t0 = time.monotonic()
            res["t0"] = t0
            for k, i in enumerate(range(0, len(pcm), CHUNK)):
                due = t0 + (k + 1) * CHUNK_S
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                late = time.monotonic() - due
                if late > CHUNK_S:
                    res["late"] += 1
                res["max_late_ms"] = max(res["max_late_ms"], 1000 * late)
                await c.write_event(AudioChunk(rate=SR, width=2, channels=1, audio=pcm[i:i + CHUNK].tobytes()).event())
                res["sent_wall"].append(time.time())
                res["chunks"] += 1
                if time.monotonic() > deadline:
                    res["error"] = "deadline"
                    break
            await c.write_event(AudioStop().event())
            t_stop = time.monotonic()
            await c.write_event(Ping(text="end").event())
            await asyncio.wait_for(rd, max(1.0, deadline + 10 - time.monotonic()))
            if "pong" in res:
                res["stop_to_pong_ms"] = 1000 * (res["pong"] - t_stop)
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    return res


def pct(v, q):
    return float(np.percentile(v, q)) if len(v) else float("nan")


def run_n(n: int, streams, refs, args, tmp: Path) -> dict:
    srv = Server(tmp / f"serve_{n}.log", args.server_cpu)
    try:
        time.sleep(1.0)
        c0, w0, q0 = cpu_seconds(srv.proc.pid), time.monotonic(), run_delay(srv.proc.pid)
        t_start = time.monotonic() + 0.5
        deadline = t_start + args.seconds + 30

        async def go():
            return await asyncio.gather(*(run_client(srv.port, s, t_start, deadline) for s in streams[:n]))
        results = asyncio.run(go())
        c1, w1, q1 = cpu_seconds(srv.proc.pid), time.monotonic(), run_delay(srv.proc.pid)
        hwm = proc_status(srv.proc.pid, "VmHWM")
        time.sleep(0.5)
        log = srv.text()
    finally:
        srv.stop()
    processed = sum(int(m.group(1)) for m in re.finditer(r"closed by client; [\d.]+ s, \d+ session\(s\), (\d+) chunk",
                                                           log))
    emitted = {}                                   # (client port, label, ms) -> server log wall time
    for m in re.finditer(r"^(\S+ \S+) INFO conn \d+ 127\.0\.0\.1:(\d+): detection (\S+) score \S+ at ([\d.]+) s",
                         log, re.M):
        wall = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        emitted[(int(m.group(2)), m.group(3), int(round(float(m.group(4)) * 1000)))] = wall
    lat, serve_delay, model_delay, server_delay = [], [], [], []
    missed = extra = equal = 0
    for s, r, ref in zip(streams[:n], results, refs[:n]):
        for name, ts, _ in r["dets"]:                # server side: log line - actual send of the chunk holding ts
            k = min(len(r["sent_wall"]) - 1, int(np.ceil(ts / 1000 / CHUNK_S - 1e-9)) - 1)
            w = emitted.get((r["port"], name, ts))
            if w is not None and k >= 0:
                server_delay.append(1000 * (w - r["sent_wall"][k]))
        got = [(name, ts) for name, ts, _ in r["dets"]]
        equal += got == ref
        for name, ts, arrived in r["dets"]:
            hit = [(w, a, e) for w, a, e in s["marks"] if w == name and a <= ts / 1000 <= e + 1.0]
            if not hit:
                extra += 1
                continue
            _, _, end = hit[0]
            lat.append(1000 * (arrived - (r["t0"] + np.ceil(end / CHUNK_S - 1e-9) * CHUNK_S)))
            serve_delay.append(1000 * (arrived - (r["t0"] + np.ceil(ts / 1000 / CHUNK_S - 1e-9) * CHUNK_S)))
            model_delay.append(ts - 1000 * end)
        for w, a, e in s["marks"]:
            if not any(name == w and a <= ts / 1000 <= e + 1.0 for name, ts, _ in r["dets"]):
                missed += 1
    sent = sum(r["chunks"] for r in results)
    errors = [r["error"] for r in results if r["error"]]
    return {
        "clients": n, "seconds": args.seconds, "words": sum(len(s["marks"]) for s in streams[:n]),
        "detections": len(lat), "missed": missed, "extra": extra, "equal_to_streaming_api": equal,
        "latency_after_word_end_ms": {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat, default=float("nan"))},
        "serving_delay_ms": {"p50": pct(serve_delay, 50), "p99": pct(serve_delay, 99),
                             "max": max(serve_delay, default=float("nan"))},
        "model_delay_ms": {"p50": pct(model_delay, 50), "p99": pct(model_delay, 99)},
        "server_delay_ms": {"p50": pct(server_delay, 50), "p99": pct(server_delay, 99),
                            "max": max(server_delay, default=float("nan")), "n": len(server_delay)},
        "server_waited_for_cpu_pct": 100 * (q1 - q0) / (w1 - w0),
        "stop_to_pong_ms_max": max((r["stop_to_pong_ms"] or float("nan") for r in results), default=float("nan")),
        "server_cpu_pct": 100 * (c1 - c0) / (w1 - w0), "server_peak_rss_mb": hwm / 1024,
        "chunks_sent": sent, "chunks_late": sum(r["late"] for r in results),
        "max_send_late_ms": max(r["max_late_ms"] for r in results),
        "chunks_dropped": sent - processed, "client_errors": errors[:5], "n_client_errors": len(errors),
    }


def run_cycles(clips, args, tmp: Path) -> dict:
    from test_serve import compose
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe
    from wyoming.ping import Ping
    srv = Server(tmp / "serve_cycles.log", args.server_cpu)
    x, _ = compose(clips, ["yes"], lead_s=0.2, tail_s=0.3)
    pcm = np.round(x * 32767).astype("<i2").tobytes()
    fmt = dict(rate=SR, width=2, channels=1)

    async def cycle(i):
        async with AsyncTcpClient("127.0.0.1", srv.port, connect_timeout=10) as c:
            await c.write_event(Describe().event())
            await asyncio.wait_for(c.read_event(), 10)
            await c.write_event(AudioStart(**fmt).event())
            for k in range(0, len(pcm), 2 * CHUNK):
                await c.write_event(AudioChunk(**fmt, audio=pcm[k:k + 2 * CHUNK]).event())
            if i % 2:
                await c.write_event(AudioStop().event())
                await c.write_event(Ping().event())
                while (await asyncio.wait_for(c.read_event(), 10)).type != "pong":
                    pass

    async def cycles(n, off):
        for i in range(n):
            await cycle(off + i)
    try:
        t_end = time.monotonic() + 300
        asyncio.run(cycles(20, 0))
        time.sleep(0.5)
        rss0, fd0 = proc_status(srv.proc.pid, "VmRSS"), len(os.listdir(f"/proc/{srv.proc.pid}/fd"))
        rss = []
        done = 0
        while done < args.cycles and time.monotonic() < t_end:
            k = min(50, args.cycles - done)
            asyncio.run(cycles(k, 20 + done))
            done += k
            time.sleep(0.3)
            rss.append(proc_status(srv.proc.pid, "VmRSS"))
        fd1 = len(os.listdir(f"/proc/{srv.proc.pid}/fd"))
    finally:
        srv.stop()
    return {"cycles": done, "rss_mb_after_warmup": rss0 / 1024, "rss_mb_every_50": [r / 1024 for r in rss],
            "rss_growth_mb": (rss[-1] - rss0) / 1024 if rss else float("nan"), "fds_before": fd0, "fds_after": fd1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="1,8,32,64", help="comma-separated N values")
    ap.add_argument("--seconds", type=float, default=20.0, help="audio per client per run (<= 120)")
    ap.add_argument("--server-cpu", type=int, default=0, help="pin the server to this core (-1: no pinning)")
    ap.add_argument("--cycles", type=int, default=200, help="connection cycles for the memory check (0: skip)")
    ap.add_argument("--json-out", default=str(ROOT / "runs" / "serve_bench.json"), help="(runs/ is git-ignored)")
    args = ap.parse_args()
    args.seconds = min(max(args.seconds, 5.0), 120.0)
    if args.server_cpu < 0:
        args.server_cpu = None
    ns = [int(v) for v in args.clients.split(",") if v.strip()]
    if not ns or max(ns) > 200:
        raise SystemExit("--clients: 1..200 clients per run")
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt-get install espeak-ng sox)")
    cores = sorted(os.sched_getaffinity(0))
    if args.server_cpu is not None and len(cores) > 1:        # clients off the server's core
        os.sched_setaffinity(0, [c for c in cores if c != args.server_cpu] or cores)
    from test_serve import spoken_clips
    from kws.enginefile import default_model_path
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        clips = spoken_clips(tmp)
        words = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
        streams = make_streams(clips, max(ns), args.seconds, words)
        refs = [reference(s["pcm"]) for s in streams]
        rows = []
        for n in ns:
            print(f"serve_bench: {n} client(s) x {args.seconds:g} s ...", file=sys.stderr, flush=True)
            rows.append(run_n(n, streams, refs, args, tmp))
        cyc = run_cycles(clips, args, tmp) if args.cycles > 0 else None
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": str(default_model_path()), "cpus": os.cpu_count(),
            "server_cpu": args.server_cpu, "load_avg": os.getloadavg(), "chunk_ms": CHUNK_S * 1000,
            "python": sys.version.split()[0]}
    print(f"\nkws serve load benchmark ({meta['date']}, {meta['cpus']} CPUs, load avg "
          f"{meta['load_avg'][0]:.1f}; server pinned to core {args.server_cpu}; 16 kHz int16, 20 ms chunks, "
          f"{args.seconds:g} s per client)")
    hdr = (f"{'N':>4} {'words':>6} {'det':>5} {'miss':>5} {'extra':>5} {'=API':>5} {'lat p50':>8} {'lat p99':>8} "
           f"{'srv p50':>8} {'srv p99':>8} {'CPU %':>6} {'wait %':>6} {'RSS MB':>7} {'late':>5} {'drop':>5} {'err':>4}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        la, sd = r["latency_after_word_end_ms"], r["server_delay_ms"]
        print(f"{r['clients']:>4} {r['words']:>6} {r['detections']:>5} {r['missed']:>5} {r['extra']:>5} "
              f"{r['equal_to_streaming_api']:>5} {la['p50']:>8.0f} {la['p99']:>8.0f} {sd['p50']:>8.0f} "
              f"{sd['p99']:>8.0f} {r['server_cpu_pct']:>6.1f} {r['server_waited_for_cpu_pct']:>6.1f} "
              f"{r['server_peak_rss_mb']:>7.0f} "
              f"{r['chunks_late']:>5} {r['chunks_dropped']:>5} {r['n_client_errors']:>4}")
    print("lat: detection arrival - word end sent (ms; includes the model's own delay, p50 "
          + ", ".join(f"{r['model_delay_ms']['p50']:.0f}" for r in rows)
          + " ms; the clients' own lateness too); srv: server's detection log line - actual send of the chunk "
            "holding the detection (ms; queueing + processing); CPU: server CPU, % of one core; wait: % of the time "
            "the server's thread was runnable but not running (other load on its core); =API: clients whose "
            "detections equal the streaming API's; late: chunks sent > 20 ms after schedule (client side); "
            "drop: sent - processed chunks")
    if cyc:
        print(f"{cyc['cycles']} connection cycles: RSS {cyc['rss_mb_after_warmup']:.1f} MB after warm-up -> "
              + ", ".join(f"{v:.1f}" for v in cyc["rss_mb_every_50"])
              + f" MB (growth {cyc['rss_growth_mb']:+.1f} MB); open fds {cyc['fds_before']} -> {cyc['fds_after']}")
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps({"meta": meta, "runs": rows, "cycles": cyc}, indent=2))
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
