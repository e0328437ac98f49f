"""Neural Hamiltonian Flows (Toth et al. 2020) as TensorFlow Probability objects.

* `NeuralHamiltonianFlow`: a volume-preserving `tfp.bijectors.Bijector` on phase space [q, p]:
  T learned separable Hamiltonians, each integrated by leapfrog (via `common`).
* `HamiltonianFlowDensity`: a `tfd.Distribution` over q; exact `sample`, `log_prob` = the
  importance-weighted (IWAE) lower bound through the momentum encoder; `elbo` for training.
* `build_density`: the whole model from plain settings; `make_prior` / `PRIORS`: base
  distributions by name; `MomentumEncoder`, `LearnedHamiltonian`, `MLP`, `ScalarMLP`: parts.
* `NHFModel`: the density as a Keras 3 model (`train_step` / `test_step`, one tracker per
  term), trained by `fit` with `AveragedGradientAdam`; `build_model`: compiled from a config.
* `NHFConfig` / `PRESETS`: a run's settings; `run_experiment`: train (or resume, or
  re-evaluate) and write every output; `fit_samples`: the same on your own points (a NumPy
  array or a `tf.data.Dataset`); `evaluate`: the final metrics; `export_saved_model`: the
  SavedModel with `log_prob(q)` and `sample(n)`.

Modules: `config`, `bijector`, `density`, `model` (NHFModel), `training` (pipelines, fit,
checkpoints, resume, rollbacks; runs under any `tf.distribute` strategy), `experiment` (a whole
run: `run_experiment`, `fit_samples`), `evaluation` (IWAE NLL, paired gap, VI report, outputs),
`plots`, `export`, `cli` (train_nhf.py).
"""
from common.lazy import lazy_attributes as _lazy_attributes

# Names load on first use (PEP 562), so `train_nhf.py` checks its flags before TensorFlow loads.
_NAMES = {
    "NeuralHamiltonianFlow": "nhf.bijector",
    "PRESETS": "nhf.config",
    "NHFConfig": "nhf.config",
    "HamiltonianFlowDensity": "nhf.density",
    "build_density": "nhf.density",
    "effective_sample_size": "nhf.density",
    "MomentumEncoder": "nhf.encoder",
    "export_saved_model": "nhf.export",
    "KINETIC_KINDS": "nhf.config",
    "LearnedHamiltonian": "nhf.hamiltonians",
    "ACTIVATIONS": "nhf.networks",
    "MLP": "nhf.networks",
    "ScalarMLP": "nhf.networks",
    "PRIORS": "nhf.config",
    "make_prior": "nhf.priors",
    "evaluate": "nhf.evaluation",
    "AveragedGradientAdam": "nhf.model",
    "NHFModel": "nhf.model",
    "fit_samples": "nhf.experiment",
    "run_experiment": "nhf.experiment",
    "build_model": "nhf.training",
}

__all__ = sorted(_NAMES)


__getattr__, __dir__ = _lazy_attributes(__name__, _NAMES)
