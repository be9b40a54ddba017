#!/usr/bin/env bash
# Install kws on a fresh Debian/Ubuntu machine: system audio libraries, a virtual environment in
# .venv, the package with everything (run time, training extra kws[train], test tools), and librosa's
# numba cache (its first call compiles ~40 s). The run time alone is `pip install .` (no torch).
# Re-running is safe. Without root/sudo the apt step is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")"

# libportaudio2: sounddevice's PortAudio. pulseaudio*, libasound2-plugins: the virtual microphone used
# by the end-to-end test. espeak-ng, sox: voices for tests and demos.
APT_PKGS="libportaudio2 libsndfile1 pulseaudio pulseaudio-utils libasound2-plugins espeak-ng sox"
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
  missing=$(for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    echo "install.sh: apt-get install $missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  fi
else
  echo "install.sh: no apt-get/root: install these system packages yourself: $APT_PKGS" >&2
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch: the CPU wheel, pinned by constraints/cpu.txt (kws[train] accepts a range; pip alone pulls a
# multi-GB CUDA build). On a GPU machine with a CUDA torch already in the venv: KWS_CONSTRAINTS= bash install.sh
# keeps it (docs/training.md).
CONSTRAINTS=${KWS_CONSTRAINTS-constraints/cpu.txt}
PIPC=(.venv/bin/pip install -q --disable-pip-version-check ${CONSTRAINTS:+-c "$CONSTRAINTS"})
[ -z "$CONSTRAINTS" ] || "${PIPC[@]}" torch
"${PIPC[@]}" -e '.[train,dev]'
# librosa (the test reference) compiles numba kernels on first use; do it once here, not in the tests.
.venv/bin/python -c "import numpy as np, librosa; librosa.feature.mfcc(y=np.zeros(16000, np.float32), sr=16000)"
echo "install.sh: done. Try: .venv/bin/kws listen   (or: .venv/bin/kws --help)"
