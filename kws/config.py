"""The model's shape (ModelConfig), kept free of torch so the run time can read it."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class ModelConfig:
    n_input: int = 40
    n_classes: int = 12
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.1
    stack: int = 2          # frames stacked per GRU step: 2 -> the GRU runs at 50 Hz, half the cost

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = {"stack": 1, **d}   # files written before frame stacking existed ran the GRU at 100 Hz
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
