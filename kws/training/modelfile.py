"""The model as torch holds it (a Bundle: GRUClassifier + features, labels, detector defaults, meta), read
from and written to the model file, the engine's .npz (kws/enginefile.py).

`load_bundle` builds the GRUClassifier from a model file (the .npz; also an old .pt model file or a
training checkpoint); `bundle_from_engine` from an EngineModel already loaded; `save_bundle` writes the
.npz. The arrays are the state_dict by name, so .npz -> GRUClassifier -> .npz is exact
(tests/test_engine.py). `save_bundle` to a `.pt` name still writes the old torch format, for tests
that check old files keep loading; nothing in kws writes one.

The torch side imports the base side (enginefile), never the other way round.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..enginefile import (DEFAULT_ENGINE, FORMAT_VERSION, READS_VERSIONS, EngineModel, default_model_path,  # noqa: F401
                          format_version, from_bundle, header, load_model, save_engine)
from ..errors import ModelFileError, first_line  # noqa: F401  (ModelFileError: re-exported)
from ..features import FeatureConfig
from .ptfile import CHECKPOINT_MODEL, PT_FORMAT, write_pt

if TYPE_CHECKING:
    from .model import GRUClassifier

DEFAULT_MODEL = DEFAULT_ENGINE      # the shipped model file (models/kws12_gru.npz)


@dataclass
class Bundle:
    """Everything needed to run a trained spotter, with the model in torch."""
    model: "GRUClassifier"
    features: FeatureConfig
    labels: list[str]
    detector: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def bundle_from_engine(m: EngineModel, path=None) -> Bundle:
    """An EngineModel (a loaded .npz) as a torch Bundle in eval mode: its arrays are the state_dict."""
    import torch
    from .model import GRUClassifier
    model = GRUClassifier(m.cfg)
    try:
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in m.arrays.items()})
    except RuntimeError as e:     # cannot happen for a checked EngineModel; a file is named if it does
        raise ModelFileError(f"{path or 'model'} is an incompatible kws model: {first_line(e)[:160]}") from None
    return Bundle(model=model.eval(), features=m.features, labels=list(m.labels), detector=dict(m.detector),
                  meta=dict(m.meta))


def load_bundle(path: str | Path | None = None) -> Bundle:
    """A model file as a torch Bundle (training's --init, export, tests): the .npz (default: the shipped
    one), an old .pt model file or a training checkpoint. ModelFileError (one line) when it cannot be used."""
    return bundle_from_engine(load_model(path), path)


def save_bundle(bundle: Bundle, path: str | Path) -> Path:
    """Write the model file, the .npz (atomically). A `.pt` name writes the old torch format instead
    (weights_only-loadable plain containers): only for testing that old files still load."""
    path = Path(path)
    if path.suffix == ".npz":
        return save_engine(bundle, path)
    return write_pt({**header(from_bundle(bundle)), "format": PT_FORMAT,
                     "state_dict": {k: v.detach().cpu().clone() for k, v in bundle.model.state_dict().items()}}, path)


def checkpoint_model(bundle: Bundle) -> dict:
    """What a training checkpoint carries besides its weights so that it describes its model (labels,
    features, shape, detector, meta): `kws export --format npz --model runs/NAME/checkpoint.pt` reads it."""
    import json
    return {CHECKPOINT_MODEL: json.dumps(header(from_bundle(bundle)), sort_keys=True)}
