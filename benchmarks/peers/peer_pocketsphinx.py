"""pocketsphinx 5.1.1 (CMU Sphinx, en-us acoustic model from the wheel; no keyword training at all).

clips   : a JSGF grammar "exactly one word of: 10 keywords | FILLERS". Hypothesis is a keyword -> that
          keyword; a filler -> `_unknown_`; empty -> `_silence_`. FILLERS are generic common short English words
          chosen WITHOUT looking at the test data and excluding all 35 Speech Commands words (so the grammar
          does not know the unknown vocabulary of the test set).
streams : keyphrase spotting (`kws` search) of the 10 keywords with one global threshold 1e{E} for every
          word; the sweep E in THRESH_EXP is decoded in ONE pass by giving each (word, E) its own dictionary
          entry (same phones) - keyphrases are scored independently (checked: identical detections to one run
          per threshold). Detection time = end of the 100 ms chunk in which the keyphrase's last frame falls;
          then the common 1 s refractory and kws's matching rule; operating point = lowest FRR at <= 0.5 FA/h.
A -60 dBFS Gaussian noise floor is added before every decode (digital silence hurts pocketsphinx badly).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

FILLERS = ["the", "a", "and", "but", "it", "is", "was", "what", "where", "when", "who", "how", "this",
           "that", "with", "have", "make", "take", "like", "good", "well", "time", "day", "just"]
THRESH_EXP = [-40, -30, -20, -10, -5, 0, 5, 10, 15, 20, 25, 30, 40, 50]
SPEED_EXP = -10
NOISE_DBFS = -60.0
FRAME_S = 0.01


def model_paths():
    from pocketsphinx import get_model_path
    m = Path(get_model_path())
    return m / "en-us" / "en-us", m / "en-us" / "cmudict-en-us.dict"


def pronunciations(words) -> dict[str, list[str]]:
    _, d = model_paths()
    out: dict[str, list[str]] = {w: [] for w in words}
    for line in open(d, encoding="utf-8"):
        parts = line.split()
        if not parts:
            continue
        w = parts[0].split("(")[0]
        if w in out:
            out[w].append(" ".join(parts[1:]).split("#")[0].strip())
    return out


def noise_floor(x: np.ndarray, rng) -> np.ndarray:
    """float32 [-1, 1] -> int16 with a -60 dBFS (RMS) Gaussian floor."""
    y = x + rng.normal(0, 10 ** (NOISE_DBFS / 20), len(x))
    return (np.clip(y, -1, 1) * 32767).astype(np.int16)


def grammar_decoder(td: Path):
    from pocketsphinx import Decoder
    g = td / "kw.jsgf"
    alts = " | ".join(C.KEYWORDS + FILLERS)
    g.write_text(f"#JSGF V1.0;\ngrammar kw;\npublic <s> = {alts};\n")
    return Decoder(jsgf=str(g), loglevel="FATAL", samprate=16000)


def classify_clips(waves: np.ndarray, td: Path) -> list[str]:
    d = grammar_decoder(td)
    rng = np.random.default_rng(0)
    pad = np.zeros(int(0.2 * 16000), np.float32)
    out = []
    for x in waves:
        pcm = noise_floor(np.concatenate([pad, x, pad]), rng)
        d.start_utt()
        d.process_raw(pcm.tobytes(), full_utt=True)
        d.end_utt()
        h = d.hyp()
        words = h.hypstr.split() if h is not None else []
        kw = [w for w in words if w in C.KEYWORDS]
        out.append(kw[0] if kw else ("_unknown_" if words else "_silence_"))
    return out


def kws_decoder(td: Path, exps):
    from pocketsphinx import Decoder
    prons = pronunciations(C.KEYWORDS)
    lst, dic = [], []
    for e in exps:
        for w in C.KEYWORDS:
            name = f"{w}__{e}"
            lst.append(f"{name} /1e{e}/\n")
            for i, p in enumerate(prons[w]):
                dic.append(f"{name}{'' if i == 0 else f'({i + 1})'} {p}\n")
    (td / "kw.list").write_text("".join(lst))
    (td / "kw.dict").write_text("".join(dic))
    return Decoder(kws=str(td / "kw.list"), dict=str(td / "kw.dict"), loglevel="FATAL", samprate=16000)


def spot_file(d, x: np.ndarray, rng) -> list[tuple[float, str, int]]:
    """-> [(time, keyword, exponent)] of every keyphrase variant (no refractory yet)."""
    pcm = noise_floor(x, rng)
    n = int(C.CHUNK_S * 16000)
    d.start_utt()
    for i in range(0, len(pcm), n):
        d.process_raw(pcm[i:i + n].tobytes())
    segs = [(s.word.strip(), s.end_frame) for s in d.seg()]
    d.end_utt()
    dets = []
    for word, ef in segs:
        if "__" not in word:
            continue
        w, e = word.rsplit("__", 1)
        t_end = (ef + 1) * FRAME_S + 0.015                 # end of the last 25 ms window
        t = np.ceil(t_end / C.CHUNK_S - 1e-9) * C.CHUNK_S   # reported at the end of that chunk
        dets.append((float(t), w, int(e)))
    return dets


def main() -> int:
    a = C.peer_args()
    inp = C.load_inputs(a.inputs)
    am, dic = model_paths()
    with tempfile.TemporaryDirectory() as tds:
        td = Path(tds)
        if a.mode == "speed":
            rng = np.random.default_rng(0)

            def make_step():
                d = kws_decoder(td, [SPEED_EXP])
                d.start_utt()
                return lambda x: d.process_raw(noise_floor(x, rng).tobytes())
            res = C.speed_test(make_step, inp["speed_wav"], inp["speed_seconds"])
            res["peak_rss_mb"] = C.peak_rss_mb()
            res["note"] = f"keyphrase search, 10 keywords at 1e{SPEED_EXP}, noise floor added inside the timed step"
            C.write_json(res, a.out)
            return 0

        size = C.file_size_mb([f for f in am.iterdir() if f.is_file()] + [dic])
        out = {"system": "pocketsphinx", "model": "pocketsphinx 5.1.1 en-us acoustic model + cmudict",
               "model_size_mb": size, "fillers": FILLERS,
               "setup": "acoustic model trained by CMU on real English speech; no keyword training; clips: JSGF "
                        "grammar of the 10 keywords + 24 generic filler words; streams: keyphrase spotting",
               "clips": {}}
        for name, npz in inp["clip_sets"].items():
            waves, labels = C.load_clipset(npz)
            pred = classify_clips(waves, td)
            out["clips"][name] = C.clip_metrics(labels, pred)
            C.log(f"pocketsphinx {name}: acc {out['clips'][name]['accuracy']:.3f}")
        for key in ("streams", "streams_dev"):
            if not inp.get(key):
                continue
            wavs, occs = C.stream_files(inp[key])
            d = kws_decoder(td, THRESH_EXP)
            rng = np.random.default_rng(1)

            def spot(name, x):
                hits = spot_file(d, x, rng)
                C.log(f"pocketsphinx {name}: {len(hits)} raw keyphrase hits")
                return hits
            raw, hours = C.run_streams(wavs, spot)
            out[key] = C.sweep_streams(
                [(f"1e{e}", e) for e in sorted(THRESH_EXP, reverse=True)],      # strict -> permissive
                lambda e: {n: [(t, l, 0.0) for t, l, ee in r if ee == e] for n, r in raw.items()}, occs, hours,
                "keyphrase threshold 1e-40..1e50 (same for all 10 words) swept on these streams, operating "
                "point = lowest FRR at <= 0.5 FA/h; 1 s refractory")
        C.write_json(out, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
