"""tlx.machine: the CPU record every latency figure carries, parsed from /proc/cpuinfo text."""

from __future__ import annotations

import json
import subprocess
import sys

from tlx import machine

X86_CPUINFO = """\
processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 106
model name	: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags		: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni
bogomips	: 5799.99

processor	: 1
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags		: fpu vme sse sse2
"""

EPYC_CPUINFO = """\
processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7B12
flags		: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2
"""

# Raspberry Pi 4 Model B, 64-bit Raspberry Pi OS: no "model name"; the core is "CPU part" 0xd08.
PI4_CPUINFO = """\
processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

processor	: 1
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU part	: 0xd08

Revision	: c03111
Serial		: 10000000abcdef01
Model		: Raspberry Pi 4 Model B Rev 1.1
"""

PI5_CPUINFO = """\
processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x4
CPU part	: 0xd0b
CPU revision	: 1

Revision	: c04170
Serial		: 0123456789abcdef
Model		: Raspberry Pi 5 Model B Rev 1.0
"""


def test_x86_name_and_int8_features_from_the_first_processor():
    info = machine.parse_cpuinfo(X86_CPUINFO)
    assert info.name == "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    assert machine.int8_features("x86_64", info.flags) == ("avx2", "avx512f", "avx512_vnni")
    assert "VNNI" in machine.int8_expectation("x86_64", ("avx2", "avx512f", "avx512_vnni"))


def test_avx2_only_x86_expects_int8_about_as_fast_as_float():
    info = machine.parse_cpuinfo(EPYC_CPUINFO)
    features = machine.int8_features("x86_64", info.flags)
    assert info.name == "AMD EPYC 7B12" and features == ("avx2",)
    assert "about as fast as float32" in machine.int8_expectation("x86_64", features)


def test_raspberry_pi_4_board_and_core_without_dot_product():
    info = machine.parse_cpuinfo(PI4_CPUINFO)
    assert info.name == "Raspberry Pi 4 Model B Rev 1.1 (Cortex-A72)"
    features = machine.int8_features("aarch64", info.flags)
    assert features == ("asimd",)
    assert "without dot product" in machine.int8_expectation("aarch64", features)


def test_raspberry_pi_5_has_the_dot_product():
    info = machine.parse_cpuinfo(PI5_CPUINFO)
    assert info.name == "Raspberry Pi 5 Model B Rev 1.0 (Cortex-A76)"
    features = machine.int8_features("aarch64", info.flags)
    assert features == ("asimd", "asimddp")
    assert "dot product" in machine.int8_expectation("aarch64", features)


# Raspberry Pi 4 on 32-bit Raspberry Pi OS: a vague "model name", NEON under "Features".
PI4_32BIT_CPUINFO = """\
processor	: 0
model name	: ARMv7 Processor rev 3 (v7l)
BogoMIPS	: 108.00
Features	: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32
CPU implementer	: 0x41
CPU architecture: 7
CPU part	: 0xd08

Hardware	: BCM2711
Revision	: c03111
Model		: Raspberry Pi 4 Model B Rev 1.1
"""


def test_raspberry_pi_4_on_a_32_bit_kernel():
    info = machine.parse_cpuinfo(PI4_32BIT_CPUINFO)
    assert info.name == "Raspberry Pi 4 Model B Rev 1.1 (Cortex-A72)"
    assert machine.int8_features("armv7l", info.flags) == ("neon",)
    assert "without dot product" in machine.int8_expectation("armv7l", ("neon",))


def test_x86_flags_mean_nothing_on_arm_and_empty_text_gives_no_name():
    assert machine.int8_features("aarch64", {"avx2"}) == ()
    assert machine.parse_cpuinfo("") == machine.CpuInfo("", frozenset())


def test_current_machine_record_is_json():
    code = ("import json; from tlx import machine; m = machine.current(); "
            "print(json.dumps(m.to_json())); print(m.summary())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    record = json.loads(out.splitlines()[0])
    assert record["cpu"] and record["cores"] >= 1 and record["python"]
    assert set(record["cpu_features"]) <= set(machine.INT8_FEATURES["x86"] + machine.INT8_FEATURES["arm"])
    assert "numpy" in record["versions"] and "pillow" in record["versions"]
    assert record["cpu"] in out.splitlines()[1]
