#!/usr/bin/env bash
# Installs the real jumpstarter 0.9.0 tools (PyPI) into a cached virtualenv and prints its
# path on the last line. Reused when the pinned requirement set is already installed.
#   Env: JUMPSTARTER_VENV (default: $XDG_CACHE_HOME/jumpstarter-rs/venv-jumpstarter-0.9.0)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
req="$here/python-requirements.txt"
venv="${JUMPSTARTER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/jumpstarter-rs/venv-jumpstarter-0.9.0}"
stamp="$venv/.requirements"
if [ -x "$venv/bin/jmp" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
  echo "[python-venv] cached: $venv" >&2
else
  echo "[python-venv] creating $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
fi
"$venv/bin/jmp" --help >/dev/null || { echo "FATAL: jmp from $venv does not run" >&2; exit 1; }
echo "$venv"
