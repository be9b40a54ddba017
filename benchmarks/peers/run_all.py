#!/usr/bin/env python
"""Side-by-side benchmark of kws against offline peers (GitHub issue #7): pocketsphinx 5.1.1, openWakeWord 0.5.1.

Runs every available system on the SAME inputs and writes results.md, results.json and results.png:
  - synth_test : held-out synthetic voices, data/synth testing split, TF style (all keyword clips + 10% unknown
                 + 10% silence), subsampled to --max-clips with a fixed seed;
  - real_test  : /work/shared/real_speech testing split (246 real clips; the 20 other words are `_unknown_`);
  - sc_val     : /work/shared/speech_commands_part validation speakers (real voices, ~1,450 keyword clips),
                 TF style, subsampled to --max-clips with a fixed seed;
  - streams    : long recordings with ground_truth.csv (data/streams): FRR at <= 0.5 FA/h, latency;
  - speed      : --speed-seconds of the first stream in 100 ms chunks on one thread, in a separate process
                 per system (RTF, per-chunk latency, peak RSS).
A peer whose package is missing is listed as "not installed: pip install '.[peers]'" and the rest still run.

  nice -n 19 python benchmarks/peers/run_all.py --kws-model models/kws12_gru.npz
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import common as C  # noqa: E402

SYSTEMS = {
    "kws": ("peer_kws.py", []),
    "kws-torch": ("peer_kws.py", ["torch"]),   # speed only: the same model on the torch path, beside the engine
    "pocketsphinx": ("peer_pocketsphinx.py", ["pocketsphinx"]),
    "openwakeword": ("peer_openwakeword.py", ["openwakeword", "onnxruntime", "sklearn"]),
}
DEFAULT_MODEL = "models/kws12_gru.npz"      # the shipped model file
INSTALL_HINT = "pip install '.[peers]'"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kws-model", default=None, help=f"kws model file, a .npz (default {DEFAULT_MODEL})")
    p.add_argument("--synth", default=str(ROOT / "data/synth"), help="synthetic corpus root (testing split used)")
    p.add_argument("--real", default=str(ROOT.parent / "shared/real_speech"), help="real Speech Commands root (testing split)")
    p.add_argument("--sc-val", default=str(ROOT.parent / "shared/speech_commands_part"),
                   help="real Speech Commands part: its validation speakers ('' to skip)")
    p.add_argument("--streams", default=str(ROOT / "data/streams"), help="folder of WAVs + ground_truth.csv")
    p.add_argument("--dev-streams", default=str(ROOT / "data/streams_dev"),
                   help="dev stream set (validation voices): thresholds chosen here are applied to --streams")
    p.add_argument("--max-clips", type=int, default=600, help="subsample synth_test to this many clips (0: all)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma list of systems to run")
    p.add_argument("--speed-seconds", type=float, default=30.0)
    p.add_argument("--speed-only", action="store_true", help="skip accuracy and streams: speed rows only")
    p.add_argument("--cache", default=str(ROOT / "data/peers_cache"), help="inputs, embeddings and trained heads")
    p.add_argument("--oww-train", default=None, metavar="JSON",
                   help="override the openWakeWord head's training data: JSON object with keys synth, real_words, "
                        "noise, per_keyword, unknown, silence, real_unknown (see peer_openwakeword.py)")
    p.add_argument("--reuse", default="", metavar="SYSTEMS",
                   help="comma list of systems whose results from an earlier run with the same --cache are "
                        "reused instead of rerun (e.g. rerun only kws after retraining it)")
    p.add_argument("--out", default=str(HERE), help="folder for results.md / results.json / results.png")
    return p.parse_args(argv)


def missing_modules(mods) -> list[str]:
    return [m for m in mods if importlib.util.find_spec(m) is None]


def build_clipsets(a, cache: Path) -> dict:
    from kws.data.index import background_files
    from kws.evaluate import SILENCE, collect_clips, load_clips
    sets, info = {}, {}
    (cache / "inputs").mkdir(parents=True, exist_ok=True)
    specs = []
    if a.synth and Path(a.synth).exists():
        specs.append(("synth_test", a.synth, False, a.max_clips, True))
    if a.real and Path(a.real).exists():
        specs.append(("real_test", a.real, True, 0, False))
    if a.sc_val and Path(a.sc_val).exists():
        specs.append(("sc_val", a.sc_val, False, a.max_clips, True))
    for name, root, all_unknown, cap, keep_silence in specs:
        split = "validation" if name == "sc_val" else "testing"
        clips, noise = collect_clips([root], C.LABELS, split=split, all_unknown=all_unknown)
        if name == "sc_val" and not noise and a.real:   # it has no noise folder: silence from real_speech's
            noise = background_files([a.real])
        if not keep_silence:
            clips = [c for c in clips if c.label != SILENCE]
        if cap and len(clips) > cap:
            clips = random.Random(0).sample(clips, cap)
        waves, kept, _ = load_clips(clips, noise, progress=False, seed=0)
        npz = cache / "inputs" / f"{name}.npz"
        np.savez(npz, waves=waves.astype(np.float32), labels=np.array([c.label for c in kept]))
        sets[name] = str(npz)
        counts = {}
        for c in kept:
            counts[c.label] = counts.get(c.label, 0) + 1
        info[name] = {"root": str(root), "n": len(kept), "n_keyword": sum(c.label in C.KEYWORDS for c in kept),
                      "by_label": dict(sorted(counts.items()))}
    return sets, info


def run_peer(name, script, mode, inputs_json, out_json, extra, cache) -> tuple[dict | None, str | None, float]:
    cmd = [sys.executable, str(HERE / script), "--mode", mode, "--inputs", str(inputs_json), "--out", str(out_json),
           "--cache", str(cache)] + extra
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "KWS_THREADS": "1"}
    t = time.time()
    C.log(f"{name} {mode} ...")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(ROOT))
    el = time.time() - t
    if r.returncode != 0 or not Path(out_json).exists():
        err = (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]
        C.log(f"{name} {mode} FAILED: {err}")
        return None, err, el
    C.log(f"{name} {mode} done in {el:.0f} s")
    return json.loads(Path(out_json).read_text()), None, el


def fmt(v, pct=False, nd=1):
    if v is None:
        return "-"
    return f"{100 * v:.{nd}f}%" if pct else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def table(results: dict, setnames) -> str:
    head = ["system"]
    for s in setnames:
        head += [f"{s} 12-class", f"{s} keyword"]
    head += ["stream FRR @≤0.5 FA/h (sweep)", "FA/h", "threshold", "latency p50 (s)", "FRR @≤2 FA/h", "FRR @≤5 FA/h",
             "dev-chosen thr → test FRR / FA/h", "RTF (1 core)",
             "chunk ms p50 / p99", "peak RSS (MB)", "size on disk (MB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        if r.get("status") != "ok":
            lines.append(f"| {name} | " + " | ".join([r.get("status", "?")] + [""] * (len(head) - 2)) + " |")
            continue
        row = [name]
        for s in setnames:
            m = r.get("clips", {}).get(s)
            row += [fmt(m and m["accuracy"], True), fmt(m and m["keyword_accuracy"], True)]
        st = r.get("streams") or {}
        op = st.get("operating_point")
        if st and op is None:
            row += ["none ≤0.5 FA/h", "-", "-", "-"]
        else:
            row += [fmt(op and op["frr"], True), fmt(op and op["fa_per_hour"], nd=2), str(op["threshold"]) if op else "-",
                    fmt(op and op["latency_median_s"], nd=2)]
        for key in ("op_2fa", "op_5fa"):
            o = r.get(key)
            row.append(f"{fmt(o['frr'], True)} (thr {o['threshold']})" if o else ("none" if st else "-"))
        dc = r.get("dev_chosen")
        if dc and dc.get("test"):
            row.append(f"{dc['threshold']} → {fmt(dc['test']['frr'], True)} / {fmt(dc['test']['fa_per_hour'], nd=2)}")
        elif r.get("streams_dev"):
            row.append("no dev threshold ≤0.5 FA/h")
        else:
            row.append("-")
        sp = r.get("speed") or {}
        row += [fmt(sp.get("rtf"), nd=4),
                f"{fmt(sp.get('chunk_ms_median'), nd=2)} / {fmt(sp.get('chunk_ms_p99'), nd=2)}" if sp else "-",
                fmt(sp.get("peak_rss_mb")), fmt(r.get("model_size_mb"), nd=2)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def chart(results: dict, setnames, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = {n: r for n, r in results.items() if r.get("status") == "ok"}
    if not ok:
        return
    names = list(ok)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    metrics = [(s, k) for s in setnames for k in ("accuracy", "keyword_accuracy")]
    w = 0.8 / max(1, len(names))
    for j, n in enumerate(names):
        vals = [100 * ((ok[n].get("clips", {}).get(s) or {}).get(k) or 0) for s, k in metrics]
        axes[0].bar(np.arange(len(metrics)) + j * w, vals, w, label=n)
    axes[0].set_xticks(np.arange(len(metrics)) + w * (len(names) - 1) / 2)
    axes[0].set_xticklabels([f"{s}\n{'12-class' if k == 'accuracy' else 'keyword'}" for s, k in metrics], fontsize=7)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].set_ylim(0, 100)
    axes[0].legend(fontsize=7, loc="lower left", framealpha=0.9)
    axes[0].set_title("clip accuracy")

    def bar(ax, vals, title, ylabel, log=False):
        ax.bar(names, vals, color=[f"C{i}" for i in range(len(names))])
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        for i, v in enumerate(vals):
            ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=8)
    frr = []
    for n in names:
        op = (ok[n].get("streams") or {}).get("operating_point")
        frr.append(100 * op["frr"] if op else 100.0)
    bar(axes[1], frr, "streams: FRR at ≤ 0.5 FA/h\n(100 = no operating point)", "FRR (%)")
    bar(axes[2], [(ok[n].get("speed") or {}).get("rtf") or 0 for n in names], "real-time factor (1 core)",
        "RTF (log)", log=True)
    bar(axes[3], [(ok[n].get("speed") or {}).get("peak_rss_mb") or 0 for n in names], "peak RSS while streaming",
        "MB")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    a = parse_args(argv)
    out = Path(a.out)
    cache = Path(a.cache)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [s.strip() for s in a.systems.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SYSTEMS]
    if bad:
        print(f"unknown system(s): {', '.join(bad)} (known: {', '.join(SYSTEMS)})", file=sys.stderr)
        return 2
    notes = []
    reuse = {s.strip() for s in a.reuse.split(",") if s.strip()}
    kws_model = a.kws_model or DEFAULT_MODEL
    kws_model = str(ROOT / kws_model) if not Path(kws_model).is_absolute() else kws_model
    for n in notes:
        C.log(f"note: {n}")

    C.log("building clip sets ...")
    sets, set_info = build_clipsets(a, cache)
    streams = a.streams if a.streams and (Path(a.streams) / "ground_truth.csv").exists() else None
    if streams is None:
        notes.append(f"no stream benchmark at {a.streams}: stream metrics skipped")
    speed_wav = None
    if streams:
        speed_wav = str(sorted(p for p in Path(streams).iterdir() if p.suffix.lower() == ".wav")[0])
    elif sets:
        speed_wav = str(cache / "inputs" / "speed.wav")
        import soundfile as sf
        w, _ = C.load_clipset(next(iter(sets.values())))
        sf.write(speed_wav, w.reshape(-1)[: int(a.speed_seconds * 16000)], 16000, subtype="PCM_16")
    dev = a.dev_streams if streams and a.dev_streams and (Path(a.dev_streams) / "ground_truth.csv").exists() else None
    if streams and dev is None:
        notes.append(f"no dev stream set at {a.dev_streams}: no dev-chosen thresholds")
    inputs = {"clip_sets": sets, "streams": streams, "streams_dev": dev, "speed_wav": speed_wav, "speed_seconds": a.speed_seconds,
              "openwakeword_train": json.loads(a.oww_train) if a.oww_train else None}
    inputs_json = cache / "inputs" / "inputs.json"
    C.write_json(inputs, inputs_json)

    results = {}
    for name in wanted:
        script, mods = SYSTEMS[name]
        miss = missing_modules(mods)
        if miss:
            results[name] = {"status": f"not installed: {INSTALL_HINT}", "missing_modules": miss}
            C.log(f"{name}: not installed ({', '.join(miss)}): {INSTALL_HINT}")
            continue
        if name.startswith("kws") and not Path(kws_model).exists():
            results[name] = {"status": f"model not found: {kws_model}"}
            C.log(f"kws: model not found: {kws_model}")
            continue
        extra = (["--kws-model", kws_model] if name.startswith("kws") else []) + \
                (["--backend", "torch"] if name == "kws-torch" else [])
        if name in reuse:
            saved = [cache / "results" / f"{name}_{m}.json" for m in ("eval", "speed")]
            if not saved[0].exists():
                results[name] = {"status": f"--reuse: no earlier result {saved[0]}"}
                continue
            r = json.loads(saved[0].read_text())
            r["status"] = "ok"
            r["reused"] = True
            if saved[1].exists():
                r["speed"] = json.loads(saved[1].read_text())
            results[name] = r
            C.log(f"{name}: reused {saved[0]}")
            continue
        if a.speed_only or name == "kws-torch":      # kws-torch: same model and answers as kws, other run time
            r = {"status": "ok", "setup": "speed only" + (": kws's model on the torch path" if name == "kws-torch" else "")}
        else:
            r, err, el = run_peer(name, script, "eval", inputs_json, cache / "results" / f"{name}_eval.json", extra, cache)
            if r is None:
                results[name] = {"status": f"failed: {err}"}
                continue
            r["status"] = "ok"
            r["eval_wall_s"] = round(el, 1)
        if speed_wav:
            sp, err, _ = run_peer(name, script, "speed", inputs_json, cache / "results" / f"{name}_speed.json",
                                  extra, cache)
            r["speed"] = sp if sp is not None else {"error": err}
        results[name] = r

    from kws.stream_eval import operating_point
    for r in results.values():
        if r.get("status") != "ok" or not r.get("streams"):
            continue
        r["op_5fa"] = operating_point(r["streams"]["sweep"], 5.0)
        r["op_2fa"] = operating_point(r["streams"]["sweep"], 2.0)
        dop = (r.get("streams_dev") or {}).get("operating_point")
        if dop is not None:
            test_row = next((x for x in r["streams"]["sweep"] if x["threshold"] == dop["threshold"]), None)
            r["dev_chosen"] = {"threshold": dop["threshold"], "dev": dop, "test": test_row}
    setnames = list(sets)
    cmd = "nice -n 19 python " + " ".join(shlex.quote(x) for x in [str(Path(sys.argv[0]))] + (sys.argv[1:] if argv is None else list(argv)))
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    machine = f"{platform.node()}: {cpu}, {os.cpu_count()} CPU(s), Linux {platform.release()}, Python {platform.python_version()}"
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = {}
    for m in ("torch", "numpy", "pocketsphinx", "openwakeword", "onnxruntime", "scikit-learn"):
        try:
            from importlib.metadata import version
            versions[m] = version(m)
        except Exception:
            pass
    report = {"date": date, "machine": machine, "command": cmd, "kws_model": kws_model, "notes": notes,
              "versions": versions, "inputs": set_info, "streams": streams, "speed_wav": speed_wav,
              "speed_seconds": a.speed_seconds, "results": results}
    C.write_json(report, out / "results.json")
    chart(results, setnames, out / "results.png")
    st_hours = next((r["streams"]["hours"] for r in results.values() if r.get("status") == "ok" and r.get("streams")), None)
    st_occ = next((r["streams"]["occurrences"] for r in results.values() if r.get("status") == "ok" and r.get("streams")), None)
    md = ["# kws vs offline peers (issue #7)", "",
          f"- date: {date}", f"- machine: {machine}", f"- command: `{cmd}`",
          f"- kws model: `{kws_model}`", "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    md += [f"- note: {n}" for n in notes]
    for n, r in results.items():
        if r.get("status") != "ok":
            md.append(f"- **{n}: {r['status']}**")
    md += ["", "## Inputs", ""]
    for s, i in set_info.items():
        md.append(f"- `{s}`: {i['n']} clips ({i['n_keyword']} keyword clips) from `{i['root']}` "
                  f"{'validation' if s == 'sc_val' else 'testing'} split; "
                  + ", ".join(f"{k} {v}" for k, v in i["by_label"].items()))
    if streams:
        md.append(f"- streams: `{streams}`, {st_hours} h, {st_occ} keyword occurrences" if st_hours else f"- streams: `{streams}`")
    if dev:
        md.append(f"- dev streams (threshold choice only): `{dev}`")
    md.append(f"- speed: first {a.speed_seconds:g} s of `{speed_wav}` in 100 ms chunks, one thread, one process per system")
    md += ["", "## Results", "", table(results, setnames), "", "![results](results.png)", "",
           "Operating point: lowest FRR over a threshold sweep with ≤ 0.5 false alarms per hour on the stream set, "
           "the same protocol for every system (kws: `kws eval-stream`). A detection of L matches an occurrence of L "
           "if start ≤ time ≤ end + 1.0 s; unmatched detections are false alarms; 1 s refractory. "
           "Latency = detection time − keyword end. \"FRR @≤5 FA/h\": the same sweep at a 10× looser budget. "
           "\"dev-chosen\": the threshold of the ≤ 0.5 FA/h operating point on the dev streams (validation voices), "
           "applied unchanged to the test streams - the number a user would get. See docs/peers.md for each "
           "system's setup.", ""]
    for n, r in results.items():
        if r.get("status") == "ok" and r.get("streams"):
            md.append(f"- {n}: {r['streams']['protocol']}")
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
