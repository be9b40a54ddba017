import numpy as np
import pytest
import torch

from kws.features import FeatureConfig
from kws.training.model import GRUClassifier, ModelConfig
from kws.training.modelfile import Bundle

LABELS12 = ["_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def speech_like(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Syllable-like bursts: a glottal pulse train with moving pitch through two formant resonators,
    separated by pauses, over a faint noise floor. Enough structure to exercise every MFCC bin."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = rng.normal(0, 1e-3, n).astype(np.float64)
    t = 0
    while t < n:
        dur = int(rng.uniform(0.08, 0.35) * sr)
        seg = np.arange(min(dur, n - t))
        f0 = rng.uniform(90, 260) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(1, 4) * seg / sr))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        src = np.sign(np.sin(phase)) * 0.3 + rng.normal(0, 0.05, seg.size)
        for fc in rng.uniform([300, 900], [900, 2800]):
            src = src + 0.5 * np.sin(2 * np.pi * fc * seg / sr) * np.abs(np.sin(phase / 2))
        env = np.hanning(seg.size) * rng.uniform(0.05, 0.6)
        out[t:t + seg.size] += src * env
        t += seg.size + int(rng.uniform(0.02, 0.4) * sr)
    return np.clip(out, -1, 1).astype(np.float32)


def random_bundle(seed: int = 0, labels=LABELS12, stack: int = 2, **detector) -> Bundle:
    torch.manual_seed(seed)
    fcfg = FeatureConfig()
    model = GRUClassifier(ModelConfig(n_input=fcfg.n_mfcc, n_classes=len(labels), hidden=64, layers=2, stack=stack))
    with torch.no_grad():
        model.feat_mean.normal_(0, 3)
        model.feat_std.uniform_(2, 8)
    model.eval()
    return Bundle(model=model, features=fcfg, labels=list(labels), detector=detector)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield
