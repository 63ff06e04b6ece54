"""What machine a figure was measured on: CPU, its int8-relevant instruction sets, OS, versions.

int8 speed depends on the CPU far more than on tlx: XNNPACK's int8 kernels gain most where
the CPU has an int8 dot-product instruction (x86 VNNI, ARM `asimddp`), and on an AVX2-only
x86 an int8 model runs about as fast as its float32 twin. So every recorded latency carries
this record (`tlx bench`, benchmarks/), and `int8_expectation` says what to expect.

No TensorFlow and nothing heavy: this runs on a Raspberry Pi. Versions are read from package
metadata (tlx.versions), nothing is imported to ask.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tlx.versions import installed

#: Instruction-set features that decide int8 speed, per architecture family, in the order
#: they are reported. Names as Linux spells them in /proc/cpuinfo ("flags" on x86,
#: "Features" on ARM).
INT8_FEATURES = {
    "x86": ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"),
    "arm": ("neon", "asimd", "asimddp", "i8mm", "sve", "sve2"),
}

#: Packages whose versions decide what a runtime figure means.
RUNTIME_PACKAGES = ("numpy", "pillow", "ai-edge-litert", "tflite-runtime")

#: ARM "CPU part" numbers (implementer 0x41, Arm Ltd) of cores found on small boards. ARM's
#: /proc/cpuinfo has no "model name"; this turns 0xd08 into a name a reader knows.
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd49": "Neoverse-N2", "0xd4b": "Cortex-A78C",
}


@dataclass(frozen=True)
class CpuInfo:
    """What /proc/cpuinfo says about the first processor."""

    #: Human-readable CPU name ("Intel(R) Xeon(R) ...", "Raspberry Pi 5 Model B (Cortex-A76)").
    name: str
    #: Every flag of the first processor (x86 "flags", ARM "Features"), lower case.
    flags: frozenset = frozenset()


@dataclass(frozen=True)
class Machine:
    """The machine a measurement ran on."""

    #: CPU model name.
    cpu: str
    #: platform.machine(): x86_64, aarch64, armv7l...
    architecture: str
    #: Logical CPUs the OS reports.
    cores: Optional[int]
    #: The int8-relevant instruction-set features the CPU has (subset of INT8_FEATURES).
    cpu_features: tuple[str, ...]
    #: Operating system and kernel release ("Linux 6.1.0").
    os: str
    #: Python version.
    python: str
    #: {distribution: version} of numpy, pillow and the interpreter backends installed.
    versions: dict = field(default_factory=dict)

    @property
    def int8_expectation(self) -> str:
        return int8_expectation(self.architecture, self.cpu_features)

    def to_json(self) -> dict:
        return {"cpu": self.cpu, "architecture": self.architecture, "cores": self.cores,
                "cpu_features": list(self.cpu_features), "int8_expectation": self.int8_expectation,
                "os": self.os, "python": self.python, "versions": dict(self.versions)}

    def summary(self) -> str:
        """One line for a results file: CPU, cores, int8 features, OS, Python."""
        return (f"{self.cpu} ({self.architecture}, {self.cores} cores; int8-relevant features: "
                f"{', '.join(self.cpu_features) or 'none'}); {self.os}; Python {self.python}")


def family(architecture: str) -> Optional[str]:
    """"x86", "arm" or None for platform.machine() names."""
    arch = architecture.lower()
    if arch in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "x86"
    if arch.startswith(("arm", "aarch64")):
        return "arm"
    return None


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's name and flags from /proc/cpuinfo text (x86 or ARM format)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        # The first processor's value wins; board-wide lines (Model, Hardware) come last on ARM.
        if sep and key not in fields:
            fields[key] = value.strip()
    flags = frozenset((fields.get("flags") or fields.get("features") or "").lower().split())
    if "cpu implementer" not in fields:  # x86 (and others): the model name says it all
        return CpuInfo(fields.get("model name", ""), flags)
    # ARM: the board (Model) and the core (CPU part), e.g. "Raspberry Pi 5 Model B Rev 1.0
    # (Cortex-A76)". A 32-bit kernel also has a vague "model name" (ARMv7 Processor rev 3).
    core = (ARM_PARTS.get(fields.get("cpu part", "").lower()) if fields["cpu implementer"] == "0x41"
            else None) or fields.get("model name")
    board = fields.get("model") or fields.get("hardware")
    return CpuInfo(f"{board} ({core})" if board and core else board or core or "", flags)


def int8_features(architecture: str, flags) -> tuple[str, ...]:
    """Those of INT8_FEATURES for this architecture that `flags` contains."""
    return tuple(f for f in INT8_FEATURES.get(family(architecture) or "", ()) if f in flags)


def int8_expectation(architecture: str, features) -> str:
    """What int8 latency to expect against float32 on this CPU, from its features.

    Measured figures are quoted as measured (Lite0-160 demo model, XNNPACK, 1 thread);
    the rest is marked as expected, not measured.
    """
    features = set(features)
    fam = family(architecture)
    if fam == "x86":
        if "avx512_vnni" in features:
            return "AVX-512 VNNI: int8 about 0.5x float32's latency (measured 0.46-0.57x on a Xeon)"
        if features & {"avx_vnni", "amx_int8"}:
            return "AVX-VNNI: int8 faster than float32, likely near AVX-512 VNNI's 0.5x (not measured)"
        if "avx512f" in features:
            return "AVX-512 without VNNI: int8 somewhat faster than float32 (not measured)"
        if "avx2" in features:
            return "AVX2 only (no VNNI): int8 about as fast as float32 (measured 6.8 vs 7.4 ms on an AMD EPYC)"
        return "x86 without AVX2: int8 may be slower than float32 (not measured)"
    if fam == "arm":
        if "i8mm" in features or "asimddp" in features:
            return ("ARM dot product (asimddp, e.g. Raspberry Pi 5's Cortex-A76): int8 expected clearly "
                    "faster than float32 (measure on the device)")
        if "asimd" in features or "neon" in features:
            return ("ARM NEON without dot product (e.g. Raspberry Pi 4's Cortex-A72): int8 expected "
                    "faster than float32, less so than with dot product (measure on the device)")
        return "ARM without NEON: no int8 speed-up expected"
    return "unknown CPU family: measure int8 against float32"


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    try:
        info = parse_cpuinfo(path.read_text(errors="replace"))
    except OSError:
        info = CpuInfo("")
    return info if info.name else CpuInfo(platform.processor() or "unknown", info.flags)


def current(extra_packages: tuple[str, ...] = ()) -> Machine:
    """This machine; `extra_packages` adds versions (e.g. tensorflow for a training benchmark)."""
    info = read_cpuinfo()
    architecture = platform.machine()
    return Machine(
        cpu=info.name, architecture=architecture, cores=os.cpu_count(),
        cpu_features=int8_features(architecture, info.flags),
        os=f"{platform.system()} {platform.release()}", python=platform.python_version(),
        versions=installed(*RUNTIME_PACKAGES, *extra_packages))


def load_average() -> Optional[tuple[float, float, float]]:
    """1, 5 and 15 minute load averages (None where the OS has none): recorded with every
    timing, because a shared machine's figures only mean something next to its load."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except (OSError, AttributeError):
        return None
