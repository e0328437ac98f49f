"""The TFDS builder and the `tf.data` pipelines."""
import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import data
from data import builder as data_builder

TINY = dict(n_train=6, n_test=3, n_frames=8, image_size=16)


def _shards(builder):
    return sorted(Path(builder.data_dir).glob("*.tfrecord*"))


def _digest(builder):
    h = hashlib.sha256()
    for path in _shards(builder):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = data.prepare("two_body", data_dir=str(data_dir), num_workers=1, **TINY)
    return builder, str(data_dir)


def test_builder_is_registered_with_a_config_per_system():
    assert data.HamiltonianPhysics.name == "hamiltonian_physics"  # importing the builder registers it
    assert "hamiltonian_physics" in tfds.list_builders(with_community_datasets=False)
    names = [c.name for c in data.HamiltonianPhysics.BUILDER_CONFIGS]
    assert names == list(data.SYSTEMS)
    assert str(data.HamiltonianPhysics.VERSION) in data.HamiltonianPhysics.RELEASE_NOTES
    assert data.config_name("pendulum") == "pendulum"
    assert data.config_name("pendulum", dt=0.1, n_train=50000, n_test=10000) == "pendulum_dt0p1_n50000x10000"


def test_tiny_build_reloads_with_tfds_load_and_matches_generate_arrays(tiny):
    builder, data_dir = tiny
    assert builder.builder_config.name == "two_body_t8_px16_n6x3"
    train = tfds.load(f"hamiltonian_physics/{builder.builder_config.name}", data_dir=data_dir, split="train")
    examples = sorted(tfds.as_numpy(train), key=lambda e: e["index"])
    assert len(examples) == 6 and builder.info.splits["test"].num_examples == 3
    arrays = data.generate_arrays("two_body", 6, n_frames=8, image_size=16)
    for i, example in enumerate(examples):
        assert example["index"] == i
        assert example["frames"].shape == (8, 16, 16, 3) and example["frames"].dtype == np.uint8
        np.testing.assert_array_equal(example["frames"].astype(np.float32) / np.float32(255), arrays["images"][i])
        np.testing.assert_array_equal(example["x"], arrays["x"][i])  # float64 stored exactly
        np.testing.assert_array_equal(example["dx"], arrays["dx"][i])
        np.testing.assert_array_equal(example["params"]["m"], arrays["params"]["m"][i])


@pytest.mark.parametrize("path", ["workers", "generic"])
def test_interrupted_generation_leaves_only_an_incomplete_folder(tmp_path, monkeypatch, path):
    def broken(*args, **kwargs):
        yield from ()
        raise KeyboardInterrupt

    def broken_join(*args, **kwargs):
        raise KeyboardInterrupt

    if path == "workers":  # interrupted in the main process, while the pool is running
        monkeypatch.setattr("data.builder.join_entries", broken_join)
    else:
        monkeypatch.setattr(data.HamiltonianPhysics, "_ENCODE_IN_WORKERS", False)
        monkeypatch.setattr("data.builder.generate_chunks", broken)
    with pytest.raises(KeyboardInterrupt):
        data.prepare("pendulum", data_dir=str(tmp_path), **TINY)
    assert not list(tmp_path.glob("hamiltonian_physics/*/1.0.0/dataset_info.json"))
    # TFDS finds no finished variant of that name in the folder ...
    name = "hamiltonian_physics/pendulum_t8_px16_n6x3"
    with pytest.raises(ValueError, match="BuilderConfig pendulum_t8_px16_n6x3 not found"):
        tfds.builder(name, data_dir=str(tmp_path)).as_dataset(split="train")
    # ... until a run that is not interrupted generates it: then the same call reads it.
    monkeypatch.undo()
    data.prepare("pendulum", data_dir=str(tmp_path), progress=False, **TINY)
    assert len(list(tfds.builder(name, data_dir=str(tmp_path)).as_dataset(split="train"))) == TINY["n_train"]


