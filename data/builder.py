"""The TFDS builder `hamiltonian_physics`: one `BuilderConfig` per system and variant.

Config names: the bare system name (`pendulum`, `two_body`, ...) is the default variant
(`DEFAULT_TRAIN` / `DEFAULT_TEST` trajectories of `DEFAULT_FRAMES` frames, dt = 0.125, 32x32
pixels, the system's default colours, no noise, seed 0). Any other variant appends one tag per
non-default setting, in this order:

    _t{frames}  _dt{dt, "." written "p"}  _px{image size}  _c{colours}  _noise{std, "p"}
    _n{train}x{test}  _seed{seed}

e.g. `pendulum_dt0p1_n50000x10000`. `tfds.load("hamiltonian_physics/<config>", data_dir=D)`
works for every prepared config, registered or not (TFDS reads unknown configs from files).

Generation is local (no download), runs over all cores, shows one progress bar per split
(`progress=False`: none; TFDS's own download notices and shuffling bars are left out; see
`common.console` for its warnings), and writes
into TFDS's `incomplete.*` folder, which is renamed only when every split is complete: an
interrupted run leaves nothing that loads as a whole dataset, and re-running starts afresh.
Worker processes simulate, render, compress and serialise (`data.records`), starting before
TensorFlow is imported; the main process only shuffles and writes, with TFDS's own writer, the
same records as TFDS's generic path (`_generate_examples`, kept for reference and tests).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from data.generation import (  # the sizes and folder live there, free of TensorFlow, for the command lines
    DEFAULT_DATA_DIR,
    DEFAULT_DT,
    DEFAULT_FRAMES,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_TEST,
    DEFAULT_TRAIN,
    PAPER_TEST,
    PAPER_TRAIN,
    _generation_tasks,
    _ordered_map,
    generate_chunks,
    validate_generation_args,
)
from data.records import encode_range, entry_order, join_entries
from data.systems import SYSTEMS, get_system

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_TEST",
    "DEFAULT_TRAIN",
    "HamiltonianPhysics",
    "PAPER_TEST",
    "PAPER_TRAIN",
    "PhysicsConfig",
    "builder_for",
    "config_name",
    "make_config",
    "prepare",
    "regenerate_command",
]



@dataclasses.dataclass(eq=False)
class PhysicsConfig(tfds.core.BuilderConfig):
    """One dataset variant: a system and its generation settings."""

    system: str = "pendulum"
    n_train: int = DEFAULT_TRAIN
    n_test: int = DEFAULT_TEST
    n_frames: int = DEFAULT_FRAMES
    dt: float = DEFAULT_DT
    image_size: int = DEFAULT_IMAGE_SIZE
    n_colors: Optional[int] = None
    noise_std: float = 0.0
    seed: int = 0


def _number_tag(value: float) -> str:
    return f"{value:g}".replace(".", "p").replace("-", "m")


def config_name(system: str, *, n_train: int = DEFAULT_TRAIN, n_test: int = DEFAULT_TEST,
                n_frames: int = DEFAULT_FRAMES, dt: float = DEFAULT_DT, image_size: int = DEFAULT_IMAGE_SIZE,
                n_colors: Optional[int] = None, noise_std: float = 0.0, seed: int = 0) -> str:
    """The config name of a variant (see the module docstring)."""
    sys_ = get_system(system)
    colors = sys_.palette_size(n_colors)
    name = system
    if n_frames != DEFAULT_FRAMES:
        name += f"_t{n_frames}"
    if dt != DEFAULT_DT:
        name += f"_dt{_number_tag(dt)}"
    if image_size != DEFAULT_IMAGE_SIZE:
        name += f"_px{image_size}"
    if colors != sys_.default_colors:
        name += f"_c{colors}"
    if noise_std != 0.0:
        name += f"_noise{_number_tag(noise_std)}"
    if (n_train, n_test) != (DEFAULT_TRAIN, DEFAULT_TEST):
        name += f"_n{n_train}x{n_test}"
    if seed != 0:
        name += f"_seed{seed}"
    return name


def make_config(system: str, *, n_train: int = DEFAULT_TRAIN, n_test: int = DEFAULT_TEST,
                n_frames: int = DEFAULT_FRAMES, dt: float = DEFAULT_DT, image_size: int = DEFAULT_IMAGE_SIZE,
                n_colors: Optional[int] = None, noise_std: float = 0.0, seed: int = 0) -> PhysicsConfig:
    """A validated `PhysicsConfig` for a variant.

    Raises:
      ValueError: unknown system (listing the valid ones) or a nonsensical setting, naming it.
    """
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    colors = validate_generation_args(system, n_train, n_frames, dt, image_size, n_colors, noise_std, seed)
    sys_ = get_system(system)
    return PhysicsConfig(
        name=config_name(system, n_train=n_train, n_test=n_test, n_frames=n_frames, dt=dt,
                         image_size=image_size, n_colors=colors, noise_std=noise_std, seed=seed),
        description=(f"{system}: {n_train} train / {n_test} test trajectories of {n_frames} frames "
                     f"{image_size}x{image_size}, dt = {dt:g}, {colors} colour(s), noise std {noise_std:g}, "
                     f"seed {seed}; parameters {sys_.parameters}"),
        system=system, n_train=int(n_train), n_test=int(n_test), n_frames=int(n_frames), dt=float(dt),
        image_size=int(image_size), n_colors=colors, noise_std=float(noise_std), seed=int(seed))


class _LocalDatasetInfo(tfds.core.DatasetInfo):
    """A `DatasetInfo` that never looks on TFDS's GCS bucket: this dataset exists only where it was generated.

    tfds 4.9.10's `initialize_from_bucket` makes a temporary folder before it finds that GCS is
    off and returns without deleting it, so every build of a new variant left an empty
    `/tmp/tmp*tfds` behind.
    """

    def initialize_from_bucket(self) -> None:
        return None


class HamiltonianPhysics(tfds.core.GeneratorBasedBuilder):
    """Rendered trajectories of Hamiltonian systems with their true states (HGN's datasets).

    Each example: `frames` uint8 `[T, H, W, 3]`, `x` and `dx` float64 `[T, 2 d]` (q then p, and
    its time derivative), `params` (the physical parameters), `color_index` int64 `[bodies]`
    and `index` (the example's position in its split's random stream, its key).

    Args:
      num_workers: processes used for generation (None: all cores); the data do not depend on it.
      **kwargs: for `tfds.core.GeneratorBasedBuilder` (`config`, `data_dir`, ...).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "First release: pendulum, mass-spring, double pendulum, two- and three-body; DOP853 "
                 "(rtol 1e-10) or analytic ground truth, energy error < 1e-7, suite-style rendering.",
    }
    BUILDER_CONFIGS = [make_config(system) for system in SYSTEMS]
    DEFAULT_CONFIG_NAME = "pendulum"

    def __init__(self, *, num_workers: Optional[int] = None, progress: bool = True, **kwargs):
        self._num_workers = num_workers
        self._progress = progress
        super().__init__(**kwargs)

    # TFDS announces a "download" of unknown size and its completion; callers say what they do.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        sys_ = get_system(config.system)
        width = 2 * sys_.dim
        example_params = sys_.sample_params(np.random.default_rng(0))
        size = config.image_size
        # Bytes keep float64 exact; a plain float feature would be stored as float32.
        exact = tfds.features.Encoding.BYTES
        # `dataset_info_from_configs` would add nothing: the builder has no metadata files.
        return _LocalDatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "frames": tfds.features.Tensor(shape=(config.n_frames, size, size, 3), dtype=np.uint8,
                                               encoding=tfds.features.Encoding.ZLIB),
                "x": tfds.features.Tensor(shape=(config.n_frames, width), dtype=np.float64, encoding=exact),
                "dx": tfds.features.Tensor(shape=(config.n_frames, width), dtype=np.float64, encoding=exact),
                "params": tfds.features.FeaturesDict({
                    key: tfds.features.Tensor(shape=np.shape(value), dtype=np.float64, encoding=exact)
                    for key, value in example_params.items()
                }),
                "color_index": tfds.features.Tensor(shape=(sys_.n_bodies,), dtype=np.int64),
                "index": tfds.features.Scalar(dtype=np.int64),
            }),
            supervised_keys=None,
            homepage="https://arxiv.org/abs/1909.13789",
            citation="Toth et al., Hamiltonian Generative Networks, ICLR 2020.",
        )

    # False: TFDS's generic path (encoding and serialising in the main process), for comparison.
    _ENCODE_IN_WORKERS = True

    def _generate_splits(self, dl_manager, download_config):
        if (not self._ENCODE_IN_WORKERS or download_config.max_examples_per_split is not None
                or download_config.nondeterministic_order):
            return super()._generate_splits(dl_manager, download_config)
        from tensorflow_datasets.core import splits as splits_lib
        from tensorflow_datasets.core import writer as writer_lib

        config = self.builder_config
        sizes = {"train": (0, config.n_train), "test": (1, config.n_test)}
        tasks = {split: _generation_tasks(config.system, 0, n, stream, config.n_frames, config.dt, config.image_size,
                                          config.n_colors, config.noise_std, config.seed)
                 for split, (stream, n) in sizes.items()}
        split_infos = []
        # The pool starts on every task now. Meanwhile this process imports TensorFlow, which TFDS's
        # writer needs only once the split is complete, and would otherwise import then, idle cores.
        with _ordered_map(encode_range, tasks["train"] + tasks["test"], self._num_workers) as chunks:
            import tensorflow  # noqa: F401
            order = entry_order(self.info.features)
            for split, (_, n) in sizes.items():
                template = self._get_filename_template(split_name=split)
                writer = writer_lib.Writer(
                    serializer=_SerializedExamples(self.info.features.get_serialized_info()),
                    filename_template=template, hash_salt=split, disable_shuffling=self.info.disable_shuffling,
                    example_writer=self._example_writer(), shard_config=download_config.get_shard_config(),
                    ignore_duplicates=download_config.ignore_duplicates)
                index = 0
                with tqdm.tqdm(total=n, desc=f"generating {config.system} {split}", unit=" examples", leave=False,
                               mininterval=1.0, disable=not self._progress) as progress:
                    for _ in tasks[split]:
                        chunk = next(chunks)
                        for entries in chunk:
                            writer.write(index, join_entries(entries, order))
                            index += 1
                        progress.update(len(chunk))
                with _tfds_progress_bars(False):  # its shuffling bar: a few seconds of noise
                    shard_lengths, size = writer.finalize()
                split_infos.append(splits_lib.SplitInfo(name=split, shard_lengths=shard_lengths, num_bytes=size,
                                                        filename_template=template))
        return split_infos

    def _split_generators(self, dl_manager):
        del dl_manager  # Everything is simulated locally.
        config = self.builder_config
        return {
            "train": self._generate_examples(stream=0, n=config.n_train),
            "test": self._generate_examples(stream=1, n=config.n_test),
        }

    def _generate_examples(self, stream: int, n: int):
        config = self.builder_config
        chunks = generate_chunks(config.system, 0, n, stream=stream, n_frames=config.n_frames, dt=config.dt,
                                 image_size=config.image_size, n_colors=config.n_colors,
                                 noise_std=config.noise_std, seed=config.seed, num_workers=self._num_workers)
        index = 0
        for chunk in chunks:
            for j in range(len(chunk["x"])):
                yield index, {
                    "frames": chunk["frames"][j],
                    "x": chunk["x"][j],
                    "dx": chunk["dx"][j],
                    "params": {key: value[j] for key, value in chunk["params"].items()},
                    "color_index": chunk["color_index"][j],
                    "index": index,
                }
                index += 1


