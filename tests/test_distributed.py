"""`kws train` on several processes (torchrun, DDP over gloo on the CPU), on a device, in mixed precision.

The DDP tests launch `python -m torch.distributed.run --nproc-per-node 2 -m kws train ...` as a subprocess
on 127.0.0.1 and a free port, with a time limit: the launch a user runs. CUDA tests run where CUDA exists
and skip elsewhere.
"""
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from test_train import make_corpus, tiny_cfg
from kws.training.train import train

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device here")
LIMIT_S = 300          # one torchrun launch of the tiny runs below takes ~20-60 s on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(root, out, batch, epochs=2, epoch_clips=320) -> list[str]:
    """tiny_cfg's run as command-line options, dropout off (see the equivalence test)."""
    return ["train", "--data", str(root), "--words", "yes,no,up", "--out", str(out), "--epochs", str(epochs),
            "--batch", str(batch), "--seq-clips", "2", "--hidden", "32", "--layers", "1", "--dropout", "0",
            "--epoch-clips", str(epoch_clips), "--lr", "1e-2", "--cache", "", "--seed", "1", "--no-progress"]


def torchrun(nproc: int, args: list[str], **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "kws", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return subprocess.Popen(cmd, env=env, start_new_session=True, text=True, **kw)


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def kill_job(p: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers (each in a session of its own, with its batch producers)."""
    for c in children(p.pid):
        try:
            os.killpg(c, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def run_job(nproc: int, args: list[str]) -> str:
    p = torchrun(nproc, args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        kill_job(p)
        pytest.fail(f"torchrun --nproc-per-node {nproc} did not finish in {LIMIT_S} s")
    assert p.returncode == 0, out[-3000:]
    return out


def weights(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True, map_location="cpu")["model"]


def test_batches_are_the_same_for_any_worker_count_and_rank_split(tmp_path):
    """Row g of step t comes from its own seed (seed, epoch, t, g): 1 or 2 producer workers give the same
    batches, and rank r of 2 gets exactly rows r::2 of the 1-process global batch."""
    from kws.data.dataset import ClipSet
    from kws.data.index import scan_root, select, task_labels
    from kws.features import FeatureConfig
    from kws.training.augment import AugmentConfig, Augmenter
    from kws.training.features_torch import MFCC
    from kws.training.train import BatchFeed, BatchMaker, load_noises
    root = make_corpus(tmp_path / "corpus", speakers=6)
    cfg = replace(tiny_cfg(root, tmp_path / "run"), batch=4)
    labels = task_labels("12", cfg.words)
    clips = ClipSet(select(scan_root(str(root)), labels, "training", unknown_pct=None, silence_pct=10, seed=1),
                    labels, None, "training", False)
    fcfg = FeatureConfig()
    aug = Augmenter(AugmentConfig(), fcfg, load_noises([str(root)]), None, seed=1)
    maker = BatchMaker(clips, np.zeros(len(clips), int), cfg, labels, fcfg, aug)
    mfcc = MFCC(fcfg)

    def epoch(workers, rows, steps=5):
        feed = BatchFeed(maker, aug, mfcc, torch.zeros(fcfg.n_mfcc), steps, seed=(1, 0), workers=workers, rows=rows)
        try:
            return [feed.get() for _ in range(steps)]
        finally:
            feed.close()

    one, two = epoch(1, range(4)), epoch(2, range(4))
    r0, r1 = epoch(1, range(0, 4, 2)), epoch(2, range(1, 4, 2))
    for t in range(5):
        for a, b in zip(one[t][:2], two[t][:2]):
            assert torch.equal(a, b)
        for r, rows in ((r0, slice(0, 4, 2)), (r1, slice(1, 4, 2))):
            torch.testing.assert_close(r[t][0], one[t][0][rows], rtol=0, atol=1e-5)   # features (batched matmuls)
            assert torch.equal(r[t][1], one[t][1][rows])                               # targets
    assert not torch.equal(one[0][0], one[1][0])


def test_half_set_launch_environment_and_bad_device_are_one_clear_error(tmp_path, monkeypatch, capsys):
    from kws.cli import main
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kws: error: half-set launch environment: RANK, WORLD_SIZE set "
                                               "but LOCAL_RANK, MASTER_ADDR, MASTER_PORT missing")
    assert "torchrun" in err[0]
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert main(["train", "--data", str(tmp_path), "--workers", "0", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith("kws: error: --workers must be >= 1")
    if not CUDA:
        assert main(["train", "--data", str(tmp_path), "--device", "cuda", "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("kws: error: --device cuda: this torch")


@pytest.mark.slow
def test_two_gloo_processes_take_the_same_steps_as_one_with_the_global_batch(tmp_path):
    """2 ranks x --batch 8 (torchrun, gloo) against 1 process x --batch 16: the same rows (rank r takes rows
    r::2 of each global batch), the same loss normalisation (the global count of labelled frames), the same
    GRU state carry. Dropout is off: each rank draws its own masks, which a single process cannot replay.
    What is left is float reduction order (batched matmuls over 8 rows vs 16, a sum of two partial
    gradients through gloo's all-reduce): ~1 ulp of float32 per step. Measured after these 20 steps:
    weights agree to 1e-7 (|w| ~ 0.25), losses to 1e-8 relative. AdamW divides by sqrt(v), so a
    near-zero gradient component can turn an ulp into a larger relative step; the bounds (1e-5 absolute,
    1e-6 relative) leave 100x room for that and other CPUs' kernels, and stay far below what a wrong step
    changes: another seed moves the GRU weights by > 1e-2 (checked below)."""
    root = make_corpus(tmp_path / "corpus", speakers=12)
    ref = train(replace(tiny_cfg(root, tmp_path / "one", epochs=2), epoch_clips=320, dropout=0.0),
                progress=False)["history"]
    out = run_job(2, train_args(root, tmp_path / "two", batch=8))
    assert "2 ranks x 8x2 clips" in out
    hist = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    for a, b in zip(hist, ref):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=1e-3)
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=0.02)
    w1, w2 = weights(tmp_path / "one"), weights(tmp_path / "two")
    diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert diff < 1e-5, diff
    other = train(replace(tiny_cfg(root, tmp_path / "seed2", epochs=1), epoch_clips=320, dropout=0.0, seed=2),
                  progress=False)
    w3 = weights(tmp_path / "seed2")
    assert max(float((w1[k] - w3[k]).abs().max()) for k in w1 if k.startswith("gru")) > 1e-2
    # rank 0 alone wrote the run's files and logged; rank 1 printed nothing
    assert out.count("epoch 1: loss") == 1 and out.count("labels:") == 1


@pytest.mark.slow
def test_resume_under_ddp_continues_where_it_stopped(tmp_path):
    """2 ranks killed (SIGKILL, torchrun and workers) after epoch 1's checkpoint, then `--resume`: the
    same epochs as the uninterrupted 2-rank run (rank 0 reads the checkpoint and sends it to rank 1)."""
    root = make_corpus(tmp_path / "corpus", speakers=12)
    run_job(2, train_args(root, tmp_path / "ref", batch=8, epochs=3))
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    out = tmp_path / "killed"
    args = train_args(root, out, batch=8, epochs=3)
    p = torchrun(2, args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + LIMIT_S
    while not (out / "metrics.json").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    kill_job(p)
    done = len(json.loads((out / "metrics.json").read_text()))
    assert 1 <= done <= 3
    run_job(2, args + ["--resume"])
    hist = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    for a, b in zip(hist, ref):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1e-6)
    w1, w2 = weights(tmp_path / "ref"), weights(out)
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-5


@pytest.mark.slow
def test_amp_path_runs_on_cpu_with_bf16(tmp_path):
    """The autocast + scaler code path without a GPU: CPU autocast in bf16 trains the tiny corpus."""
    root = make_corpus(tmp_path / "corpus", speakers=12)
    h = train(replace(tiny_cfg(root, tmp_path / "run", epochs=2), amp="bf16"), progress=False)["history"]
    assert all(math.isfinite(r["train_loss"]) for r in h) and h[-1]["train_loss"] < h[0]["train_loss"] + 0.5


@needs_cuda
@pytest.mark.slow
@pytest.mark.parametrize("amp", ["off", "auto", "fp16"])
def test_cuda_training_learns_and_writes_a_cpu_model(tmp_path, amp):
    from kws.enginefile import load_engine
    root = make_corpus(tmp_path / "corpus")
    r = train(replace(tiny_cfg(root, tmp_path / "run"), device="cuda", amp=amp, workers=2), progress=False)
    assert r["history"][-1]["val_acc"] > 0.6
    assert load_engine(tmp_path / "run" / "last.npz").labels[-1] == "up"
    c = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True, map_location="cpu")
    assert all(math.isfinite(float(v.float().abs().sum())) for v in c["model"].values())


@needs_cuda
@pytest.mark.slow
def test_cuda_same_seed_same_results(tmp_path):
    root = make_corpus(tmp_path / "corpus", speakers=12)
    a = train(replace(tiny_cfg(root, tmp_path / "a", epochs=1), device="cuda"), progress=False)["history"]
    b = train(replace(tiny_cfg(root, tmp_path / "b", epochs=1), device="cuda"), progress=False)["history"]
    assert a[0]["train_loss"] == b[0]["train_loss"]
