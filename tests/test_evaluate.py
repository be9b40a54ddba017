"""kws detect / eval / eval-stream: CLI behaviour, metrics on crafted cases, bad input."""
import csv
import json
import struct
import tracemalloc

import numpy as np
import pytest

from kws.training.modelfile import load_bundle
import soundfile as sf

from conftest import random_bundle, speech_like
from kws.cli import main
from kws.evaluate import classification_metrics, predict_streaming
from kws.stream import detect_frames, smooth_posteriors
from kws.stream_eval import (Occurrence, match_detections, operating_point, stream_posteriors, sweep,
                             tune_label_thresholds)
from kws.training.modelfile import save_bundle
from kws.stream import KeywordSpotter

SR = 16000


@pytest.fixture(scope="module")
def bundle():
    """A random model with a scaled-up head, so its posteriors vary and a threshold of 0.5 fires."""
    import torch
    b = random_bundle(seed=1)
    with torch.no_grad():
        b.model.head.weight.mul_(10)
    return b


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, bundle):
    p = tmp_path_factory.mktemp("model") / "m.npz"
    save_bundle(bundle, p)
    return str(p)


def write(path, x, sr=SR, subtype="PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, subtype=subtype)
    return str(path)


@pytest.fixture(scope="module")
def sc_root(tmp_path_factory):
    """Tiny Speech Commands layout: 2 keywords + 2 other words, list files, background noise."""
    root = tmp_path_factory.mktemp("sc")
    test = []
    seed = 0
    for word in ("yes", "no", "bed", "cat"):
        for spk in ("aaaa0001", "bbbb0002", "cccc0003"):
            seed += 1
            rel = f"{word}/{spk}_nohash_0.wav"
            write(root / rel, speech_like(1.0, seed=seed))
            if spk != "cccc0003":
                test.append(rel)
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    (root / "validation_list.txt").write_text("")
    write(root / "_background_noise_" / "noise.wav", np.random.default_rng(0).normal(0, 0.1, 3 * SR))
    return root


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err):
    assert rc != 0
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("kws: error: "), err


# ------------------------------------------------------------------------------------------- eval

def test_eval_sc_layout_json_and_png(capsys, tmp_path, sc_root, model_path):
    js, png = tmp_path / "r.json", tmp_path / "cm.png"
    rc, out, err = run(capsys, "eval", "--model", model_path, "--data", sc_root, "--json", js,
                       "--confusion", png, "--quiet")
    assert rc == 0, err
    r = json.loads(js.read_text())
    # testing split: 4 yes/no clips; unknown = ceil(10% of 4) = 1; silence = 1 (made from noise)
    for mode in ("offline", "streaming"):
        m = r[mode]
        assert m["n"] == 6 and m["n_keyword"] == 4
        assert np.asarray(m["confusion"]).sum() == 6
        assert set(m["per_class"]) == set(r["labels"])
        assert 0 <= m["accuracy"] <= 1
    assert r["offline"]["per_class"]["_silence_"]["support"] == 1
    assert png.exists() and png.stat().st_size > 1000
    assert "confusion" in out and "keyword accuracy" in out


def test_eval_all_unknown_keeps_every_other_word(capsys, tmp_path, sc_root, model_path):
    js = tmp_path / "r.json"
    rc, _, err = run(capsys, "eval", "--model", model_path, "--data", sc_root, "--all-unknown", "--json", js,
                     "--quiet")
    assert rc == 0, err
    assert json.loads(js.read_text())["offline"]["per_class"]["_unknown_"]["support"] == 4


def test_eval_csv_list_and_single_files(capsys, tmp_path, sc_root, model_path):
    lst = tmp_path / "list.csv"
    lst.write_text("path,label\n" + "".join(f"{sc_root}/yes/{s}_nohash_0.wav,yes\n" for s in ("aaaa0001", "bbbb0002"))
                   + f"{sc_root}/cat/aaaa0001_nohash_0.wav,cat\n")
    js = tmp_path / "r.json"
    rc, _, err = run(capsys, "eval", "--model", model_path, "--data", lst, sc_root / "no" / "aaaa0001_nohash_0.wav",
                     "--json", js, "--quiet")
    assert rc == 0, err
    r = json.loads(js.read_text())
    sup = {k: v["support"] for k, v in r["offline"]["per_class"].items() if v["support"]}
    assert sup == {"yes": 2, "no": 1, "_unknown_": 1}


def test_eval_root_split_spec_matches_the_trainers(capsys, tmp_path, model_path):
    """`ROOT@VAL,TEST` on a folder of word folders without list files picks the same held-out speakers
    as `kws train` does for that spec."""
    from kws.data.index import scan_root
    root = tmp_path / "words"
    for word in ("yes", "no"):
        for k in range(12):
            write(root / word / f"src_spk{k:02d}_0.wav", speech_like(1.0, seed=k))
    spec = f"{root}@50,0"
    want = sum(it.split == "validation" for it in scan_root(spec))
    assert 0 < want < 24
    js = tmp_path / "r.json"
    rc, _, err = run(capsys, "eval", "--model", model_path, "--data", spec, "--split", "validation",
                     "--json", js, "--quiet")
    assert rc == 0, err
    sup = json.loads(js.read_text())["offline"]["per_class"]
    assert sup["yes"]["support"] + sup["no"]["support"] == want


def test_eval_skips_unreadable_files(capsys, tmp_path, sc_root, model_path):
    root = tmp_path / "words"
    for i in range(3):
        write(root / "yes" / f"s{i}_nohash_0.wav", speech_like(1.0, seed=i))
    (root / "yes" / "broken_nohash_0.wav").write_text("not audio at all")
    js = tmp_path / "r.json"
    rc, _, err = run(capsys, "eval", "--model", model_path, "--data", root, "--json", js, "--quiet")
    assert rc == 0
    assert "skipped 1 unreadable" in err and "Traceback" not in err
    r = json.loads(js.read_text())
    assert r["skipped"] == 1 and r["offline"]["n"] == 3 + 1   # + 1 silence clip (zeros: no noise files)


