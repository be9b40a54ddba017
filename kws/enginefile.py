"""The engine's model file: one .npz of float32 arrays plus a JSON header, read with neither torch nor
pickle (`np.load(allow_pickle=False)`).

The arrays carry the torch state_dict's names, so a .pt model converts both ways without loss:
`save_bundle` writes the .npz beside every .pt it writes, and `kws export --format npz` converts an
existing .pt (tests/test_engine.py checks the shipped .npz equals what converting the shipped .pt
gives). `load_model` opens either kind for the run time; a .pt needs torch (`kws[train]`).
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .engine import Engine
from .errors import first_line
from .features import FeatureConfig
from .training.modelfile import DEFAULT_MODEL, READS_VERSIONS, ModelFileError, format_version

FORMAT = "kws-engine"
FORMAT_VERSION = 2          # as the .pt's (modelfile.format_version: 1 for log mel, 2 for PCEN)
HEADER = "__kws__"
DEFAULT_ENGINE = DEFAULT_MODEL.with_suffix(".npz")
# where a wheel (`pip install kws`, not editable) carries the shipped engine file: setup.py copies it there
PACKAGED_ENGINE = Path(__file__).resolve().parent / "_models" / DEFAULT_ENGINE.name
TORCH_HINT = "pip install 'kws[train]'"


@dataclass
class EngineModel:
    """Everything the run time needs: the engine plus what a Bundle carries besides the torch model."""
    engine: Engine
    features: FeatureConfig
    labels: list[str]
    detector: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)     # the weights by state_dict name (float32)

    @property
    def cfg(self) -> ModelConfig:
        return self.engine.cfg

    def with_kernel(self, kernel: str) -> "EngineModel":
        """The same model on an engine whose GRU layers run in `kernel` ("c" or "numpy"; see engine.py)."""
        return replace(self, engine=Engine(self.cfg, self.arrays, kernel=kernel))


def make_engine_model(features: FeatureConfig, mcfg: ModelConfig, labels, arrays: dict,
                      detector: dict | None = None, meta: dict | None = None) -> EngineModel:
    """Checks a model's parts fit together (ValueError saying how they do not)."""
    labels = list(labels)
    if len(labels) != mcfg.n_classes:
        raise ValueError(f"{len(labels)} labels for {mcfg.n_classes} outputs")
    if features.n_mfcc != mcfg.n_input:
        raise ValueError(f"features have {features.n_mfcc} coefficients, model expects {mcfg.n_input}")
    arrays = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
    return EngineModel(Engine(mcfg, arrays), features, labels, dict(detector or {}), dict(meta or {}), arrays)


def from_bundle(bundle) -> EngineModel:
    """A torch Bundle (training, tests) -> the engine's model, weights copied as float32 arrays."""
    arrays = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in bundle.model.state_dict().items()}
    return make_engine_model(bundle.features, bundle.model.cfg, bundle.labels, arrays, bundle.detector, bundle.meta)


def header(m: EngineModel) -> dict:
    return {"format": FORMAT, "format_version": format_version(m.features), "labels": list(m.labels),
            "features": m.features.to_dict(), "model": m.cfg.to_dict(), "detector": dict(m.detector),
            "meta": dict(m.meta)}


def save_engine(m, path: str | Path) -> Path:
    """Write an EngineModel (or a torch Bundle) as .npz, atomically."""
    if not isinstance(m, EngineModel):
        m = from_bundle(m)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **{HEADER: np.array(json.dumps(header(m), sort_keys=True))}, **m.arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def is_engine_file(path: Path) -> bool:
    """An .npz with our header (both .npz and torch's .pt are zip archives: look inside)."""
    try:
        with zipfile.ZipFile(path) as z:
            return HEADER + ".npy" in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def load_engine(path: str | Path) -> EngineModel:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if HEADER not in z.files:
                raise ModelFileError(f"{path} is not a kws model file (no {HEADER} header)")
            head = json.loads(str(z[HEADER]))
            arrays = {k: z[k] for k in z.files if k != HEADER}
    except ModelFileError:
        raise
    except Exception as e:    # zipfile/numpy/json raise many types for truncated or foreign files
        raise ModelFileError(f"cannot read model file {path}: not a kws model or corrupt ({first_line(e)[:120]})") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a kws model file")
    if head.get("format_version") not in READS_VERSIONS:
        raise ModelFileError(f"{path} has engine format version {head.get('format_version')}; "
                             f"this kws reads versions {', '.join(map(str, READS_VERSIONS))}")
    try:
        return make_engine_model(FeatureConfig.from_dict(head["features"]), ModelConfig.from_dict(head["model"]),
                                 head["labels"], arrays, head.get("detector"), head.get("meta"))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path} is an incompatible kws model: {first_line(e)[:160]}") from None


def default_model_path() -> Path:
    """The shipped model: the checkout's models/ (editable installs, development), else the copy inside
    the installed package (a wheel), else the checkout's .pt (its "not found" names that path)."""
    for p in (DEFAULT_ENGINE, PACKAGED_ENGINE):
        if p.exists():
            return p
    return DEFAULT_MODEL


def load_model(path: str | Path | None = None) -> EngineModel:
    """Any kws model file for the run time: the engine's .npz, or (where torch is installed) a .pt."""
    path = Path(path) if path is not None else default_model_path()
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelFileError(f"model path is a directory, not a model file: {path}")
    if path.suffix == ".npz" or is_engine_file(path):
        return load_engine(path)
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        raise ModelFileError(f"{path} is a torch model file; reading it needs torch ({TORCH_HINT}), or convert "
                             f"it once where torch is installed: kws export --format npz --model {path}") from None
    from .training.modelfile import load_bundle
    return from_bundle(load_bundle(path))


def as_engine_model(model) -> EngineModel:
    """An EngineModel as is; a torch Bundle converted; a path (or None: the shipped model) loaded."""
    if isinstance(model, EngineModel):
        return model
    if hasattr(model, "model") and hasattr(model, "features"):     # a torch Bundle
        return from_bundle(model)
    return load_model(model)


def to_bundle(m: EngineModel):
    """Back to a torch Bundle (needs torch): the arrays are the state_dict, by name."""
    from .errors import require
    torch = require("torch", "writing a .pt model file")
    from .training.model import GRUClassifier
    from .training.modelfile import Bundle
    model = GRUClassifier(m.cfg)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in m.arrays.items()})
    return Bundle(model=model.eval(), features=m.features, labels=list(m.labels), detector=dict(m.detector),
                  meta=dict(m.meta))


def save_model(m: EngineModel, path: str | Path) -> None:
    """.npz: the engine file alone; any other name: a .pt (needs torch) with its .npz beside."""
    if Path(path).suffix == ".npz":
        save_engine(m, path)
    else:
        from .training.modelfile import save_bundle
        save_bundle(to_bundle(m), path)
