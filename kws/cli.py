"""`kws` command line (also `python -m kws`). Each subcommand lives in its own module exposing
`add_parser(sub)`, listed with its one-line help in commands.py; the module is imported only when
needed so `kws --help` stays fast. A command whose module needs the training extra (torch, ...) that is not installed still shows in the help and says
so in one line when run."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import signal
import sys

# Small arrays: BLAS thread pools cost more than they save (see README, benchmarks/). Set before numpy loads.
_THREADS = os.environ.get("KWS_THREADS", "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

from .commands import COMMANDS, NEEDS_TORCH, SUMMARY  # noqa: E402,F401  (SUMMARY: also read as cli.SUMMARY)
from .errors import EXTRA_MODULES, KwsError, needs_extra  # noqa: E402


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Only the module of `only` (`kws listen` should not pay, in start-up time and memory, for the
    trainer's imports); without a known command, every command as a one-line entry, no module imported."""
    p = argparse.ArgumentParser(prog="kws", description="Streaming keyword spotter (MFCC + stateful GRU).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    if only not in COMMANDS:
        has_torch = importlib.util.find_spec("torch") is not None
        for name, text in SUMMARY.items():
            if name in NEEDS_TORCH and not has_torch:
                _stub(sub, name, "torch")
            else:
                sub.add_parser(name, help=text, add_help=False)
        return p
    mod = COMMANDS[only]
    try:
        importlib.import_module(mod).add_parser(sub)
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing not in EXTRA_MODULES:
            raise
        for name in (n for n, m in COMMANDS.items() if m == mod):
            _stub(sub, name, missing)
    return p


_MISSING: dict[str, str] = {}      # command -> the extra module its implementation could not import


def _stub(sub, name: str, missing: str) -> None:
    """A command that cannot run in this install: listed in the help; `main` refuses it in one line."""
    sub.add_parser(name, help="(needs the training extra: pip install 'kws[train]')", add_help=False)
    _MISSING[name] = missing


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    if argv and argv[0] in _MISSING:
        print(f"kws: error: {needs_extra(f'kws {argv[0]}', _MISSING[argv[0]])}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if sys.modules.get("torch") is not None:     # train/export: one torch thread too (small tensors)
        sys.modules["torch"].set_num_threads(int(_THREADS))
    try:
        return int(args.func(args) or 0)
    except KwsError as e:
        print(f"kws: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kws: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kws detect ... | head`
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        return 0


if __name__ == "__main__":
    sys.exit(main())
