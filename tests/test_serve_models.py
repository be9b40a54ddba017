"""`kws serve --model A --model B`: several model files served at once (issue 23: the ten commands and a
wake-word model such as marvin). A real `kws serve` process on 127.0.0.1 driven by the wyoming library's
own client: describe lists every model's wake words; a `detect` naming one model's word (or the model's
file stem) gets only that model's detections, which are the streaming API's own for that model.

The wake-word model here is made in the test: the shipped engine with its head cut to three outputs
(_silence_, _unknown_, yes) and the third one named `marvin`, so "yes" in the audio is what it hears."""
from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from kws.cli import main
from test_serve import (ALL_WORDS, SR, WORDS, ServerProc, clips, client, compose, dets_of,  # noqa: F401
                        error_line, pcm16, run_session)


def make_wake_model(path, word="marvin", source_label="yes", **meta):
    """A 3-output wake-word model file: the shipped engine's weights, its head cut to
    [_silence_, _unknown_, source_label], that output named `word`."""
    from kws.enginefile import load_model, make_engine_model, save_engine
    m = load_model()
    rows = [m.labels.index("_silence_"), m.labels.index("_unknown_"), m.labels.index(source_label)]
    arrays = dict(m.arrays)
    arrays["head.weight"] = m.arrays["head.weight"][rows]
    arrays["head.bias"] = m.arrays["head.bias"][rows]
    em = make_engine_model(m.features, replace(m.cfg, n_classes=3), ["_silence_", "_unknown_", word], arrays,
                           m.detector, {**m.meta, **meta})
    save_engine(em, path)
    return path


def reference(model, arr, keywords=None, rename=None):
    from kws.stream import KeywordSpotter
    sp = KeywordSpotter(model, sample_rate=SR, keywords=keywords)
    dets = [d for i in range(0, len(arr), 4096) for d in sp.process(arr[i:i + 4096])] + sp.flush()
    return [((rename or {}).get(d.label, d.label), int(round(d.time * 1000))) for d in dets]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    from kws.enginefile import default_model_path
    d = tmp_path_factory.mktemp("models")
    marvin = make_wake_model(d / "marvin.npz")
    s = ServerProc(d / "serve.log", "--model", str(default_model_path()), "--model", str(marvin))
    yield s, marvin
    rc = s.stop()
    assert rc == 0, s.text()[-3000:]
    assert "Traceback" not in s.text() and "Task exception" not in s.text(), s.text()[-5000:]


def _describe(server):
    from wyoming.info import Describe, Info

    async def go():
        async with client(server) as c:
            await c.write_event(Describe().event())
            return Info.from_event(await asyncio.wait_for(c.read_event(), 10))
    return asyncio.run(go())


@pytest.mark.slow
def test_describe_lists_the_commands_and_marvin(two_models):
    server, _ = two_models
    info = _describe(server)
    assert [p.name for p in info.wake] == ["kws"]
    models = info.wake[0].models
    assert [m.name for m in models] == list(ALL_WORDS) + ["marvin"]
    assert all(m.installed and m.languages == ["en"] and m.phrase == m.name for m in models)
    assert "wake word 'marvin'" in models[-1].description
    server.wait_log(r"model kws12_gru: keywords yes,no,.*; model marvin: keywords marvin, threshold")


@pytest.mark.slow
def test_a_session_for_marvin_gets_only_marvin(two_models, clips):
    from kws.enginefile import default_model_path
    server, marvin = two_models
    x, _ = compose(clips, WORDS)                 # yes, stop, left: the marvin model hears the "yes"
    payload, arr = pcm16(x)
    want_marvin = reference(marvin, arr)
    want_stop = reference(default_model_path(), arr, keywords=["stop"])
    want_all = sorted(reference(default_model_path(), arr) + want_marvin, key=lambda d: d[1])
    assert want_marvin and {w for w, _ in want_marvin} == {"marvin"}
    assert want_stop and {w for w, _ in want_stop} == {"stop"}

    async def go():
        async with client(server) as c:
            only_marvin = await run_session(c, payload, names=["marvin"])
            kept = await run_session(c, payload, names="keep")
            only_stop = await run_session(c, payload, names=["stop"])
            both = await run_session(c, payload, names=["marvin", "stop"])
            by_stem = await run_session(c, payload, names=["kws12_gru"])      # a model's file stem: all its words
            everything = await run_session(c, payload, names="all")
            return only_marvin, kept, only_stop, both, by_stem, everything
    only_marvin, kept, only_stop, both, by_stem, everything = asyncio.run(go())
    assert dets_of(only_marvin) == want_marvin
    assert dets_of(kept) == want_marvin                          # names stay for the connection
    assert dets_of(only_stop) == want_stop
    assert dets_of(both) == sorted(want_marvin + want_stop, key=lambda d: d[1])
    assert dets_of(by_stem) == reference(default_model_path(), arr)
    assert dets_of(everything) == want_all


@pytest.mark.slow
def test_wake_word_name_from_metadata_and_keywords_filter(tmp_path, clips):
    """meta `wake_word` names the wake model; --keywords picks wake words across the models."""
    from kws.enginefile import default_model_path
    m = make_wake_model(tmp_path / "custom.npz", word="hey_there", wake_word="hey_there_kws")
    s = ServerProc(tmp_path / "serve.log", "--model", str(default_model_path()), "--model", str(m),
                   "--keywords", "stop,hey_there_kws")
    try:
        info = _describe(s)
        x, _ = compose(clips, WORDS)
        payload, arr = pcm16(x)

        async def go():
            async with client(s) as c:
                return await run_session(c, payload, names=["hey_there_kws"])
        events = asyncio.run(go())
    finally:
        assert s.stop() == 0
    assert [w.name for w in info.wake[0].models] == ["stop", "hey_there_kws"]
    assert dets_of(events) == reference(m, arr, rename={"hey_there": "hey_there_kws"})


def test_cli_errors_for_several_models(capsys, tmp_path):
    from kws.enginefile import default_model_path
    m = make_wake_model(tmp_path / "marvin.npz")
    shipped = str(default_model_path())
    assert main(["serve", "--uri", "tcp://127.0.0.1:0", "--model", shipped, "--model", shipped]) == 2
    assert "wake word 'yes' is offered by two models" in error_line(capsys.readouterr().err)
    assert main(["serve", "--uri", "tcp://127.0.0.1:0", "--model", shipped, "--model", str(m),
                 "--keywords", "marvin,banana"]) == 2
    assert "keywords not in the served models: banana" in error_line(capsys.readouterr().err)
    assert main(["serve", "--uri", "tcp://127.0.0.1:0", "--model", shipped, "--model", str(tmp_path / "no.npz")]) == 2
    assert "model file not found" in error_line(capsys.readouterr().err)
