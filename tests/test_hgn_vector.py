"""The vector-latent HGN (DeepMind's HGN++ layout), the compute-dtype choice and the learning-rate schedule.

Tiny configs on a synthetic moving-disk movie; the physics checks strengthen the freshly
initialised Hamiltonian so that the latent state actually moves.
"""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from common import cpu
from hgn import HGN, PRESETS, build_model, export, networks
from hgn import experiment
from hgn import training
from movies import disk_movies, reconstruction_before_and_after_fit

ROOT = Path(__file__).resolve().parents[1]


def _vector(**overrides):
    base = dict(latent="vector", hamiltonian_widths=(16, 16), hamiltonian_activation="swish", objective="beta")
    return dataclasses.replace(PRESETS["tiny"], **{**base, **overrides})


@pytest.fixture(scope="module")
def vector_model():
    keras.utils.set_random_seed(11)
    m = HGN(_vector())
    m.compile(optimizer=keras.optimizers.Adam(3e-3))
    return m.build_all()


def test_vector_latent_shapes(vector_model):
    c = vector_model.config
    assert vector_model.transformer is None
    assert vector_model.latent_shape == (2 * c.state_channels,)  # z is (q, p) itself
    out = vector_model.rollout(tf.constant(disk_movies(2, c.input_frames)), 7)
    assert out["frames"].shape == (2, 8, 32, 32, 3)
    assert out["q"].shape == (2, 8, c.state_channels) and out["p"].shape == (2, 8, c.state_channels)
    assert out["energy"].shape == (2, 8)
    assert all(isinstance(net, networks.MLPEnergyNet) for net in vector_model.energy_nets.values())


def test_vector_forward_and_backward_rollouts_invert_each_other():
    keras.utils.set_random_seed(12)
    m = HGN(_vector(hamiltonian_widths=(32, 32)))
    m.compile(optimizer=keras.optimizers.Adam())
    m.build_all()
    for net in m.energy_nets.values():  # a random-init H is nearly flat: make the dynamics move O(1)
        net.out.kernel.assign(net.out.kernel * 20.0)
    state = m.infer(tf.constant(disk_movies(3, m.config.input_frames, seed=2)))[0]
    forward = m.integrate(state, 20, 0.125)
    moved = float(tf.reduce_max(tf.abs(forward.q[-1] - state.q)))
    end = type(state)(forward.q[-1], forward.p[-1])
    back = m.integrate(end, 20, -0.125)
    err = max(float(tf.reduce_max(tf.abs(back.q[-1] - state.q))), float(tf.reduce_max(tf.abs(back.p[-1] - state.p))))
    assert moved > 0.05, moved  # the check is not vacuous
    # Leapfrog on a separable H is symmetric: 20 steps back undo 20 steps forward up to float32 round-off.
    assert err < 1e-4 * max(1.0, moved), (err, moved)
    # Euler is not time-symmetric: the same check fails for it (the test can fail).
    euler = HGN(_vector(hamiltonian_widths=(32, 32), integrator="euler"))
    euler.compile(optimizer=keras.optimizers.Adam())
    euler.build_all()
    euler.set_weights(m.get_weights())
    f = euler.integrate(state, 20, 0.125)
    b = euler.integrate(type(state)(f.q[-1], f.p[-1]), 20, -0.125)
    assert float(tf.reduce_max(tf.abs(b.q[-1] - state.q))) > 100 * err


