"""Stateful GRU keyword classifier with a many-to-one head.

`forward(frames)` is the training entry point: logits from the last frame's hidden state.
`step(frames, state)` is the streaming entry point: it consumes any number of new frames,
returns per-frame posteriors and the new hidden state. Both run the same modules, so a stream
fed chunk by chunk sees the same posteriors as `forward_all` on the whole sequence.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import arith
from ..config import ModelConfig  # noqa: F401  (re-exported: kws.training.model.ModelConfig)


class GRUClassifier(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        # Per-coefficient input normalisation, fitted on training features (see train.py).
        self.register_buffer("feat_mean", torch.zeros(cfg.n_input))
        self.register_buffer("feat_std", torch.ones(cfg.n_input))
        self.gru = nn.GRU(cfg.n_input * cfg.stack, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                          dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, cfg.n_classes)

    def initial_state(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(self.cfg.layers, batch, self.cfg.hidden)

    def hidden_all(self, frames: torch.Tensor, state: torch.Tensor | None = None):
        """frames [B, T, F] -> (top GRU layer's outputs [B, T // stack, H], final state [L, B, H]): what the
        head reads (a trainer's auxiliary heads read it too)."""
        x = arith.normalize_stack(frames, self.feat_mean, self.feat_std, self.cfg.stack)
        return self.gru(x, state)

    def forward_all(self, frames: torch.Tensor, state: torch.Tensor | None = None):
        """frames [B, T, F] -> (logits [B, T // stack, C], final state [L, B, H]).

        Output j sees input frames up to j * stack + stack - 1; a trailing partial group is dropped
        (the streaming detector keeps it for the next chunk)."""
        h, state = self.hidden_all(frames, state)
        return self.head(self.drop(h)), state

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, F] -> logits [B, C] from the last frame (many-to-one)."""
        return self.forward_all(frames)[0][:, -1]

    @torch.no_grad()
    def step(self, frames: torch.Tensor, state: torch.Tensor | None = None):
        """Streaming: frames [T, F] or [B, T, F], T a multiple of `stack` -> (posteriors [.., T // stack, C], new state)."""
        squeeze = frames.dim() == 2
        if squeeze:
            frames = frames.unsqueeze(0)
            if state is not None and state.dim() == 2:
                state = state.unsqueeze(1)
        if frames.shape[1] % self.cfg.stack:
            raise ValueError(f"step() needs a multiple of {self.cfg.stack} frames, got {frames.shape[1]}")
        if frames.shape[1] == 0:
            post = frames.new_zeros(frames.shape[0], 0, self.cfg.n_classes)
            state = state if state is not None else self.initial_state(frames.shape[0])
        else:
            logits, state = self.forward_all(frames, state)
            post = torch.softmax(logits, dim=-1)
        return (post[0], state) if squeeze else (post, state)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
