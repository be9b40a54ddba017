#!/usr/bin/env bash
# Install the local TTS engines/voices used by make_synthetic_commands.py.
# Run as root. Idempotent: re-running only installs what is missing.
# Enables Debian contrib/non-free (MBROLA, pico, RHVoice and some festvox voices live there).
set -u

if [ "$(id -u)" -ne 0 ]; then
  echo "install_tts.sh: must run as root" >&2
  exit 1
fi

SRC=/etc/apt/sources.list.d/debian.sources
if [ -f "$SRC" ]; then
  sed -i 's/^Components: main$/Components: main contrib non-free/' "$SRC"
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q || echo "WARNING: apt-get update failed; trying with existing lists" >&2

PKGS=(
  espeak-ng sox flite festival
  festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festvox-rablpc16k festvox-don
  festvox-us1 festvox-us2 festvox-us3 festvox-en1
  mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1
  mbrola-de2 mbrola-fr1 mbrola-nl2 mbrola-es1 mbrola-it3
  libttspico-utils
  rhvoice rhvoice-english
)

AVAIL=()
for p in "${PKGS[@]}"; do
  if apt-cache show "$p" >/dev/null 2>&1; then
    AVAIL+=("$p")
  else
    echo "WARNING: apt does not know package '$p'; skipping" >&2
  fi
done

if [ "${#AVAIL[@]}" -gt 0 ]; then
  if ! apt-get install -y -q --no-install-recommends "${AVAIL[@]}"; then
    echo "WARNING: batch install failed; installing one by one" >&2
    for p in "${AVAIL[@]}"; do
      apt-get install -y -q --no-install-recommends "$p" || echo "WARNING: failed to install $p" >&2
    done
  fi
fi

echo "Installed TTS tools:"
for b in espeak-ng sox flite festival mbrola pico2wave RHVoice-test; do
  printf '  %-14s %s\n' "$b" "$(command -v "$b" || echo MISSING)"
done
exit 0
