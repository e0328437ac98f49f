"""Physics datasets for HGN: simulation, rendering, the TFDS builder and `tf.data` pipelines.

    import data
    arrays = data.generate_arrays("pendulum", 16)                  # in memory, NumPy
    builder = data.prepare("pendulum", data_dir="datasets")         # TFDS, generated if missing
    ds = data.make_dataset("pendulum", "train", data_dir="datasets", window=30, batch_size=16)

Systems: `SYSTEMS`, `get_system(name)` (Hamiltonian, parameters, initial-state sampler,
drawing). Command lines: `python -m data.generate`, `python -m data.show`. Densities for NHF:
`data.targets` (built-in targets) and `data.samples` (`load_samples`: the user's points from a
file; `sample_batches`: the resumable training pipeline over any points).

The NumPy side (systems, simulation, rendering, `generate_arrays`) is imported eagerly and
does not import TensorFlow, so generation worker processes start quickly; the TensorFlow side
(`prepare`, `make_dataset*`, the builder, which registers `hamiltonian_physics` with TFDS on
import) loads on first use of one of its names.
"""
from __future__ import annotations

from common.lazy import lazy_attributes as _lazy_attributes
from data.generation import (
    DEFAULT_DT,
    DEFAULT_FRAMES,
    DEFAULT_IMAGE_SIZE,
    generate_arrays,
)
from data.rendering import render
from data.simulation import inside_canvas, relative_energy_error, simulate
from data.systems import SYSTEMS, PhysicalSystem, get_system

_LAZY = {
    "DEFAULT_DATA_DIR": "data.generation",
    "DEFAULT_TEST": "data.generation",
    "DEFAULT_TRAIN": "data.generation",
    "PAPER_TEST": "data.generation",
    "PAPER_TRAIN": "data.generation",
    "HamiltonianPhysics": "data.builder",
    "PhysicsConfig": "data.builder",
    "config_name": "data.builder",
    "prepare": "data.builder",
    "CorruptDatasetError": "data.pipeline",
    "make_dataset": "data.pipeline",
    "make_dataset_from_arrays": "data.pipeline",
    "verify_split": "data.pipeline",
    "SampleFileError": "data.samples",
    "load_samples": "data.samples",
    "sample_batches": "data.samples",
}

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_DT",
    "DEFAULT_FRAMES",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_TEST",
    "DEFAULT_TRAIN",
    "PAPER_TEST",
    "PAPER_TRAIN",
    "SYSTEMS",
    "CorruptDatasetError",
    "HamiltonianPhysics",
    "PhysicalSystem",
    "PhysicsConfig",
    "SampleFileError",
    "config_name",
    "generate_arrays",
    "get_system",
    "inside_canvas",
    "load_samples",
    "make_dataset",
    "make_dataset_from_arrays",
    "prepare",
    "relative_energy_error",
    "render",
    "sample_batches",
    "simulate",
    "verify_split",
]


__getattr__, __dir__ = _lazy_attributes(__name__, _LAZY)
