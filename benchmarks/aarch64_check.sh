#!/usr/bin/env bash
# An emulated Raspberry Pi runs `tlx bench BUNDLE` (and `tlx predict`) of a real trained run,
# through the ARM kernels.
#
#   bash benchmarks/aarch64_check.sh BUNDLE [WORKDIR]
#       BUNDLE   from `tlx bundle RUN_DIR` on this (x86) host, e.g. of the `tlx demo` run
#                (emulation is ~400x slower: `tlx bundle --max-images N` keeps it short)
#       WORKDIR  scratch folder (default: a tlx-aarch64 folder under the system temp dir)
#   PYTHON=... selects the host Python with pip (default: the checkout's .venv)
#   BOARDS="pi5-trixie ..." runs only these boards (default: all three below)
#
# What it does (Debian/Ubuntu x86_64 host, root for apt):
#   1. apt-get install qemu-user-static (if missing).
#   2. Two arm64 Debian sysroots, one per Raspberry Pi OS release: trixie with python3.13 and
#      Debian's numpy 2.2 and Pillow 11 (Raspberry Pi OS since October 2025), bookworm with
#      python3.11. apt downloads the arm64 .debs with a private apt root, dpkg-deb -x unpacks
#      them. No chroot, no binfmt: qemu-aarch64-static -L SYSROOT runs the arm64 python.
#      What the packages' install scripts would have made is made by hand: trixie is usr-merged
#      (its loader is only under /usr/lib, so the sysroot needs lib -> usr/lib, bin, sbin), and
#      Debian's numpy finds BLAS/LAPACK through the libblas.so.3 / liblapack.so.3 links that
#      update-alternatives would create.
#   3. One sysroot view per emulated board, each with that board's /proc/cpuinfo (qemu -L serves
#      SYSROOT/proc/cpuinfo to the guest): a Pi 4 on bookworm (Cortex-A72, run with
#      `-cpu cortex-a72`), a Pi 5 on bookworm and a Pi 5 on trixie (Cortex-A76, `-cpu cortex-a76`).
#      With the x86 host's cpuinfo visible ai-edge-litert crashes; with an ARM one XNNPACK starts
#      as on a Pi. Never qemu's default `-cpu max`: its SME features made XNNPACK's int8 output
#      wrong (every photo one class); no Pi has SME.
#   4. The tlx wheel, built from this checkout, installed for aarch64 by the host's pip
#      (--platform with the exact tags the backends publish): for cp311 (bookworm) with its
#      [tflite] extra (tflite-runtime 2.14.0, numpy<2) and with its [runtime] extra
#      (ai-edge-litert); for cp313 (trixie) with [runtime], with [runtime] on Debian's numpy and
#      Pillow (pip's copies removed from the install: what a --system-site-packages venv keeps),
#      and [tflite], which is expected to fail (tflite-runtime has no cp313 wheel): its pip error
#      is recorded.
#   5. For each board and install: the `tlx` console script of that install runs
#      `tlx bench BUNDLE --emulated ...` on the emulated Python (the backend installed there:
#      tflite-runtime, or litert = ai-edge-litert with XNNPACK; every model in the bundle), then
#      `tlx predict` of the int8 model on two of the bundle's photos. Results: JSON + Markdown
#      per run in WORKDIR/results, and a summary against the host's outputs in
#      benchmarks/results/aarch64_bench.md; its notes (below the notes marker) are kept.
#
# Emulation checks function and accuracy through the ARM kernels. Its latency is not a device
# figure and is never reported as one (--emulated hides it).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
BUNDLE="$(realpath "${1:?usage: aarch64_check.sh BUNDLE [WORKDIR]}")"
WORK="${2:-${TMPDIR:-/tmp}/tlx-aarch64}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
APTROOT="$WORK/apt"
mkdir -p "$WORK/results"
log() { printf '\n== %s\n' "$*"; }
START=$(date +%s)

log "1. qemu-user-static"
if ! command -v qemu-aarch64-static >/dev/null; then
  apt-get install -y --no-install-recommends qemu-user-static
fi
qemu-aarch64-static --version | head -1

