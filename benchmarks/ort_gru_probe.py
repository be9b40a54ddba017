"""Would onnxruntime run the engine's recurrence faster? The GRU layers and head of a model as one ONNX
graph on onnxruntime's fused GRU op (linear_before_reset=1: torch's equations), against the numpy
engine's `forward_all` on the same normalised inputs, one thread, thread CPU time.

    python benchmarks/ort_gru_probe.py [--model models/kws12_gru.npz]     (needs onnx and onnxruntime)

Prints the largest posterior/state difference (the graph is built from the engine's arrays) and the
time per call for 1, 5 and 50 GRU steps (20 ms, 100 ms and 1 s of audio at stack 2), and the time of
the engine's streaming path (Engine.step1) on the same frames. Then end to end: two KeywordSpotters
on the same 60 s of speech-like audio in 100 ms chunks, one on the engine, one whose GRU layers, head and
normalisation run as that graph (`OrtNet`: the numpy MFCC and detector unchanged), interleaved, 3 repeats,
fastest counts; then once each paced (10 ms sleep after every chunk, as a live stream arrives). A probe for the README's "where to look next", not a code path of kws.
"""
import argparse
import os
import sys
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numpy as np  # noqa: E402


def zrh(w):
    """torch's gate order r, z, n -> ONNX's z, r, h."""
    r, z, n = np.split(w, 3, axis=0)
    return np.concatenate([z, r, n], 0)


