"""The Hamiltonian Generative Network (Toth et al., ICLR 2020) on Keras 3 and `common/` integrators.

    from hgn import HGN, PRESETS, build_model, train, evaluate, export

    model = build_model(PRESETS["small"])                # compiled, every variable created
    train(model, dataset, "runs/x", manager=checkpoint_manager(model, "runs/x"))
    out = model.rollout(frames, n_steps=60)              # forward; backward=True or dt < 0 for backward
    out = model.rollout(frames, n_steps=120, dt=0.0625)  # slow motion
    new = model.sample(8, n_steps=30)                    # trajectories from the prior
    export(model, "runs/x/saved_model")                  # encode / rollout(_backward) / decode / sample

Modules: `config` (HGNConfig, presets), `networks`, `model` (HGN: objective, train/test steps),
`training` (fit, checkpoints, resume, non-finite guard), `evaluation` (MSE, VPT, energy drift,
time rescaling, latent R^2), `plots`, `export` (SavedModel), `experiment` (one whole run:
`run_experiment`), `cli` (train_hgn.py), `predict` (`python -m hgn.predict`: a video, PNG folder
or test trajectory in, a predicted movie out).
"""
import sys as _sys

from common.cpu import use_onednn as _use_onednn
from common.runs import import_tensorflow_quietly as _import_tensorflow_quietly

_use_onednn()  # oneDNN's kernels where TensorFlow leaves them off, if TensorFlow is not loaded yet
if "--debug" not in _sys.argv:
    # `python -m hgn.predict` imports this package before its own code runs: without this, every
    # run (and every one-line error) would start with TensorFlow's C++ start-up lines.
    _import_tensorflow_quietly()

from hgn.config import DEFAULT_PRESET, PRESETS, HGNConfig
from hgn.evaluation import evaluate, latent_r2, valid_prediction_time
from hgn.export import HGNModule, export
from hgn.model import HGN
from hgn.networks import EnergyNet, build_decoder, build_encoder, build_energy_nets, build_transformer
from hgn.training import build_model, checkpoint_manager, restore_latest, train

__all__ = [
    "DEFAULT_PRESET",
    "EnergyNet",
    "HGN",
    "HGNConfig",
    "HGNModule",
    "PRESETS",
    "build_decoder",
    "build_encoder",
    "build_energy_nets",
    "build_model",
    "build_transformer",
    "checkpoint_manager",
    "evaluate",
    "export",
    "latent_r2",
    "restore_latest",
    "train",
    "valid_prediction_time",
]
