"""Phase space, Hamiltonians and symplectic integrators shared by HGN and NHF.

Nothing here imports from `data`, `hgn` or `nhf`.
"""
from common import config, distribute, integrators, runs
from common.hamiltonians import (
    EnergyFn,
    Hamiltonian,
    HamiltonianFn,
    SeparableHamiltonian,
    as_hamiltonian,
    quadratic_kinetic,
)
from common.integrators import Integrator, integrate, trajectory
from common.phase_space import PhaseSpace, as_phase_space

__all__ = [
    "EnergyFn",
    "Hamiltonian",
    "HamiltonianFn",
    "Integrator",
    "PhaseSpace",
    "SeparableHamiltonian",
    "as_hamiltonian",
    "as_phase_space",
    "integrate",
    "config",
    "distribute",
    "integrators",
    "runs",
    "quadratic_kinetic",
    "trajectory",
]
