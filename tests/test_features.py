import numpy as np
import pytest
import scipy.fft
import scipy.signal
import torch

from conftest import speech_like
from kws.features import FeatureConfig, NumpyMFCC, StreamingMFCC
from kws.training.features_torch import MFCC, dct_matrix


def librosa_mfcc(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """librosa reference with every parameter matched: Slaney mel + norm, Hann, center=False, fixed log floor."""
    import librosa
    S = librosa.feature.melspectrogram(y=y.astype(np.float64), sr=cfg.sample_rate, n_fft=cfg.n_fft,
                                       hop_length=cfg.hop, win_length=cfg.n_fft, window="hann",
                                       center=False, power=2.0, n_mels=cfg.n_mels, fmin=cfg.f_min,
                                       fmax=cfg.f_max, htk=False, norm="slaney")
    return librosa.feature.mfcc(S=np.log(S + cfg.log_floor), n_mfcc=cfg.n_mfcc, dct_type=2, norm="ortho").T


@pytest.mark.parametrize("n_mfcc", [40, 20])
def test_matches_librosa(n_mfcc):
    cfg = FeatureConfig(n_mfcc=n_mfcc)
    y = speech_like(3.0, seed=1)
    ours = MFCC(cfg)(torch.from_numpy(y)).numpy()
    ref = librosa_mfcc(y, cfg)
    assert ours.shape == ref.shape == ((len(y) - cfg.n_fft) // cfg.hop + 1, n_mfcc)
    # float32 vs librosa's float64: the log amplifies relative error only near the floor.
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=1e-4)
    assert np.abs(ours - ref).mean() < 1e-4
    np.testing.assert_allclose(NumpyMFCC(cfg)(y), ours, atol=1e-5, rtol=0)   # the run time's twin


def test_matches_torchaudio_when_installed():
    ta = pytest.importorskip("torchaudio")
    cfg = FeatureConfig()
    y = torch.from_numpy(speech_like(2.0, seed=2))
    t = ta.transforms.MFCC(sample_rate=cfg.sample_rate, n_mfcc=cfg.n_mfcc, log_mels=False, norm="ortho",
                           melkwargs=dict(n_fft=cfg.n_fft, hop_length=cfg.hop, win_length=cfg.n_fft,
                                          n_mels=cfg.n_mels, f_min=cfg.f_min, f_max=cfg.f_max,
                                          center=False, mel_scale="slaney", norm="slaney", power=2.0))
    # torchaudio's MFCC uses AmplitudeToDB (10*log10, top_db=80); compare on its mel spectrogram instead.
    mel = t.MelSpectrogram(y)
    ours_logmel = torch.log(mel + cfg.log_floor).T @ dct_matrix(cfg.n_mfcc, cfg.n_mels)
    np.testing.assert_allclose(MFCC(cfg)(y).numpy(), ours_logmel.numpy(), atol=2e-3)


def test_dct_is_orthonormal_dct2():
    m = dct_matrix(40, 40).double().numpy()
    x = np.random.default_rng(0).normal(size=(5, 40))
    np.testing.assert_allclose(x @ m, scipy.fft.dct(x, type=2, norm="ortho", axis=-1), atol=1e-5)


def test_features_do_not_depend_on_input_maximum():
    """A fixed-floor log: a loud event later in the clip must not change earlier frames."""
    mfcc = MFCC()
    y = speech_like(2.0, seed=3)
    loud = y.copy()
    loud[-4000:] = 0.99
    a, b = mfcc(torch.from_numpy(y)), mfcc(torch.from_numpy(loud))
    n_same = (len(y) - 4000 - mfcc.cfg.n_fft) // mfcc.cfg.hop
    torch.testing.assert_close(a[:n_same], b[:n_same], atol=0, rtol=0)


def random_partition(n: int, rng: np.random.Generator, kind: str) -> list[int]:
    if kind == "ones":
        return [1] * n
    if kind == "whole":
        return [n]
    sizes, total = [], 0
    while total < n:
        s = int(rng.choice([1, 7, 159, 161, 479, 1000, 1601, 4999, 16000])) if kind == "mixed" else int(rng.integers(1, 3000))
        sizes.append(min(s, n - total))
        total += sizes[-1]
    return sizes


def split(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(x, np.cumsum(sizes)[:-1])


def test_pcen_front_end_matches_librosa_pcen():
    """frontend="pcen": librosa.pcen (same gain, bias, power, time constant, eps, and its smoother started
    at the first frame's steady state, as ours: librosa's default zi is the steady state of an input of 1)
    on the same mel power, then the same DCT."""
    import librosa
    cfg = FeatureConfig(frontend="pcen")
    y = speech_like(3.0, seed=5)
    S = librosa.feature.melspectrogram(y=y.astype(np.float64), sr=cfg.sample_rate, n_fft=cfg.n_fft,
                                       hop_length=cfg.hop, win_length=cfg.n_fft, window="hann", center=False,
                                       power=2.0, n_mels=cfg.n_mels, fmin=cfg.f_min, fmax=cfg.f_max,
                                       htk=False, norm="slaney")
    P = librosa.pcen(S, sr=cfg.sample_rate, hop_length=cfg.hop, gain=cfg.pcen_alpha, bias=cfg.pcen_delta,
                     power=cfg.pcen_r, time_constant=cfg.pcen_time_s, eps=cfg.pcen_eps,
                     zi=scipy.signal.lfilter_zi([cfg.pcen_s], [1, cfg.pcen_s - 1]) * S[:, :1])
    ref = scipy.fft.dct(P.T, type=2, norm="ortho", axis=-1)[:, :cfg.n_mfcc]
    ours = NumpyMFCC(cfg)(y)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(MFCC(cfg)(torch.from_numpy(y)).numpy(), ours, atol=1e-5, rtol=0)   # torch twin
    log = NumpyMFCC(FeatureConfig())(y)
    assert np.abs(ours - log).mean() > 1.0             # the front end really changed


def test_pcen_front_end_looks_back_and_log_does_not():
    """PCEN's smoother carries the past: a loud start changes later frames (so a stream must carry it),
    while a log-mel frame depends on its own window only."""
    y = speech_like(2.0, seed=6)
    loud = y.copy()
    loud[:4000] = np.clip(loud[:4000] * 20, -1, 1)
    later = slice(40, 60)
    for frontend, changes in (("log", False), ("pcen", True)):
        f = NumpyMFCC(FeatureConfig(frontend=frontend))
        d = np.abs(f(y)[later] - f(loud)[later]).max()
        assert (d > 1e-3) == changes, (frontend, d)


def test_unknown_front_end_is_refused():
    with pytest.raises(ValueError, match="front end 'cmvn'"):
        FeatureConfig(frontend="cmvn")


@pytest.mark.parametrize("frontend", ["log", "pcen"])
@pytest.mark.parametrize("kind,seed", [("ones", 0), ("whole", 0), ("mixed", 1), ("mixed", 2), ("random", 3), ("random", 4)])
def test_streaming_features_equal_batch(kind, seed, frontend):
    mfcc = MFCC(FeatureConfig(frontend=frontend))
    y = speech_like(0.5 if kind == "ones" else 10.0, seed=seed)
    batch = mfcc(torch.from_numpy(y))
    stream = StreamingMFCC(mfcc.cfg)       # the run time's numpy extractor against the torch batch MFCC
    parts = [stream(c) for c in split(y, random_partition(len(y), np.random.default_rng(seed), kind))]
    streamed = np.concatenate(parts)
    assert streamed.shape == batch.shape
    np.testing.assert_allclose(streamed, batch.numpy(), atol=1e-5, rtol=0)


def test_short_input_gives_no_frames_and_keeps_samples():
    mfcc = MFCC()
    stream = StreamingMFCC(mfcc.cfg)
    assert stream(np.zeros(100, np.float32)).shape == (0, 40)
    assert mfcc(torch.zeros(100)).shape == (0, 40)
    assert NumpyMFCC()(np.zeros(100, np.float32)).shape == (0, 40)
    assert stream(np.zeros(380, np.float32)).shape == (1, 40)   # 480 samples: exactly one window


@pytest.mark.parametrize("n_mels,n_fft,fmax", [(40, 480, 7600.0), (80, 512, 8000.0), (64, 400, 4000.0)])
def test_mel_filterbank_equals_librosa(n_mels, n_fft, fmax):
    import librosa
    from kws.training.features_torch import mel_filterbank
    cfg = FeatureConfig(n_mels=n_mels, win_ms=n_fft / 16, f_max=fmax)
    ref = librosa.filters.mel(sr=16000, n_fft=n_fft, n_mels=n_mels, fmin=cfg.f_min, fmax=fmax, htk=False,
                              norm="slaney", dtype=np.float64)
    np.testing.assert_allclose(mel_filterbank(cfg).numpy(), ref, rtol=1e-9, atol=1e-12)
