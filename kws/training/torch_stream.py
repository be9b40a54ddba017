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
    """-> (bundle, net, streaming features) for a Bundle, an EngineModel or a model path (None: the
    shipped .npz; an old .pt or a checkpoint too)."""
    from ..enginefile import EngineModel
    from .modelfile import Bundle, bundle_from_engine, load_bundle
    if isinstance(model, Bundle):
        bundle = model
    elif isinstance(model, EngineModel):
        bundle = bundle_from_engine(model)
    else:
        bundle = load_bundle(model)
    return bundle, TorchNet(bundle.model), TorchFeatures(bundle.features)