log "2. arm64 sysroots: trixie with python3.13 (+ Debian numpy, Pillow), bookworm with python3.11"
# The wheels' .so files need libstdc++.
declare -A SUITE_PACKAGES=(
  [trixie]="python3.13 python3-numpy python3-pil libstdc++6 libgcc-s1 zlib1g"
  [bookworm]="python3.11 libstdc++6 libgcc-s1 zlib1g"
)
sysroot() {  # sysroot SUITE: WORK/sysroot-SUITE with SUITE_PACKAGES[SUITE] unpacked
  local suite=$1 root="$WORK/sysroot-$1" aptroot="$APTROOT-$1"
  local packages="${SUITE_PACKAGES[$1]}"
  if [ "$(cat "$root/.packages" 2>/dev/null)" = "$packages" ]; then
    echo "sysroot-$suite: $(du -sh "$root" | cut -f1) (reused)"; return
  fi
  mkdir -p "$aptroot/etc/apt/sources.list.d" "$aptroot/etc/apt/preferences.d" \
           "$aptroot/var/lib/apt/lists/partial" "$aptroot/var/cache/apt/archives/partial" \
           "$aptroot/var/lib/dpkg"
  : > "$aptroot/var/lib/dpkg/status"
  cat > "$aptroot/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite $suite-updates
Components: main
Architectures: arm64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  local apt=(apt-get -o Dir="$aptroot" -o Dir::State::status="$aptroot/var/lib/dpkg/status"
             -o APT::Architecture=arm64 -o APT::Architectures=arm64
             -o Dir::Etc::trusted=/etc/apt/trusted.gpg -o Dir::Etc::TrustedParts=/etc/apt/trusted.gpg.d
             -o Debug::NoLocking=1 -q)
  "${apt[@]}" update >/dev/null
  # shellcheck disable=SC2086
  "${apt[@]}" install -y --download-only --no-install-recommends $packages >/dev/null
  rm -rf "$root"; mkdir -p "$root"
  local deb
  for deb in "$aptroot"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$root"; done
  # usr-merge (trixie): the packages ship everything under /usr; base-files' links are missing.
  local dir
  for dir in lib bin sbin; do
    [ -e "$root/$dir" ] || ln -s "usr/$dir" "$root/$dir"
  done
  # update-alternatives' links, which numpy's libraries are loaded through.
  local multiarch="$root/usr/lib/aarch64-linux-gnu" lib
  for lib in blas/libblas.so.3 lapack/liblapack.so.3; do
    if [ -e "$multiarch/$lib" ] && [ ! -e "$multiarch/${lib#*/}" ]; then ln -s "$lib" "$multiarch/${lib#*/}"; fi
  done
  echo "$packages" > "$root/.packages"
  echo "sysroot-$suite: $(du -sh "$root" | cut -f1)"
}
sysroot trixie
sysroot bookworm

log "3. one sysroot view per board, with its /proc/cpuinfo"
cpuinfo() {  # cpuinfo FEATURES VARIANT PART REVISION: four cores, as the kernel prints them
  local i
  for i in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$i" "$1"
    printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$2" "$3" "$4"
  done
}
board() {  # board NAME SUITE CPUINFO_TEXT: a hard-linked copy of SUITE's sysroot with its own proc/cpuinfo
  local root="$WORK/board-$1" base="$WORK/sysroot-$2"
  if [ ! -f "$root/.packages" ] || [ "$root/.packages" -ot "$base/.packages" ]; then
    rm -rf "$root"; cp -al "$base" "$root"
  fi
  mkdir -p "$root/proc"; rm -f "$root/proc/cpuinfo"; printf '%s\n' "$3" > "$root/proc/cpuinfo"
}
PI4="$(cpuinfo 'fp asimd evtstrm crc32 cpuid' 0x0 0xd08 3)
Hardware	: BCM2835
Revision	: c03114
Model		: Raspberry Pi 4 Model B Rev 1.4 (emulated: qemu -cpu cortex-a72)"
PI5="$(cpuinfo 'fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp' 0x4 0xd0b 1)
Revision	: d04170
Model		: Raspberry Pi 5 Model B Rev 1.0 (emulated: qemu -cpu cortex-a76)"
board pi5-trixie trixie "$PI5"
board pi4-bookworm bookworm "$PI4"
board pi5-bookworm bookworm "$PI5"
# board -> qemu CPU model, the sysroot's Python, and the installs run on it.
declare -A CPU=([pi5-trixie]=cortex-a76 [pi4-bookworm]=cortex-a72 [pi5-bookworm]=cortex-a76)
declare -A PYTHON_OF=([pi5-trixie]=3.13 [pi4-bookworm]=3.11 [pi5-bookworm]=3.11)
declare -A INSTALLS=([pi5-trixie]="cp313-runtime cp313-runtime-debian" [pi4-bookworm]="cp311-runtime cp311-tflite"
                     [pi5-bookworm]="cp311-runtime cp311-tflite")

