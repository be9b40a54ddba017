"""Streaming == offline: the heart of kws. Every streaming component is checked against its batch twin."""
import numpy as np
import pytest
import soxr
import torch

from conftest import random_bundle, speech_like
from test_features import random_partition, split
from kws.audio import StreamResampler
from kws.training.features_torch import MFCC
from kws.stream import KeywordSpotter


def offline_posteriors(bundle, y16k: np.ndarray) -> np.ndarray:
    feats = MFCC(bundle.features)(torch.from_numpy(y16k))
    with torch.no_grad():
        logits, _ = bundle.model.forward_all(feats[None])
    return torch.softmax(logits[0], -1).numpy()


def streamed_posteriors(spotter: KeywordSpotter, chunks, flush: bool = False) -> np.ndarray:
    out = []
    for c in chunks:
        x = spotter.resampler(c)
        out.append(spotter.step_frames(x))
    if flush:
        out.append(spotter.step_frames(spotter.resampler(np.zeros(0, np.float32), last=True)))
    return np.concatenate(out)


@pytest.fixture(scope="module", params=[2, 1], ids=["stack2", "stack1"])
def bundle(request):
    return random_bundle(seed=0, stack=request.param)


@pytest.mark.parametrize("kind,seed", [("whole", 0), ("mixed", 1), ("mixed", 2), ("random", 3), ("random", 4)])
def test_streaming_posteriors_equal_offline_every_frame(bundle, kind, seed):
    y = speech_like(10.0, seed=seed)
    ref = offline_posteriors(bundle, y)
    spotter = KeywordSpotter(bundle)
    got = streamed_posteriors(spotter, split(y, random_partition(len(y), np.random.default_rng(seed), kind)))
    assert got.shape == ref.shape and got.shape[0] == 998 // bundle.model.cfg.stack
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_one_sample_chunks_equal_offline(bundle):
    y = speech_like(0.6, seed=5)   # 9,600 one-sample calls
    ref = offline_posteriors(bundle, y)
    got = streamed_posteriors(KeywordSpotter(bundle), split(y, [1] * len(y)))
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_reset_restores_a_fresh_stream(bundle):
    y = speech_like(2.0, seed=6)
    s = KeywordSpotter(bundle)
    first = streamed_posteriors(s, split(y, random_partition(len(y), np.random.default_rng(0), "random")))
    s.reset()
    second = streamed_posteriors(s, [y])
    np.testing.assert_allclose(first, second, atol=1e-5, rtol=0)


@pytest.mark.parametrize("rate", [44100, 48000, 8000])
def test_stream_resampler_matches_offline_resampling(rate):
    """soxr's streaming resampler against a whole-signal resample. HQ soxr is a linear filter whose
    streaming form keeps the filter history, so only float32 rounding separates them (< 1e-5)."""
    y16 = speech_like(10.0, seed=7)
    y = soxr.resample(y16, 16000, rate, quality="VHQ").astype(np.float32)
    ref = soxr.resample(y, rate, 16000, quality="HQ")
    rs = StreamResampler(rate)
    parts = [rs(c) for c in split(y, random_partition(len(y), np.random.default_rng(rate), "mixed"))]
    got = np.concatenate(parts + [rs(np.zeros(0, np.float32), last=True)])
    assert abs(len(got) - len(ref)) <= 1
    n = min(len(got), len(ref))
    np.testing.assert_allclose(got[:n], ref[:n], atol=1e-5)


@pytest.mark.parametrize("rate", [44100, 48000])
def test_streaming_posteriors_through_resampler(bundle, rate):
    y16 = speech_like(10.0, seed=8)
    y = soxr.resample(y16, 16000, rate, quality="VHQ").astype(np.float32)
    ref = offline_posteriors(bundle, soxr.resample(y, rate, 16000, quality="HQ").astype(np.float32))
    spotter = KeywordSpotter(bundle, sample_rate=rate)
    got = streamed_posteriors(spotter, split(y, random_partition(len(y), np.random.default_rng(1), "random")), flush=True)
    n = min(len(got), len(ref))
    assert abs(len(got) - len(ref)) <= 1
    # the resampler's float32 rounding (< 1e-5 per sample) passes through MFCC and GRU
    np.testing.assert_allclose(got[:n], ref[:n], atol=1e-4, rtol=0)


def test_process_accepts_int16_stereo_and_float(bundle):
    y = speech_like(3.0, seed=9)
    a = KeywordSpotter(bundle)
    a.process(y)
    b = KeywordSpotter(bundle)
    i16 = np.round(y * 32767).astype(np.int16)
    b.process(np.stack([i16, i16], axis=1))
    np.testing.assert_allclose(a.posteriors, b.posteriors, atol=2e-3)
    assert a.frame == b.frame == 298 // bundle.model.cfg.stack


def test_nan_samples_do_not_poison_state(bundle):
    y = speech_like(2.0, seed=10)
    y[1000:1100] = np.nan
    y[5000] = np.inf
    s = KeywordSpotter(bundle)
    s.process(y)
    assert np.isfinite(np.asarray(s.state)).all() and np.isfinite(s.posteriors).all()


@pytest.mark.slow
def test_state_stays_finite_over_an_hour(bundle):
    s = KeywordSpotter(bundle)
    rng = np.random.default_rng(0)
    block = speech_like(60.0, seed=11)
    for minute in range(60):
        s.process(np.roll(block, int(rng.integers(0, len(block)))) * rng.uniform(0.1, 3.0))
        assert np.isfinite(np.asarray(s.state)).all()
    assert s.frame == (60 * 60 * 100 - 2) // bundle.model.cfg.stack
    assert float(np.abs(s.state).max()) <= 1.0   # GRU state is a convex mix of tanh outputs


def test_smoothing_with_carried_context_equals_smoothing_the_whole_sequence():
    """The spotter smooths each chunk with smooth - 1 carried posteriors in front (the fast steady-state
    path); that must give exactly the rows the whole-sequence smoothing gives."""
    from kws.stream import smooth_posteriors
    rng = np.random.default_rng(0)
    post = rng.dirichlet(np.ones(12), size=40).astype(np.float32)
    for smooth in (1, 2, 5, 10):
        whole = smooth_posteriors(post, smooth)
        for context in sorted({0, 1, smooth - 1}):
            for start in (context, context + 7):          # windows starting inside and after the first ones
                got = smooth_posteriors(post[start - context:], smooth, context=context)
                assert np.array_equal(got, smooth_posteriors(post[start - context:], smooth)[context:])
                if start - context == 0 or context == smooth - 1:    # other cumsum origin: float rounding
                    np.testing.assert_allclose(got, whole[start:], rtol=0, atol=1e-6)
