"""`NHFConfig`: every setting of an NHF run, with named presets (`train_nhf.py --preset`)."""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

from common.config import field, one_of, positive, serving_caps
from data import targets

# The names the flags accept. They live here, free of TensorFlow, so that `train_nhf.py` checks
# its flags before TensorFlow loads; `nhf.priors`, `nhf.hamiltonians` and `nhf.networks`
# implement them (tests/test_nhf.py checks that the sets agree).
PRIORS: Tuple[str, ...] = ("normal", "learned_normal", "student_t", "laplace")
KINETIC_KINDS: Tuple[str, ...] = ("learned", "fixed")
ACTIVATION_NAMES: Tuple[str, ...] = ("softplus", "swish", "tanh")
MODES = ("density", "vi")
OBJECTIVES = ("elbo", "iwae")
DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class NHFConfig:
    """One NHF run: target, model, optimisation, evaluation."""

    target: str = field("mixture", "target density (ignored with --data): " + ", ".join(targets.names()))
    dim: int = field(10, "dimension of the mixture_nd target (2-D targets ignore it)")
    mode: str = field("density", "density: fit samples by maximising the ELBO; vi: fit the target's "
                                 "unnormalised log density by reverse KL (banana, funnel, ...)")
    # --- model ---
    num_hamiltonians: int = field(2, "T, the number of learned Hamiltonians in sequence")
    n_steps: int = field(4, "leapfrog steps per Hamiltonian")
    step_size: float = field(0.25, "leapfrog step size eps (integration time per Hamiltonian = n_steps * eps)")
    widths: Tuple[int, ...] = field((64, 64), "hidden widths of the K and V MLPs, e.g. 64,64")
    activation: str = field("softplus", "smooth activation: " + ", ".join(ACTIVATION_NAMES))
    kinetic: str = field("learned", "learned: K = p^T M^-1 p / 2 + MLP(p); fixed: quadratic K with learned "
                                    "diagonal mass, only V learned")
    prior: str = field("normal", "base distribution on (q0, p0): " + ", ".join(PRIORS))
    encoder_widths: Tuple[int, ...] = field((64, 64), "hidden widths of the momentum encoder's mean and "
                                                      "log-variance MLPs")
    affine: bool = field(True, "learned elementwise scale and shift after the flow (initialised from the data)")
    init_scale: float = field(0.1, "output-layer initialisation scale of the energy MLPs")
    dtype: str = field("float32", "float32 or float64")
    # --- optimisation ---
    steps: int = field(3000, "training steps")
    batch_size: int = field(256, "examples per step")
    train_momenta: int = field(1, "momenta per example in the training objective")
    objective: str = field("elbo", "training objective: elbo (the ELBO, averaged over the momenta) or iwae "
                                   "(the importance-weighted bound over --train-momenta momenta; tighter)")
    learning_rate: float = field(1e-2, "Adam learning rate, the peak (cosine-decayed to final_lr_fraction * "
                                       "learning_rate)", aliases=("--lr",))
    final_lr_fraction: float = field(0.05, "final learning rate as a fraction of --learning-rate",
                                     aliases=("--lr-final-fraction",))
    warmup_steps: int = field(100, "linear learning-rate warm-up steps")
    clip_norm: float = field(10.0, "gradient clipping by global norm")
    jit_compile: bool = field(True, "compile each replica's loss and gradient with XLA", aliases=("--jit",))
    # --- data and evaluation ---
    data: Optional[str] = field(None, "fit the points in this file instead of a built-in target: .npy, .npz "
                                      "(one array) or .csv (optional header), rows are points of any dimension")
    test_fraction: float = field(0.1, "--data: fraction of the points held out for the test NLL")
    train_size: int = field(50_000, "training samples drawn from the target (density mode; --data: all but the "
                                    "held-out points)")
    test_size: int = field(10_000, "test samples (a different seed; --data: the held-out points)")
    eval_momenta: int = field(256, "K of the importance-weighted bound used for the reported NLL")
    eval_every: int = field(500, "steps between quick test evaluations (K=32, 2,000 points) for the curve")
    checkpoint_every: int = field(1000, "steps between checkpoints (also the progress-bar epoch length)")
    max_train_minutes: Optional[float] = field(None, "stop training after this many minutes of training steps, "
                                                     "counted over resumes (the wall clock less compilation; none: "
                                                     "run all --steps); a checkpoint is saved at the stop")
    log_every: int = field(50, "steps between TensorBoard scalars")
    max_nonfinite_steps: int = field(20, "consecutive non-finite steps (skipped, never applied) before rolling back "
                                         "to the last checkpoint", aliases=("--max-bad-steps",))
    max_rollbacks: int = field(3, "rollbacks before the run stops with an error")
    rollback_lr_factor: float = field(0.5, "each rollback multiplies the learning rate by this factor, in (0, 1] "
                                           "(1 retries at the same rate); the lowered rate is checkpointed")
    export: bool = field(True, "write a SavedModel with log_prob(q) and sample(n) signatures")
    serve_max_batch: Optional[int] = field(None, "serving cap of the SavedModel: points per log_prob request "
                                                 "(none: what fits in 2 GiB, see nhf.export)")
    serve_max_samples: Optional[int] = field(None, "serving cap of the SavedModel: n per sample request "
                                                   "(none: what fits in 2 GiB)")
    figure: bool = field(True, "write figure.png (target and model densities on a grid, samples, potentials)")
    seed: int = field(0, "seed for data, initial weights and every random draw")

    def validate(self) -> None:
        if self.target not in targets.names():
            raise ValueError(f"unknown --target {self.target!r}; valid targets: {', '.join(targets.names())}")
        one_of(self, "mode", MODES)
        one_of(self, "objective", OBJECTIVES)
        one_of(self, "prior", PRIORS)
        one_of(self, "kinetic", KINETIC_KINDS)
        one_of(self, "activation", ACTIVATION_NAMES)
        one_of(self, "dtype", DTYPES)
        positive(self, "dim", "num_hamiltonians", "n_steps", "step_size", "widths", "encoder_widths", "init_scale",
                 "steps", "batch_size", "train_momenta", "learning_rate", "final_lr_fraction", "clip_norm",
                 "train_size", "test_size", "eval_momenta", "eval_every", "checkpoint_every", "log_every",
                 "max_nonfinite_steps", "max_train_minutes")
        serving_caps(self, "serve_max_batch", "serve_max_samples")
        if self.warmup_steps < 0 or self.max_rollbacks < 0:
            raise ValueError("--warmup-steps and --max-rollbacks must be >= 0")
        if not 0.0 < self.rollback_lr_factor <= 1.0:
            raise ValueError(f"--rollback-lr-factor must be in (0, 1], got {self.rollback_lr_factor}")
        if not self.widths:
            raise ValueError("--widths needs at least one hidden layer")
        if self.data is not None:
            if self.mode != "density":
                raise ValueError("--data fits a density to points: it needs --mode density")
            if not self.affine:
                raise ValueError("--data needs --affine (the layer that standardises the data inside the model)")
            if not 0.0 < self.test_fraction < 1.0:
                raise ValueError(f"--test-fraction must be in (0, 1), got {self.test_fraction}")
        if self.mode == "vi" and targets.get(self.target, self._target_dim()).log_prob is None:
            with_density = [n for n in targets.names() if n == "mixture_nd" or targets.get(n).log_prob is not None]
            raise ValueError(f"--mode vi needs a target with a log density; {self.target!r} has none "
                             f"(valid: {', '.join(with_density)})")

    def _target_dim(self):
        return self.dim if self.target == "mixture_nd" else None


