"""Training throughput: clips/s by device, producer workers and DDP processes, and where the time goes.

    python benchmarks/train_bench.py [--data ROOT] [--devices cpu] [--workers 1 2] [--procs 1 2] [--steps 40]

Three measurements, each on the shipped model's shape (2 x 128 GRU, batch 32 x 4 clips unless told):
  producer  the batch producers alone (augmentation + features, `--workers` forked processes, the trainer's
            BatchFeed), nothing training: the most clips/s the producers can feed;
  trainer   the training step alone (forward, backward, AdamW) on batches made beforehand, per device:
            the most clips/s the trainer can take;
  end-to-end  `kws train` itself for one epoch of --steps global batches (one process, or `torchrun
            --nproc-per-node P` on the CPU with gloo): its clips/s and the share of the epoch the trainer
            spent waiting for batches (feed_wait_s / epoch_s: above ~10%, the producers are the bottleneck).
Without --data a synthetic corpus (tests/test_train.py's) is made in a temporary folder: the cost per clip
of augmentation and training does not depend on what the clips say. On a shared machine, compare rows of one
run.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def maker(data: str, batch: int, seq_clips: int, words: list[str]):
    """The trainer's BatchMaker and Augmenter for `data`, as train() builds them (12-class task or `words`)."""
    from kws.data.dataset import ClipSet
    from kws.data.index import scan_root, select, task_labels
    from kws.features import FeatureConfig
    from kws.training.augment import AugmentConfig, Augmenter
    from kws.training.features_torch import MFCC
    from kws.training.train import BatchMaker, TrainConfig, load_noises
    cfg = TrainConfig(data=[data], batch=batch, seq_clips=seq_clips)
    labels = task_labels("12", words or None)
    items = select(scan_root(data), labels, "training", unknown_pct=None, silence_pct=10, seed=0)
    clips = ClipSet(items, labels, str(ROOT / "data" / "cache"), "training", False)
    fcfg = FeatureConfig()
    unk = labels.index("_unknown_")
    babble = clips.audio[clips.y == unk] if (clips.y == unk).any() else None
    aug = Augmenter(AugmentConfig(), fcfg, load_noises([data]), babble, seed=0)
    return BatchMaker(clips, np.zeros(len(clips), int), cfg, labels, fcfg, aug), aug, MFCC(fcfg), labels


def producer_rate(bm, aug, mfcc, workers: int, steps: int) -> float:
    from kws.training.train import BatchFeed
    feed = BatchFeed(bm, aug, mfcc, torch.zeros(mfcc.cfg.n_mfcc), steps, seed=(0, 0), workers=workers)
    t0 = time.perf_counter()
    for _ in range(steps):
        feed.get()
    dt = time.perf_counter() - t0
    feed.close()
    return steps * bm.cfg.batch * bm.cfg.seq_clips / dt


def trainer_rate(bm, aug, mfcc, labels, device: str, steps: int, amp: str = "off") -> float:
    """The training step alone on 8 batches made beforehand (cycled), after 3 warm-up steps."""
    import torch.nn.functional as F
    from kws.training.distributed import pick_device, precision
    from kws.training.model import GRUClassifier, ModelConfig
    from kws.training.train import BatchFeed, TrainStep
    dev = pick_device(device)
    feed = BatchFeed(bm, aug, mfcc, torch.zeros(mfcc.cfg.n_mfcc), 8, seed=(0, 1))
    made = [feed.get() for _ in range(8)]
    feed.close()
    made = [(f.to(dev), t.to(dev)) for f, t, _ in made]
    model = GRUClassifier(ModelConfig(n_input=mfcc.cfg.n_mfcc, n_classes=len(labels), hidden=128, layers=2)).to(dev)
    net, prec = TrainStep(model), precision(amp, dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    state = None

    def step(i):
        nonlocal state
        feats, tgt = made[i % len(made)]
        with prec.autocast():
            logits, _, hT = net(feats, state if i % 2 else None)
        state = hT.detach()
        T = min(logits.shape[1], tgt.shape[1] // 2)
        loss = F.cross_entropy(logits[:, :T].float().reshape(-1, len(labels)), tgt[:, 1::2][:, :T].reshape(-1),
                               ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        prec.scaler.scale(loss).backward()
        prec.scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        prec.scaler.step(opt); prec.scaler.update()

    for i in range(3):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps * bm.cfg.batch * bm.cfg.seq_clips / (time.perf_counter() - t0)


def end_to_end(data: str, out: Path, device: str, workers: int, procs: int, steps: int, batch: int,
               seq_clips: int, words: list[str]) -> dict:
    """One epoch of `kws train` (batch per rank = batch / procs: the same global batch for every row)."""
    per_rank = batch // procs
    args = ["train", "--data", data, "--out", str(out), "--epochs", "1", "--batch", str(per_rank),
            "--seq-clips", str(seq_clips), "--epoch-clips", str(steps * batch * seq_clips), "--device", device,
            "--workers", str(workers), "--cache", str(ROOT / "data" / "cache"), "--no-progress"]
    if words:
        args += ["--words", ",".join(words)]
    if procs == 1:
        cmd = [sys.executable, "-m", "kws", *args]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(procs),
               "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "kws", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    h = json.loads((out / "metrics.json").read_text())[0]
    return {"clips_per_s": h["clips_per_s"], "wait_share": h["feed_wait_s"] / h["epoch_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="", help="a Speech Commands-layout root (default: a synthetic corpus)")
    ap.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="DDP processes (CPU, gloo)")
    ap.add_argument("--steps", type=int, default=40, help="global batches per measurement")
    ap.add_argument("--batch", type=int, default=32, help="global batch (sequences)")
    ap.add_argument("--seq-clips", type=int, default=4)
    ap.add_argument("--words", default="", help="keywords (default: the 12-class task; yes,no,up on the synthetic corpus)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["producer", "trainer", "end-to-end"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="train_bench_"))
    data, words = a.data, [w for w in a.words.split(",") if w]
    if not data:
        from test_train import make_corpus
        data = str(make_corpus(tmp / "corpus", speakers=40))
        words = words or ["yes", "no", "up"]
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, data {data}, batch {a.batch}x{a.seq_clips}, {a.steps} steps")
    bm, aug, mfcc, labels = maker(data, a.batch, a.seq_clips, words)
    if "producer" not in a.skip:
        for w in a.workers:
            print(f"producer  workers {w}: {producer_rate(bm, aug, mfcc, w, a.steps):7.0f} clips/s", flush=True)
    if "trainer" not in a.skip:
        for d in a.devices:
            print(f"trainer   device {d}: {trainer_rate(bm, aug, mfcc, labels, d, a.steps):7.0f} clips/s", flush=True)
    if "end-to-end" not in a.skip:
        for d in a.devices:
            for p in a.procs:
                if p > 1 and d != "cpu":
                    continue        # one GPU here at most; DDP rows are CPU (gloo)
                for w in (a.workers if p == 1 else a.workers[:1]):
                    r = end_to_end(data, tmp / f"run_{d}_{p}_{w}", d, w, p, a.steps, a.batch, a.seq_clips, words)
                    print(f"kws train device {d} procs {p} workers {w}: {r['clips_per_s']:7.0f} clips/s, "
                          f"waiting for batches {100 * r['wait_share']:4.1f}% of the epoch", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
