"""The arithmetic of features and model, written once for numpy and torch.

Every function takes the array namespace `xp` (the `numpy` or the `torch` module) and uses only what
both spell the same way (`@`, `xp.tanh`, `xp.exp`, `xp.log`, `xp.fft.rfft`, positional axes), so the
numpy run-time engine (engine.py) and the torch side (features_torch.py, export.py) run the same
lines. Training uses torch's fused `nn.GRU` for speed; tests/test_engine.py holds it to `gru_layer`.
"""
from __future__ import annotations


def mfcc_from_frames(xp, frames, window, mel_fb_t, dct, log_floor: float):
    """[..., T, n_fft] frames -> [..., T, n_mfcc]: Hann window, power spectrum, mel (mel_fb_t is
    [n_fft//2+1, n_mels]), natural log with a fixed floor, DCT-II. Runs in the dtype it is given."""
    spec = xp.fft.rfft(frames * window)
    power = spec.real * spec.real + spec.imag * spec.imag
    return xp.log(power @ mel_fb_t + log_floor) @ dct


def normalize_stack(frames, mean, std, stack: int):
    """[B, T, F] MFCC frames -> [B, T // stack, stack * F] normalised GRU inputs; a trailing partial
    group is dropped (the streaming spotter keeps it for the next chunk)."""
    x = (frames - mean) / std
    if stack > 1:
        B, T, F = x.shape
        x = x[:, : T // stack * stack].reshape(B, T // stack, stack * F)
    return x


def sigmoid(xp, x):
    """Written with tanh: no overflow for large |x| in float32, one namespace call."""
    return 0.5 * (xp.tanh(0.5 * x) + 1.0)


def gru_layer(xp, x, h, w_ih_t, w_hh_t, b_ih, b_hh):
    """One GRU layer (torch.nn.GRU's equations, gates in r, z, n order) over x [B, T, D] (T >= 1) from
    state h [B, H] -> (outputs [B, T, H], last state [B, H]). w_ih_t/w_hh_t are the transposed weights.

    Written for batch-1 streaming, where each array operation costs about a microsecond whatever its
    size: the input projections of all T steps are one product, the recurrent biases of r and z are
    added there once, and a step is one product and eleven element-wise operations."""
    H = h.shape[-1]
    gi = x @ w_ih_t + b_ih
    gi_rz = gi[:, :, : 2 * H] + b_hh[: 2 * H]
    gi_n, b_hn = gi[:, :, 2 * H:], b_hh[2 * H:]
    outs = []
    for t in range(x.shape[1]):
        gh = h @ w_hh_t
        rz = sigmoid(xp, gi_rz[:, t] + gh[:, : 2 * H])
        n = xp.tanh(gi_n[:, t] + rz[:, :H] * (gh[:, 2 * H:] + b_hn))
        h = n + rz[:, H:] * (h - n)          # = (1 - z) * n + z * h
        outs.append(h)
    return (outs[0][:, None] if len(outs) == 1 else xp.stack(outs, 1)), h


def softmax(xp, logits):
    e = xp.exp(logits - xp.amax(logits, -1)[..., None])
    return e / xp.sum(e, -1)[..., None]