def test_streaming_labels_do_not_depend_on_grouping(bundle):
    waves = np.stack([speech_like(1.0, seed=s) for s in range(7)])
    a = predict_streaming(bundle, waves, group=1)
    b = predict_streaming(bundle, waves, group=3)
    # reference: feed clip by clip through a KeywordSpotter, never reset
    sp = KeywordSpotter(bundle)
    ref = []
    for w in waves:
        post = sp.step_frames(w)
        ref.append(int(post[-5:].mean(0).argmax()))     # the last 100 ms: 5 outputs of 20 ms
    assert a.tolist() == b.tolist() == ref


def test_streaming_protocol_reads_100_ms_whatever_the_detector_smoothing(bundle):
    """The streaming protocol is the carried-state twin of the last-frame one: a model shipped with a
    longer smoothing window is still read over each clip's last 100 ms."""
    import copy
    waves = np.stack([speech_like(1.0, seed=s) for s in range(9)])
    slow = copy.deepcopy(bundle)
    slow.detector = {**slow.detector, "smooth_ms": 300.0}
    assert KeywordSpotter(slow).smooth == 15
    assert predict_streaming(slow, waves).tolist() == predict_streaming(bundle, waves).tolist() \
        == predict_streaming(bundle, waves, label_frames=5).tolist()
    from kws.evaluate import _label_frames
    assert _label_frames(KeywordSpotter(slow)) == _label_frames(KeywordSpotter(bundle)) == 5


def test_classification_metrics_crafted():
    labels = ["_silence_", "_unknown_", "yes", "no"]
    y = np.array([0, 1, 2, 2, 3, 3])
    p = np.array([0, 2, 2, 3, 3, 3])
    m = classification_metrics(y, p, labels)
    assert m["accuracy"] == round(4 / 6, 4)
    assert m["keyword_accuracy"] == 0.75
    assert m["per_class"]["yes"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["no"]["precision"] == round(2 / 3, 4) and m["per_class"]["no"]["recall"] == 1.0
    assert m["confusion"][1] == [0, 0, 1, 0]


@pytest.mark.parametrize("argv,msg", [
    (["--data", "/nonexistent/dir"], "no such file"),
    (["--data", "EMPTYDIR"], "no labelled audio"),
    (["--data", "EMPTYDIR@ten,0"], "ROOT@VAL,TEST"),
])
def test_eval_bad_data(capsys, tmp_path, model_path, argv, msg):
    (tmp_path / "empty").mkdir()
    argv = [a.replace("EMPTYDIR", str(tmp_path / "empty")) for a in argv]
    rc, _, err = run(capsys, "eval", "--model", model_path, *argv, "--quiet")
    assert_one_line_error(rc, err)
    assert msg in err


def test_eval_missing_model(capsys, sc_root, tmp_path):
    rc, _, err = run(capsys, "eval", "--model", tmp_path / "nope.pt", "--data", sc_root)
    assert_one_line_error(rc, err)


# ------------------------------------------------------------------------------------------ detect

def test_detect_prints_and_json_lines_independent_of_chunking(capsys, tmp_path, model_path, bundle):
    f = write(tmp_path / "a.wav", speech_like(6.0, seed=3))
    rc, out, err = run(capsys, "detect", f, "--model", model_path, "--threshold", "0.5", "--json")
    assert rc == 0, err
    dets = [json.loads(ln) for ln in out.splitlines()]
    assert dets, "a low threshold on this random model should fire"
    assert all(set(d) == {"file", "time", "label", "score"} and d["file"] == f for d in dets)
    rc, out2, _ = run(capsys, "detect", f, "--model", model_path, "--threshold", "0.5", "--json", "--chunk-ms", "37")
    assert [json.loads(ln) for ln in out2.splitlines()] == dets
    rc, txt, _ = run(capsys, "detect", f, "--model", model_path, "--threshold", "0.5")
    first = txt.splitlines()[0].split()
    assert first[0] == f and first[1].endswith("s") and first[2] == dets[0]["label"]
    # keywords filter
    lab = dets[0]["label"]
    rc, out3, _ = run(capsys, "detect", f, "--model", model_path, "--threshold", "0.5", "--json", "--keywords", lab)
    assert all(json.loads(ln)["label"] == lab for ln in out3.splitlines())


def _bad_files(tmp_path):
    d = tmp_path
    (d / "empty.wav").write_bytes(b"")
    good = write(d / "good.wav", speech_like(1.0, seed=1))
    raw = open(good, "rb").read()
    (d / "truncated.wav").write_bytes(raw[:30])
    (d / "text.wav").write_text("hello, I am not a WAV file\n")
    (d / "noaudio").mkdir()
    (d / "noaudio" / "readme.txt").write_text("x")
    return {"empty": d / "empty.wav", "truncated": d / "truncated.wav", "text": d / "text.wav",
            "missing": d / "missing.wav", "noaudio": d / "noaudio"}


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "missing", "noaudio"])
@pytest.mark.parametrize("cmd", ["detect", "eval"])
def test_bad_input_one_line_error(capsys, tmp_path, model_path, kind, cmd):
    path = _bad_files(tmp_path)[kind]
    if cmd == "detect":
        rc, _, err = run(capsys, "detect", path, "--model", model_path)
    else:
        rc, _, err = run(capsys, "eval", "--model", model_path, "--data", path, "--quiet")
        if kind in ("empty", "truncated", "text"):
            # a lone unreadable clip leaves nothing to evaluate: one line that says why, no warning before it
            assert "kws: error: no readable clips" in err and path.name in err
    assert_one_line_error(rc, err)


