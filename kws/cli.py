"""`kws` command line. Each subcommand lives in its own module exposing `add_parser(sub)`;
the module is imported only when needed so `kws --help` stays fast."""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from .errors import KwsError

# subcommand name -> module that implements it (module.add_parser(subparsers) registers it)
COMMANDS = {
    "listen": "kws.listen",
    "devices": "kws.listen",
    "detect": "kws.evaluate",
    "eval": "kws.evaluate",
    "eval-stream": "kws.stream_eval",
    "train": "kws.train",
    "export": "kws.export",
    "serve": "kws.serve",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """All subcommands, or only the module of `only`: `kws listen` should not pay (in start-up time and
    memory) for importing the trainer's scipy/matplotlib."""
    p = argparse.ArgumentParser(prog="kws", description="Streaming keyword spotter (MFCC + stateful GRU).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    seen = set()
    for mod in ([COMMANDS[only]] if only in COMMANDS else COMMANDS.values()):
        if mod in seen:
            continue
        seen.add(mod)
        try:
            importlib.import_module(mod).add_parser(sub)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    return p


def main(argv: list[str] | None = None) -> int:
    # Small tensors: thread pools cost more than they save (see README, benchmarks/).
    import torch
    torch.set_num_threads(int(os.environ.get("KWS_THREADS", "1")))
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
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