def test_a_new_variant_leaves_no_temporary_folder(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    builder = data_builder.builder_for(data_builder.make_config("pendulum", **TINY), str(tmp_path / "d"), 1)
    assert builder.info.features["frames"].shape == (8, 16, 16, 3)
    assert not list(scratch.iterdir())  # tfds's GCS lookup used to leave an empty tmp*tfds here


def test_same_seed_same_bytes_different_seed_different_bytes(tiny, tmp_path):
    builder, _ = tiny
    again = data.prepare("two_body", data_dir=str(tmp_path / "a"), **TINY)
    other = data.prepare("two_body", data_dir=str(tmp_path / "b"), seed=1, **TINY)
    assert _shards(again) and _digest(again) == _digest(builder)
    assert _digest(other) != _digest(builder)


@pytest.mark.parametrize("system, settings", [
    ("pendulum", dict(n_train=130, n_test=2, n_frames=4, image_size=8)),  # two chunks, two workers
    ("two_body", dict(TINY, noise_std=0.1)),
    ("three_body", dict(TINY, n_colors=4)),
])
def test_worker_records_equal_the_generic_tfds_path(system, settings, tmp_path, monkeypatch):
    # Workers compress and serialise (data.records); TFDS's generic path does both in this process.
    fast = data.prepare(system, data_dir=str(tmp_path / "workers"), num_workers=2, **settings)
    monkeypatch.setattr(data.HamiltonianPhysics, "_ENCODE_IN_WORKERS", False)
    generic = data.prepare(system, data_dir=str(tmp_path / "generic"), num_workers=2, **settings)
    assert _shards(fast) and _digest(fast) == _digest(generic)
    for split in ("train", "test"):
        assert fast.info.splits[split].shard_lengths == generic.info.splits[split].shard_lengths
        assert fast.info.splits[split].num_bytes == generic.info.splits[split].num_bytes


def _arrays():
    return data.generate_arrays("pendulum", 5, n_frames=10, image_size=8, seed=2)


def test_pipeline_from_arrays_shapes_and_determinism():
    arrays = _arrays()
    make = lambda seed: list(data.make_dataset_from_arrays(arrays, window=4, batch_size=2, seed=seed))
    a, b, c = make(0), make(0), make(1)
    assert len(a) == 2  # 5 trajectories, batches of 2, remainder dropped
    assert a[0]["frames"].shape == (2, 4, 8, 8, 3) and a[0]["frames"].dtype == tf.float32
    assert a[0]["x"].shape == (2, 4, 2) and a[0]["x"].dtype == tf.float32
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u["frames"], v["frames"])
        np.testing.assert_array_equal(u["x"], v["x"])
    assert any(not np.array_equal(u["x"], v["x"]) for u, v in zip(a, c))


def test_windows_come_from_the_trajectories():
    arrays = _arrays()
    batch = next(iter(data.make_dataset_from_arrays(arrays, window=4, batch_size=5, shuffle=False)))
    x = arrays["x"].astype(np.float32)
    for i in range(5):
        starts = [s for s in range(7) if np.array_equal(x[i, s:s + 4], batch["x"][i])]
        assert starts, f"window {i} is not a slice of trajectory {i}"
        np.testing.assert_array_equal(batch["frames"][i], arrays["images"][i, starts[0]:starts[0] + 4])


def test_reversed_windows_are_exact_reverses_with_momenta_negated():
    arrays = _arrays()
    kwargs = dict(window=6, batch_size=5, seed=4, repeat=True)
    forward = data.make_dataset_from_arrays(arrays, **kwargs).take(3)
    backward = data.make_dataset_from_arrays(arrays, reverse=True, **kwargs).take(3)
    for f, b in zip(forward, backward):
        np.testing.assert_array_equal(b["frames"].numpy(), f["frames"].numpy()[:, ::-1])
        q, p = np.split(f["x"].numpy()[:, ::-1], 2, axis=-1)
        np.testing.assert_array_equal(b["x"].numpy(), np.concatenate([q, -p], axis=-1))


def test_make_dataset_over_tfds(tiny):
    builder, data_dir = tiny
    ds = data.make_dataset("two_body", "train", data_dir=data_dir, window=5, batch_size=3, builder=builder)
    batches = list(ds)
    assert len(batches) == 2
    assert batches[0]["frames"].shape == (3, 5, 16, 16, 3) and batches[0]["x"].shape == (3, 5, 8)
    assert 0.0 <= float(tf.reduce_min(batches[0]["frames"])) and float(tf.reduce_max(batches[0]["frames"])) <= 1.0
    again = list(data.make_dataset("two_body", "train", data_dir=data_dir, window=5, batch_size=3,
                                   builder=builder))
    for u, v in zip(batches, again):
        np.testing.assert_array_equal(u["x"], v["x"])


def test_pipeline_bad_arguments():
    arrays = _arrays()
    with pytest.raises(ValueError, match="^window"):
        data.make_dataset_from_arrays(arrays, window=11, batch_size=1)
    with pytest.raises(ValueError, match="^window"):
        data.make_dataset_from_arrays(arrays, window=0, batch_size=1)
    with pytest.raises(ValueError, match="^batch_size"):
        data.make_dataset_from_arrays(arrays, window=2, batch_size=0)
    with pytest.raises(ValueError, match="valid systems"):
        data.prepare("spinning_top", data_dir="/nonexistent")
    with pytest.raises(ValueError, match="^n_frames"):
        data.prepare("pendulum", data_dir="/nonexistent", n_frames=0)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_file_gives_a_clear_error_with_the_regenerate_command(tiny, tmp_path, damage):
    import shutil
    builder, data_dir = tiny
    copy_dir = tmp_path / "copy"
    shutil.copytree(data_dir, copy_dir)
    damaged = data.prepare("two_body", data_dir=str(copy_dir), **TINY)
    shard = [path for path in _shards(damaged) if "-train." in path.name][0]
    raw = bytearray(shard.read_bytes())
    if damage == "truncate":
        shard.write_bytes(bytes(raw[: len(raw) * 2 // 3]))
    else:
        raw[len(raw) // 2] ^= 0xFF
        shard.write_bytes(bytes(raw))
    with pytest.raises(data.CorruptDatasetError, match="python -m data.generate two_body") as error:
        list(data.make_dataset("two_body", "train", data_dir=str(copy_dir), window=5, batch_size=1, **TINY))
    assert "--overwrite" in str(error.value) and str(shard) in str(error.value)