def test_truncated_data_chunk_is_handled(capsys, tmp_path, model_path):
    """A WAV whose header promises more samples than the file holds (an interrupted recording)."""
    good = write(tmp_path / "good.wav", speech_like(2.0, seed=2))
    raw = open(good, "rb").read()
    (tmp_path / "cut.wav").write_bytes(raw[: len(raw) // 2])
    rc, out, err = run(capsys, "detect", tmp_path / "cut.wav", "--model", model_path, "--threshold", "1.0")
    assert rc == 0 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "header promises 2.00 s" in err and "holds 1.00 s" in err
    assert "no keyword detected in 1.00 s" in out       # processed: what the file holds


def test_detect_says_when_nothing_fired(capsys, tmp_path, model_path):
    f = write(tmp_path / "quiet.wav", np.zeros(SR * 3, np.float32))
    rc, out, err = run(capsys, "detect", f, "--model", model_path, "--threshold", "1.0")
    assert rc == 0 and out.strip() == f"{f}  no keyword detected in 3.00 s of audio" and not err
    rc, out, err = run(capsys, "detect", f, "--model", model_path, "--threshold", "1.0", "--json")
    assert rc == 0 and out == "" and err.strip() == f"kws: {f}  no keyword detected in 3.00 s of audio"


def test_detect_several_files_reports_each_bad_one(capsys, tmp_path, model_path):
    good = write(tmp_path / "good.wav", speech_like(1.0, seed=1))
    (tmp_path / "bad.wav").write_text("nope")
    rc, _, err = run(capsys, "detect", good, tmp_path / "bad.wav", "--model", model_path)
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["u8", "48k_stereo_float", "nan_inf"])
def test_odd_but_valid_audio_works(capsys, tmp_path, model_path, kind):
    x = speech_like(2.0, seed=4)
    if kind == "u8":
        f = write(tmp_path / "u8.wav", x, subtype="PCM_U8")
    elif kind == "48k_stereo_float":
        import soxr
        y = soxr.resample(x, SR, 48000)
        f = write(tmp_path / "st.wav", np.stack([y, 0.5 * y], 1).astype(np.float32), sr=48000, subtype="FLOAT")
    else:
        y = x.copy()
        y[100:200] = np.nan
        y[5000:5010] = np.inf
        y[9000] = -np.inf
        f = write(tmp_path / "nan.wav", y, subtype="FLOAT")
    rc, out, err = run(capsys, "detect", f, "--model", model_path, "--threshold", "0.5", "--json")
    assert rc == 0 and "Traceback" not in err, err
    for ln in out.splitlines():
        d = json.loads(ln)
        assert np.isfinite(d["score"]) and 0 <= d["time"] <= 2.1


def test_detect_bad_options(capsys, tmp_path, model_path):
    f = write(tmp_path / "a.wav", speech_like(1.0, seed=1))
    for extra in (["--threshold", "1.5"], ["--keywords", "banana"], ["--chunk-ms", "0"]):
        rc, _, err = run(capsys, "detect", f, "--model", model_path, *extra)
        assert_one_line_error(rc, err)


def _long_silence_wav(path, seconds, sr=SR):
    """A 16-bit PCM WAV of `seconds` of silence written as a sparse file (no disk, no time)."""
    n = int(seconds * sr) * 2
    with open(path, "wb") as fh:
        fh.write(b"RIFF" + struct.pack("<I", 36 + n) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, sr, sr * 2, 2, 16)
                 + b"data" + struct.pack("<I", n))
        fh.truncate(44 + n)
    return str(path)


def _detect_peak_memory(capsys, path, model_path):
    tracemalloc.start()
    try:
        rc, _, err = run(capsys, "detect", path, "--model", model_path, "--chunk-ms", "500")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rc == 0, err
    return peak


def test_detect_memory_flat_on_long_file(capsys, tmp_path, model_path):
    # 3 minutes (11 MB as float32): the peak traced memory must stay far below the whole file
    f = _long_silence_wav(tmp_path / "long.wav", 180)
    peak = _detect_peak_memory(capsys, f, model_path)
    assert peak < 6e6, f"peak {peak / 1e6:.1f} MB"


@pytest.mark.slow
def test_detect_two_hour_file(capsys, tmp_path, model_path):
    import resource
    f = _long_silence_wav(tmp_path / "2h.wav", 2 * 3600)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = _detect_peak_memory(capsys, f, model_path)
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert peak < 6e6 and growth_mb < 100, (peak, growth_mb)   # the whole file would be 460 MB as float32


# ------------------------------------------------------------------------------------- eval-stream

def test_match_detections_rule():
    occ = [Occurrence("f", "yes", 10.0, 10.5), Occurrence("f", "no", 20.0, 20.6), Occurrence("f", "yes", 30.0, 30.4)]
    dets = [(10.2, "yes"),    # hit occ 0
            (11.4, "yes"),    # inside occ 0's window but occ 0 is used -> false alarm
            (20.3, "yes"),    # wrong label during "no" -> false alarm + wrong label
            (31.5, "yes"),    # 1.1 s after the end -> too late, false alarm
            (5.0, "no")]      # nothing there -> false alarm
    matched, fa, wrong = match_detections(dets, occ)
    assert matched == [(0, 0)]
    assert sorted(fa) == [1, 2, 3, 4] and wrong == [2]
    matched, fa, _ = match_detections([(31.4, "yes")], occ)
    assert matched == [(0, 2)] and fa == []


def test_detect_frames_refractory():
    score = np.zeros(500, np.float32)
    score[[10, 50, 120, 300, 301]] = [0.9, 0.95, 0.8, 0.6, 0.99]
    sm = score[:, None]
    dets = detect_frames(sm, np.array([0.7]), refractory=100)
    assert [d[0] for d in dets] == [10, 120, 301]
    assert [d[0] for d in detect_frames(sm, np.array([0.5]), refractory=100)] == [10, 120, 300]
    # a refractory time carried in from an earlier chunk: nothing before `first`
    assert [d[0] for d in detect_frames(sm, np.array([0.7]), refractory=100, first=11)] == [50, 301]


