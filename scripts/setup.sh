#!/usr/bin/env bash
# Set up a fresh machine for tlx: Debian packages with the real photos (where apt exists),
# then .venv with tlx and everything its training, export, runtime and tests use.
# Idempotent: a second run only checks. Sourced by scripts/test.sh and scripts/demo.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

# Real photos (tuxpaint-stamps-default) and Fashion-MNIST come from Debian's archive.
apt_packages=()
[ -d /usr/share/tuxpaint/stamps/animals ] || apt_packages+=(tuxpaint-stamps-default)
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || apt_packages+=(dataset-fashion-mnist)
# A real browser for the test that opens the HTML report.
command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
if [ ${#apt_packages[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "Installing Debian packages: ${apt_packages[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
  else
    echo "No apt-get here: the tuxpaint and fashion-mnist datasets are unavailable (lfw-subset still works)." >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv"
  "$PYTHON" -m venv .venv
fi
# pip's output only when it fails (a mirror configuration can make it chatty).
pip_quietly() {
  local log
  log=$(mktemp)
  if ! .venv/bin/pip "$@" >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}
echo "Installing tlx and its dependencies into .venv"
pip_quietly install --upgrade pip
pip_quietly install -e ".[train-cpu,runtime,lite,dev,camera]"
# Fail here, not in the middle of the tests.
.venv/bin/python -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('tensorflow') and u.find_spec('tlx') else 1)"
