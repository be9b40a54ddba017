import json

import numpy as np
import pytest
import torch

from conftest import random_bundle, speech_like
from kws.training.export import export_onnx, export_torchscript
from kws.training.features_torch import MFCC


def chunks_of_frames(bundle, seconds=3.0):
    feats = MFCC(bundle.features)(torch.from_numpy(speech_like(seconds, seed=4)))
    s = bundle.model.cfg.stack
    return [feats[i:i + s] for i in range(0, feats.shape[0] // s * s, s)]   # one model output per call


def test_onnx_step_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    b = random_bundle(seed=2)
    path = export_onnx(b, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["labels"] == b.labels
    state_t = b.model.initial_state(1)
    state_o = state_t.numpy().copy()
    for ch in chunks_of_frames(b):            # state carried across calls in both runtimes
        post_t, state_t = b.model.step(ch[None], state_t)
        post_o, state_o = sess.run(None, {"frames": ch[None].numpy(), "state": state_o})
        np.testing.assert_allclose(post_o, post_t[:, 0].numpy(), atol=1e-4)
        np.testing.assert_allclose(state_o, state_t.numpy(), atol=1e-4)


def test_torchscript_step_matches_torch(tmp_path):
    b = random_bundle(seed=3)
    path = export_torchscript(b, tmp_path / "m.ts.pt")
    ts = torch.jit.load(str(path))
    state_t = b.model.initial_state(1)
    state_s = state_t.clone()
    for ch in chunks_of_frames(b):
        post_t, state_t = b.model.step(ch[None], state_t)
        post_s, state_s = ts(ch[None], state_s)
        torch.testing.assert_close(post_s, post_t[:, 0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("source", ["old.pt", "checkpoint.pt"])
def test_export_npz_converts_an_old_pt_or_a_checkpoint(tmp_path, source):
    from kws.cli import main
    from kws.enginefile import from_bundle, header, load_engine
    from kws.training.modelfile import checkpoint_model, save_bundle
    b = random_bundle(seed=5, threshold=0.45)
    if source == "old.pt":
        save_bundle(b, tmp_path / source)
    else:     # what train.py writes for --resume
        torch.save({"model": b.model.state_dict(), "opt": {}, "epoch": 0, **checkpoint_model(b)}, tmp_path / source)
    assert main(["export", "--format", "npz", "--model", str(tmp_path / source), "--out", str(tmp_path / "e.npz")]) == 0
    a, c = load_engine(tmp_path / "e.npz"), from_bundle(b)
    assert header(a) == header(c) and a.detector["threshold"] == 0.45
    for k in c.arrays:
        np.testing.assert_array_equal(a.arrays[k], c.arrays[k])


def test_export_reads_the_npz_model_file(tmp_path, capsys):
    """The default source is the shipped .npz; any .npz exports to TorchScript/ONNX."""
    from kws.cli import main
    from kws.training.modelfile import save_bundle
    b = random_bundle(seed=6)
    save_bundle(b, tmp_path / "m.npz")
    assert main(["export", "--format", "torchscript", "--model", str(tmp_path / "m.npz")]) == 0
    ts = torch.jit.load(str(tmp_path / "m.ts.pt"))
    ch = chunks_of_frames(b)[0]
    torch.testing.assert_close(ts(ch[None], b.model.initial_state(1))[0], b.model.step(ch[None])[0][:, 0],
                               atol=1e-5, rtol=0)
    assert json.loads((tmp_path / "m.ts.json").read_text())["labels"] == b.labels
    assert main(["export", "--format", "torchscript", "--out", str(tmp_path / "shipped.ts.pt")]) == 0
    assert (tmp_path / "shipped.ts.pt").exists()


@pytest.mark.parametrize("case", ["missing", "corrupt", "same_file", "pt_out"])
def test_export_bad_input_is_one_line_exit_2(tmp_path, capsys, case):
    from kws.cli import main
    from kws.training.modelfile import save_bundle
    m = tmp_path / "m.npz"
    save_bundle(random_bundle(), m)
    args = {"missing": ["--model", str(tmp_path / "nope.npz")],
            "corrupt": ["--model", str(tmp_path / "bad.npz")],
            "same_file": ["--model", str(m)],
            "pt_out": ["--model", str(m), "--out", str(tmp_path / "x.pt")]}[case]
    (tmp_path / "bad.npz").write_bytes(m.read_bytes()[:500])
    capsys.readouterr()
    assert main(["export", "--format", "npz", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kws: error: ") and "\n" not in err, err


@pytest.mark.parametrize("frontend", ["log", "pcen"])
def test_onnx_example_computes_kws_features(frontend):
    """examples/onnx_stream.py writes the features out again for runtimes without kws: they must be
    kws's, for either front end the sidecar names."""
    import importlib.util
    from pathlib import Path
    pytest.importorskip("onnxruntime")
    from kws.features import FeatureConfig, NumpyMFCC
    path = Path(__file__).resolve().parent.parent / "examples" / "onnx_stream.py"
    spec = importlib.util.spec_from_file_location("onnx_stream", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    cfg = FeatureConfig(frontend=frontend)
    y = speech_like(3.0, seed=8)
    want = NumpyMFCC(cfg)(y)
    got = example.features(y, cfg.to_dict())
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)
