"""The Hamiltonian Generative Network (Toth et al., ICLR 2020) on Keras 3 and `common/` integrators."""
from hgn.config import HGNConfig, PRESETS, DEFAULT_PRESET
from hgn.model import HGN
from hgn.networks import EnergyNet, build_decoder, build_encoder, build_energy_nets, build_transformer

__all__ = [
    "DEFAULT_PRESET",
    "EnergyNet",
    "HGN",
    "HGNConfig",
    "PRESETS",
    "build_decoder",
    "build_encoder",
    "build_energy_nets",
    "build_transformer",
]