log "4. the tlx wheel with its extras, for cp311 and cp313 aarch64"
rm -rf "$WORK/dist"
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$WORK/dist" "$REPO"
WHEEL="$(ls "$WORK"/dist/tlx_edge-*.whl)"
# pip finds aarch64 wheels only under their exact tags: tflite_runtime 2.14.0 is
# manylinux_2_34_aarch64 (cp311 only), ai_edge_litert manylinux_2_27_aarch64; trixie's glibc
# 2.41 accepts every manylinux tag up to 2_41.
PLATFORMS=()
for glibc in 41 39 36 35 34 31 28 27 17; do PLATFORMS+=(--platform "manylinux_2_${glibc}_aarch64"); done
PLATFORMS+=(--platform manylinux2014_aarch64)
install() {  # install ABI EXTRA: SITE=WORK/site-ABI-EXTRA with the wheel and its extra
  local site="$WORK/site-$1-$2"
  rm -rf "$site"
  "$PY" -m pip install -q --disable-pip-version-check --no-warn-conflicts --target "$site" --only-binary=:all: \
    --python-version "${1:2:1}.${1:3}" --implementation cp --abi "$1" "${PLATFORMS[@]}" "$WHEEL[$2]" \
    2> "$WORK/results/install-$1-$2.log" || { tail -2 "$WORK/results/install-$1-$2.log"; return 1; }
  echo "site-$1-$2: $(du -sh "$site" | cut -f1); $(ls "$site" | grep -iE '^(numpy|pillow|tflite_runtime|ai_edge_litert)-.*dist-info' | tr '\n' ' ')"
}
install cp311 tflite
install cp311 runtime
install cp313 runtime
# [runtime] on Debian's numpy 2.2 and Pillow 11 (trixie's python3-numpy, python3-pil): pip's
# copies removed, so the guest imports the sysroot's /usr/lib/python3/dist-packages ones.
rm -rf "$WORK/site-cp313-runtime-debian"; cp -a "$WORK/site-cp313-runtime" "$WORK/site-cp313-runtime-debian"
(cd "$WORK/site-cp313-runtime-debian" && rm -rf numpy numpy-*.dist-info numpy.libs PIL pillow-*.dist-info pillow.libs)
# Raspberry Pi OS Trixie with [tflite]: expected to fail, and recorded.
if install cp313 tflite; then
  echo "UNEXPECTED: [tflite] installed for cp313"; TFLITE_CP313="installed (unexpected)"
else
  TFLITE_CP313="$(grep -m1 'No matching distribution' "$WORK/results/install-cp313-tflite.log" || echo failed)"
fi
echo "[tflite] for cp313: $TFLITE_CP313"
echo "$TFLITE_CP313" > "$WORK/results/install-cp313-tflite.txt"

log "5. tlx bench BUNDLE and tlx predict on each emulated board and install"
STATUS=0
PHOTOS="$WORK/photos"
rm -rf "$PHOTOS"; mkdir -p "$PHOTOS"
"$PY" - "$BUNDLE" "$PHOTOS" "$WORK/predict-int8.tflite" <<'EOF'
import sys, zipfile
from pathlib import PurePosixPath
with zipfile.ZipFile(sys.argv[1]) as z:
    model = next(n for n in z.namelist() if n.endswith(".tflite") and "int8" in n)
    open(sys.argv[3], "wb").write(z.read(model))
    for n in [n for n in z.namelist() if n.startswith("images/")][:2]:
        open(f"{sys.argv[2]}/{PurePosixPath(n).name}", "wb").write(z.read(n))
EOF
rm -rf "$WORK"/results/*--* "$WORK/predict"; mkdir -p "$WORK/predict"
for board in ${BOARDS:-pi5-trixie pi4-bookworm pi5-bookworm}; do
  cpu="${CPU[$board]}"; root="$WORK/board-$board"; python="$root/usr/bin/python${PYTHON_OF[$board]}"
  for install in ${INSTALLS[$board]}; do
    site="$WORK/site-$install"
    prefix="$WORK/results/$board--$install"
    T0=$(date +%s)
    set +e
    # The install's own console script (its shebang names the host's python; the emulated
    # python runs the file instead). --no-cold-start: qemu-user cannot start a child arm64
    # process without binfmt.
    env PYTHONPATH="$site" PYTHONDONTWRITEBYTECODE=1 \
      qemu-aarch64-static -cpu "$cpu" -L "$root" "$python" \
      "$site/bin/tlx" bench "$BUNDLE" --threads 1 --runs 2 --warmup 1 --no-cold-start \
      --emulated "qemu-aarch64 7 user mode, -cpu $cpu" --out "$prefix" > "$prefix.log" 2>&1
    rc=$?
    predicted="$WORK/predict/$board--$install"
    env PYTHONPATH="$site" PYTHONDONTWRITEBYTECODE=1 \
      qemu-aarch64-static -cpu "$cpu" -L "$root" "$python" \
      "$site/bin/tlx" predict "$WORK/predict-int8.tflite" "$PHOTOS" --top-k 1 --json > "$predicted.json" 2> "$predicted.log"
    prc=$?
    set -e
    tail -8 "$prefix.log"
    echo "$board / $install: bench exit $rc, predict exit $prc, $(( $(date +%s) - T0 )) s"
    echo "$prc" > "$predicted.rc"
    [ "$rc" = 0 ] && [ "$prc" = 0 ] || STATUS=1
  done
done

log "6. summary"
RESULTS="$REPO/benchmarks/results/aarch64_bench.md"
env PYTHONPATH="$REPO" "$PY" "$REPO/benchmarks/aarch64_summary.py" "$BUNDLE" --keep-notes "$RESULTS" \
  --tflite-cp313 "$WORK/results/install-cp313-tflite.txt" "$WORK"/results/*--*.json > "$RESULTS.tmp" \
  && mv "$RESULTS.tmp" "$RESULTS" || { rm -f "$RESULTS.tmp"; STATUS=1; }
cat "$RESULTS"
log "done in $(( $(date +%s) - START )) s, status $STATUS"
exit $STATUS
