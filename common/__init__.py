"""Phase space, Hamiltonians and symplectic integrators shared by HGN and NHF.

Nothing here imports from `data`, `hgn` or `nhf`. Names are loaded on first use (PEP 562), so
`common.config` and `common.runs` can be imported by command lines without importing
TensorFlow before their arguments are checked.
"""
import importlib

_SUBMODULES = ("callbacks", "config", "console", "cpu", "distribute", "integrators", "runs", "schedules")
_NAMES = {
    "EnergyFn": "common.hamiltonians",
    "Hamiltonian": "common.hamiltonians",
    "HamiltonianFn": "common.hamiltonians",
    "SeparableHamiltonian": "common.hamiltonians",
    "as_hamiltonian": "common.hamiltonians",
    "quadratic_kinetic": "common.hamiltonians",
    "Integrator": "common.integrators",
    "integrate": "common.integrators",
    "trajectory": "common.integrators",
    "PhaseSpace": "common.phase_space",
    "as_phase_space": "common.phase_space",
}

__all__ = sorted([*_NAMES, *_SUBMODULES])


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"common.{name}")
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'common' has no attribute {name!r}")


def __dir__():
    return __all__
