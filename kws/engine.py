"""The run-time engine: normalisation, frame stacking, GRU layers and head in numpy, no torch.

It runs the same lines as the torch side (`arith.py`) on float32 arrays named like the torch model's
state_dict, so one set of weights serves both and tests/test_engine.py holds their posteriors
together (atol 1e-5). One stream (`step1`, what KeywordSpotter runs) takes `arith.gru_layer_folded`:
the same equations on weights folded at load time, into preallocated buffers; where kws/_gru.c was
built (setup.py, optional), a chunk's whole step (normalisation, layers, head, softmax) is one call to
its compiled twin (tests/test_kernel.py holds it to the numpy loop and to torch.nn.GRU). numpy rather than
onnxruntime: numpy is already needed for audio and adds no memory; onnxruntime's fused GRU runs the
recurrence faster, but end to end a 100 ms chunk gains 1.07x (1.01x when chunks arrive paced, as live)
for ~20 MB more (README, "Streaming cost"; benchmarks/ort_gru_probe.py).
"""
from __future__ import annotations

import os
import threading

import numpy as np

from . import arith
from .config import ModelConfig

try:        # the compiled twin of arith.gru_layer_folded (kws/_gru.c); optional, see setup.py
    from . import _gru
except ImportError:
    _gru = None

KERNELS = ("auto", "c", "numpy")


def resolve_kernel(kernel: str | None = None) -> str:
    """"c" or "numpy": which loop runs a streaming GRU layer. `kernel` (or $KWS_KERNEL, default "auto")
    is auto (c where it was built), c (required: ValueError if it was not built) or numpy."""
    kernel = kernel or os.environ.get("KWS_KERNEL") or "auto"
    if kernel not in KERNELS:
        raise ValueError(f"unknown GRU kernel {kernel!r} (KWS_KERNEL: {', '.join(KERNELS)})")
    if kernel == "c" and _gru is None:
        raise ValueError("the compiled GRU kernel kws._gru is not built (reinstall kws with a C compiler)")
    return "numpy" if kernel == "numpy" or _gru is None else "c"


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple]:
    """The arrays a model of this shape has (torch's GRUClassifier.state_dict names and shapes)."""
    H = cfg.hidden
    shapes = {"feat_mean": (cfg.n_input,), "feat_std": (cfg.n_input,)}
    for k in range(cfg.layers):
        d_in = cfg.n_input * cfg.stack if k == 0 else H
        shapes |= {f"gru.weight_ih_l{k}": (3 * H, d_in), f"gru.weight_hh_l{k}": (3 * H, H),
                   f"gru.bias_ih_l{k}": (3 * H,), f"gru.bias_hh_l{k}": (3 * H,)}
    return shapes | {"head.weight": (cfg.n_classes, H), "head.bias": (cfg.n_classes,)}


def check_arrays(cfg: ModelConfig, arrays: dict) -> None:
    """ValueError naming the first missing, misshapen or unknown array. Unknown ones are refused, not
    ignored: a model that grew a part the engine does not compute must fail here, not run without it."""
    shapes = expected_shapes(cfg)
    for name, shape in shapes.items():
        if name not in arrays:
            raise ValueError(f"missing array {name}")
        if tuple(arrays[name].shape) != shape:
            raise ValueError(f"{name} has shape {tuple(arrays[name].shape)}, the model config needs {shape}")
    extra = sorted(set(arrays) - set(shapes))
    if extra:
        raise ValueError(f"array {extra[0]} is not part of the model the engine runs")


