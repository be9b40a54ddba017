"""Self-describing model file: weights, feature config, labels, detector defaults, format version.

Saved with `torch.save` of plain containers and tensors, loaded with `torch.load(weights_only=True)`,
so opening a model file never runs code from it. torch is imported only when a .pt is read or
written: the run time (enginefile.py) imports this module for its names without torch installed.
`save_bundle` also writes the engine's .npz beside the .pt, so the two never disagree.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import ModelConfig
from ..errors import KwsError, first_line
from ..features import FeatureConfig

if TYPE_CHECKING:
    from .model import GRUClassifier

FORMAT = "kws-model"
FORMAT_VERSION = 2          # 2: the features may have a stateful front end (PCEN); 1: log mel only
READS_VERSIONS = (1, 2)
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "kws12_gru.pt"


def format_version(features: FeatureConfig) -> int:
    """The oldest version that describes these features (the .pt and the .npz alike): log-mel models
    stay version 1, so a kws from before PCEN still reads them and refuses a PCEN model instead of
    running it on log mel."""
    return 1 if features.frontend == "log" else FORMAT_VERSION


class ModelFileError(KwsError):
    """A model file that cannot be used; the message is one line meant for the user."""


@dataclass
class Bundle:
    """Everything needed to run a trained spotter."""
    model: "GRUClassifier"
    features: FeatureConfig
    labels: list[str]
    detector: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def save_bundle(bundle: Bundle, path: str | Path) -> None:
    """Atomic write: a crash mid-save leaves the old file intact. Writes the .pt and, beside it, the
    engine's .npz (only the .npz if `path` ends in .npz)."""
    import torch
    from ..enginefile import save_engine
    path = Path(path)
    if path.suffix == ".npz":
        save_engine(bundle, path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": format_version(bundle.features),
        "labels": list(bundle.labels),
        "features": bundle.features.to_dict(),
        "model": bundle.model.cfg.to_dict(),
        "detector": dict(bundle.detector),
        "meta": dict(bundle.meta),
        "state_dict": {k: v.detach().cpu().clone() for k, v in bundle.model.state_dict().items()},
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)          # mkstemp makes 0600; a model file is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    save_engine(bundle, path.with_suffix(".npz"))


def load_bundle(path: str | Path | None = None) -> Bundle:
    """A .pt model file as a torch Bundle (training, export, tests); the run time uses enginefile.load_model."""
    import torch
    from .model import GRUClassifier
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelFileError(f"model path is a directory, not a model file: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/corrupt/foreign files
        raise ModelFileError(f"cannot read model file {path}: not a kws model or corrupt ({first_line(e)[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a kws model file")
    version = payload.get("format_version")
    if version not in READS_VERSIONS:
        raise ModelFileError(f"{path} has model format version {version}; "
                             f"this kws reads versions {', '.join(map(str, READS_VERSIONS))}")
    try:
        fcfg = FeatureConfig.from_dict(payload["features"])
        mcfg = ModelConfig.from_dict(payload["model"])
        labels = list(payload["labels"])
        if len(labels) != mcfg.n_classes:
            raise ValueError(f"{len(labels)} labels for {mcfg.n_classes} outputs")
        if fcfg.n_mfcc != mcfg.n_input:
            raise ValueError(f"features have {fcfg.n_mfcc} coefficients, model expects {mcfg.n_input}")
        model = GRUClassifier(mcfg)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{path} is an incompatible kws model: {first_line(e)[:160]}") from None
    model.eval()
    return Bundle(model=model, features=fcfg, labels=labels,
                  detector=dict(payload.get("detector", {})), meta=dict(payload.get("meta", {})))
