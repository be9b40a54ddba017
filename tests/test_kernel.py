"""The compiled GRU layer and step (kws/_gru.c) against the numpy loop they replace and torch.nn.GRU.

The kernel is optional (setup.py builds it where a C compiler exists); the engine falls back to
arith.gru_layer_folded. These tests hold the two together at atol 1e-5 wherever the kernel is built, and
.ci/run sets KWS_REQUIRE_KERNEL=1 so that a CI install that silently lost it fails here.
"""
import os
import threading

import numpy as np
import pytest
import torch

from conftest import speech_like
from test_features import random_partition, split
from kws import arith, engine
from kws.engine import resolve_kernel
from kws.enginefile import from_bundle
from kws.training.modelfile import DEFAULT_MODEL, load_bundle
from kws.stream import KeywordSpotter

_gru = engine._gru
needs_kernel = pytest.mark.skipif(_gru is None, reason="kws._gru not built (no C compiler at install)")


def test_kernel_is_built_where_required():
    if os.environ.get("KWS_REQUIRE_KERNEL") != "1":
        pytest.skip("KWS_REQUIRE_KERNEL is not set (.ci/run sets it)")
    assert _gru is not None, "kws._gru was not built: the install lost the compiled GRU kernel"
    assert resolve_kernel() == "c"


