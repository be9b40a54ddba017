"""kws: a streaming keyword spotter. Audio -> features -> model -> stream -> cli."""
from .errors import KwsError
from .modelfile import Bundle, ModelFileError, load_bundle, save_bundle
from .stream import Detection, DetectorConfig, KeywordSpotter

__all__ = ["KeywordSpotter", "Detection", "DetectorConfig", "Bundle", "load_bundle", "save_bundle",
           "KwsError", "ModelFileError"]
__version__ = "0.1.0"
