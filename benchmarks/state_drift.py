"""Diagnostic: does the GRU state drift over long streams? Posteriors from fresh GRUs restarted every R/2 s
on windows of R s (each output kept has >= R/2 s of context; 2x the cost), scored like kws eval-stream,
beside R=0 (the state carried through each whole file, which reproduces kws eval-stream's figures).

    python benchmarks/state_drift.py models/kws12_gru.npz 4,8 data/streams_scdev data/streams_scdev2 \
        data/streams_scdense data/streams_sclow
"""
import sys
from pathlib import Path

import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kws.stream import KeywordSpotter
from kws.enginefile import load_model
from kws.stream_eval import Streams, read_ground_truth, operating_point
from kws.audio import load
model = load_model(sys.argv[1]); Rs = [float(r) for r in sys.argv[2].split(',')]
dirs = [Path(d) for d in sys.argv[3:]]
labels = model.labels; kws = [l for l in labels if not l.startswith('_')]
sp = KeywordSpotter(model)
files, occs, words = {}, {}, {}
for d in dirs:
    for o in read_ground_truth(d / 'ground_truth.csv'):
        name = f"{d}/{o.file}"
        words.setdefault(name, []).append(o)
        if o.label in kws:
            occs.setdefault(name, []).append(o)
    for w in sorted(d.glob('*.wav')):
        files[f"{d}/{w.name}"] = w
audio = {n: load(p) for n, p in files.items()}
secs = sum(len(x) for x in audio.values()) / 16000
for R in [0.0] + Rs:
    posts = {}
    for n, x in audio.items():
        sp.reset(); full = sp.step_frames(x)
        if R == 0:
            posts[n] = full; continue
        T = len(full); hop = 320; H = int(R / 2 * 16000) // hop * hop; hf = H // hop
        out = np.array(full)
        k = 0
        while k * H < len(x):
            s = k * H
            sp.reset(); p = sp.step_frames(x[s:s + 2 * H])
            g0 = s // hop
            lo = 0 if k == 0 else hf
            seg = p[lo:2 * hf]
            out[g0 + lo: g0 + lo + len(seg)] = seg[: max(0, T - g0 - lo)]
            k += 1
        posts[n] = out
    st = Streams.build(posts, occs, labels, sp.smooth, sp.refractory, sp.frame_time, secs / 3600, words)
    rows = st.sweep(np.concatenate([np.arange(0.5, 0.95, 0.01), np.arange(0.95, 0.999, 0.002)]))
    print(f"R={R:g}s", {b: (None if operating_point(rows, b) is None else operating_point(rows, b)['frr']) for b in (0.5, 2, 5)}, flush=True)