def test_detect_frames_rearm_fires_once_per_plateau():
    """A posterior that stays above threshold longer than the refractory time (one word held, a slow
    decay) fires once; it fires again only after it has fallen below the threshold and risen."""
    sm = np.zeros((600, 2), np.float32)
    sm[10:260, 0] = 0.9                   # 2.5 refractory times above 0.5
    sm[300:320, 0] = 0.9                  # fell at 260, rose again after the refractory time: fires
    sm[330:340, 1] = 0.8                  # the other column, inside the refractory time: blocked
    sm[440:460, 1] = 0.8                  # after it: fires
    dets = detect_frames(sm, np.array([0.5, 0.5]), refractory=100)
    assert [(t, k) for t, k, _ in dets] == [(10, 0), (300, 0), (440, 1)]
    # a column held from an earlier chunk blocks until it falls, even with no refractory time left
    assert [t for t, _, _ in detect_frames(sm[100:], np.array([0.5, 0.5]), refractory=100, held=0)] == [200, 340]
    assert [t for t, _, _ in detect_frames(sm[100:], np.array([0.5, 0.5]), refractory=100)] == [0, 200, 340]


def test_keyword_spotter_rearm_state_carries_across_chunks(bundle):
    """KeywordSpotter's chunked detector (refractory and re-arm carried between chunks) gives exactly the
    whole-file rule on posteriors with plateaus longer than the refractory time, whatever the chunking."""
    from kws.stream import held_column
    rng = np.random.default_rng(0)
    C = len(bundle.labels)
    T = 3000
    post = np.zeros((T, C), np.float32)
    post[:, 0] = 1.0
    for start in range(40, T - 200, 230):             # plateaus of 0.6-3 s, some longer than the refractory
        k = int(rng.integers(2, C))
        post[start:start + int(rng.integers(30, 150)), [0, k]] = [0.05, 0.95]
    sp = KeywordSpotter(bundle, threshold=0.5)
    kw = np.array([i for i, l in enumerate(bundle.labels) if not l.startswith("_")])
    sm = smooth_posteriors(post, sp.smooth)
    want = [(t, bundle.labels[kw[k]]) for t, k, _ in detect_frames(sm[:, kw], np.full(len(kw), 0.5), sp.refractory)]
    assert want
    long_runs = sum(1 for t, _ in want if (sm[t:t + sp.refractory + 1, kw].max(axis=1) >= 0.5).all())
    assert long_runs >= 2                               # the test has plateaus the re-arm rule must hold
    for chunks in ([T], [1] * 40 + [T - 40], list(rng.integers(1, 60, size=200))):
        sp.reset()
        got, t0 = [], 0
        for n in chunks:
            part = post[t0:t0 + int(n)]
            if not len(part):
                break
            got += [(int(round((d.time - sp.frame_time(0)) / sp.hop_s)), d.label) for d in sp._detect(part)]
            t0 += int(n)
        if t0 < T:
            got += [(int(round((d.time - sp.frame_time(0)) / sp.hop_s)), d.label) for d in sp._detect(post[t0:])]
        assert got == want, chunks[:5]
    # what a chunk carries on: the column that fired while it is still up at the chunk's end, else -1
    up = np.zeros((20, 2), np.float32)
    up[5:, 1] = 0.9
    assert held_column(up, np.array([0.5, 0.5]), [(5, 1, 0.9)]) == 1
    assert held_column(up[5:12], np.array([0.5, 0.5]), [], held=1) == 1       # up all through: still held
    assert held_column(up[:12], np.array([0.5, 0.5]), [], held=1) == -1       # it fell in this chunk
    up[15:, 1] = 0.1
    assert held_column(up, np.array([0.5, 0.5]), [(5, 1, 0.9)]) == -1


def test_simulation_equals_keyword_spotter(bundle):
    """The sweep's detector model gives exactly KeywordSpotter's detections."""
    y = speech_like(20.0, seed=7)
    sp = KeywordSpotter(bundle, threshold=0.5)
    want = [(round(d.time, 4), d.label) for c in np.array_split(y, 50) for d in sp.process(c)]
    assert want
    post = KeywordSpotter(bundle).step_frames(y)
    kw = np.array([i for i, l in enumerate(bundle.labels) if not l.startswith("_")])
    sm = smooth_posteriors(post, sp.smooth)[:, kw]
    got = [(round(sp.frame_time(t), 4), bundle.labels[kw[k]])
           for t, k, _ in detect_frames(sm, np.full(len(kw), 0.5), sp.refractory)]
    assert got == want


def test_per_label_simulation_equals_keyword_spotter(bundle):
    """With a threshold per keyword the simulation still gives exactly KeywordSpotter's detections."""
    y = speech_like(20.0, seed=7)
    kw = np.array([i for i, l in enumerate(bundle.labels) if not l.startswith("_")])
    per = {bundle.labels[i]: t for i, t in zip(kw, np.linspace(0.2, 0.6, len(kw)))}
    sp = KeywordSpotter(bundle, thresholds=per)
    want = [(round(d.time, 4), d.label) for c in np.array_split(y, 50) for d in sp.process(c)]
    assert len({lab for _, lab in want}) >= 2
    post = KeywordSpotter(bundle).step_frames(y)
    sm = smooth_posteriors(post, sp.smooth)[:, kw]
    got = [(round(sp.frame_time(t), 4), bundle.labels[kw[k]])
           for t, k, _ in detect_frames(sm, sp.label_thresholds[kw], sp.refractory)]
    assert got == want