@pytest.mark.parametrize("overrides", [
    {},                                                                # the spatial paper layout, tiny
    {"hamiltonian": "joint", "encoder": "full_res", "decoder": "residual",
     "encoder_widths": (8, 8, 8), "transformer_widths": (8, 8, 8), "transformer_strides": (2, 2, 2),
     "objective": "beta"},              # the pytorch layout, tiny
    {"latent": "vector", "hamiltonian_widths": (16, 16), "hamiltonian_activation": "swish", "objective": "beta",
     "training_mode": "forward_backward", "warmup_steps": 5, "decay": "cosine"},   # the recipe's layout
    {"latent": "vector", "hamiltonian": "joint", "hamiltonian_widths": (16, 16), "objective": "geco"},
    {"latent": "vector", "hamiltonian_widths": (16, 16), "objective": "beta", "training_mode": "split",
     "curriculum_steps": 20, "curriculum_start": 4},
    {"latent": "vector", "hamiltonian_widths": (16, 16), "objective": "beta", "training_mode": "split",
     "curriculum_steps": 20, "curriculum_start": 4, "decoded_frames": 3},  # the recipe decoding a subset
    {"latent": "vector", "hamiltonian_widths": (16, 16), "objective": "beta", "training_mode": "split",
     "decoder": "subpixel"},                                                       # the sub-pixel decoder
    {"latent": "vector", "hamiltonian": "fixed_kinetic", "hamiltonian_widths": (16, 16), "objective": "beta",
     "training_mode": "split"},                                          # K(p) = |p|^2 / 2, learned V(q)
])
def test_every_variant_trains_and_its_loss_falls(overrides):
    config = dataclasses.replace(PRESETS["tiny"], steps=40, learning_rate=3e-3, **overrides)
    before, after = reconstruction_before_and_after_fit(build_model(config), steps=40)
    # 40 Adam steps on a single-disk movie: the per-pixel MSE drops by at least a quarter.
    assert after < 0.75 * before, (before, after)