def folded_layer(hidden: int, d_in: int, seed: int):
    torch.manual_seed(seed)
    gru = torch.nn.GRU(d_in, hidden, batch_first=True)
    w = [getattr(gru, n).detach().numpy() for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
    wi, wh = arith.gru_fold(np, np.ascontiguousarray(w[0].T), np.ascontiguousarray(w[1].T), w[2], w[3])
    return gru, np.ascontiguousarray(wi, np.float32), np.ascontiguousarray(wh, np.float32)


@needs_kernel
@pytest.mark.parametrize("hidden,d_in,steps", [(16, 10, 1), (64, 80, 5), (70, 33, 17), (128, 129, 3)])
def test_kernel_gru_layer_equals_numpy_loop_and_nn_gru(hidden, d_in, steps):
    """Hidden sizes on and off the kernel's 64-column blocks (3H = 48, 192, 210, 384), 1 to 17 steps."""
    gru, wi, wh = folded_layer(hidden, d_in, seed=hidden + steps)
    rng = np.random.default_rng(hidden)
    x1 = np.ones((steps, d_in + 1), np.float32)
    x1[:, :-1] = rng.standard_normal((steps, d_in)) * 2
    h1 = np.ones(hidden + 1, np.float32)
    h1[:-1] = rng.uniform(-1, 1, hidden)
    want = arith.gru_layer_folded(np, x1, h1, wi, wh, np.ones((steps, hidden + 1), np.float32))
    got = np.zeros((steps, hidden + 1), np.float32)      # the kernel writes the trailing 1 itself
    _gru.gru_layer(x1, h1, wi, wh, got)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert (got[:, hidden] == 1).all()
    with torch.no_grad():
        ref, _ = gru(torch.from_numpy(x1[None, :, :-1]), torch.from_numpy(h1[None, None, :-1]))
    np.testing.assert_allclose(got[:, :hidden], ref[0].numpy(), atol=1e-5, rtol=0)


@needs_kernel
def test_kernel_tanh_is_within_1e_6_of_numpy():
    x = np.concatenate([np.linspace(-20, 20, 400_001), [0.0, -0.0, 1e-30, -1e-30, 9.0, 1e4, -1e4, np.inf, -np.inf]])
    x = x.astype(np.float32)
    y = np.empty_like(x)
    _gru.tanh(x, y)
    err = np.abs(y.astype(np.float64) - np.tanh(x.astype(np.float64)))
    assert err.max() < 1e-6, f"max error {err.max():.2e} at x = {x[err.argmax()]}"
    assert np.abs(y).max() <= 1.0


@needs_kernel
@pytest.mark.parametrize("case", ["float64", "short_out", "wrong_wh", "strided_x", "read_only_out", "gi_not_multiple"])
def test_kernel_refuses_arrays_it_cannot_read(case):
    _, wi, wh = folded_layer(16, 10, seed=0)
    x1, h1, out = np.ones((4, 11), np.float32), np.ones(17, np.float32), np.ones((4, 17), np.float32)
    args = dict(x1=x1, h1=h1, wi=wi, wh=wh, out=out)
    if case == "float64":
        args["x1"] = x1.astype(np.float64)
    elif case == "short_out":
        args["out"] = out[:3].copy()
    elif case == "wrong_wh":
        args["wh"] = wh[:-1].copy()
    elif case == "strided_x":
        args["x1"] = np.ones((4, 22), np.float32)[:, ::2]
    elif case == "read_only_out":
        out.flags.writeable = False
    elif case == "gi_not_multiple":
        args["x1"] = np.ones(45, np.float32)     # 45 values: not whole rows of D + 1 = 11
    with pytest.raises((TypeError, ValueError, BufferError)):
        _gru.gru_layer(args["x1"], args["h1"], args["wi"], args["wh"], args["out"])


def random_engines(layers: int, hidden: int, stack: int, seed: int):
    """The same random model as two engines: the compiled step (c) and the numpy loop."""
    from dataclasses import replace
    from conftest import random_bundle
    from kws.training.model import GRUClassifier
    b = random_bundle(seed=seed, stack=stack)
    torch.manual_seed(seed)
    b.model = GRUClassifier(replace(b.model.cfg, layers=layers, hidden=hidden)).eval()
    with torch.no_grad():
        b.model.feat_mean.normal_(0, 3)
        b.model.feat_std.uniform_(2, 8)
    em = from_bundle(b)
    return em.with_kernel("c").engine, em.with_kernel("numpy").engine


@needs_kernel
@pytest.mark.parametrize("layers,hidden,stack,steps", [(1, 16, 1, 1), (2, 128, 2, 5), (3, 70, 3, 17)])
def test_kernel_step_equals_numpy_step(layers, hidden, stack, steps):
    """gru_step (normalisation, every layer, head and softmax in one call) against the numpy step1, from
    a zero state and from a random one: posteriors and the new state."""
    ec, en = random_engines(layers, hidden, stack, seed=hidden)
    rng = np.random.default_rng(steps)
    frames = (rng.standard_normal((steps * stack, 40)) * 5).astype(np.float32)
    for state in (None, rng.uniform(-1, 1, (layers, hidden)).astype(np.float32)):
        (pc, sc), (pn, sn) = ec.step1(frames, state), en.step1(frames, state)
        assert pc.shape == pn.shape == (steps, 12) and sc.shape == sn.shape == (layers, hidden)
        np.testing.assert_allclose(pc, pn, atol=1e-5, rtol=0)
        np.testing.assert_allclose(sc, sn, atol=1e-5, rtol=0)
        np.testing.assert_allclose(pc.sum(1), 1.0, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("case", ["float64_frames", "ragged_frames", "short_state", "short_post", "read_only_state",
                                  "wrong_wi", "not_a_pair", "no_layers", "too_many_layers", "head_not_multiple"])
def test_kernel_step_refuses_arrays_it_cannot_read(case):
    ec, _ = random_engines(2, 16, 2, seed=0)
    a = dict(frames=np.ones((3, 80), np.float32), mean=ec.mean_s, std=ec.std_s, layers=list(ec.folded),
             head=ec.head_aug, state=np.zeros((2, 16), np.float32), post=np.empty((3, 12), np.float32),
             new=np.empty((2, 16), np.float32))
    if case == "float64_frames":
        a["frames"] = a["frames"].astype(np.float64)
    elif case == "ragged_frames":
        a["frames"] = np.ones(250, np.float32)
    elif case == "short_state":
        a["state"] = np.zeros(31, np.float32)
    elif case == "short_post":
        a["post"] = np.empty((2, 12), np.float32)
    elif case == "read_only_state":
        a["new"].flags.writeable = False
    elif case == "wrong_wi":
        a["layers"][1] = (a["layers"][0][0], a["layers"][1][1])     # layer 0's input weights on layer 1
    elif case == "not_a_pair":
        a["layers"][0] = a["layers"][0][0]
    elif case == "no_layers":
        a["layers"] = []
    elif case == "too_many_layers":
        a["layers"] = a["layers"] * 5
    elif case == "head_not_multiple":
        a["head"] = a["head"][:, :-1].copy().reshape(-1)[:-1]
    with pytest.raises((TypeError, ValueError, BufferError)):
        _gru.gru_step(*a.values())


@needs_kernel
@pytest.mark.parametrize("frontend", ["log", "pcen"])
@pytest.mark.parametrize("fcfg", [{}, dict(n_mels=80, win_ms=32.0, f_max=8000.0), dict(n_mels=32, n_mfcc=20)])
def test_kernel_front_end_equals_numpy(fcfg, frontend):
    """mel_log_dct / mel_pcen_dct (power, mel on each filter's nonzero bins, log or PCEN, DCT) against
    arith.features_from_frames, for one signal, a batch with a near-silent signal (the log's floor, PCEN's
    eps), and PCEN continued from a state; the PCEN smoother's last value too."""
    from kws.features import FeatureConfig, NumpyMFCC, frame_view
    cfg = FeatureConfig(frontend=frontend, **fcfg)
    c, n = NumpyMFCC(cfg, kernel="c"), NumpyMFCC(cfg, kernel="numpy")
    assert (c.kernel, n.kernel) == ("c", "numpy")
    y = speech_like(2.0, seed=7)
    for x in (y, np.stack([y, y[::-1] * 0.01, np.full_like(y, 1e-7)])):
        a, b = c(x), n(x)
        assert a.shape == b.shape and a.dtype == np.float32
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    frames = frame_view(y.astype(np.float64), cfg.n_fft, cfg.hop)
    state = np.full(cfg.n_mels, 1e-3) if frontend == "pcen" else None
    (a, sa), (b, sb) = c.run(frames, state), n.run(frames, state)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    if frontend == "pcen":
        np.testing.assert_allclose(sa, sb, rtol=1e-9)
        assert np.abs(a - c(y)).max() > 1e-3          # the given state was used
    else:
        assert sa is sb is None


@needs_kernel
@pytest.mark.parametrize("case", ["float32_spec", "ragged_spec", "bad_band", "int64_bands", "short_out"])
def test_kernel_front_end_refuses_arrays_it_cannot_read(case):
    from kws.features import NumpyMFCC
    fb, bands, dct = NumpyMFCC(kernel="c")._tail
    a = dict(spec=np.ones((3, 2 * fb.shape[1])), fb=fb, bands=bands.copy(), dct=dct, floor=1e-6,
             out=np.empty((3, dct.shape[1]), np.float32))
    if case == "float32_spec":
        a["spec"] = a["spec"].astype(np.float32)
    elif case == "ragged_spec":
        a["spec"] = np.ones(2 * fb.shape[1] * 3 + 1)
    elif case == "bad_band":
        a["bands"][3] = (10, fb.shape[1] + 1)
    elif case == "int64_bands":
        a["bands"] = bands.astype(np.int64)
    elif case == "short_out":
        a["out"] = a["out"][:2].copy()
    with pytest.raises((TypeError, ValueError, BufferError)):
        _gru.mel_log_dct(*a.values())


@needs_kernel
@pytest.mark.parametrize("case", ["short_params", "float32_state", "short_state", "read_only_state"])
def test_kernel_pcen_refuses_arrays_it_cannot_read(case):
    from kws.features import FeatureConfig, NumpyMFCC
    m = NumpyMFCC(FeatureConfig(frontend="pcen"), kernel="c")
    fb, bands, dct = m._tail
    a = dict(spec=np.ones((3, 2 * fb.shape[1])), fb=fb, bands=bands, dct=dct, params=m._pcen.copy(),
             state=np.ones(fb.shape[0]), fresh=False, out=np.empty((3, dct.shape[1]), np.float32))
    if case == "short_params":
        a["params"] = a["params"][:4].copy()
    elif case == "float32_state":
        a["state"] = a["state"].astype(np.float32)
    elif case == "short_state":
        a["state"] = a["state"][:-1].copy()
    elif case == "read_only_state":
        a["state"].flags.writeable = False
    with pytest.raises((TypeError, ValueError, BufferError)):
        _gru.mel_pcen_dct(*a.values())


def test_kernel_choice(monkeypatch):
    monkeypatch.setenv("KWS_KERNEL", "numpy")
    assert resolve_kernel() == "numpy"
    assert resolve_kernel("auto") == ("c" if _gru is not None else "numpy")
    with pytest.raises(ValueError, match="unknown GRU kernel"):
        resolve_kernel("fortran")
    from kws.features import NumpyMFCC
    assert NumpyMFCC().kernel == "numpy"             # the front end follows KWS_KERNEL too
    monkeypatch.setattr(engine, "_gru", None)       # as where it was not built
    assert resolve_kernel("auto") == "numpy"
    assert NumpyMFCC().kernel == "numpy"
    with pytest.raises(ValueError, match="not built"):
        resolve_kernel("c")


@pytest.fixture(scope="module")
def shipped():
    if not DEFAULT_MODEL.exists():
        pytest.skip("no shipped model")
    return from_bundle(load_bundle(DEFAULT_MODEL))


@needs_kernel
@pytest.mark.parametrize("kind", ["ones", "mixed", "whole"])
def test_spotter_posteriors_equal_for_both_kernels(shipped, kind):
    """The shipped model streamed in 1-sample, hop-misaligned and whole-file chunks: every posterior."""
    y = speech_like(0.5 if kind == "ones" else 8.0, seed=4)
    chunks = split(y, random_partition(len(y), np.random.default_rng(1), kind))
    out = {}
    for kernel in ("c", "numpy"):
        sp = KeywordSpotter(shipped.with_kernel(kernel))
        assert sp.net.kernel == kernel
        out[kernel] = np.concatenate([sp.step_frames(c) for c in chunks])
    assert len(out["c"]) > 0
    np.testing.assert_allclose(out["c"], out["numpy"], atol=1e-5, rtol=0)


@needs_kernel
def test_threads_sharing_one_engine_get_their_own_results(shipped):
    """kws serve streams clients in threads on one model; the kernel runs without the GIL, each thread
    with its own buffers, so concurrent streams must give what each gives alone."""
    em = shipped.with_kernel("c")
    audio = [speech_like(4.0, seed=s) for s in range(4)]

    def run(y):
        sp = KeywordSpotter(em)
        return np.concatenate([sp.step_frames(y[i:i + 1600]) for i in range(0, len(y), 1600)])

    alone = [run(y) for y in audio]
    got = [None] * len(audio)

    def worker(i):
        got[i] = run(audio[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(audio))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for a, g in zip(alone, got):
        np.testing.assert_array_equal(g, a)
