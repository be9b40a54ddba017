"""The torch path of KeywordSpotter (backend="torch"): the torch MFCC and GRUClassifier.step, as kws ran
before the numpy engine. Kept as the reference the benchmarks and equivalence tests measure the
engine against; the product never imports it."""
from __future__ import annotations

import numpy as np
import torch


class TorchNet:
    """GRUClassifier.step with numpy frames in and numpy posteriors out (the state stays a tensor)."""

    def __init__(self, model):
        self.model = model.eval()
        self.cfg = model.cfg

    def initial_state(self, batch: int = 1):
        return self.model.initial_state(batch)

    def step(self, frames: np.ndarray, state):
        post, state = self.model.step(torch.from_numpy(frames), state)
        return post.numpy(), state


class TorchFeatures:
    def __init__(self, fcfg):
        from .features_torch import MFCC, TorchStreamingMFCC
        self.stream = TorchStreamingMFCC(MFCC(fcfg))

    def reset(self) -> None:
        self.stream.reset()

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        return self.stream(torch.from_numpy(chunk)).numpy()


def torch_parts(model):
    """-> (bundle, net, streaming features) for a Bundle, an EngineModel or a model path (.pt or .npz;
    None: the shipped .pt)."""
    from ..enginefile import EngineModel, as_engine_model, to_bundle
    from .modelfile import Bundle, load_bundle
    if isinstance(model, Bundle):
        bundle = model
    elif model is None or (not isinstance(model, EngineModel) and not str(model).endswith(".npz")):
        bundle = load_bundle(model)
    else:
        bundle = to_bundle(as_engine_model(model))
    return bundle, TorchNet(bundle.model), TorchFeatures(bundle.features)