def post_with(events, T: int = 6000) -> np.ndarray:
    """Crafted posteriors [T, 4] (labels _silence_, _unknown_, yes, no; 100 frames/s): silence, except
    each event (first frame, end frame, label index, score)."""
    p = np.zeros((T, 4), np.float32)
    p[:, 0] = 1.0
    for f0, f1, k, v in events:
        p[f0:f1] = 0.0
        p[f0:f1, k] = v
        p[f0:f1, 0] = 1 - v
    return p


def _crafted_streams():
    labels = ["_silence_", "_unknown_", "yes", "no"]
    frame_time = lambda g: g * 0.01 + 0.03
    # "yes" is confident but has two false alarms at 0.8; "no" is timid (0.6) and never false-alarms
    files = {"a.wav": post_with([(1000, 1030, 2, 0.9), (2000, 2030, 2, 0.8), (3000, 3030, 3, 0.6)]),
             "b.wav": post_with([(1000, 1030, 3, 0.6), (2000, 2030, 2, 0.8), (4000, 4030, 2, 0.9)])}
    occs = {"a.wav": [Occurrence("a.wav", "yes", 9.5, 9.9), Occurrence("a.wav", "no", 29.5, 29.9)],
            "b.wav": [Occurrence("b.wav", "no", 9.5, 9.9), Occurrence("b.wav", "yes", 39.5, 39.9)]}
    return files, occs, labels, frame_time


def test_per_label_thresholds_beat_one_threshold_within_the_budget():
    files, occs, labels, frame_time = _crafted_streams()
    grid = [0.5, 0.7, 0.85, 0.95]
    hours = 120 / 3600
    rows = sweep(files, occs, labels, grid, smooth=1, refractory=100, frame_time=frame_time, hours=hours)
    op = operating_point(rows, 0.5)            # one threshold: 0.85 keeps the FAs out and loses both "no"
    assert op["threshold"] == 0.85 and op["hits"] == 2 and op["false_alarms"] == 0
    thr, row = tune_label_thresholds(files, occs, labels, grid, smooth=1, refractory=100, frame_time=frame_time,
                                     hours=hours, max_fa_per_hour=0.5)
    assert thr == {"yes": 0.85, "no": 0.5}
    assert row["hits"] == 4 and row["false_alarms"] == 0 and row["frr"] == 0.0
    # a budget of one false alarm per 2 minutes: one of the 0.8 "yes" FAs may be spent, but buys no hit
    thr, row = tune_label_thresholds(files, occs, labels, grid, smooth=1, refractory=100, frame_time=frame_time,
                                     hours=hours, max_fa_per_hour=30)
    assert row["hits"] == 4 and row["false_alarms"] <= 1


def test_zero_false_alarms_are_drawn_inside_the_budget():
    from kws.stream_eval import zero_fa_x
    assert zero_fa_x(0.5, 0.5) == 0.25 < 0.5          # 30 min: half a false alarm would be 1 FA/h
    assert zero_fa_x(2.0, 0.5) == 0.25                # 2 h: half a false alarm
    assert zero_fa_x(10.0, 0.5) == 0.05


def test_sweep_crafted_posteriors():
    """Two files, 100 frames/s. Known hits, misses, false alarms, wrong labels and latencies."""
    labels = ["_silence_", "_unknown_", "yes", "no"]
    frame_time = lambda g: g * 0.01 + 0.03
    files = {"a.wav": post_with([(1000, 1030, 2, 0.9),    # yes at 10.00 s: hit, latency 10.03 - 9.8
                                 (3000, 3030, 3, 0.6),    # no at 30 s: above 0.5 only, latency 0.13
                                 (5000, 5030, 2, 0.95)]), # yes at 50 s where nothing was said: FA
             "b.wav": post_with([(2000, 2030, 3, 0.8)])}  # "no" during a "yes": wrong label
    occs = {"a.wav": [Occurrence("a.wav", "yes", 9.3, 9.8), Occurrence("a.wav", "no", 29.5, 29.9)],
            "b.wav": [Occurrence("b.wav", "yes", 19.7, 20.1)]}
    rows = sweep(files, occs, labels, [0.5, 0.7, 0.99], smooth=1, refractory=100, frame_time=frame_time,
                 hours=120 / 3600)
    r5, r7, r99 = rows
    assert (r5["hits"], r5["misses"], r5["false_alarms"], r5["wrong_label"]) == (2, 1, 2, 1)
    assert r5["frr"] == round(1 / 3, 4) and r5["fa_per_hour"] == 60.0
    assert r5["latency_median_s"] == pytest.approx(np.median([0.23, 0.13]), abs=1e-3)
    assert (r7["hits"], r7["false_alarms"], r7["misses_by_label"]) == (1, 2, {"no": 1, "yes": 1})
    assert (r99["hits"], r99["false_alarms"], r99["frr"]) == (0, 0, 1.0)
    assert operating_point(rows, 0.5) is r99
    assert operating_point(rows, 100) is r5


