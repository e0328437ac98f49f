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
time rescaling, latent R^2), `plots`, `serving` (the SavedModel: `export`, `HGNModule`),
`experiment` (one whole run: `run_experiment`), `cli` (train_hgn.py), `predict` (`python -m
hgn.predict`: a video, PNG folder or test trajectory in, a predicted movie out).
"""
from common.cpu import use_onednn as _use_onednn
from common.lazy import lazy_attributes as _lazy_attributes

_use_onednn()  # oneDNN's kernels where TensorFlow leaves them off, if TensorFlow is not loaded yet

# Names load on first use (PEP 562), so the command lines (`train_hgn.py`, `python -m hgn.predict`)
# check their flags before TensorFlow loads: a typo or `--help` answers in about a second.
_NAMES = {
    "DEFAULT_PRESET": "hgn.config",
    "PRESETS": "hgn.config",
    "HGNConfig": "hgn.config",
    "evaluate": "hgn.evaluation",
    "latent_r2": "hgn.evaluation",
    "valid_prediction_time": "hgn.evaluation",
    "HGNModule": "hgn.serving",
    "export": "hgn.serving",
    "HGN": "hgn.model",
    "EnergyNet": "hgn.networks",
    "build_decoder": "hgn.networks",
    "build_encoder": "hgn.networks",
    "build_energy_nets": "hgn.networks",
    "build_transformer": "hgn.networks",
    "upsample_conv": "hgn.networks",
    "build_model": "hgn.training",
    "checkpoint_manager": "hgn.training",
    "restore_latest": "hgn.training",
    "train": "hgn.training",
}

__all__ = sorted(_NAMES)


__getattr__, __dir__ = _lazy_attributes(__name__, _NAMES)
