"""The base install is the run time without torch: `pip install kws` into a fresh virtual environment
(a real wheel build, not editable), then `kws detect` on a file, on the shipped engine model (.npz) that
the wheel carries, with torch not importable there and every command run outside the checkout."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import speech_like

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory):
    """A copy of the package (code, pyproject, setup.py, README, the .npz model file) built as a
    wheel and installed into a venv that has never seen torch; the copy is deleted before the tests, so
    the default model can only come from inside the installed package."""
    d = tmp_path_factory.mktemp("base")
    src = d / "src"
    shutil.copytree(ROOT / "kws", src / "kws", ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))
    for f in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / f, src / f)
    (src / "models").mkdir()
    for model in ("kws12_gru.npz", "marvin.npz"):
        shutil.copy(ROOT / "models" / model, src / "models")
    venv = d / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)],
                       capture_output=True, text=True, cwd=d)
    if r.returncode != 0:
        msg = f"pip install of the base package failed (no package index reachable?): {r.stderr.strip()[-800:]}"
        pytest.fail(msg) if os.environ.get("CI") else pytest.skip(msg)
    shutil.rmtree(src)
    return py


def test_base_install_builds_the_compiled_kernel(base_venv):
    """pip builds kws/_gru.c where a compiler exists (.ci/run requires it); without one the engine says numpy.
    (Every command here runs outside the checkout, so `python -c`/`-m` cannot import the checkout's kws.)"""
    r = subprocess.run([str(base_venv), "-c", "from kws.engine import resolve_kernel; print(resolve_kernel())"],
                       capture_output=True, text=True, cwd=base_venv.parent)
    assert r.returncode == 0, r.stderr
    if os.environ.get("KWS_REQUIRE_KERNEL") == "1":
        assert r.stdout.strip() == "c", "the base install did not build kws._gru"
    else:
        assert r.stdout.strip() in ("c", "numpy")


def test_the_wheel_carries_the_shipped_model(base_venv):
    r = subprocess.run([str(base_venv), "-c", "from kws.enginefile import default_model_path as d; print(d())"],
                       capture_output=True, text=True, cwd=base_venv.parent)
    assert r.returncode == 0, r.stderr
    assert "site-packages" in r.stdout and r.stdout.strip().endswith("_models/kws12_gru.npz")
    r = subprocess.run([str(base_venv), "-c", "from kws.enginefile import WAKEWORD_ENGINE as w, shipped_model_path as s; "
                        "print(s(w))"], capture_output=True, text=True, cwd=base_venv.parent)
    assert r.returncode == 0, r.stderr
    assert "site-packages" in r.stdout and r.stdout.strip().endswith("_models/marvin.npz")   # kws wakeword's start


def test_base_install_has_no_torch(base_venv):
    r = subprocess.run([str(base_venv), "-c", "import torch"], capture_output=True, text=True, cwd=base_venv.parent)
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr


def test_kws_detect_runs_in_the_base_install(base_venv, tmp_path):
    f = tmp_path / "a.wav"
    sf.write(f, np.concatenate([speech_like(3.0, seed=1), np.zeros(8000, np.float32)]), 16000, subtype="PCM_16")
    kws = base_venv.parent / "kws"
    r = subprocess.run([str(kws), "detect", str(f)], capture_output=True, text=True, cwd=base_venv.parent)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and all(ln.startswith(str(f)) for ln in r.stdout.strip().splitlines())
    # the same command line through python -m kws; a command of the training extra says so in one line
    r2 = subprocess.run([str(base_venv), "-m", "kws", "detect", str(f)], capture_output=True, text=True, cwd=base_venv.parent)
    assert r2.returncode == 0 and r2.stdout == r.stdout
    r3 = subprocess.run([str(kws), "train", "--data", str(tmp_path)], capture_output=True, text=True, cwd=base_venv.parent)
    assert r3.returncode == 2 and r3.stderr.count("\n") == 1 and "kws[train]" in r3.stderr
    r4 = subprocess.run([str(kws), "--help"], capture_output=True, text=True, cwd=base_venv.parent)
    train_line = next(ln for ln in r4.stdout.splitlines() if ln.strip().startswith("train"))
    assert r4.returncode == 0 and "kws[train]" in train_line and "listen" in r4.stdout