class Engine:
    """numpy twin of GRUClassifier in eval mode: `step(frames, state) -> (posteriors, state)`."""

    def __init__(self, cfg: ModelConfig, arrays: dict, kernel: str | None = None):
        check_arrays(cfg, arrays)
        self.cfg = cfg
        self.kernel = resolve_kernel(kernel)
        f32 = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in arrays.items()}
        self.mean, self.std = f32["feat_mean"], f32["feat_std"]
        # transposed once here, so every step is a plain row-vector @ matrix product
        self.layers = [(np.ascontiguousarray(f32[f"gru.weight_ih_l{k}"].T), np.ascontiguousarray(f32[f"gru.weight_hh_l{k}"].T),
                        f32[f"gru.bias_ih_l{k}"], f32[f"gru.bias_hh_l{k}"]) for k in range(cfg.layers)]
        self.head_w_t, self.head_b = np.ascontiguousarray(f32["head.weight"].T), f32["head.bias"]
        # the streaming path (batch 1): the same layers as gru_fold's weights, bias rows appended
        self.folded = [arith.gru_fold(np, *layer) for layer in self.layers]
        self.head_aug = np.ascontiguousarray(np.concatenate([self.head_w_t, self.head_b[None]]))
        self.mean_s, self.std_s = np.tile(self.mean, cfg.stack), np.tile(self.std, cfg.stack)
        self._zero_state = np.zeros((cfg.layers, cfg.hidden), np.float32)
        self._local = threading.local()     # per-thread step buffers (serve runs streams in threads)

    def initial_state(self, batch: int = 1) -> np.ndarray:
        return np.zeros((self.cfg.layers, batch, self.cfg.hidden), np.float32)

    def forward_all(self, frames: np.ndarray, state: np.ndarray | None = None):
        """frames [B, T, F] -> (logits [B, T // stack, C], state [L, B, H]), as GRUClassifier.forward_all."""
        frames = np.asarray(frames, np.float32)
        x = arith.normalize_stack(frames, self.mean, self.std, self.cfg.stack)
        state = self.initial_state(frames.shape[0]) if state is None else np.asarray(state, np.float32)
        if x.shape[1] == 0:
            return np.zeros((frames.shape[0], 0, self.cfg.n_classes), np.float32), state
        new = []
        for k, (w_ih_t, w_hh_t, b_ih, b_hh) in enumerate(self.layers):
            x, h = arith.gru_layer(np, x, state[k], w_ih_t, w_hh_t, b_ih, b_hh)
            new.append(h)
        return x @ self.head_w_t + self.head_b, np.stack(new)

    def _buffers(self, T: int) -> list[np.ndarray]:
        """[input x1 [T, D+1], then per layer: state in [H+1], outputs [T, H+1] (trailing columns 1),
        gru_work's scratch]."""
        cache = getattr(self._local, "bufs", None)
        if cache is None:
            cache = self._local.bufs = {}
        bufs = cache.get(T)
        if bufs is None:
            H, D = self.cfg.hidden, self.cfg.n_input * self.cfg.stack
            bufs = [np.ones((T, D + 1), np.float32)]
            for _, wh in self.folded:
                bufs += [np.ones(H + 1, np.float32), np.ones((T, H + 1), np.float32), arith.gru_work(np, wh)]
            if T <= 64:     # streaming chunk sizes (<= 1.28 s at stack 2; all of 1..64 cached: ~3 MB at most)
                cache[T] = bufs
        return bufs

    def step1(self, frames: np.ndarray, state: np.ndarray | None = None):
        """`step` for one stream, frames [T, F] and state [L, H], on arith.gru_layer_folded: the streaming
        hot path (about half the array operations of forward_all, none allocating per GRU step). Where
        the compiled kernel was built (kws/_gru.c), the whole step (normalisation, layers, head,
        softmax) is one call to it."""
        stack, H = self.cfg.stack, self.cfg.hidden
        T = frames.shape[0] // stack
        if frames.shape[0] % stack:
            raise ValueError(f"step() needs a multiple of {stack} frames, got {frames.shape[0]}")
        if T == 0:
            return (np.zeros((0, self.cfg.n_classes), np.float32),
                    self.initial_state(1)[:, 0] if state is None else state)
        if self.kernel == "c":      # the whole step in one call (kws/_gru.c gru_step)
            post = np.empty((T, self.cfg.n_classes), np.float32)
            new = np.empty((len(self.layers), H), np.float32)
            _gru.gru_step(np.ascontiguousarray(frames, np.float32).reshape(T, -1), self.mean_s, self.std_s,
                          self.folded, self.head_aug, self._zero_state if state is None else
                          np.ascontiguousarray(state, np.float32), post, new)
            return post, new
        bufs = self._buffers(T)
        x1 = bufs[0]
        xin = x1[:, :-1]
        np.subtract(np.asarray(frames, np.float32).reshape(T, -1), self.mean_s, out=xin)
        np.divide(xin, self.std_s, out=xin)       # = arith.normalize_stack, elementwise the same
        new = np.empty((len(self.layers), H), np.float32)
        for k, (wi, wh) in enumerate(self.folded):
            h1, out1, work = bufs[1 + 3 * k: 4 + 3 * k]
            if state is not None:
                h1[:H] = state[k]
            else:
                h1[:H] = 0.0
            x1 = arith.gru_layer_folded(np, x1, h1, wi, wh, out1, work)
            new[k] = x1[-1, :H]
        return arith.softmax(np, x1 @ self.head_aug), new

    def step(self, frames: np.ndarray, state: np.ndarray | None = None):
        """Streaming: frames [T, F] (state [L, H]) or [B, T, F] (state [L, B, H]), T a multiple of
        `stack` -> (posteriors [.., T // stack, C], new state)."""
        if frames.ndim == 2 and (state is None or state.ndim == 2):
            return self.step1(frames, state)
        squeeze = frames.ndim == 2
        if squeeze:
            frames = frames[None]
            if state is not None and state.ndim == 2:
                state = state[:, None]
        if frames.shape[1] % self.cfg.stack:
            raise ValueError(f"step() needs a multiple of {self.cfg.stack} frames, got {frames.shape[1]}")
        logits, state = self.forward_all(frames, state)
        post = arith.softmax(np, logits)
        return (post[0], state[:, 0]) if squeeze else (post, state)