class _SerializedExamples:
    """A TFDS writer's serializer for examples serialised already (by `data.records`)."""

    def __init__(self, example_specs):
        self.example_specs = example_specs  # TFDS reads these to describe duplicated keys.

    def serialize_example(self, example: bytes) -> bytes:
        return example


def regenerate_command(config: PhysicsConfig, data_dir: str) -> str:
    """The shell command that rebuilds `config` from scratch in `data_dir`."""
    flags = [f"python -m data.generate {config.system}", f"--data-dir {data_dir}",
             f"--train {config.n_train}", f"--test {config.n_test}"]
    if config.n_frames != DEFAULT_FRAMES:
        flags.append(f"--frames {config.n_frames}")
    if config.dt != DEFAULT_DT:
        flags.append(f"--dt {config.dt:g}")
    if config.image_size != DEFAULT_IMAGE_SIZE:
        flags.append(f"--image-size {config.image_size}")
    if config.n_colors != get_system(config.system).default_colors:
        flags.append(f"--colors {config.n_colors}")
    if config.noise_std:
        flags.append(f"--noise-std {config.noise_std:g}")
    if config.seed:
        flags.append(f"--seed {config.seed}")
    flags.append("--overwrite")
    return " ".join(flags)


def builder_for(config: PhysicsConfig, data_dir: str, num_workers: Optional[int] = None,
                progress: bool = True) -> HamiltonianPhysics:
    """The builder of `config` in `data_dir` (registered configs are passed by name, as TFDS requires)."""
    # A config name determines every setting (see `config_name`), so equal names are equal configs.
    name = config.name if config.name in HamiltonianPhysics.builder_configs else config
    return HamiltonianPhysics(config=name, data_dir=data_dir, num_workers=num_workers, progress=progress)