PRESETS: Dict[str, NHFConfig] = {
    # Quick start (the demo): ~2 minutes on 2 CPU cores.
    "small": NHFConfig(test_size=5000),
    # The original repository's design, made stable: two Hamiltonians, K and V 2-128-128-1 softplus,
    # 128-unit encoder, 2 leapfrog steps of 0.1, batch 10.
    "original": NHFConfig(num_hamiltonians=2, n_steps=2, step_size=0.1, widths=(128, 128), encoder_widths=(128,),
                          batch_size=10, learning_rate=1e-2, steps=20_000, eval_every=2000, checkpoint_every=5000),
    # Wider ELBO-trained flow: 2.886 on mixture after 20k steps, ~12 minutes on 2 cores (`quality` does better).
    "paper": NHFConfig(num_hamiltonians=3, n_steps=4, step_size=0.25, widths=(128, 128), steps=20_000,
                       batch_size=256, learning_rate=3e-3, eval_every=2000, checkpoint_every=2000),
    # The best test NLL measured here (bench/results/nhf_quality_preset_quality_*.json): four
    # Hamiltonians of three-layer MLPs integrated for time 2 each, trained on the
    # importance-weighted bound with 8 momenta per point, on 500k samples. A step costs about 4x
    # an ELBO step at the same batch; on mixture it reached in 5k steps what the ELBO reached in
    # 15k, in under half the time.
    "quality": NHFConfig(num_hamiltonians=4, n_steps=4, step_size=0.5, widths=(64, 64, 64), objective="iwae",
                         train_momenta=8, batch_size=128, train_size=500_000, steps=10_000, eval_every=2500,
                         checkpoint_every=2500),
    "large": NHFConfig(num_hamiltonians=4, n_steps=5, step_size=0.2, widths=(128, 128, 128),
                       encoder_widths=(128, 128), steps=40_000, batch_size=512, learning_rate=2e-3, eval_every=4000,
                       checkpoint_every=4000),
}
