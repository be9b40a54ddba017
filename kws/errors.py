"""One base class for problems the user can fix; the CLI prints their message as one line."""
from __future__ import annotations

import importlib

TRAIN_EXTRA = "pip install 'kws[train]'"
# modules of the training extra (kws[train]); the run time (listen, detect, devices, eval) needs none
EXTRA_MODULES = {"torch", "librosa", "matplotlib", "tqdm", "scipy", "onnx", "onnxruntime", "numba"}


class KwsError(Exception):
    """A user-facing error: bad input, missing file or device. The message is one line."""


class ModelFileError(KwsError):
    """A model file that cannot be used (missing, corrupt, foreign, incompatible); the message is one line."""


class NeedsExtra(KwsError):
    """A command or option needs a package of the training extra that is not installed."""


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line (libraries often add multi-line detail)."""
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def needs_extra(what: str, module: str) -> NeedsExtra:
    return NeedsExtra(f"{what} needs {module}, which the base install leaves out: {TRAIN_EXTRA}")


def require(module: str, what: str):
    """Import `module` or raise one line saying which extra brings it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != module.split(".")[0]:
            raise
        raise needs_extra(what, module.split(".")[0]) from None
