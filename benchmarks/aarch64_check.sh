#!/usr/bin/env bash
# An emulated Raspberry Pi runs `tlx bench BUNDLE` of a real trained run, through the ARM kernels.
#
#   bash benchmarks/aarch64_check.sh BUNDLE [WORKDIR]
#       BUNDLE   from `tlx bundle RUN_DIR` on this (x86) host, e.g. of the `tlx demo` run
#                (emulation is ~400x slower: `tlx bundle --max-images N` keeps it short)
#       WORKDIR  scratch folder (default: a tlx-aarch64 folder under the system temp dir)
#   PYTHON=... selects the host Python with pip (default: the checkout's .venv)
#
# What it does (Debian/Ubuntu x86_64 host, root for apt):
#   1. apt-get install qemu-user-static (if missing).
#   2. An arm64 Debian bookworm sysroot with python3.11 (the Python of Raspberry Pi OS Bookworm):
#      apt downloads the arm64 .debs with a private apt root, dpkg-deb -x unpacks them. No chroot,
#      no binfmt: qemu-aarch64-static -L SYSROOT runs the arm64 python.
#   3. One sysroot view per emulated board, each with that board's /proc/cpuinfo (qemu -L serves
#      SYSROOT/proc/cpuinfo to the guest): a Pi 4 (Cortex-A72, run with `-cpu cortex-a72`) and a
#      Pi 5 (Cortex-A76, `-cpu cortex-a76`). With the x86 host's cpuinfo visible ai-edge-litert
#      crashes; with an ARM one XNNPACK starts as on a Pi. Never qemu's default `-cpu max`: its
#      SME features made XNNPACK's int8 output wrong (every photo one class); no Pi has SME.
#   4. The tlx wheel, built from this checkout, installed for cp311/aarch64 by the host's pip
#      (--platform with the exact tags the backends publish) twice: with its [tflite] extra
#      (tflite-runtime 2.14.0, numpy<2) and with its [runtime] extra (ai-edge-litert).
#   5. For each board and each install: the `tlx` console script of that install runs
#      `tlx bench BUNDLE --emulated ...` on the emulated Python: the backend installed there
#      (tflite-runtime, or litert = ai-edge-litert with XNNPACK), every model in the bundle. Results: one JSON +
#      Markdown per run in WORKDIR/results, and a summary against the host's outputs in
#      benchmarks/results/aarch64_bench.md.
#
# Emulation checks function and accuracy through the ARM kernels. Its latency is not a device
# figure and is never reported as one (--emulated hides it).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
BUNDLE="$(realpath "${1:?usage: aarch64_check.sh BUNDLE [WORKDIR]}")"
WORK="${2:-${TMPDIR:-/tmp}/tlx-aarch64}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
SYSROOT="$WORK/sysroot"
APTROOT="$WORK/apt"
mkdir -p "$WORK/results"
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

log "3. one sysroot view per board, with its /proc/cpuinfo"
cpuinfo() {  # cpuinfo FEATURES VARIANT PART REVISION: four cores, as the kernel prints them
  local i
  for i in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$i" "$1"
    printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$2" "$3" "$4"
  done
}
board() {  # board NAME CPUINFO_TEXT: a hard-linked copy of the sysroot with its own proc/cpuinfo
  local root="$WORK/sysroot-$1"
  if [ ! -f "$root/.packages" ] || [ "$root/.packages" -ot "$SYSROOT/.packages" ]; then
    rm -rf "$root"; cp -al "$SYSROOT" "$root"
  fi
  mkdir -p "$root/proc"; rm -f "$root/proc/cpuinfo"; printf '%s\n' "$2" > "$root/proc/cpuinfo"
}
board cortex-a72 "$(cpuinfo 'fp asimd evtstrm crc32 cpuid' 0x0 0xd08 3)
Hardware	: BCM2835
Revision	: c03114
Model		: Raspberry Pi 4 Model B Rev 1.4 (emulated: qemu -cpu cortex-a72)"
board cortex-a76 "$(cpuinfo 'fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp' 0x4 0xd0b 1)
Revision	: d04170
Model		: Raspberry Pi 5 Model B Rev 1.0 (emulated: qemu -cpu cortex-a76)"

log "4. the tlx wheel with [tflite] and with [runtime], for cp311 aarch64"
rm -rf "$WORK/dist"
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$WORK/dist" "$REPO"
WHEEL="$(ls "$WORK"/dist/tlx_edge-*.whl)"
# pip finds aarch64 wheels only under their exact tags: tflite_runtime 2.14.0 is
# manylinux_2_34_aarch64 (cp311 only), ai_edge_litert manylinux_2_27_aarch64.
PLATFORMS=(--platform manylinux_2_34_aarch64 --platform manylinux_2_28_aarch64
           --platform manylinux_2_27_aarch64 --platform manylinux_2_17_aarch64
           --platform manylinux2014_aarch64)
install() {  # install EXTRA: SITE=WORK/site-EXTRA with the wheel and its extra
  local site="$WORK/site-$1"
  rm -rf "$site"
  "$PY" -m pip install -q --disable-pip-version-check --no-warn-conflicts --target "$site" --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 "${PLATFORMS[@]}" "$WHEEL[$1]"
  echo "site-$1: $(du -sh "$site" | cut -f1); $(ls "$site" | grep -iE '^(numpy|tflite_runtime|ai_edge_litert)-.*dist-info' | tr '\n' ' ')"
}
install tflite
install runtime

log "5. tlx bench BUNDLE on each emulated board and install"
STATUS=0
for cpu in cortex-a72 cortex-a76; do
  for extra in tflite runtime; do
    site="$WORK/site-$extra"
    prefix="$WORK/results/$cpu-$extra"
    T0=$(date +%s)
    set +e
    # The install's own console script (its shebang names the host's python; the emulated
    # python runs the file instead). --no-cold-start: qemu-user cannot start a child arm64
    # process without binfmt.
    env PYTHONPATH="$site" PYTHONDONTWRITEBYTECODE=1 \
      qemu-aarch64-static -cpu "$cpu" -L "$WORK/sysroot-$cpu" "$WORK/sysroot-$cpu/usr/bin/python3.11" \
      "$site/bin/tlx" bench "$BUNDLE" --threads 1 --runs 2 --warmup 1 --no-cold-start \
      --emulated "qemu-aarch64 7 user mode, -cpu $cpu" --out "$prefix" > "$prefix.log" 2>&1
    rc=$?
    set -e
    tail -8 "$prefix.log"
    echo "$cpu / [$extra]: exit $rc, $(( $(date +%s) - T0 )) s"
    [ "$rc" = 0 ] || STATUS=1
  done
done

log "6. summary"
"$PY" "$REPO/benchmarks/aarch64_summary.py" "$BUNDLE" "$WORK"/results/*.json \
  > "$REPO/benchmarks/results/aarch64_bench.md" || STATUS=1
cat "$REPO/benchmarks/results/aarch64_bench.md"
log "done in $(( $(date +%s) - START )) s, status $STATUS"
exit $STATUS
