"""`common.cpu.use_onednn`: TensorFlow's oneDNN kernels asked for, a user's own choice kept."""
import os
import subprocess
import sys
from pathlib import Path

from common import cpu

ROOT = Path(__file__).resolve().parents[1]


def _child(env_value):
    """What a fresh process that calls `use_onednn()` before TensorFlow ends up with."""
    env = {k: v for k, v in os.environ.items() if k != cpu.ONEDNN_ENV}
    if env_value is not None:
        env[cpu.ONEDNN_ENV] = env_value
    code = ("from common import cpu; cpu.use_onednn(); "
            "from tensorflow.python.util import _pywrap_util_port as port; "
            "print(cpu.describe()['tf_enable_onednn_opts'], port.IsMklEnabled())")
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
    return out[-2], out[-1]


def test_onednn_is_asked_for_and_recorded_unless_the_user_chose():
    # On every CPU, TensorFlow's oneDNN is on after use_onednn() (TensorFlow itself leaves it off
    # on AVX2-only CPUs), and describe() records the request beside every bench figure.
    assert _child(None) == ("1", "True")
    # A user's explicit choice wins: 0 turns oneDNN off, on this CPU whatever TensorFlow's default.
    assert _child("0") == ("0", "False")


def test_cpu_record_tells_apart_cpus_of_one_name(monkeypatch):
    # /proc/cpuinfo names Zen 3, 4 and 5 EPYCs alike ("AMD EPYC"): the record keeps family and model.
    fake = {"model name": "AMD EPYC", "cpu family": "26", "model": "2", "flags": "avx avx2 fma avx512f avx512_bf16"}
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: fake)
    record = cpu.describe()
    assert (record["model"], record["family"], record["model_number"]) == ("AMD EPYC", "26", "2")
    assert record["flags"] == ["avx", "avx2", "fma", "avx512f", "avx512_bf16"] and record["native_bfloat16"]
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: {})  # no /proc/cpuinfo: nothing invented
    assert cpu.describe()["family"] is None and cpu.describe()["model_number"] is None


def test_an_isa_cap_below_bfloat16_is_recorded_and_makes_auto_pick_float32(monkeypatch):
    # The AVX2 emulation of ISA_ENV on a CPU with AVX-512 BF16: oneDNN may not use bfloat16
    # instructions, so `auto` picks float32 as on a real AVX2-only CPU, and the record says so.
    fake = {"model name": "AMD EPYC", "flags": "avx avx2 fma avx512f avx512_bf16"}
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: fake)
    for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "XLA_FLAGS"):
        monkeypatch.delenv(name, raising=False)
    assert cpu.native_bfloat16() and cpu.resolve_compute_dtype("auto") == "bfloat16"
    assert cpu.describe()["isa_cap"] == {}
    for name, value in cpu.ISA_ENV["avx2"].items():
        monkeypatch.setenv(name, value)
    assert not cpu.native_bfloat16() and cpu.resolve_compute_dtype("auto") == "float32"
    assert cpu.describe()["isa_cap"] == cpu.ISA_ENV["avx2"]
    # A cap that keeps bfloat16 (oneDNN's names, any case) leaves the choice to the CPU.
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    assert cpu.native_bfloat16()
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: {"flags": "avx avx2 fma"})
    assert not cpu.native_bfloat16()
