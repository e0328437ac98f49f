"""Neural Hamiltonian Flows (Toth et al. 2020) as TensorFlow Probability objects.

* `NeuralHamiltonianFlow`: a volume-preserving `tfp.bijectors.Bijector` on phase space [q, p]:
  T learned separable Hamiltonians, each integrated by leapfrog (via `common`).
* `HamiltonianFlowDensity`: a `tfd.Distribution` over q; exact `sample`, `log_prob` = the
  importance-weighted (IWAE) lower bound through the momentum encoder; `elbo` for training.
* `build_density`: the whole model from plain settings; `make_prior` / `PRIORS`: base
  distributions by name; `MomentumEncoder`, `LearnedHamiltonian`, `MLP`, `ScalarMLP`: parts.
* `NHFConfig` / `PRESETS`: a run's settings; `run_experiment`: train (or resume, or
  re-evaluate) and write every output; `export_saved_model`: the SavedModel with `log_prob(q)`
  and `sample(n)`. `nhf.training` holds the loop's parts (train step, NaN guard, evaluation);
  training runs under any `tf.distribute` strategy (`run_experiment(..., strategy=...)`).
"""
from nhf.bijector import NeuralHamiltonianFlow
from nhf.config import PRESETS, NHFConfig
from nhf.density import HamiltonianFlowDensity, build_density, effective_sample_size
from nhf.encoder import MomentumEncoder
from nhf.export import export_saved_model
from nhf.hamiltonians import KINETIC_KINDS, LearnedHamiltonian
from nhf.networks import ACTIVATIONS, MLP, ScalarMLP
from nhf.priors import PRIORS, make_prior
from nhf.training import run_experiment

__all__ = [
    "ACTIVATIONS",
    "HamiltonianFlowDensity",
    "KINETIC_KINDS",
    "LearnedHamiltonian",
    "MLP",
    "MomentumEncoder",
    "NHFConfig",
    "NeuralHamiltonianFlow",
    "PRESETS",
    "PRIORS",
    "ScalarMLP",
    "build_density",
    "effective_sample_size",
    "export_saved_model",
    "make_prior",
    "run_experiment",
]
