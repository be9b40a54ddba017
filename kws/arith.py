"""The arithmetic of features and model, written once for numpy and torch.

Every function takes the array namespace `xp` (the `numpy` or the `torch` module) and uses only what
both spell the same way (`@`, `xp.tanh`, `xp.exp`, `xp.log`, `xp.fft.rfft`, positional axes), so the
numpy run-time engine (engine.py) and the torch side (features_torch.py, export.py) run the same
lines. Training uses torch's fused `nn.GRU` for speed; tests/test_engine.py holds it to `gru_layer`.
"""
from __future__ import annotations

import functools


def mel_power(xp, frames, window, mel_fb_t):
    """[..., T, n_fft] frames -> [..., T, n_mels]: Hann window, power spectrum, mel (mel_fb_t is
    [n_fft//2+1, n_mels]). Runs in the dtype it is given."""
    spec = xp.fft.rfft(frames * window)
    power = spec.real * spec.real + spec.imag * spec.imag
    return power @ mel_fb_t


def mfcc_from_frames(xp, frames, window, mel_fb_t, dct, log_floor: float):
    """[..., T, n_fft] frames -> [..., T, n_mfcc]: mel power, natural log with a fixed floor, DCT-II."""
    return xp.log(mel_power(xp, frames, window, mel_fb_t) + log_floor) @ dct


def pcen_smoother(xp, mel, s: float, state=None, block: int = 64):
    """The causal smoother of PCEN over time (axis -2): m[t] = m[t-1] + s * (E[t] - m[t-1]).

    mel [..., T, n_mels] (T >= 1); state [..., n_mels] is m before the first frame (None: a stream's
    start, m = E[0], the steady state of the first frame). -> all m [..., T, n_mels].
    The recurrence is unrolled over blocks of up to `block` frames: m[a + t] = sum_k A[t, k] E[a + k]
    + d[t] m[a - 1], with A[t, k] = s (1 - s)^(t - k) for k <= t and d[t] = (1 - s)^(t + 1), one
    product per block instead of three array operations per frame (a streaming chunk is a few frames).
    A stream cut into chunks (carrying m[-1]) gets the whole signal's values up to rounding (~1e-16)."""
    T = mel.shape[-2]
    prev = mel[..., 0, :] if state is None else state
    outs = []
    for a in range(0, T, block):
        e = mel[..., a:a + block, :]
        A, d = (xp.asarray(w, dtype=mel.dtype) for w in _smoother_weights(float(s), e.shape[-2]))
        m = A @ e + d * prev[..., None, :]
        outs.append(m)
        prev = m[..., -1, :]
    return outs[0] if len(outs) == 1 else xp.concatenate(outs, -2)


@functools.lru_cache(maxsize=64)
def _smoother_weights(s: float, n: int):
    """pcen_smoother's A [n, n] and d [n, 1] (numpy float64; callers cast)."""
    import numpy as np
    t = np.arange(n)
    lag = t[:, None] - t[None, :]
    A = np.where(lag >= 0, s * (1.0 - s) ** np.maximum(lag, 0), 0.0)
    return A, ((1.0 - s) ** (t + 1.0))[:, None]


def pcen(xp, mel, smooth, alpha: float, delta: float, r: float, eps: float):
    """Per-channel energy normalisation (Wang et al. 2017): (E / (eps + m)^alpha + delta)^r - delta^r.
    Dividing by the smoothed energy m of each mel band is an automatic gain control per band: a steady
    background (noise, a microphone's colouring, the input gain) maps to a constant, an onset stands out."""
    return (mel / (eps + smooth) ** alpha + delta) ** r - delta ** r


def features_from_frames(xp, frames, window, mel_fb_t, dct, cfg, state=None):
    """[..., T, n_fft] frames -> ([..., T, n_mfcc] features, front-end state): the front end of
    `cfg` (a FeatureConfig): "log" (log mel, stateless: state stays None) or "pcen" (PCEN mel; the
    state is the smoother's last value [..., n_mels], to pass with the next frames of the same stream).
    The DCT-II follows either way."""
    mel = mel_power(xp, frames, window, mel_fb_t)
    if cfg.frontend == "log":
        return xp.log(mel + cfg.log_floor) @ dct, None
    if mel.shape[-2] == 0:
        return mel @ dct, state
    m = pcen_smoother(xp, mel, cfg.pcen_s, state)
    return pcen(xp, mel, m, cfg.pcen_alpha, cfg.pcen_delta, cfg.pcen_r, cfg.pcen_eps) @ dct, m[..., -1, :]


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


