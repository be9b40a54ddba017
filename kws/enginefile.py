"""The model file: one .npz of float32 arrays plus a JSON header, read with neither torch nor pickle
(`np.load(allow_pickle=False)`). Training writes it (runs/NAME/model.npz, last.npz), `--init`, `kws
export`, `kws eval`, listen, serve and the peers harness read it; models/ ships one per model.

The arrays carry the torch state_dict's names, so the torch side (kws/training/modelfile.py) turns one
into a GRUClassifier and back without loss. `.pt` is the training checkpoint's format
(runs/NAME/checkpoint.pt, for --resume); model files of older kws were `.pt` too.

One of the two places where the base side reaches into kws/training/ (the other: stream.py's
backend="torch"): `load_model` of a `.pt` (an old model file or a checkpoint) imports
kws.training.ptfile, lazily and only where torch is installed. ptfile imports nothing of kws but
errors.py, so this forms no import cycle (tests/test_imports.py holds both).
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
from .errors import ModelFileError, first_line
from .features import FeatureConfig

FORMAT = "kws-engine"
FORMAT_VERSION = 2          # 2: the features may have a stateful front end (PCEN); 1: log mel only
READS_VERSIONS = (1, 2)
HEADER = "__kws__"
MODELS = Path(__file__).resolve().parent.parent / "models"          # the checkout's shipped models
DEFAULT_ENGINE = MODELS / "kws12_gru.npz"                             # the ten commands: the default model
WAKEWORD_ENGINE = MODELS / "marvin.npz"                               # the shipped wake word
# where a wheel (`pip install kws`, not editable) carries the shipped model files: setup.py copies them there
PACKAGED_MODELS = Path(__file__).resolve().parent / "_models"
TORCH_HINT = "pip install 'kws[train]'"


def format_version(features: FeatureConfig) -> int:
    """The oldest version that describes these features: log-mel models stay version 1, so a kws from
    before PCEN still reads them and refuses a PCEN model instead of running it on log mel."""
    return 1 if features.frontend == "log" else FORMAT_VERSION


@dataclass
class EngineModel:
    """A model as the run time holds it: the engine plus the features, labels, detector defaults and meta
    (what a torch Bundle carries besides the torch model)."""
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
    """A torch Bundle (training, tests) -> the engine's model, weights copied as float32 arrays. Reads the
    Bundle's attributes only, so this module imports neither torch nor kws.training."""
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


def _from_header(path: Path, head, arrays: dict, fmt: str, what: str) -> EngineModel:
    """The header's checks, shared by the .npz and the old .pt (whose payload has the same fields)."""
    if not isinstance(head, dict) or head.get("format") != fmt:
        raise ModelFileError(f"{path} is not a kws model file")
    if head.get("format_version") not in READS_VERSIONS:
        raise ModelFileError(f"{path} has {what} format version {head.get('format_version')}; "
                             f"this kws reads versions {', '.join(map(str, READS_VERSIONS))}")
    try:
        return make_engine_model(FeatureConfig.from_dict(head["features"]), ModelConfig.from_dict(head["model"]),
                                 head["labels"], arrays, head.get("detector"), head.get("meta"))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path} is an incompatible kws model: {first_line(e)[:160]}") from None


def load_engine(path: str | Path) -> EngineModel:
    """A .npz model file (ModelFileError, one line, for anything else)."""
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
    return _from_header(path, head, arrays, FORMAT, "engine")


def shipped_model_path(checkout_path: Path = DEFAULT_ENGINE) -> Path:
    """A shipped model file: the checkout's models/ (editable installs, development), else the copy inside
    the installed package (a wheel), else the checkout's path (its "not found" names that path)."""
    for p in (checkout_path, PACKAGED_MODELS / checkout_path.name):
        if p.exists():
            return p
    return checkout_path


def default_model_path() -> Path:
    """The shipped 12-class model (kws12_gru.npz): what every command uses without --model."""
    return shipped_model_path(DEFAULT_ENGINE)


def load_model(path: str | Path | None = None) -> EngineModel:
    """Any kws model file for the run time: the .npz; where torch is installed also an old .pt model
    file or a training checkpoint (checkpoint.pt), read by kws.training.ptfile (see the module doc)."""
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
        raise ModelFileError(f"{path} is a torch file (an old .pt model or a checkpoint); reading it needs torch "
                             f"({TORCH_HINT}), or convert it once where torch is installed: "
                             f"kws export --format npz --model {path}") from None
    from .training.ptfile import PT_FORMAT, read_pt      # a door into kws/training/ (module doc)
    payload = read_pt(path)
    return _from_header(path, payload, payload.pop("state_dict", {}), PT_FORMAT, "model")


def as_engine_model(model) -> EngineModel:
    """An EngineModel as is; a torch Bundle converted; a path (or None: the shipped model) loaded."""
    if isinstance(model, EngineModel):
        return model
    if hasattr(model, "model") and hasattr(model, "features"):     # a torch Bundle
        return from_bundle(model)
    return load_model(model)


def save_model(m, path: str | Path) -> Path:
    """An EngineModel (or a torch Bundle) as a model file: `path` must end in .npz (one clear error
    otherwise: kws writes no other model format)."""
    if Path(path).suffix != ".npz":
        raise ModelFileError(f"{path}: kws model files are .npz (the engine file); name it "
                             f"{Path(path).with_suffix('.npz').name}")
    return save_engine(m, path)
