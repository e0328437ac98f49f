"""Phase space, Hamiltonians and symplectic integrators shared by HGN and NHF.

Nothing here imports from `data`, `hgn` or `nhf`. Names are loaded on first use (PEP 562), so
`common.config` and `common.runs` can be imported by command lines without importing
TensorFlow before their arguments are checked.
"""
from common.lazy import lazy_attributes as _lazy_attributes

_SUBMODULES = ("callbacks", "config", "console", "cpu", "distribute", "integrators", "lazy", "runs", "schedules")
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


__getattr__, __dir__ = _lazy_attributes(__name__, _NAMES, _SUBMODULES)
