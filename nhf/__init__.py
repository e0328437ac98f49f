"""Neural Hamiltonian Flows (Toth et al. 2020) as TensorFlow Probability objects.

* `NeuralHamiltonianFlow`: a volume-preserving `tfp.bijectors.Bijector` on phase space [q, p]:
  T learned separable Hamiltonians, each integrated by leapfrog (via `common`).
* `HamiltonianFlowDensity`: a `tfd.Distribution` over q; exact `sample`, `log_prob` = the
  importance-weighted (IWAE) lower bound through the momentum encoder; `elbo` for training.
* `build_density`: the whole model from plain settings; `make_prior` / `PRIORS`: base
  distributions by name; `MomentumEncoder`, `LearnedHamiltonian`, `MLP`, `ScalarMLP`: parts.
* `training`: config, presets, the training loop, evaluation, export (used by `train_nhf.py`).
"""
from nhf.bijector import NeuralHamiltonianFlow
from nhf.density import HamiltonianFlowDensity, build_density, effective_sample_size
from nhf.encoder import MomentumEncoder
from nhf.hamiltonians import KINETIC_KINDS, LearnedHamiltonian
from nhf.networks import ACTIVATIONS, MLP, ScalarMLP
from nhf.priors import PRIORS, make_prior

__all__ = [
    "ACTIVATIONS",
    "HamiltonianFlowDensity",
    "KINETIC_KINDS",
    "LearnedHamiltonian",
    "MLP",
    "MomentumEncoder",
    "NeuralHamiltonianFlow",
    "PRIORS",
    "ScalarMLP",
    "build_density",
    "effective_sample_size",
    "make_prior",
]