def gru_fold(xp, w_ih_t, w_hh_t, b_ih, b_hh):
    """A layer's weights rearranged for `gru_layer_folded` -> (wi [D+1, 3H], wh [H+1, 3H]), each with
    its bias as the last row (the inputs and the state carry a constant 1 after their values):

    - sigmoid(a) = (1 + tanh(a / 2)) / 2: the r and z columns of both products are halved, so a step
      takes one tanh of them and gets u = 1 + tanh = 2 * (r, z);
    - the recurrent biases of r and z move into wi's bias row (added once per chunk, not per step);
    - the n columns of wh (and b_hn) are halved, so u_r * (wh's n part) = r * (W_hn h + b_hn)."""
    H = w_hh_t.shape[0]
    col = xp.ones_like(b_ih)
    col[: 2 * H] = 0.5
    b_i = b_ih.clone() if hasattr(b_ih, "clone") else b_ih.copy()
    b_i[: 2 * H] = b_i[: 2 * H] + b_hh[: 2 * H]
    b_h = xp.zeros_like(b_hh)
    b_h[2 * H:] = b_hh[2 * H:]
    wi = xp.concatenate([w_ih_t, b_i[None]], 0) * col
    wh = xp.concatenate([w_hh_t, b_h[None]], 0) * 0.5
    return wi, wh


def gru_work(xp, wh):
    """Scratch arrays for gru_layer_folded (a caller streaming many short chunks keeps one set)."""
    H = wh.shape[1] // 3
    g = xp.empty_like(wh[0])
    return g, xp.empty_like(g[:H]), xp.empty_like(g[:H]), xp.ones_like(g[: 2 * H]), xp.ones_like(g[:H]) * 0.5


def gru_layer_folded(xp, x1, h1, wi, wh, out1, work=None):
    """`gru_layer` for one sequence, on `gru_fold`'s weights, with every step writing into buffers.

    x1 [T, D+1] inputs and h1 [H+1] state, each ending in a constant 1; out1 [T, H+1] receives the
    outputs, its last column already 1, so out1[t] is the state of step t + 1 and out1 is the next
    layer's x1; `work` is gru_work's scratch (made here when None). Same equations as `gru_layer` (tests/test_engine.py holds both to torch.nn.GRU); a step
    is one vector-matrix product and ten element-wise operations, all into preallocated memory,
    because at batch 1 each array operation costs about a microsecond whatever its size."""
    H = wh.shape[1] // 3
    if xp.__name__ == "numpy":
        vecmat = xp.dot                            # half np.matmul's call overhead on a vector
    else:
        def vecmat(v, m, out):
            return xp.mv(m.T, v, out=out)
    gi = x1 @ wi                                    # [T, 3H]: (a_rz / 2 from the input, W_in x + b_in)
    g, n, d, one, half = gru_work(xp, wh) if work is None else work
    g_rz, g_r, g_z, g_n = g[: 2 * H], g[:H], g[H: 2 * H], g[2 * H:]
    gi_rz, gi_n, out_h = gi[:, : 2 * H], gi[:, 2 * H:], out1[:, :H]
    h, h_val = h1, h1[:H]
    for t in range(x1.shape[0]):
        vecmat(h, wh, out=g)                       # (a_rz / 2 from the state, (W_hn h + b_hn) / 2)
        xp.add(g_rz, gi_rz[t], out=g_rz)
        xp.tanh(g_rz, out=g_rz)
        xp.add(g_rz, one, out=g_rz)                # u = 2 * (r, z)
        xp.multiply(g_r, g_n, out=n)
        xp.add(n, gi_n[t], out=n)
        xp.tanh(n, out=n)                          # n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        xp.subtract(h_val, n, out=d)
        xp.multiply(d, g_z, out=d)
        xp.multiply(d, half, out=d)
        h_val, h = out_h[t], out1[t]
        xp.add(n, d, out=h_val)                    # h' = n + z * (h - n)
    return out1


def softmax(xp, logits):
    if xp.__name__ == "numpy":       # the ufuncs' own reductions: np.amax/np.sum add ~3 us of wrapper each
        e = xp.exp(logits - xp.maximum.reduce(logits, axis=-1, keepdims=True))
        return e / xp.add.reduce(e, axis=-1, keepdims=True)
    e = xp.exp(logits - xp.amax(logits, -1)[..., None])
    return e / xp.sum(e, -1)[..., None]
