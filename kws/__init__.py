"""kws: a streaming keyword spotter. Audio -> features -> model -> stream -> cli.

The names below are imported on first use, so `kws --help` and `import kws.cli` stay light and the
CLI can set thread counts before numpy loads. The base install runs everything outside kws/training/
(numpy only); Bundle, load_bundle and save_bundle are the torch side's (kws/training/modelfile.py).
"""
from importlib import import_module

_WHERE = {"KeywordSpotter": "stream", "Detection": "stream", "DetectorConfig": "stream",
          "Bundle": "training.modelfile", "load_bundle": "training.modelfile", "save_bundle": "training.modelfile",
          "ModelFileError": "errors",
          "EngineModel": "enginefile", "load_model": "enginefile", "save_engine": "enginefile",
          "KwsError": "errors"}
__all__ = list(_WHERE)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
