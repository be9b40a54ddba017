"""Run an exported kws model with numpy + onnxruntime only (no torch, no kws).

    kws export --format onnx                     # writes models/kws12_gru.onnx + .json
    python examples/onnx_stream.py models/kws12_gru.onnx some16k.wav

Features are the same as kws/features.py's (log-mel MFCC, or PCEN for a model trained with
--frontend pcen), in numpy; tests/test_export.py holds them to kws's. The detector here is the simplest
one (threshold on a moving average); kws.stream.KeywordSpotter adds the refractory time and resampling.
"""
import json
import sys

import numpy as np
import onnxruntime as ort
import soundfile as sf
from librosa.filters import mel as mel_filters


def features(x: np.ndarray, f: dict) -> np.ndarray:
    """16 kHz mono float samples -> the model's input frames [T, n_mfcc], from the sidecar's "features"."""
    sr = f["sample_rate"]
    n_fft, hop = round(sr * f["win_ms"] / 1000), round(sr * f["hop_ms"] / 1000)
    window = np.hanning(n_fft + 1)[:-1]                                   # periodic Hann
    fb = mel_filters(sr=sr, n_fft=n_fft, n_mels=f["n_mels"], fmin=f["f_min"], fmax=f["f_max"])
    k, n = np.arange(f["n_mfcc"]), np.arange(f["n_mels"])
    dct = np.cos(np.pi / f["n_mels"] * (n[:, None] + 0.5) * k[None, :]) * np.sqrt(2 / f["n_mels"])
    dct[:, 0] /= np.sqrt(2)
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), n_fft)[::hop]
    mel = (np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2) @ fb.T
    if f.get("frontend", "log") == "pcen":    # per-channel energy normalisation (kws/arith.py pcen)
        t = f["pcen_time_s"] * sr / hop
        s = (np.sqrt(1 + 4 * t * t) - 1) / (2 * t * t)
        m = mel.copy()                        # the smoother starts at the first frame
        for i in range(1, len(mel)):
            m[i] = m[i - 1] + s * (mel[i] - m[i - 1])
        a, d, r = f["pcen_alpha"], f["pcen_delta"], f["pcen_r"]
        comp = (mel / (f["pcen_eps"] + m) ** a + d) ** r - d ** r
    else:
        comp = np.log(mel + f["log_floor"])
    return (comp @ dct).astype(np.float32)


def main(model_path: str, wav_path: str) -> None:
    meta = json.loads(open(model_path.rsplit(".", 1)[0] + ".json").read())
    f = meta["features"]
    sr = f["sample_rate"]
    n_fft, hop = round(sr * f["win_ms"] / 1000), round(sr * f["hop_ms"] / 1000)
    audio, rate = sf.read(wav_path, dtype="float32", always_2d=True)
    if rate != sr:
        sys.exit(f"this example expects {sr} Hz audio (kws itself resamples any rate)")
    mfcc = features(audio.mean(axis=1), f)

    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    state = np.zeros((meta["layers"], 1, meta["hidden"]), np.float32)
    stack, labels = meta["stack"], meta["labels"]
    thr = meta["detector"].get("threshold", 0.7)
    hist, last = [], -1e9
    for i in range(0, len(mfcc) // stack * stack, stack):        # one call per model output
        post, state = sess.run(None, {"frames": mfcc[None, i:i + stack], "state": state})
        hist = (hist + [post[0]])[-10:]
        avg = np.mean(hist, axis=0)
        best = int(np.argmax(avg[2:])) + 2                           # skip _silence_, _unknown_
        t = (i + stack - 1) * hop / sr + n_fft / sr
        if avg[best] >= thr and t - last > 1.0:
            print(f"{t:7.2f}s  {labels[best]:<8} {avg[best]:.2f}")
            last = t


if __name__ == "__main__":
    main(*sys.argv[1:3])