def build(m, normalize: bool = False):
    """normalize: the graph takes raw MFCC frames [T * stack, F] and normalises and stacks them itself."""
    from onnx import TensorProto, helper, numpy_helper
    a, cfg, H = m.arrays, m.cfg, m.cfg.hidden
    nodes, inits, inp = [], [], "x"
    F, S = cfg.n_input, cfg.stack
    if normalize:
        inits += [numpy_helper.from_array(a["feat_mean"].astype(np.float32), "mean"),
                  numpy_helper.from_array(a["feat_std"].astype(np.float32), "std"),
                  numpy_helper.from_array(np.array([-1, 1, S * F], np.int64), "shape")]
        nodes += [helper.make_node("Sub", ["frames", "mean"], ["f1"]), helper.make_node("Div", ["f1", "std"], ["f2"]),
                  helper.make_node("Reshape", ["f2", "shape"], ["x"])]
    for k in range(cfg.layers):
        W, R = zrh(a[f"gru.weight_ih_l{k}"])[None], zrh(a[f"gru.weight_hh_l{k}"])[None]
        B = np.concatenate([zrh(a[f"gru.bias_ih_l{k}"]), zrh(a[f"gru.bias_hh_l{k}"])])[None]
        inits += [numpy_helper.from_array(v.astype(np.float32), f"{n}{k}") for n, v in (("W", W), ("R", R), ("B", B))]
        inits += [numpy_helper.from_array(np.array([k], np.int64), f"idx{k}"),
                  numpy_helper.from_array(np.array([1], np.int64), f"ax{k}")]
        nodes += [helper.make_node("Gather", ["state", f"idx{k}"], [f"h0_{k}"], axis=0),
                  helper.make_node("GRU", [inp, f"W{k}", f"R{k}", f"B{k}", "", f"h0_{k}"], [f"Y{k}", f"Yh{k}"],
                                   hidden_size=H, linear_before_reset=1),
                  helper.make_node("Squeeze", [f"Y{k}", f"ax{k}"], [f"y{k}"])]
        inp = f"y{k}"
    inits += [numpy_helper.from_array(a["head.weight"].T.copy(), "HW"), numpy_helper.from_array(a["head.bias"], "HB")]
    nodes += [helper.make_node("Concat", [f"Yh{k}" for k in range(cfg.layers)], ["new_state"], axis=0),
              helper.make_node("MatMul", [inp, "HW"], ["lg"]), helper.make_node("Add", ["lg", "HB"], ["lg2"]),
              helper.make_node("Softmax", ["lg2"], ["post"], axis=-1)]
    if normalize:      # posteriors [T, C], as Engine.step returns them
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "ax_out"))
        nodes[-1] = helper.make_node("Softmax", ["lg2"], ["post3"], axis=-1)
        nodes.append(helper.make_node("Squeeze", ["post3", "ax_out"], ["post"]))
    first = (helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["T", F]) if normalize else
             helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", 1, F * S]))
    g = helper.make_graph(nodes, "kws", [first,
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [cfg.layers, 1, H])],
        [helper.make_tensor_value_info("post", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("new_state", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


class OrtNet:
    """The engine's `step` interface on an onnxruntime session of `build(m, normalize=True)`."""

    def __init__(self, m, sess):
        self.cfg, self.engine, self.sess = m.cfg, m.engine, sess

    def initial_state(self, batch: int = 1):
        return self.engine.initial_state(batch)

    def step(self, frames, state):
        post, new = self.sess.run(None, {"frames": frames, "state": state[:, None]})
        return post, new[:, 0]


def spotter_us(sp, chunks, gap_s: float = 0.0) -> float:
    """Median thread CPU time of KeywordSpotter.process per chunk; gap_s: sleep after each (a live stream)."""
    sp.reset()
    times = []
    for c in chunks:
        t = time.thread_time()
        sp.process(c)
        times.append(time.thread_time() - t)
        if gap_s:
            time.sleep(gap_s)
    return float(np.median(times)) * 1e6


def best_us(f, n=200, reps=5) -> float:
    best = 1e9
    for _ in range(reps):
        t = time.thread_time()
        for _ in range(n):
            f()
        best = min(best, (time.thread_time() - t) / n * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    import onnxruntime as ort
    from kws import arith
    from kws.enginefile import load_model
    m = load_model(args.model)
    e = m.engine
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(build(m).SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    s0 = e.initial_state(1)
    for steps in (1, 5, 50):
        frames = (e.mean + e.std * rng.normal(size=(1, steps * m.cfg.stack, m.cfg.n_input))).astype(np.float32)
        x = np.ascontiguousarray(arith.normalize_stack(frames, e.mean, e.std, m.cfg.stack).transpose(1, 0, 2))
        post_o, st_o = sess.run(None, {"x": x, "state": s0})
        logits, st_n = e.forward_all(frames, s0)
        diff = max(np.abs(post_o[:, 0] - arith.softmax(np, logits)[0]).max(), np.abs(st_o - st_n).max())
        t_ort = best_us(lambda: sess.run(None, {"x": x, "state": s0}))
        t_np = best_us(lambda: e.forward_all(frames, s0))
        t_s1 = best_us(lambda: e.step1(frames[0], s0[:, 0]))
        print(f"{steps:>3} steps: onnxruntime {t_ort:7.0f} us, numpy engine forward_all {t_np:7.0f} us "
              f"({t_np / t_ort:.1f}x), step1 (the streaming path, normalisation and softmax included) "
              f"{t_s1:7.0f} us ({t_s1 / t_ort:.1f}x), max difference {diff:.1e}")
    from kws.stream import KeywordSpotter
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import speech_like
    sess_n = ort.InferenceSession(build(m, normalize=True).SerializeToString(), so, providers=["CPUExecutionProvider"])
    sp_np, sp_ort = KeywordSpotter(m), KeywordSpotter(m)
    sp_ort.net = OrtNet(m, sess_n)
    audio = speech_like(60.0, seed=0)
    chunks = [audio[i:i + 1600] for i in range(0, len(audio) - 1599, 1600)]
    sp_np.reset(); sp_ort.reset()
    diff = max(float(np.abs(sp_np.step_frames(c) - sp_ort.step_frames(c)).max(initial=0)) for c in chunks[:100])
    t_np, t_ort = 1e9, 1e9
    for _ in range(3):
        t_np, t_ort = min(t_np, spotter_us(sp_np, chunks)), min(t_ort, spotter_us(sp_ort, chunks))
    print(f"end to end, KeywordSpotter.process per 100 ms chunk (median): engine {t_np:.0f} us, GRU+head on "
          f"onnxruntime {t_ort:.0f} us ({t_np / t_ort:.2f}x), max posterior difference {diff:.1e}")
    p_np, p_ort = spotter_us(sp_np, chunks, 0.01), spotter_us(sp_ort, chunks, 0.01)
    print(f"paced (10 ms sleep after each chunk, as in a live stream): engine {p_np:.0f} us, onnxruntime "
          f"{p_ort:.0f} us ({p_np / p_ort:.2f}x)")


if __name__ == "__main__":
    main()