@contextlib.contextmanager
def _tfds_progress_bars(enable: bool):
    from tensorflow_datasets.core.utils import tqdm_utils

    before = tqdm_utils._active  # noqa: SLF001 - TFDS keeps the switch private; restore what was there
    tfds.display_progress_bar(enable)
    try:
        yield
    finally:
        tfds.display_progress_bar(before)


def prepare(system: str, *, data_dir: Optional[str] = None, n_train: int = DEFAULT_TRAIN,
            n_test: int = DEFAULT_TEST, n_frames: int = DEFAULT_FRAMES, dt: float = DEFAULT_DT,
            image_size: int = DEFAULT_IMAGE_SIZE, n_colors: Optional[int] = None, noise_std: float = 0.0,
            seed: int = 0, num_workers: Optional[int] = None, overwrite: bool = False,
            progress: bool = True) -> HamiltonianPhysics:
    """Makes sure the dataset variant exists in `data_dir` (generating it if not); returns its builder.

    Args:
      system: one of `SYSTEMS`.
      data_dir: TFDS data directory; None for `DEFAULT_DATA_DIR` (the checkout's `datasets/`).
      n_train, n_test: split sizes (the paper: 50,000 / 10,000).
      n_frames, dt, image_size, n_colors, noise_std, seed: as in `generate_arrays`.
      num_workers: generation processes (None: all cores).
      overwrite: delete an existing copy of this variant first.
      progress: show a progress bar per split while generating.

    Returns:
      The prepared `HamiltonianPhysics` builder (`builder.as_dataset(split=...)` reads it).

    Raises:
      ValueError: unknown system or nonsensical settings, naming the argument.
    """
    config = make_config(system, n_train=n_train, n_test=n_test, n_frames=n_frames, dt=dt,
                         image_size=image_size, n_colors=n_colors, noise_std=noise_std, seed=seed)
    data_dir = DEFAULT_DATA_DIR if data_dir is None else os.fspath(data_dir)
    builder = builder_for(config, data_dir, num_workers, progress)
    if overwrite and Path(builder.data_dir).exists():
        shutil.rmtree(builder.data_dir)
        builder = builder_for(config, data_dir, num_workers, progress)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    return builder
