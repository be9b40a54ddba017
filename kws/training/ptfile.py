"""torch files that hold a model: the `.pt` model files of older kws (before the .npz became the model
file) and the training checkpoints (runs/NAME/checkpoint.pt, which describe their model since the .npz
change). Read with `torch.load(weights_only=True)`, so opening one never runs code from it.

`read_pt` returns the payload with the npz header's fields (format, format_version, labels, features,
model, detector, meta) and the weights as float32 numpy arrays; enginefile.load_model checks it like an
npz header. This module imports nothing of kws but errors.py, so enginefile may call it (lazily, for a
.pt) without an import cycle.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import ModelFileError, first_line

PT_FORMAT = "kws-model"        # the old .pt model file's "format" field
CHECKPOINT_MODEL = "model_file"  # the checkpoint's key holding its model's header (JSON), see train.py


def read_pt(path: str | Path) -> dict:
    """An old .pt model file or a checkpoint -> {header fields..., "state_dict": {name: float32 array}}."""
    import numpy as np
    import torch
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/corrupt/foreign files
        raise ModelFileError(f"cannot read model file {path}: not a kws model or corrupt ({first_line(e)[:120]})") from None
    if not isinstance(payload, dict):
        raise ModelFileError(f"{path} is not a kws model file")
    if payload.get("format") != PT_FORMAT and "opt" in payload and isinstance(payload.get("model"), dict):
        if CHECKPOINT_MODEL not in payload:
            raise ModelFileError(f"{path} is a training checkpoint from an older kws, which does not describe its "
                                 f"model; use the run's last.npz (or last.pt) beside it, the same weights")
        try:
            head = json.loads(payload[CHECKPOINT_MODEL])
            head["state_dict"] = payload["model"]
        except (TypeError, ValueError) as e:
            raise ModelFileError(f"{path}: a checkpoint with an unreadable model description ({first_line(e)[:120]})") from None
        payload = {**head, "format": PT_FORMAT}
    state = payload.get("state_dict")
    if payload.get("format") == PT_FORMAT:
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ModelFileError(f"{path} is an incompatible kws model: no state_dict of tensors")
        payload = {**payload, "state_dict": {k: v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()}}
    return payload


def write_pt(payload: dict, path: str | Path) -> Path:
    """torch.save of plain containers and tensors, atomically: a crash mid-save leaves the old file intact."""
    import torch
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)          # mkstemp makes 0600; a model file is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
