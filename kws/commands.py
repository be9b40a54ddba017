"""The command table: each `kws` subcommand, the module that implements it and its one-line help.

Imports nothing of kws, so the CLI (cli.py) and every command module read it without importing each
other: `kws --help` lists the commands from here without importing any command module (train/export
would import torch: seconds for a help text)."""

# subcommand name -> module that implements it (module.add_parser(subparsers) registers it)
COMMANDS = {
    "listen": "kws.listen",
    "devices": "kws.listen",
    "detect": "kws.evaluate",
    "eval": "kws.evaluate",
    "eval-stream": "kws.stream_eval",
    "train": "kws.training.train",
    "export": "kws.training.export",
    "serve": "kws.serve",
    "record": "kws.record",
    "wakeword": "kws.training.wakeword",
}
# one-line help of each command (the modules' parsers use these too)
SUMMARY = {
    "listen": "spot keywords live from a microphone (or a replayed file)",
    "devices": "list audio input devices",
    "detect": "detect keywords in audio files (streamed in chunks)",
    "eval": "accuracy on labelled 1 s clips (offline and streaming)",
    "eval-stream": "false rejects / false alarms per hour on long recordings",
    "train": "train a spotter on Speech Commands-layout data",
    "export": "export a .npz model as ONNX / TorchScript, or convert an old .pt model or a checkpoint to .npz",
    "serve": "Wyoming protocol wake-word service (Home Assistant)",
    "record": "record (or import) takes of your own word into a word folder",
    "wakeword": "train a wake-word model for your own word from its takes (fine-tunes the shipped model)",
}
NEEDS_TORCH = {"train", "export", "wakeword"}      # shown as needing the training extra where torch is not installed
