import json
import pickle

import numpy as np
import pytest
import torch

from conftest import random_bundle, speech_like
from kws.features import FeatureConfig
from kws.training.modelfile import FORMAT_VERSION, ModelFileError, load_bundle, save_bundle
from kws.stream import KeywordSpotter


@pytest.mark.parametrize("name", ["m.npz", "old.pt"])
def test_roundtrip_keeps_weights_config_labels_and_detector(tmp_path, name):
    """The .npz model file, and an old-format .pt (still loads where torch is installed)."""
    b = random_bundle(seed=3, threshold=0.55, refractory_s=0.8)
    p = tmp_path / name
    save_bundle(b, p)
    c = load_bundle(p)
    assert c.labels == b.labels and c.features == b.features and c.detector["threshold"] == 0.55
    for k, v in b.model.state_dict().items():
        torch.testing.assert_close(c.model.state_dict()[k], v, atol=0, rtol=0)
    y = speech_like(2.0)
    s1, s2 = KeywordSpotter(b), KeywordSpotter(c)
    s1.process(y), s2.process(y)
    np.testing.assert_array_equal(s1.posteriors, s2.posteriors)
    assert s2.cfg.threshold == 0.55 and s2.cfg.refractory_s == 0.8


def test_front_end_survives_both_files_and_sets_the_format_version(tmp_path):
    """A PCEN model is format version 2 in the .npz (and an old-format .pt) (a kws from before PCEN refuses
    it rather than run it on log mel); a log-mel model stays version 1, readable by older kws."""
    from dataclasses import replace
    from kws.enginefile import load_engine
    b = random_bundle(seed=2)
    pcen = replace(b, features=FeatureConfig(frontend="pcen"))
    for name, bundle, version in (("log.pt", b, 1), ("pcen.pt", pcen, 2)):
        save_bundle(bundle, tmp_path / name)
        save_bundle(bundle, (tmp_path / name).with_suffix(".npz"))
        assert torch.load(tmp_path / name, weights_only=True)["format_version"] == version
        npz = np.load((tmp_path / name).with_suffix(".npz"))
        assert json.loads(str(npz["__kws__"]))["format_version"] == version
        assert load_bundle(tmp_path / name).features == bundle.features
        assert load_engine((tmp_path / name).with_suffix(".npz")).features.frontend == bundle.features.frontend
    y = speech_like(2.0)
    s1, s2 = KeywordSpotter(tmp_path / "log.npz"), KeywordSpotter(tmp_path / "pcen.npz")
    s1.process(y), s2.process(y)
    assert np.abs(s1.posteriors - s2.posteriors).max() > 1e-4      # same weights, other features


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_unknown_front_end_in_a_model_file_is_one_clear_error(tmp_path, suffix):
    p = tmp_path / f"m{suffix}"
    save_bundle(random_bundle(), p)
    if suffix == ".pt":
        d = torch.load(p, weights_only=True); d["features"]["frontend"] = "cmvn"; torch.save(d, p)
        load = load_bundle
    else:
        from kws.enginefile import load_engine as load
        z = dict(np.load(p)); head = json.loads(str(z["__kws__"])); head["features"]["frontend"] = "cmvn"
        z["__kws__"] = np.array(json.dumps(head)); np.savez(p, **z)
    with pytest.raises(ModelFileError, match="incompatible kws model: unknown feature front end 'cmvn'"):
        load(p)


def test_old_pt_loads_with_weights_only(tmp_path):
    p = tmp_path / "m.pt"
    save_bundle(random_bundle(), p)
    torch.load(p, weights_only=True)   # would raise if the file needed code to unpickle


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "text", "pickle_code", "not_kws", "version", "wrong_shape", "dir"])
def test_bad_old_pt_model_files_raise_one_clear_error(tmp_path, case):
    p = tmp_path / "m.pt"
    save_bundle(random_bundle(), p)
    good = p.read_bytes()
    if case == "missing":
        p = tmp_path / "nope.pt"
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "truncated":
        p.write_bytes(good[: len(good) // 2])
    elif case == "text":
        p.write_text("hello, I am not a model\n")
    elif case == "pickle_code":
        p.write_bytes(pickle.dumps(Evil()))
    elif case == "not_kws":
        torch.save({"weights": torch.zeros(3)}, p)
    elif case == "version":
        d = torch.load(p, weights_only=True); d["format_version"] = FORMAT_VERSION + 1; torch.save(d, p)
    elif case == "wrong_shape":
        d = torch.load(p, weights_only=True); d["model"]["hidden"] = 32; torch.save(d, p)
    elif case == "dir":
        p = tmp_path
    with pytest.raises(ModelFileError) as e:
        load_bundle(p)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 300 and msg


def test_a_training_checkpoint_loads_as_its_model_and_an_old_one_is_one_clear_error(tmp_path):
    """checkpoint.pt (--resume) describes its model since the .npz became the model file, so `kws export
    --format npz --model runs/NAME/checkpoint.pt` works; one from before says what to use instead."""
    from kws.training.modelfile import checkpoint_model
    b = random_bundle(seed=5, threshold=0.4)
    ck = {"model": b.model.state_dict(), "opt": {"state": {}}, "epoch": 3, "best": 0.5, "history": "[]"}
    torch.save({**ck, **checkpoint_model(b)}, tmp_path / "checkpoint.pt")
    c = load_bundle(tmp_path / "checkpoint.pt")
    assert c.labels == b.labels and c.detector["threshold"] == 0.4
    for k, v in b.model.state_dict().items():
        torch.testing.assert_close(c.model.state_dict()[k], v, atol=0, rtol=0)
    torch.save(ck, tmp_path / "old_checkpoint.pt")
    with pytest.raises(ModelFileError, match="training checkpoint from an older kws.*last.npz") as e:
        load_bundle(tmp_path / "old_checkpoint.pt")
    assert "\n" not in str(e.value)


def test_model_files_are_written_as_npz_only(tmp_path):
    from kws.enginefile import save_model
    with pytest.raises(ModelFileError, match=r"kws model files are \.npz"):
        save_model(random_bundle(), tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
