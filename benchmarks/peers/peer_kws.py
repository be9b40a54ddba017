"""kws (this project: MFCC + stateful GRU) as one system of the side-by-side benchmark.

clips   : kws.evaluate.predict_offline (each 1 s clip from a zero state, argmax of the last frame).
streams : the project's own CLI `kws eval-stream --model M --data DIR --json OUT` (threshold sweep
          0.30..0.99, operating point = lowest FRR at <= 0.5 FA/h), run as a subprocess.
speed   : kws.KeywordSpotter.process on 100 ms chunks, one thread; --backend engine (what kws runs: the
          numpy engine on the .npz model file, torch never imported) or torch (the torch model built from
          it, for the side-by-side row "kws-torch"). Also the time from `import kws` to the first posterior.
--kws-model is the .npz model file (an old .pt still works where torch is installed).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402


def extra(p):
    p.add_argument("--kws-model", required=True)
    p.add_argument("--backend", choices=("engine", "torch"), default="engine")


def main() -> int:
    a = C.peer_args(extra)
    inp = C.load_inputs(a.inputs)
    if a.mode == "speed":
        import numpy as np
        from kws.stream import KeywordSpotter
        model = a.kws_model
        if a.backend == "torch":
            import torch
            torch.set_num_threads(1)
            from kws.training.modelfile import load_bundle
            model = load_bundle(model)
        KeywordSpotter(model, backend=a.backend).process(np.zeros(1600, np.float32))
        first = time.perf_counter() - T_START

        def make_step():
            sp = KeywordSpotter(model, backend=a.backend)
            return sp.process
        res = C.speed_test(make_step, inp["speed_wav"], inp["speed_seconds"])
        res["peak_rss_mb"] = C.peak_rss_mb()
        res["first_posterior_s"] = round(first, 3)
        res["torch_imported"] = sys.modules.get("torch") is not None
        C.write_json(res, a.out)
        return 0
    from kws.enginefile import load_model
    from kws.evaluate import predict_offline
    bundle = load_model(a.kws_model)          # the numpy engine, as kws runs
    out = {"system": "kws", "model": a.kws_model, "model_size_mb": C.file_size_mb([a.kws_model]),
           "setup": "MFCC + stateful GRU (this project); training data: "
                    + str((bundle.meta or {}).get("command", "see the model file's meta")),
           "meta": {k: v for k, v in (bundle.meta or {}).items() if isinstance(v, (str, int, float))}, "clips": {}}
    for name, npz in inp["clip_sets"].items():
        waves, labels = C.load_clipset(npz)
        pred = predict_offline(bundle, waves)
        out["clips"][name] = C.clip_metrics(labels, [bundle.labels[int(i)] for i in pred])
        C.log(f"kws {name}: acc {out['clips'][name]['accuracy']:.3f}")
    for key in ("streams", "streams_dev"):
        if not inp.get(key):
            continue
        with tempfile.TemporaryDirectory() as td:
            js = Path(td) / "es.json"
            cmd = [sys.executable, "-c", "import sys; from kws.cli import main; sys.exit(main())", "eval-stream",
                   "--model", a.kws_model, "--data", inp[key], "--json", str(js), "--quiet",
                   "--max-fa", str(C.MAX_FA)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"kws eval-stream failed: {r.stderr.strip()[-500:]}")
            rep = json.loads(js.read_text())
        rows = [{k: row[k] for k in ("threshold", "detections", "hits", "misses", "frr", "false_alarms",
                                     "fa_per_hour", "latency_median_s")} for row in rep["sweep"]]
        out[key] = C.sweep_report(rows, rep["hours"], rep["occurrences"],
                                  "kws eval-stream: sweep of the detection threshold 0.30..0.99 on these "
                                  "streams, operating point = lowest FRR at <= 0.5 FA/h (smoothing "
                                  f"{rep['detector']['smooth_ms']} ms, refractory {rep['detector']['refractory_s']} s)")
        out[key]["command"] = "kws " + " ".join(cmd[4:])
    C.write_json(out, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
