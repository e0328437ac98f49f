"""What this CPU computes natively, for choosing a compute dtype and for recording benchmarks.

bfloat16 matmuls and convolutions run natively only on CPUs with AMX (`amx_bf16`) or
AVX-512 BF16 (`avx512_bf16`); elsewhere oneDNN emulates them, tens of times slower than
float32 (measured on an AVX2-only AMD EPYC: about 25 s per step of 16 for the `pytorch` HGN
preset in bfloat16). `auto` compute dtypes resolve through `native_bfloat16()`.

TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI, BF16 or AMX; on
an AVX2-only CPU (the AMD EPYC measured here) it runs Eigen's instead. `use_onednn()` asks for
oneDNN everywhere (see its docstring for what it gained).

Imports nothing heavy: the command lines call it before TensorFlow is loaded.
"""
from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Dict, FrozenSet

# Environments that cap oneDNN, PyTorch's ATen and XLA at an instruction set (set before import):
# "avx2" emulates an AVX2-only CPU's code paths on a newer one (not its clock, caches or memory).
ISA_ENV: Dict[str, Dict[str, str]] = {
    "native": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "XLA_FLAGS": "--xla_cpu_max_isa=AVX2"},
}

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")
# Flags worth recording beside a speed figure (the vector and matrix units oneDNN can use).
_REPORTED_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni",
                   "amx_tile", "amx_bf16", "amx_int8")


@lru_cache(maxsize=None)
def _cpuinfo() -> Dict[str, str]:
    """The first processor's `key: value` lines of /proc/cpuinfo ({} where there is none)."""
    info: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    if info:
                        break
                    continue
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_flags() -> FrozenSet[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty off Linux)."""
    return frozenset(_cpuinfo().get("flags", "").split())


# oneDNN instruction-set caps (`ONEDNN_MAX_CPU_ISA`) that leave it no bfloat16 dot product.
_ONEDNN_ISAS_WITHOUT_BFLOAT16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                                           "AVX512_CORE_VNNI"})


def native_bfloat16() -> bool:
    """True where bfloat16 matmuls/convolutions run in hardware: the CPU has AMX or AVX-512 BF16 and
    `ONEDNN_MAX_CPU_ISA` does not cap oneDNN below them (as `ISA_ENV["avx2"]` does to emulate an
    AVX2-only CPU, where `auto` must then pick float32 as it would there)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper() in _ONEDNN_ISAS_WITHOUT_BFLOAT16:
        return False
    return any(flag in cpu_flags() for flag in BFLOAT16_FLAGS)


def use_onednn() -> None:
    """Asks TensorFlow for its oneDNN kernels on every CPU; call it before TensorFlow is imported.

    Where TensorFlow leaves them off (CPUs without AVX-512 VNNI, BF16 or AMX) this turns them on:
    on the 2-core AVX2-only AMD EPYC, the `pytorch` HGN preset's float32 training step ran 1.26x
    faster (2.73 against 2.17 samples/s, one core, `bench/hgn_vs_pytorch.py`) and the NHF
    `small` preset's 1.38x (0.0138 against 0.0191 s per step, `bench/nhf_speed.py`). A
    `TF_ENABLE_ONEDNN_OPTS` already in the environment wins (`0` turns them off).
    """
    os.environ.setdefault(ONEDNN_ENV, "1")


def resolve_compute_dtype(requested: str) -> str:
    """`auto` -> `bfloat16` on a CPU with native bfloat16, `float32` elsewhere; others unchanged."""
    if requested != "auto":
        return requested
    return "bfloat16" if native_bfloat16() else "float32"


def describe() -> Dict[str, object]:
    """The CPU to record beside a speed or quality figure: model, logical cores and vector flags."""
    flags = cpu_flags()
    info = _cpuinfo()
    return {
        "model": info.get("model name", platform.processor() or platform.machine()),
        # Family and model number tell apart CPUs that /proc/cpuinfo names alike ("AMD EPYC" is
        # Zen 3, Zen 4 and Zen 5 on the VMs measured here: families 25, 25 and 26).
        "family": info.get("cpu family"),
        "model_number": info.get("model"),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "flags": [f for f in _REPORTED_FLAGS if f in flags],
        "native_bfloat16": native_bfloat16(),
        # What this process asked TensorFlow for (None: TensorFlow's own choice, off on AVX2-only CPUs).
        "tf_enable_onednn_opts": os.environ.get(ONEDNN_ENV),
        # Instruction-set caps in force (ISA_ENV's variables): {} runs the CPU's own code paths.
        "isa_cap": {name: os.environ[name] for name in sorted({n for env in ISA_ENV.values() for n in env})
                    if name in os.environ},
    }
