"""`kws export`: a model file (the .npz, default the shipped one) as the streaming step in ONNX or
TorchScript, for runtimes without kws; or (`--format npz`) an old `.pt` model file or a run's
checkpoint.pt converted to the .npz model file kws runs on (enginefile.py).

The exported graph is the model's `step`: normalised MFCC frames and GRU state in, posteriors and new
state out. Feature extraction stays outside (see examples/onnx_stream.py for a numpy version), because
it is a few lines of FFT + matrix products that every runtime already has.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .. import arith
from ..errors import KwsError
from ..enginefile import default_model_path, save_model
from .modelfile import load_bundle


class StreamingStep(nn.Module):
    """One model output: frames [1, stack, n_mfcc], state [layers, 1, hidden] -> (posteriors [1, C], state).

    The GRU cell is `arith.gru_layer` (the numpy engine's own lines; same equations as torch.nn.GRU),
    so the graph uses only MatMul/Tanh: onnxruntime's fused GRU kernel differed from torch by ~1e-2
    here, and a one-step graph runs on any runtime, which calls it once per `stack` frames."""

    def __init__(self, model):
        super().__init__()
        self.model = model.eval()
        g = model.gru
        self.layers = [(getattr(g, f"weight_ih_l{k}"), getattr(g, f"weight_hh_l{k}"),
                        getattr(g, f"bias_ih_l{k}"), getattr(g, f"bias_hh_l{k}")) for k in range(g.num_layers)]
        self.eval()   # exporters restore the wrapper's mode afterwards; train mode would turn dropout on

    def forward(self, frames: torch.Tensor, state: torch.Tensor):
        m = self.model
        x = arith.normalize_stack(frames, m.feat_mean, m.feat_std, m.cfg.stack)     # [1, 1, stack * F]
        new = []
        for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(self.layers):
            x, h = arith.gru_layer(torch, x, state[k], w_ih.T, w_hh.T, b_ih, b_hh)
            new.append(h)
        return arith.softmax(torch, m.head(x[:, 0])), torch.stack(new)


def example_inputs(bundle):
    m = bundle.model
    return (torch.randn(1, m.cfg.stack, m.cfg.n_input) * m.feat_std + m.feat_mean,
            torch.zeros(m.cfg.layers, 1, m.cfg.hidden))


def export_onnx(bundle, path: str | Path) -> Path:
    path = Path(path)
    step = StreamingStep(bundle.model)
    try:
        torch.onnx.export(step, example_inputs(bundle), str(path), input_names=["frames", "state"],
                          output_names=["posteriors", "new_state"], opset_version=17, dynamo=False)
    except ModuleNotFoundError as e:
        raise KwsError(f"ONNX export needs the 'onnx' package: pip install 'kws[onnx]' ({e.name} missing)") from None
    _write_sidecar(bundle, path)
    return path


def export_torchscript(bundle, path: str | Path) -> Path:
    path = Path(path)
    traced = torch.jit.trace(StreamingStep(bundle.model), example_inputs(bundle))
    traced.save(str(path))
    _write_sidecar(bundle, path)
    return path


def _write_sidecar(bundle, path: Path) -> None:
    """Labels, feature and detector settings next to the graph: what a runtime needs besides weights."""
    meta = {"labels": bundle.labels, "features": bundle.features.to_dict(), "detector": bundle.detector,
            "stack": bundle.model.cfg.stack, "layers": bundle.model.cfg.layers, "hidden": bundle.model.cfg.hidden}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))


def add_parser(sub) -> None:
    from ..commands import SUMMARY
    p = sub.add_parser("export", help=SUMMARY["export"])
    p.add_argument("--model", default=None,
                   help="model file: a .npz (default: the shipped models/kws12_gru.npz), an old .pt model "
                        "or a run's checkpoint.pt")
    p.add_argument("--format", choices=["npz", "onnx", "torchscript"], default="onnx",
                   help="npz: the model file kws listen/detect/eval run on (from an old .pt or a checkpoint); "
                        "onnx/torchscript: the streaming step (default onnx)")
    p.add_argument("--out", default=None, help="output file (default: next to the model, .npz / .onnx / .ts.pt)")
    p.set_defaults(func=run)


def run(args) -> int:
    src = Path(args.model) if args.model else default_model_path()
    bundle = load_bundle(src)
    suffix = {"npz": ".npz", "onnx": ".onnx", "torchscript": ".ts.pt"}[args.format]
    out = Path(args.out) if args.out else src.with_suffix(suffix)
    if args.format == "npz":
        if out.resolve() == src.resolve():
            raise KwsError(f"{src} is already the .npz model file (--out names another file to copy it to)")
        print(f"wrote {save_model(bundle, out)}")
        return 0
    path = export_onnx(bundle, out) if args.format == "onnx" else export_torchscript(bundle, out)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0
