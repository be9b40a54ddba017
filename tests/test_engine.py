"""The numpy engine against the torch model: one arithmetic (kws/arith.py), held together here.

Every per-frame posterior of the engine's KeywordSpotter equals the torch path's (atol 1e-5) over random
chunk partitions and through the resampler, for the shipped model and random ones of other shapes;
the shipped .npz -> torch model -> .npz round trip is exact; the engine runs with torch unimportable.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import soxr
import torch

from conftest import LABELS12, random_bundle, speech_like
from test_features import random_partition, split
from kws import arith, engine
from kws.enginefile import DEFAULT_ENGINE, from_bundle, header, load_engine, load_model, save_engine
from kws.features import FeatureConfig
from kws.training.model import GRUClassifier, ModelConfig
from kws.training.modelfile import DEFAULT_MODEL, Bundle, ModelFileError, bundle_from_engine, load_bundle, save_bundle
from kws.stream import KeywordSpotter

SHAPES = {  # ModelConfig and FeatureConfig overrides: the engine must follow any of them
    "l1_h32_s1": (dict(hidden=32, layers=1, stack=1), {}),
    "l3_h48_s3": (dict(hidden=48, layers=3, stack=3), dict(n_mfcc=20, n_mels=32)),
    "pcen": (dict(hidden=32, layers=2, stack=2), dict(frontend="pcen")),     # a stateful front end
}


def shaped_bundle(mcfg: dict, fcfg: dict, seed: int = 0, labels=LABELS12[:7]) -> Bundle:
    torch.manual_seed(seed)
    f = FeatureConfig(**fcfg)
    model = GRUClassifier(ModelConfig(n_input=f.n_mfcc, n_classes=len(labels), **mcfg))
    with torch.no_grad():
        model.feat_mean.normal_(0, 3)
        model.feat_std.uniform_(2, 8)
    return Bundle(model=model.eval(), features=f, labels=list(labels))


@pytest.fixture(scope="module")
def shipped():
    if not DEFAULT_MODEL.exists():
        pytest.skip("no shipped model")
    return load_bundle(DEFAULT_MODEL)


@pytest.mark.parametrize("hidden,batch,steps", [(16, 1, 1), (64, 3, 17)])
def test_arith_gru_layer_equals_torch_nn_gru(hidden, batch, steps):
    """Training runs torch's fused nn.GRU; the engine's batch path and the export run arith.gru_layer."""
    torch.manual_seed(hidden)
    gru = torch.nn.GRU(10, hidden, batch_first=True)
    x, h0 = torch.randn(batch, steps, 10) * 2, torch.randn(1, batch, hidden) * 0.5
    with torch.no_grad():
        ref, ref_h = gru(x, h0)
        w = [getattr(gru, n).detach() for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
        got_t, h_t = arith.gru_layer(torch, x, h0[0], w[0].T, w[1].T, w[2], w[3])
    got_n, h_n = arith.gru_layer(np, x.numpy(), h0[0].numpy(), w[0].T.numpy(), w[1].T.numpy(), w[2].numpy(), w[3].numpy())
    for got, h in ((got_t.numpy(), h_t.numpy()), (got_n, h_n)):
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-6, rtol=0)
        np.testing.assert_allclose(h, ref_h[0].numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("hidden,steps", [(16, 1), (64, 17)])
def test_arith_gru_layer_folded_equals_torch_nn_gru(hidden, steps):
    """The engine's streaming step (folded weights, preallocated buffers) against nn.GRU, run by numpy and torch."""
    torch.manual_seed(hidden + 1)
    gru = torch.nn.GRU(10, hidden, batch_first=True)
    x, h0 = torch.randn(1, steps, 10) * 2, torch.randn(1, 1, hidden) * 0.5
    with torch.no_grad():
        ref, ref_h = gru(x, h0)
        w = [getattr(gru, n).detach() for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
        for xp, conv in ((torch, lambda a: a), (np, lambda a: a.numpy())):
            wi, wh = arith.gru_fold(xp, conv(w[0].T.contiguous()), conv(w[1].T.contiguous()), conv(w[2]), conv(w[3]))
            x1 = conv(torch.cat([x[0], torch.ones(steps, 1)], 1))
            h1 = conv(torch.cat([h0[0, 0], torch.ones(1)]))
            out1 = conv(torch.ones(steps, hidden + 1))
            got = np.asarray(arith.gru_layer_folded(xp, x1, h1, wi, wh, out1))
            np.testing.assert_allclose(got[:, :hidden], ref[0].numpy(), atol=1e-6, rtol=0)
            np.testing.assert_allclose(got[-1, :hidden], ref_h[0, 0].numpy(), atol=1e-6, rtol=0)
            assert (got[:, hidden] == 1).all()


def test_engine_step1_equals_batch_step():
    """The one-stream hot path equals the batch path of the same engine, state carried both ways."""
    e = from_bundle(shaped_bundle(*SHAPES["l3_h48_s3"])).engine
    rng = np.random.default_rng(0)
    s1 = sb = None
    for T in (3, 9, 0, 30, 3):
        f = (rng.standard_normal((T, e.cfg.n_input)) * 5).astype(np.float32)
        p1, s1 = e.step1(f, s1)
        pb, sb = e.step(f[None], None if sb is None else sb)
        np.testing.assert_allclose(p1, pb[0], atol=1e-6, rtol=0)
        np.testing.assert_allclose(s1, sb[:, 0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_engine_forward_equals_torch_model_any_shape(shape):
    b = shaped_bundle(*SHAPES[shape])
    e = from_bundle(b).engine
    frames = torch.randn(3, 61, b.features.n_mfcc) * 5
    with torch.no_grad():
        ref, ref_state = b.model.forward_all(frames)
    got, state = e.forward_all(frames.numpy())
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(state, ref_state.numpy(), atol=1e-6, rtol=0)


def posteriors(spotter, chunks, flush=False):
    out = [spotter.step_frames(spotter.resampler(c)) for c in chunks]
    if flush:
        out.append(spotter.step_frames(spotter.resampler(np.zeros(0, np.float32), last=True)))
    return np.concatenate(out)


@pytest.mark.parametrize("kernel", ["c", "numpy"])
@pytest.mark.parametrize("which", ["shipped", "random", *SHAPES])
@pytest.mark.parametrize("kind,seconds", [("ones", 0.5), ("mixed", 8.0), ("whole", 8.0)])
def test_engine_spotter_equals_torch_spotter_every_frame(shipped, which, kind, seconds, kernel, monkeypatch):
    """1-sample chunks, chunks not aligned to the hop, one whole-file chunk: the same posteriors, with the
    GRU layers in the compiled kernel (kws/_gru.c) and in numpy (where it is not built)."""
    if kernel == "c" and engine._gru is None:
        pytest.skip("kws._gru not built")
    monkeypatch.setenv("KWS_KERNEL", kernel)
    b = shipped if which == "shipped" else random_bundle(seed=1) if which == "random" else shaped_bundle(*SHAPES[which])
    y = speech_like(seconds, seed=3)
    chunks = split(y, random_partition(len(y), np.random.default_rng(0), kind))
    ref = posteriors(KeywordSpotter(b, backend="torch"), chunks)
    spotter = KeywordSpotter(b)
    assert spotter.net.kernel == kernel
    got = posteriors(spotter, chunks)
    assert got.shape == ref.shape and len(got) > 0
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", ["shipped", "random"])
def test_engine_equals_torch_through_the_resampler(shipped, which):
    b = shipped if which == "shipped" else random_bundle(seed=2)
    y = soxr.resample(speech_like(6.0, seed=4), 16000, 44100, quality="VHQ").astype(np.float32)
    chunks = split(y, random_partition(len(y), np.random.default_rng(1), "random"))
    ref = posteriors(KeywordSpotter(b, sample_rate=44100, backend="torch"), chunks, flush=True)
    got = posteriors(KeywordSpotter(b, sample_rate=44100), chunks, flush=True)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_detections_equal_between_engine_and_torch(shipped):
    y = np.tile(speech_like(5.0, seed=5), 4)
    dets = []
    for backend in ("engine", "torch"):
        sp = KeywordSpotter(shipped, backend=backend, threshold=0.3)
        dets.append([(d.label, round(d.time, 3)) for i in range(0, len(y), 1600) for d in sp.process(y[i:i + 1600])])
    assert dets[0] == dets[1]


def test_shipped_npz_to_torch_model_and_back_is_exact(shipped, tmp_path):
    """The .npz is the only model file: the torch model built from it (--init, export, the torch
    reference path) holds exactly its weights and header, and writes exactly them back."""
    assert DEFAULT_ENGINE.exists() and DEFAULT_MODEL == DEFAULT_ENGINE
    committed = load_engine(DEFAULT_ENGINE)
    for k, v in shipped.model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), committed.arrays[k], err_msg=k)
    again = load_engine(save_bundle(shipped, tmp_path / "again.npz"))
    assert header(again) == header(committed)
    assert again.arrays.keys() == committed.arrays.keys()
    for k in committed.arrays:
        np.testing.assert_array_equal(again.arrays[k], committed.arrays[k], err_msg=k)
        assert again.arrays[k].dtype == np.float32
    assert header(from_bundle(bundle_from_engine(committed))) == header(committed)


def test_shipped_npz_torch_and_engine_give_the_same_posteriors(shipped):
    """The torch model built from the shipped .npz against the engine on it (atol 1e-5), whole clips."""
    from kws.training.features_torch import MFCC
    y = torch.from_numpy(np.stack([speech_like(1.5, seed=s) for s in range(3)]))
    feats = MFCC(shipped.features)(y).float()
    n = feats.shape[1] // shipped.model.cfg.stack * shipped.model.cfg.stack
    with torch.no_grad():
        ref = torch.softmax(shipped.model.forward_all(feats[:, :n])[0], -1).numpy()
    got = load_model().engine.forward_all(feats[:, :n].numpy())[0]
    got = np.exp(got - got.max(-1, keepdims=True)); got /= got.sum(-1, keepdims=True)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_models_ships_one_file_per_model():
    """models/ holds each model once, as the .npz (beside its card and measurements): no .pt twin."""
    models = DEFAULT_ENGINE.parent
    assert not list(models.glob("*.pt")), "models/ ships .npz model files only (kws export --format npz)"
    assert DEFAULT_ENGINE.exists()
    for npz in models.glob("*.npz"):
        load_engine(npz)


def test_old_pt_and_its_npz_load_alike(tmp_path):
    """An old-format .pt (which this test writes itself) still loads where torch is installed, to the
    same model as the .npz of the same weights; the .npz holds no pickled object."""
    b = random_bundle(seed=4, threshold=0.6)
    save_bundle(b, tmp_path / "m.pt")
    save_bundle(b, tmp_path / "m.npz")
    a, c = load_model(tmp_path / "m.pt"), load_model(tmp_path / "m.npz")
    assert header(a) == header(c) and c.detector["threshold"] == 0.6
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], c.arrays[k], err_msg=k)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:      # no pickled object anywhere
        assert all(z[k].dtype != object for k in z.files)