@pytest.mark.parametrize("latent", ["vector", "spatial"])
def test_fixed_kinetic_energy_is_half_the_squared_momentum(latent):
    keras.utils.set_random_seed(5)
    m = HGN(_vector(latent=latent, hamiltonian="fixed_kinetic"))
    assert set(m.energy_nets) == {"potential"}  # only V(q) is learned
    state = m.infer(tf.constant(disk_movies(3, m.config.input_frames, seed=4)))[0]
    q, p = state.q, state.p + 0.3  # a momentum away from zero
    half_p2 = 0.5 * tf.reduce_sum(tf.square(p), axis=list(range(1, p.shape.rank)))
    np.testing.assert_allclose(m.hamiltonian(q, p).numpy(), (half_p2 + m.energy_nets["potential"](q)).numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(m.hamiltonian.dh_dp(q, p).numpy(), p.numpy(), rtol=1e-6)
    # The learned kinetic energy of the separable form is another function of p (the check can fail).
    learned = HGN(_vector(latent=latent))
    assert float(tf.reduce_max(tf.abs(learned.hamiltonian.dh_dp(q, p) - p))) > 1e-3
    # The leapfrog stays time-reversible: 10 steps back undo 10 steps forward.
    forward = m.integrate(type(state)(q, p), 10, 0.125)
    back = m.integrate(type(state)(forward.q[-1], forward.p[-1]), 10, -0.125)
    np.testing.assert_allclose(back.q[-1].numpy(), q.numpy(), atol=1e-4)
    np.testing.assert_allclose(back.p[-1].numpy(), p.numpy(), atol=1e-4)


def _conv_multiply_adds(decoder: keras.Sequential, q: tf.Tensor) -> list:
    """`(output side, multiply-adds per frame)` of each Conv2D of `decoder` on `q`."""
    convs, x = [], q
    for layer in decoder.layers:
        y = layer(x)
        if isinstance(layer, keras.layers.Conv2D):
            k = layer.kernel.shape
            convs.append((int(y.shape[1]), int(y.shape[1] * y.shape[2] * k[0] * k[1] * k[2] * k[3])))
        x = y
    return convs


def test_subpixel_decoder_has_no_full_resolution_conv_and_draws_every_pixel():
    keras.utils.set_random_seed(21)
    quick = PRESETS["quick"]
    q = tf.random.normal([2, quick.state_channels])
    upsample = networks.build_decoder(dataclasses.replace(quick, decoder="upsample"))
    subpixel = networks.build_decoder(dataclasses.replace(quick, decoder="subpixel"))
    frames = subpixel(q)
    assert frames.shape == (2, 32, 32, 3)
    assert float(tf.reduce_min(frames)) > 0 and float(tf.reduce_max(frames)) < 1
    up, sub = _conv_multiply_adds(upsample, q), _conv_multiply_adds(subpixel, q)
    assert max(side for side, _ in sub) == 16 and max(side for side, _ in up) == 32
    # At the recipe's size (width 32, depth 1) the full-resolution convs are 79% of the upsample
    # decoder's 12.9 M multiply-adds per frame; the sub-pixel decoder does 3.5 M.
    assert sum(m for _, m in sub) < 0.3 * sum(m for _, m in up), (sub, up)
    # Depth-to-space gives each of the four pixels of a 2x2 block its own channels: the frame is
    # not a half-resolution image upsampled (which would make the pixels of a block equal).
    assert float(tf.reduce_max(tf.abs(frames[:, 0::2, 0::2] - frames[:, 1::2, 1::2]))) > 1e-3
    nearest = keras.layers.UpSampling2D(2)(tf.random.uniform([2, 16, 16, 3]))  # what the check rejects
    assert float(tf.reduce_max(tf.abs(nearest[:, 0::2, 0::2] - nearest[:, 1::2, 1::2]))) == 0


_LOADER = """
import sys
import numpy as np
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
frames = tf.constant(np.load(sys.argv[2])["frames"])
out = m.rollout(frames, tf.constant(6), tf.constant(0.125))
assert not any(n.split(".")[0] in ("hgn", "common", "data") for n in sys.modules), "project imported"
np.savez(sys.argv[3], frames=out["frames"].numpy(), q=out["q"].numpy())
"""


@pytest.mark.parametrize("decoder,hamiltonian", [("upsample", "separable"),
                                                 ("subpixel", "fixed_kinetic")])  # the second: the default's layout
def test_vector_saved_model_loads_in_a_fresh_process(vector_model, decoder, hamiltonian, tmp_path):
    if (decoder, hamiltonian) != (vector_model.config.decoder, vector_model.config.hamiltonian):
        keras.utils.set_random_seed(13)
        vector_model = HGN(dataclasses.replace(vector_model.config, decoder=decoder, hamiltonian=hamiltonian))
        vector_model.compile(optimizer=keras.optimizers.Adam())
        vector_model.build_all()
    path = export(vector_model, tmp_path / "saved_model")
    frames = disk_movies(2, vector_model.config.input_frames, seed=5)
    np.savez(tmp_path / "in.npz", frames=frames)
    (tmp_path / "load.py").write_text(_LOADER)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH="")
    proc = subprocess.run([sys.executable, str(tmp_path / "load.py"), str(path), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    expected = vector_model.rollout(tf.constant(frames), 6, dt=0.125)
    # Same graph and weights in another process: equal up to float32 round-off.
    np.testing.assert_allclose(out["frames"], expected["frames"].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["q"], expected["q"].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate(name):
    PRESETS[name].validate()


def test_vector_config_is_validated():
    with pytest.raises(ValueError, match="--latent"):
        _vector(latent="grid").validate()
    with pytest.raises(ValueError, match="--hamiltonian-activation"):
        _vector(hamiltonian_activation="relu").validate()  # ReLU H never trains (zero second derivatives)
    with pytest.raises(ValueError, match="--decay"):
        _vector(decay="step").validate()


@pytest.mark.parametrize("flags, expected", [
    ("fpu avx avx2 fma avx512f avx512_bf16", "bfloat16"),
    ("fpu avx avx2 fma amx_tile amx_bf16", "bfloat16"),
    ("fpu avx avx2 fma", "float32"),   # an AVX2-only CPU (e.g. the AMD EPYC measured): bfloat16 is emulated
    ("", "float32"),
])
def test_auto_compute_dtype_follows_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: {"flags": flags, "model name": "test CPU"})
    assert cpu.resolve_compute_dtype("auto") == expected
    assert cpu.resolve_compute_dtype("float32") == "float32"  # an explicit choice is kept
    assert (networks._policy(_vector(compute_dtype="auto")) == "mixed_bfloat16") == (expected == "bfloat16")
    assert cpu.describe()["native_bfloat16"] == (expected == "bfloat16")


def test_forced_bfloat16_on_a_cpu_without_it_warns(monkeypatch, capsys):
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: {"flags": "avx avx2 fma"})
    said = []
    assert experiment.announce_compute_dtype(_vector(compute_dtype="bfloat16"), said.append) == "bfloat16"
    assert "emulated" in capsys.readouterr().err
    assert experiment.announce_compute_dtype(_vector(compute_dtype="auto"), said.append) == "float32"
    assert capsys.readouterr().err == ""
    assert said[-1] == "compute dtype: float32 (auto: the CPU has no native bfloat16)"


def test_warmup_cosine_schedule_and_rollback_scale():
    config = _vector(learning_rate=1e-3, warmup_steps=10, decay="cosine", final_lr_fraction=0.1, steps=110)
    model = build_model(config)
    schedule = model.optimizer._learning_rate
    lr = [float(schedule(step)) for step in (0, 5, 10, 60, 110, 500)]
    # Linear warm-up from 0, peak at step 10, cosine half-way at 60, floor of 10% from step 110 on.
    np.testing.assert_allclose(lr, [0.0, 5e-4, 1e-3, 5.5e-4, 1e-4, 1e-4], rtol=1e-5, atol=1e-9)
    assert training.lower_learning_rate(model, 0.5) == pytest.approx(0.0)  # still at step 0
    np.testing.assert_allclose(float(schedule(10)), 5e-4, rtol=1e-5)
    assert any(v is model.lr_scale for v in training._variables_by_path(model).values())  # checkpointed
    assert build_model(_vector()).lr_scale is None  # constant-rate runs keep their checkpoint layout


def test_time_paced_schedule_follows_the_budget_or_the_step_cap_whichever_is_ahead():
    config = _vector(learning_rate=1e-3, warmup_steps=10, decay="cosine", final_lr_fraction=0.1, steps=110,
                     curriculum_steps=55, curriculum_start=4, pace="time", max_train_minutes=2.0)
    model = build_model(config)
    schedule = model.optimizer._learning_rate

    def at(seconds, step=0):
        model.train_seconds.assign(seconds)
        model.train_steps.assign(step)
        return float(schedule(0)), int(model.curriculum_window())  # the optimizer's own step is ignored

    # Half the budget (60 of 120 s) at step 0 is schedule step 55: the curriculum's end (window 6),
    # the cosine at (55 - 10) / 100 of its decay; the whole budget is the floor.
    assert at(0.0) == (0.0, 4)
    lr, window = at(60.0)
    np.testing.assert_allclose(lr, 1e-4 + 9e-4 * 0.5 * (1 + np.cos(np.pi * 0.45)), rtol=1e-5)
    assert window == 6
    np.testing.assert_allclose(at(120.0)[0], 1e-4, rtol=1e-5)
    np.testing.assert_allclose(at(300.0)[0], 1e-4, rtol=1e-5)
    # A CPU fast enough to run ahead of the clock follows the step count (--steps is the cap).
    np.testing.assert_allclose(at(1.0, step=60)[0], 5.5e-4, rtol=1e-5)
    assert any(v is model.train_seconds for v in training._variables_by_path(model).values())  # checkpointed
    assert build_model(_vector()).train_seconds is None  # step-paced runs keep their checkpoint layout
    with pytest.raises(ValueError, match="--pace time needs --max-train-minutes"):
        _vector(pace="time").validate()
    with pytest.raises(ValueError, match="valid: steps, time"):
        _vector(pace="clock").validate()


def test_cli_records_compute_dtype_curve_and_mean_frame_baseline(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    args = ["--dataset", "pendulum", "--preset", "tiny", "--latent", "vector", "--hamiltonian-widths", "8,8",
            "--steps", "12", "--checkpoint-every", "6", "--curve-every-minutes", "0.001", "--curve-trajectories", "4",
            "--run-dir", str(run), "--data-dir", str(tmp_path / "data"), "--verbose", "1", "--no-export"]
    proc = subprocess.run([sys.executable, str(ROOT / "train_hgn.py"), *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compute dtype: float32" in proc.stdout
    assert json.loads((run / "config.json").read_text())["compute_dtype"] == "float32"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["cpu"]["model"] and "flags" in metrics["cpu"]
    # The mean-frame baseline is that of the test trajectories the run scored (float64 mean: only
    # round-off differs); the train split's, a different set of pendulums, is not.
    import data
    from common import config as config_lib
    from hgn import evaluation
    from hgn.config import HGNConfig

    config = config_lib.from_dict(HGNConfig, json.loads((run / "config.json").read_text())["config"])
    builder = data.prepare("pendulum", data_dir=tmp_path / "data", n_train=config.n_train, n_test=config.n_test,
                           progress=False, **config.data_variant())
    baseline = {split: evaluation.mean_frame_mse(evaluation.load_split(builder, split, config,
                                                                       config.eval_trajectories)["frames"])
                for split in ("test", "train")}
    np.testing.assert_allclose(metrics["test_mean_frame_mse_x1e4"], baseline["test"], rtol=1e-6)
    assert abs(baseline["train"] - baseline["test"]) > 1e-3 * baseline["test"], baseline
    curve = json.loads((run / "test_curve.json").read_text())
    assert curve[-1]["step"] == 12 and len(curve) >= 2
    seconds = [p["train_seconds"] for p in curve]
    assert seconds == sorted(seconds)
    assert all(p["test_mse_x1e4_forward"] > 0 and p["test_mse_x1e4_backward"] > 0 for p in curve)
    assert (run / "rollout_forward.png").is_file() and not (run / "saved_model").exists()  # --no-export


def _split_model(vector_model, **overrides):
    split = HGN(dataclasses.replace(vector_model.config, training_mode="split", **overrides))
    split.compile(optimizer=keras.optimizers.Adam())
    split.build_all()
    split.set_weights(vector_model.get_weights())
    return split


def test_split_mode_is_the_mean_of_a_forward_and_a_backward_half(vector_model):
    split = _split_model(vector_model)
    c = split.config
    frames = tf.constant(disk_movies(4, c.window, seed=9))
    got = split.compute_losses(frames)["reconstruction"]
    # The reference goes through the public rollouts, whose backward inference reverses the frames
    # itself: the split objective rolls both halves together, with a sign of time per example.
    n = c.window - 1
    forward = tf.reduce_mean(tf.square(vector_model.rollout(frames[:2], n)["frames"] - frames[:2]))
    backward = tf.reduce_mean(tf.square(vector_model.rollout(frames[2:], n, backward=True)["frames"]
                                        - frames[2:, ::-1]))
    np.testing.assert_allclose(float(got), (float(forward) + float(backward)) / 2, rtol=1e-6)
    # Not the forward-only or backward-only value on the whole batch: the check can tell them apart.
    whole_forward = tf.reduce_mean(tf.square(vector_model.rollout(frames, n)["frames"] - frames))
    assert abs(float(whole_forward) - float(got)) > 1e-7
    with pytest.raises(ValueError, match="--batch-size >= 2"):
        dataclasses.replace(c, batch_size=1).validate()


def test_split_training_step_equals_a_forward_and_a_backward_pass(vector_model):
    # One combined pass (one encoder call, one rollout with per-example signs of time, one decoder
    # call) gives the loss, logged terms and gradients of a separate forward pass over the first
    # half and backward pass over the second, each half with its own direction's posterior noise.
    # An odd batch: halves of 2 and 3, weighted as two means.
    split = _split_model(vector_model)
    c = split.config
    frames = tf.constant(disk_movies(5, c.window, seed=31))
    noise = tf.random.stateless_normal([5, 2, *split.latent_shape], seed=[3, 4])

    def loss_and_grads(fn):
        with tf.GradientTape() as tape:
            terms = fn()
            loss = terms["reconstruction"] + c.beta * terms["kl"]
        return loss, terms, tape.gradient(loss, split.network_variables)

    def separate(noise):
        f = split._window_terms(frames[:2], 1.0, True, noise=noise[:2, 0])
        b = split._window_terms(frames[2:, ::-1], -1.0, True, noise=noise[2:, 1])
        return {name: (tf.reduce_mean(x) + tf.reduce_mean(y)) / 2.0
                for name, x, y in zip(("reconstruction", "kl", "energy_drift"), f, b)}

    loss, terms, grads = loss_and_grads(lambda: split.compute_losses(frames, training=True, noise=noise))
    ref_loss, ref_terms, ref_grads = loss_and_grads(lambda: separate(noise))
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
    for name in ref_terms:
        np.testing.assert_allclose(float(terms[name]), float(ref_terms[name]), rtol=1e-5, err_msg=name)
    for v, g, ref in zip(split.network_variables, grads, ref_grads):
        np.testing.assert_allclose(g.numpy(), ref.numpy(), rtol=1e-4, atol=1e-8, err_msg=v.path)
    # The check can fail: the halves' noise swapped between directions samples other states, and
    # the reconstruction moves by more than a hundred times the tolerance above.
    swapped = float(separate(noise[:, ::-1])["reconstruction"])
    assert abs(swapped - float(ref_terms["reconstruction"])) > 1e-3 * float(ref_terms["reconstruction"])


def test_curriculum_window_grows_with_the_step_counter():
    config = _vector(window=10, data_frames=12, curriculum_steps=8, curriculum_start=4)
    model = build_model(config)
    seen = []
    for step in (0, 2, 4, 8, 100):
        model.train_steps.assign(step)
        seen.append(int(model.curriculum_window()))
    assert seen == [4, 6, 7, 10, 10]
    with pytest.raises(ValueError, match="--curriculum-start"):
        _vector(curriculum_steps=5, curriculum_start=2).validate()  # not more than the input frames


def test_decoded_frames_score_the_drawn_frames_of_each_example(vector_model):
    # The subset MSE is the mean of the per-frame MSEs of the frames with each example's smallest
    # keys (different frames per example), so every frame is equally likely: unbiased.
    c = dataclasses.replace(vector_model.config, decoded_frames=2)
    subset = HGN(c)
    subset.compile(optimizer=keras.optimizers.Adam())
    subset.build_all()
    subset.set_weights(vector_model.get_weights())
    frames = tf.constant(disk_movies(3, c.window, seed=21))
    state, _, _ = subset.infer(frames)
    q = subset.integrate(state, c.window - 1, c.dt).q
    per_frame = tf.reduce_mean(tf.square(frames - subset.decode_trajectory(q)), axis=[2, 3, 4]).numpy()  # [B, T]
    keys = tf.constant([[0.9, 0.1, 0.8, 0.7, 0.2, 0.6], [0.1, 0.9, 0.8, 0.7, 0.6, 0.2],
                        [0.5, 0.4, 0.3, 0.2, 0.1, 0.0]])
    drawn = [[1, 4], [0, 5], [5, 4]]
    got = float(tf.reduce_mean(subset._subset_mse(q, frames, keys)))
    np.testing.assert_allclose(got, np.mean([per_frame[b, t] for b, d in enumerate(drawn) for t in d]), rtol=1e-5)
    # The check tells the frames apart: the same frames for every example score differently, by
    # more than ten times its tolerance (an untrained decoder's frames differ little).
    assert abs(got - float(np.mean(per_frame[:, [1, 4]]))) > 1e-4 * got
    # Decoding every frame in a random order is the whole window's MSE.
    whole = dataclasses.replace(c, decoded_frames=c.window)
    all_frames = HGN(whole)
    all_frames.compile(optimizer=keras.optimizers.Adam())
    all_frames.build_all()
    all_frames.set_weights(vector_model.get_weights())
    np.testing.assert_allclose(float(tf.reduce_mean(all_frames._subset_mse(q, frames))), per_frame.mean(),
                               rtol=1e-5)
    # Evaluation (training=False) always scores the whole window.
    np.testing.assert_allclose(float(subset.compute_losses(frames)["reconstruction"]), per_frame.mean(), rtol=1e-5)


def test_decoded_frames_keys_travel_with_the_batch_and_are_validated():
    config = _vector(decoded_frames=2)
    model = build_model(config)
    frames = np.zeros([8, config.window, config.image_size, config.image_size, 3], np.float32)
    batches = training.with_posterior_noise(tf.data.Dataset.from_tensor_slices(frames).batch(4), model)
    first, again = list(batches), list(batches)
    assert first[0]["keys"].shape == (4, 2, config.window)
    np.testing.assert_array_equal(first[1]["keys"], again[1]["keys"])  # batch i: the same draws on a resume
    assert not np.array_equal(first[0]["keys"], first[1]["keys"])
    plain = training.with_posterior_noise(tf.data.Dataset.from_tensor_slices(frames).batch(4), build_model(_vector()))
    assert "keys" not in next(iter(plain))
    with pytest.raises(ValueError, match="--decoded-frames"):
        _vector(decoded_frames=config.window + 1).validate()
    with pytest.raises(ValueError, match="--decoded-frames"):
        _vector(decoded_frames=-1).validate()
    with pytest.raises(ValueError, match="--decoded-frames and --decoder-chunks"):
        _vector(decoded_frames=2, decoder_chunks=2).validate()