def test_eval_stream_cli(capsys, tmp_path, model_path, bundle):
    d = tmp_path / "streams"
    write(d / "s0.wav", speech_like(15.0, seed=11))
    write(d / "s1.wav", speech_like(10.0, seed=12))
    with open(d / "ground_truth.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "start", "end", "word"])
        w.writerows([["s0.wav", "yes", 2.0, 2.5, "yes"], ["s0.wav", "_unknown_", 5.0, 5.4, "bed"],
                     ["s1.wav", "no", 4.0, 4.6, "no"]])
    js, png = tmp_path / "r.json", tmp_path / "det.png"
    rc, out, err = run(capsys, "eval-stream", "--model", model_path, "--data", d, "--json", js, "--png", png,
                       "--thresholds", "0.1:0.9:0.1")
    assert rc == 0, err
    r = json.loads(js.read_text())
    assert r["occurrences"] == 2 and len(r["sweep"]) == 9 and r["hours"] == pytest.approx(25 / 3600, rel=1e-4)
    # the sweep agrees with KeywordSpotter run at one threshold
    sp = KeywordSpotter(bundle, threshold=0.1)
    n = sum(len(sp.process(c)) for c in [speech_like(15.0, seed=11)]) + len(sp.flush())
    sp = KeywordSpotter(bundle, threshold=0.1)
    n += sum(len(sp.process(c)) for c in [speech_like(10.0, seed=12)]) + len(sp.flush())
    assert r["sweep"][0]["detections"] == n
    assert png.exists() and "FA/h" in out
    # the best FRR within each standard FA/h budget, from the same sweep
    assert list(r["at_fa_budgets"]) == ["0.5", "2", "5"]
    for b, o in r["at_fa_budgets"].items():
        ok = [row for row in r["sweep"] if row["fa_per_hour"] <= float(b) and row["frr"] is not None]
        assert (o is None) == (not ok)
        if ok:
            assert o["frr"] == min(row["frr"] for row in ok)
    saved, js2 = tmp_path / "tuned.npz", tmp_path / "r2.json"
    rc, _, err = run(capsys, "eval-stream", "--model", model_path, "--data", d, "--thresholds", "0.1:0.9:0.1",
                     "--max-fa", "1e9", "--save-model", saved, "--json", js2)
    assert rc == 0, err
    op = json.loads(js2.read_text())["operating_point"]
    assert load_bundle(saved).detector["threshold"] == pytest.approx(op["threshold"])
    assert load_bundle(saved).detector["threshold"] != load_bundle(model_path).detector.get("threshold")
    rc, _, err = run(capsys, "eval-stream", "--model", model_path, "--data", d, "--thresholds", "0.5",
                     "--save-model", tmp_path / "tuned.pt")           # model files are .npz: one line, exit 2
    assert rc == 2 and err.strip() == "kws: error: --save-model %s: kws model files are .npz; name it tuned.npz" % (tmp_path / "tuned.pt")
    assert not (tmp_path / "tuned.pt").exists()
    # per-keyword thresholds: saved in the model, and a later run reports that model's own setting
    saved2, js3, js4 = tmp_path / "per_label.npz", tmp_path / "r3.json", tmp_path / "r4.json"
    rc, out, err = run(capsys, "eval-stream", "--model", model_path, "--data", d, "--thresholds", "0.1:0.9:0.1",
                       "--max-fa", "1e9", "--per-label", "--save-model", saved2, "--json", js3)
    assert rc == 0, err
    tuned = json.loads(js3.read_text())["per_label"]
    assert set(tuned["thresholds"]) == {l for l in load_bundle(model_path).labels if not l.startswith("_")}
    assert load_bundle(saved2).detector["thresholds"] == tuned["thresholds"]
    rc, out, err = run(capsys, "eval-stream", "--model", saved2, "--data", d, "--thresholds", "0.1:0.9:0.1",
                       "--json", js4)
    assert rc == 0, err
    own = json.loads(js4.read_text())["model_setting"]
    assert (own["hits"], own["false_alarms"]) == (tuned["hits"], tuned["false_alarms"])
    assert "model thresholds:" in out
    rc, _, err = run(capsys, "eval-stream", "--model", model_path, "--data", tmp_path / "nothing")
    assert_one_line_error(rc, err)
    (tmp_path / "nogt").mkdir()
    rc, _, err = run(capsys, "eval-stream", "--model", model_path, "--data", tmp_path / "nogt")
    assert_one_line_error(rc, err)


def test_eval_stream_pools_several_folders_as_one_set(capsys, tmp_path, model_path):
    """--data A B: hours, keywords, hits and false alarms add up at every threshold, and files of the
    same name in two folders stay apart."""
    def folder(name, seed, rows):
        d = tmp_path / name
        write(d / "s0.wav", speech_like(12.0, seed=seed))
        with open(d / "ground_truth.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "label", "start", "end"])
            w.writerows(rows)
        return d
    a = folder("a", 21, [["s0.wav", "yes", 2.0, 2.5], ["s0.wav", "no", 6.0, 6.5]])
    b = folder("b", 22, [["s0.wav", "yes", 3.0, 3.4]])
    reports = {}
    for key, dirs in (("a", [a]), ("b", [b]), ("ab", [a, b])):
        js = tmp_path / f"{key}.json"
        rc, _, err = run(capsys, "eval-stream", "--model", model_path, "--data", *dirs, "--thresholds",
                         "0.05:0.95:0.05", "--json", js, "--quiet")
        assert rc == 0, err
        reports[key] = json.loads(js.read_text())
    ra, rb, rab = reports["a"], reports["b"], reports["ab"]
    assert rab["files"] == 2 and rab["occurrences"] == 3
    assert rab["hours"] == pytest.approx(ra["hours"] + rb["hours"], abs=2e-6)   # rounded to 6 places
    for x, y, z in zip(ra["sweep"], rb["sweep"], rab["sweep"]):
        assert z["threshold"] == x["threshold"] == y["threshold"]
        assert (z["hits"], z["false_alarms"], z["detections"]) == (x["hits"] + y["hits"],
                                                                  x["false_alarms"] + y["false_alarms"],
                                                                  x["detections"] + y["detections"])
    assert any(r["detections"] for r in rab["sweep"])
    rc, _, err = run(capsys, "eval-stream", "--model", model_path, "--data", a, b, "--ground-truth",
                     a / "ground_truth.csv")
    assert_one_line_error(rc, err)


def test_stream_posteriors_match_whole_file(tmp_path, bundle):
    y = speech_like(3.0, seed=9)
    f = write(tmp_path / "x.wav", y, subtype="FLOAT")
    a = stream_posteriors(bundle, f, block_s=0.37)
    b = KeywordSpotter(bundle).step_frames(y)
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("stack", [2, 3])
def test_detector_view_labels_are_what_the_spotter_reports_on_clip_plus_tail(stack):
    """predict_detector must be the detector's own view: the first detection KeywordSpotter makes on the
    clip followed by the same quiet tail, at the same threshold (else _unknown_/_silence_). Stack 3: clip +
    tail is 128 frames, not a whole number of GRU steps (the spotter keeps the partial step for later)."""
    from conftest import random_bundle, speech_like
    from kws.evaluate import detector_tail, predict_detector
    from kws.stream import KeywordSpotter, smooth_posteriors
    bundle = random_bundle(seed=3, stack=stack)
    waves = np.stack([speech_like(1.0, seed=s) for s in range(12)])
    tails = detector_tail(len(waves), seed=0)
    # pick a threshold at which some clips fire and some do not (a random model's posteriors are low)
    kw = [i for i, l in enumerate(bundle.labels) if not l.startswith("_")]
    peaks = []
    for w, t in zip(waves, tails):
        sp = KeywordSpotter(bundle, refractory_s=100.0)
        post = sp.step_frames(np.concatenate([w, t]))
        peaks.append(smooth_posteriors(post, sp.smooth)[:, kw].max())
    thr = float(np.median(peaks))
    pred = predict_detector(bundle, waves, threshold=thr, seed=0)
    fired = 0
    for w, t, p in zip(waves, tails, pred):
        sp = KeywordSpotter(bundle, threshold=thr, refractory_s=100.0)
        dets = sp.process(np.concatenate([w, t]))
        if dets:
            fired += 1
            assert bundle.labels[p] == dets[0].label
        else:
            assert bundle.labels[p] in ("_silence_", "_unknown_")
    assert 0 < fired < len(waves)


def test_eval_reports_three_protocols(tmp_path, capsys):
    from conftest import random_bundle, speech_like
    from kws.training.modelfile import save_bundle
    m = tmp_path / "m.npz"
    save_bundle(random_bundle(seed=1), m)
    for i, word in enumerate(["yes", "no", "cat"]):
        d = tmp_path / "data" / word
        d.mkdir(parents=True)
        sf.write(d / f"{i:08x}_nohash_0.opus", speech_like(1.0, seed=i), 16000, format="OGG", subtype="OPUS")
    js = tmp_path / "r.json"
    assert main(["eval", "--model", str(m), "--data", str(tmp_path / "data"), "--json", str(js), "--quiet"]) == 0
    r = json.loads(js.read_text())
    assert set(r["protocols"]) == {"offline", "streaming", "detector"}
    assert r["detector"]["n"] == r["offline"]["n"] == 3 + 1      # + 1 made-up silence clip
    assert "detector" in capsys.readouterr().out


def test_detector_view_at_the_models_own_thresholds():
    """threshold='model' reads the model file's detector thresholds, per-label overrides included: with a
    global threshold equal to a fixed one it gives the same labels, and a keyword whose own threshold is
    out of reach is never the answer."""
    from conftest import random_bundle, speech_like
    from kws.evaluate import keyword_peaks, predict_detector
    waves = np.stack([speech_like(1.0, seed=s) for s in range(12)])
    probe = random_bundle(seed=3)
    thr = float(np.median(keyword_peaks(probe, waves)))       # some clips fire, some do not
    fixed = predict_detector(probe, waves, threshold=thr)
    own = predict_detector(random_bundle(seed=3, threshold=thr), waves, threshold="model")
    np.testing.assert_array_equal(own, fixed)
    fired = [probe.labels[p] for p in fixed if not probe.labels[p].startswith("_")]
    assert fired                                             # the override below has something to remove
    top = max(set(fired), key=fired.count)
    strict = random_bundle(seed=3, threshold=thr, thresholds={top: 1.0})
    got = [strict.labels[p] for p in predict_detector(strict, waves, threshold="model")]
    assert top not in got
    others = [i for i, p in enumerate(fixed) if probe.labels[p] != top]
    assert [got[i] for i in others] == [probe.labels[fixed[i]] for i in others]   # the rest is untouched


def test_eval_threshold_option(tmp_path, capsys):
    from conftest import random_bundle, speech_like
    from kws.training.modelfile import save_bundle
    m = tmp_path / "m.npz"
    save_bundle(random_bundle(seed=1, threshold=0.9), m)
    d = tmp_path / "data" / "yes"
    d.mkdir(parents=True)
    sf.write(d / "0000aaaa_nohash_0.wav", speech_like(1.0), 16000)
    js = tmp_path / "r.json"
    assert main(["eval", "--model", str(m), "--data", str(tmp_path / "data"), "--threshold", "model",
                 "--json", str(js), "--quiet"]) == 0
    r = json.loads(js.read_text())
    assert r["detector_threshold"] == "the model's own threshold(s) 0.9"
    assert "detector view at threshold the model's own threshold(s) 0.9" in capsys.readouterr().out
    # the detector figures are computed at the threshold asked for: at 1.0 nothing fires (every clip
    # _silence_), at 0.05 something of a random 12-class model does
    views = {}
    for t in ("1.0", "0.05"):
        assert main(["eval", "--model", str(m), "--data", str(tmp_path / "data"), "--threshold", t,
                     "--json", str(js), "--quiet"]) == 0
        views[t] = json.loads(js.read_text())["detector"]["confusion"]
    sil = r["labels"].index("_silence_")
    assert all(row[sil] == sum(row) for row in views["1.0"])
    assert not all(row[sil] == sum(row) for row in views["0.05"])
    capsys.readouterr()
    for bad in ("high", "1.5"):
        assert main(["eval", "--model", str(m), "--data", str(tmp_path / "data"), "--threshold", bad]) != 0
        assert "--threshold" in capsys.readouterr().err


def test_eval_noise_folder_makes_the_silence_clips(tmp_path, capsys):
    from kws.evaluate import _noise_files, collect_clips, load_clips
    from kws.training.modelfile import save_bundle
    m = tmp_path / "m.npz"
    save_bundle(random_bundle(seed=1), m)
    d = tmp_path / "data" / "yes"
    d.mkdir(parents=True)
    sf.write(d / "0000aaaa_nohash_0.wav", speech_like(1.0), 16000)
    noise = tmp_path / "noise"
    noise.mkdir()
    sf.write(noise / "n.flac", np.random.default_rng(0).normal(0, .3, 32000).astype(np.float32), 16000)
    clips, found = collect_clips([tmp_path / "data"], random_bundle().labels, split=None)
    assert found == []                                                  # this root has no noise folder
    waves, kept, _ = load_clips(clips, _noise_files(noise), progress=False)
    sil = [w for w, c in zip(waves, kept) if c.path is None]
    assert len(sil) == 1 and sil[0].std() > 1e-3                       # made from the --noise folder
    js = tmp_path / "r.json"
    assert main(["eval", "--model", str(m), "--data", str(tmp_path / "data"), "--noise", str(noise),
                 "--json", str(js), "--quiet"]) == 0
    assert json.loads(js.read_text())["noise"] == str(noise)
    assert main(["eval", "--model", str(m), "--data", str(tmp_path / "data"), "--noise", str(tmp_path / "x")]) == 2
    assert "--noise: no such folder" in capsys.readouterr().err


def test_frr_by_snr_counts_each_band_at_a_threshold():
    """kws eval-stream's misses by noise level: two of three keywords at 5 dB heard, the 20 dB one missed."""
    from kws.stream_eval import Occurrence, Streams, frr_by_snr, snr_band
    labels = ["_silence_", "_unknown_", "yes", "no"]
    sm = np.zeros((500, 2), np.float32)           # smoothed keyword posteriors (yes, no), 1 frame = 10 ms
    sm[110:115, 0] = 0.9                          # yes at 1.0-1.05 s: heard
    sm[210:215, 1] = 0.9                          # no at 2.0 s: heard
    sm[310:315, 0] = 0.4                          # yes at 3.0 s: too weak at 0.5
    occ = [Occurrence("a.wav", "yes", 0.9, 1.05, {"snr_db": "5.0"}),
           Occurrence("a.wav", "no", 1.9, 2.05, {"snr_db": "6.3"}),
           Occurrence("a.wav", "yes", 2.9, 3.05, {"snr_db": "20"}),
           Occurrence("a.wav", "no", 3.9, 4.05, {"snr_db": "31.8"})]
    st = Streams({"a.wav": sm}, {"a.wav": occ}, labels, np.array([2, 3]), 50, lambda t: t / 100, 1 / 720)
    got = frr_by_snr(st, np.full(2, 0.5))
    assert list(got) == ["5", "20", "25+"]
    assert got["5"] == {"keywords": 2, "misses": 0, "frr": 0.0}
    assert got["20"]["misses"] == 1 and got["25+"]["misses"] == 1
    assert frr_by_snr(st, np.full(2, 0.3))["20"]["misses"] == 0      # a lower threshold hears the weak one
    assert snr_band(12.4) == "10" and snr_band(22.5) == "25+"
    no_snr = Streams({"a.wav": sm}, {"a.wav": [Occurrence("a.wav", "yes", 0.9, 1.05)]}, labels, np.array([2, 3]),
                     50, lambda t: t / 100, 1 / 720)
    assert frr_by_snr(no_snr, np.full(2, 0.5)) is None


def test_false_alarm_sources_name_the_word_under_each_false_alarm():
    """kws eval-stream says what fired on what: a keyword heard on another word, on a keyword it is not,
    twice on one keyword, and on nothing at all; a hit is never listed."""
    from kws.stream_eval import Occurrence, Streams
    labels = ["_silence_", "_unknown_", "yes", "no"]
    sm = np.zeros((800, 2), np.float32)           # smoothed (yes, no), 1 frame = 10 ms
    sm[100, 0] = 0.9                              # yes at 1.0 s on the keyword yes: a hit
    sm[160, 0] = 0.9                              # yes at 1.6 s, after the refractory time: a repeat on it
    sm[300, 0] = 0.9                              # yes at 3.0 s on the bait word "cat"
    sm[400, 1] = 0.9                              # no at 4.0 s on the keyword yes: a confusion
    sm[700, 0] = 0.9                              # yes at 7.0 s on nothing
    kw = [Occurrence("a.wav", "yes", 0.6, 1.0, {"word": "yes"}), Occurrence("a.wav", "yes", 3.6, 4.0, {"word": "yes"})]
    bait = [Occurrence("a.wav", "_unknown_", 2.5, 2.9, {"word": "cat"})]
    st = Streams({"a.wav": sm}, {"a.wav": kw}, labels, np.array([2, 3]), 50, lambda t: t / 100, 1 / 720,
                 {"a.wav": sorted(kw + bait, key=lambda o: o.start)})
    got = st.false_alarm_sources(np.full(2, 0.5))
    assert {(r["label"], r["on"]): r["count"] for r in got} == {
        ("yes", "yes"): 1, ("yes", "cat"): 1, ("no", "yes"): 1, ("yes", "(no word)"): 1}
    assert sum(r["count"] for r in got) == st.score(np.full(2, 0.5))["false_alarms"]
    assert st.false_alarm_sources(np.full(2, 0.95)) == []
    # without the other words' rows, a false alarm on a non-keyword falls back to "no word"
    bare = Streams({"a.wav": sm}, {"a.wav": kw}, labels, np.array([2, 3]), 50, lambda t: t / 100, 1 / 720)
    assert {(r["label"], r["on"]) for r in bare.false_alarm_sources(np.full(2, 0.5))} >= {("yes", "(no word)")}
