#!/usr/bin/env bash
# aarch64 functional check of tlx.runtime under qemu user-mode emulation.
#
#   bash benchmarks/aarch64_check.sh [WORKDIR]      # default WORKDIR: /tmp/tlx-aarch64
#
# What it does (Debian/Ubuntu x86_64 host, root for apt and for the mount namespace):
#   1. apt-get install qemu-user-static (if missing).
#   2. An arm64 Debian bookworm sysroot with python3.11 (the Python of Raspberry Pi OS
#      Bookworm): apt downloads the arm64 .debs with a private apt root, dpkg-deb -x unpacks
#      them. No chroot, no binfmt: qemu-aarch64-static -L SYSROOT runs the arm64 python.
#   3. Two wheel sets installed by the host's pip for cp311/aarch64:
#        tflite:  tflite-runtime==2.14.0 + numpy<2 + pillow + typer + pytest
#        litert:  ai-edge-litert (2.3.0)  + numpy 2 + pillow + typer + pytest
#   4. For each set: the runtime's tests (tests/test_runtime.py and tests/test_predict.py,
#      minus the few that start a child Python: qemu-user cannot exec an arm64 binary
#      without binfmt) on the emulated Python, against test models built on this host;
#      then benchmarks/runtime_scores.py on the same images natively (x86, main venv) and
#      emulated, and a comparison: int8 scores must be identical, float within 1e-5.
#
# ai-edge-litert 2.3.0 segfaults under qemu-user when the x86 host's /sys CPU information
# is visible; it runs when /sys/devices/system/cpu is hidden (unshare -m + a tmpfs mount).
# That looks like an emulation artifact, not a Raspberry Pi problem; the litert runs below
# hide it. Emulation is ~400x slower than native: a functional check, not a speed figure.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-/tmp/tlx-aarch64}"
PY="$REPO/.venv/bin/python"
SYSROOT="$WORK/sysroot"
APTROOT="$WORK/apt"
mkdir -p "$WORK"
log() { printf '\n== %s\n' "$*"; }
START=$(date +%s)

log "1. qemu-user-static"
if ! command -v qemu-aarch64-static >/dev/null; then
  apt-get install -y --no-install-recommends qemu-user-static
fi
qemu-aarch64-static --version | head -1

log "2. arm64 bookworm sysroot with python3.11"
SYSROOT_PACKAGES=(python3.11 libstdc++6 libgcc-s1 zlib1g)  # the wheels' .so files need libstdc++
if [ "$(cat "$SYSROOT/.packages" 2>/dev/null)" != "${SYSROOT_PACKAGES[*]}" ]; then
  mkdir -p "$APTROOT/etc/apt/sources.list.d" "$APTROOT/etc/apt/preferences.d" \
           "$APTROOT/var/lib/apt/lists/partial" "$APTROOT/var/cache/apt/archives/partial" \
           "$APTROOT/var/lib/dpkg"
  : > "$APTROOT/var/lib/dpkg/status"
  cat > "$APTROOT/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Architectures: arm64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  APT=(apt-get -o Dir="$APTROOT" -o Dir::State::status="$APTROOT/var/lib/dpkg/status"
       -o APT::Architecture=arm64 -o APT::Architectures=arm64
       -o Dir::Etc::trusted=/etc/apt/trusted.gpg -o Dir::Etc::TrustedParts=/etc/apt/trusted.gpg.d
       -o Debug::NoLocking=1 -q)
  "${APT[@]}" update >/dev/null
  "${APT[@]}" install -y --download-only --no-install-recommends "${SYSROOT_PACKAGES[@]}" >/dev/null
  rm -rf "$SYSROOT"; mkdir -p "$SYSROOT"
  for deb in "$APTROOT"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$SYSROOT"; done
  echo "${SYSROOT_PACKAGES[*]}" > "$SYSROOT/.packages"
fi
echo "sysroot: $(du -sh "$SYSROOT" | cut -f1)"
qemu-aarch64-static -L "$SYSROOT" "$SYSROOT/usr/bin/python3.11" -c \
  "import platform, sys; print('emulated:', platform.machine(), sys.version.split()[0])"

log "3. aarch64 wheels"
PLATFORMS=(--platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64
           --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64
           --platform manylinux_2_34_aarch64 --platform manylinux_2_36_aarch64)
wheels() {  # wheels DIR PACKAGES...
  local dir="$1"; shift
  if [ ! -f "$dir/.done" ]; then
    rm -rf "$dir"
    "$PY" -m pip install -q --disable-pip-version-check --target "$dir" --only-binary=:all: \
      --python-version 3.11 --implementation cp --abi cp311 "${PLATFORMS[@]}" "$@"
    touch "$dir/.done"
  fi
  echo "$(basename "$dir"): $(du -sh "$dir" | cut -f1)"
}
COMMON=(pillow typer pytest pytest-timeout)
wheels "$WORK/site-tflite" tflite-runtime==2.14.0 "numpy<2" "${COMMON[@]}"
wheels "$WORK/site-litert" "ai-edge-litert==2.3.0" "${COMMON[@]}"

log "4. test models and images (built natively with the main venv)"
MODELS="$("$PY" - <<EOF
import sys; sys.path.insert(0, "$REPO")
from pathlib import Path
from tests.runtime_support import build_models
print(build_models(Path("$WORK/models")))
EOF
)"
IMAGES="$WORK/images"
"$PY" "$REPO/benchmarks/runtime_scores.py" --make-images "$IMAGES"
"$PY" "$REPO/benchmarks/runtime_scores.py" "$MODELS" "$IMAGES" > "$WORK/scores-x86.json"

# Tests that start a child Python (qemu-user cannot exec arm64 binaries without binfmt).
DESELECT="not never_imports_tensorflow and not probe"

emulate() {  # emulate SITE BACKEND ARGS... : run the arm64 python with that wheel set
  local site="$1" backend="$2"; shift 2
  local cmd=(env PYTHONPATH="$site:$REPO" TLX_TEST_MODELS="$MODELS" PYTHONDONTWRITEBYTECODE=1
             qemu-aarch64-static -L "$SYSROOT" "$SYSROOT/usr/bin/python3.11" "$@")
  if [ "$backend" = litert ]; then
    unshare -m sh -c 'mount -t tmpfs none /sys/devices/system/cpu && exec "$@"' sh "${cmd[@]}"
  else
    "${cmd[@]}"
  fi
}

STATUS=0
for backend in tflite litert; do
  log "5. $backend on emulated aarch64: tests"
  site="$WORK/site-$backend"
  T0=$(date +%s)
  set +e
  emulate "$site" "$backend" -m pytest -q -p no:cacheprovider --timeout 900 \
    -k "$DESELECT" "$REPO/tests/test_runtime.py" "$REPO/tests/test_predict.py" \
    > "$WORK/tests-$backend.log" 2>&1
  rc=$?
  set -e
  tail -5 "$WORK/tests-$backend.log"
  [ "$rc" = 0 ] || STATUS=1
  echo "tests took $(( $(date +%s) - T0 )) s"
  log "6. $backend on emulated aarch64: scores vs x86"
  emulate "$site" "$backend" "$REPO/benchmarks/runtime_scores.py" "$MODELS" "$IMAGES" \
    > "$WORK/scores-aarch64-$backend.json"
  "$PY" "$REPO/benchmarks/runtime_scores.py" --compare "$WORK/scores-x86.json" \
    "$WORK/scores-aarch64-$backend.json" || STATUS=1
done
log "done in $(( $(date +%s) - START )) s, status $STATUS"
exit $STATUS