def test_engine_runs_with_torch_unimportable():
    code = ("import sys; sys.modules['torch'] = None\n"        # any `import torch` now raises ImportError
            "import numpy as np\nfrom kws import KeywordSpotter\n"
            "s = KeywordSpotter(); s.process(np.zeros(16000, np.float32)); print(len(s.labels))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_top_level_help_lists_every_command_without_importing_them():
    """`kws --help` is a table of one-liners: importing train/export for it would load torch (seconds)."""
    code = ("import sys\nfrom kws import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m in set(cli.COMMANDS.values())))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    from kws.commands import SUMMARY
    for name, text in SUMMARY.items():
        assert name in r.stdout and text.split()[0] in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("case", ["empty", "truncated", "not_kws", "no_header", "version", "wrong_shape", "pickled",
                                  "unknown_array"])
def test_bad_engine_files_raise_one_clear_error(tmp_path, case):
    p = tmp_path / "m.npz"
    save_engine(random_bundle(), p)
    m = load_engine(p)
    if case == "empty":
        p.write_bytes(b"")
    elif case == "truncated":
        p.write_bytes(p.read_bytes()[:2000])
    elif case == "not_kws":
        np.savez(p, __kws__=np.array('{"format": "other"}'))
    elif case == "no_header":
        np.savez(p, **m.arrays)
    elif case in ("version", "wrong_shape"):
        h = header(m)
        h["format_version" if case == "version" else "model"] = 99 if case == "version" else {**h["model"], "hidden": 32}
        np.savez(p, __kws__=np.array(json.dumps(h)), **m.arrays)
    elif case == "pickled":
        np.savez(p, __kws__=np.array([{"format": "kws-engine"}], dtype=object), **m.arrays)
    elif case == "unknown_array":      # a part the engine would silently skip
        np.savez(p, __kws__=np.array(json.dumps(header(m))), **m.arrays, **{"norm.weight": np.ones(3, np.float32)})
    with pytest.raises(ModelFileError) as e:
        load_model(p)
    msg = str(e.value)
    assert msg and "\n" not in msg and len(msg) < 300
