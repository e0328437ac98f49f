"""Using a trained model as people will: serving caps on both SavedModels, `rollout_backward`,
and `python -m hgn.predict` on a video, a PNG folder and a test trajectory, with its bad input.

Each model is built and exported once per module (untrained: the checks here are about the
interface and the arithmetic, not about prediction quality). The HGN computes in float32 so
that the SavedModel and the Keras model agree to float32 round-off.
"""
import dataclasses
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import hgn
import nhf
from common import PhaseSpace
from common import config as config_lib
from hgn import predict
from hgn.serving import MAX_BATCH, MAX_SAMPLES, MAX_STEPS, HGNModule, max_frames_within
from nhf.export import MEMORY_BUDGET, export_saved_model, serving_caps_within

HGN_CONFIG = dataclasses.replace(hgn.PRESETS["tiny"], compute_dtype="float32")
HGN_CAPS = {"max_steps": 20, "max_batch": 4, "max_samples": 3, "max_frames": 60}
NHF_CONFIG = dataclasses.replace(nhf.PRESETS["small"], widths=(8,), encoder_widths=(8,))
NHF_CAPS = {"max_batch": 10, "max_samples": 20}
K = HGN_CONFIG.input_frames
S = HGN_CONFIG.image_size


@pytest.fixture(scope="module")
def hgn_model():
    return hgn.build_model(HGN_CONFIG)


@pytest.fixture(scope="module")
def hgn_export(hgn_model, tmp_path_factory):
    path = hgn.export(hgn_model, tmp_path_factory.mktemp("hgn") / "saved_model", **HGN_CAPS)
    return path, tf.saved_model.load(str(path))


@pytest.fixture(scope="module")
def nhf_model():
    c = NHF_CONFIG
    return nhf.build_density(2, num_hamiltonians=c.num_hamiltonians, n_steps=c.n_steps, step_size=c.step_size,
                             widths=c.widths, encoder_widths=c.encoder_widths, init_scale=1.0, seed=c.seed)


@pytest.fixture(scope="module")
def nhf_export(nhf_model, tmp_path_factory):
    path = export_saved_model(nhf_model, tmp_path_factory.mktemp("nhf") / "saved_model", 4, **NHF_CAPS)
    return tf.saved_model.load(str(path))


def _frames(batch, t=K + 2, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(size=(batch, t, S, S, 3)).astype(np.float32))


def _q(batch):
    return tf.zeros([batch, 4, 4, HGN_CONFIG.state_channels])


# ----------------------------------------------------------------------------- serving caps
# (oversized call, phrases its error names, valid call, expected shape of a valid output)
HGN_CASES = {
    "encode: batch": (lambda m: m.encode(_frames(5)), ["the batch of frames", "max_batch = 4"],
                      lambda m: m.encode(_frames(4))["q"], (4, 4, 4, 4)),
    "rollout: n_steps": (lambda m: m.rollout(_frames(1), tf.constant(21), tf.constant(0.1)),
                         ["n_steps must be <= max_steps = 20"],
                         lambda m: m.rollout(_frames(1), tf.constant(20), tf.constant(0.1))["frames"], (1, 21, S, S, 3)),
    "rollout: batch": (lambda m: m.rollout(_frames(5), tf.constant(1), tf.constant(0.1)),
                       ["the batch of frames", "max_batch = 4"],
                       lambda m: m.rollout(_frames(4), tf.constant(1), tf.constant(0.1))["q"], (4, 2, 4, 4, 4)),
    "rollout: frames": (lambda m: m.rollout(_frames(3), tf.constant(20), tf.constant(0.1)),
                        ["batch x (n_steps + 1)", "max_frames = 60"],
                        lambda m: m.rollout(_frames(3), tf.constant(19), tf.constant(0.1))["energy"], (3, 20)),
    "rollout_backward: n_steps": (lambda m: m.rollout_backward(_frames(1), tf.constant(10**9), tf.constant(0.1)),
                                  ["n_steps must be <= max_steps = 20"],
                                  lambda m: m.rollout_backward(_frames(1), tf.constant(3), tf.constant(0.1))["frames"],
                                  (1, 4, S, S, 3)),
    "rollout_backward: batch": (lambda m: m.rollout_backward(_frames(5), tf.constant(1), tf.constant(0.1)),
                                ["the batch of frames", "max_batch = 4"],
                                lambda m: m.rollout_backward(_frames(2), tf.constant(1), tf.constant(0.1))["p"],
                                (2, 2, 4, 4, 4)),
    "rollout_backward: frames": (lambda m: m.rollout_backward(_frames(4), tf.constant(15), tf.constant(0.1)),
                                 ["batch x (n_steps + 1)", "max_frames = 60"],
                                 lambda m: m.rollout_backward(_frames(4), tf.constant(14), tf.constant(0.1))["frames"],
                                 (4, 15, S, S, 3)),
    "rollout_backward: dt <= 0": (lambda m: m.rollout_backward(_frames(1), tf.constant(2), tf.constant(0.0)),
                                  ["dt > 0"],
                                  lambda m: m.rollout_backward(_frames(1), tf.constant(2), tf.constant(1e-3))["frames"],
                                  (1, 3, S, S, 3)),
    "decode: batch": (lambda m: m.decode(_q(5)), ["the batch of q", "max_batch = 4"],
                      lambda m: m.decode(_q(4))["frame"], (4, S, S, 3)),
    "decode: NaN": (lambda m: m.decode(_q(2) + np.float32("nan")), ["q must be finite (no NaN or Inf)"],
                    lambda m: m.decode(_q(2))["frame"], (2, S, S, 3)),
    "sample: n": (lambda m: m.sample(tf.constant(4), tf.constant(1), tf.constant(0.1)),
                  ["n must be <= max_samples = 3"],
                  lambda m: m.sample(tf.constant(3), tf.constant(1), tf.constant(0.1))["frames"], (3, 2, S, S, 3)),
    "sample: frames": (lambda m: m.sample(tf.constant(3), tf.constant(20), tf.constant(0.1)),
                       ["n x (n_steps + 1)", "max_frames = 60"],
                       lambda m: m.sample(tf.constant(3), tf.constant(19), tf.constant(0.1))["frames"],
                       (3, 20, S, S, 3)),
    "sample: n_steps": (lambda m: m.sample(tf.constant(1), tf.constant(21), tf.constant(0.1)),
                        ["n_steps must be <= max_steps = 20"],
                        lambda m: m.sample(tf.constant(1), tf.constant(20), tf.constant(0.1))["frames"],
                        (1, 21, S, S, 3)),
}


@pytest.mark.parametrize("case", sorted(HGN_CASES))
def test_hgn_signature_refuses_oversized_request_then_serves(case, hgn_export):
    """The same loaded module answers an oversized request with a named error, then the next
    valid request normally (the error leaves nothing broken behind)."""
    _, module = hgn_export
    oversized, phrases, valid, shape = HGN_CASES[case]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        oversized(module)
    for phrase in phrases:
        assert phrase in info.value.message, info.value.message
    out = valid(module)
    assert tuple(out.shape) == shape
    assert np.all(np.isfinite(out.numpy()))


def test_hgn_serving_signatures_check_caps_too(hgn_export):
    """The serving signatures (what TF Serving and `saved_model_cli run` call) hold the same checks."""
    _, module = hgn_export
    with pytest.raises(tf.errors.InvalidArgumentError, match="n_steps must be <= max_steps = 20"):
        module.signatures["rollout_backward"](frames=_frames(1), n_steps=tf.constant(21), dt=tf.constant(0.1))
    out = module.signatures["rollout_backward"](frames=_frames(1), n_steps=tf.constant(2), dt=tf.constant(0.1))
    assert out["frames"].shape == (1, 3, S, S, 3)


def test_hgn_caps_are_recorded_and_validated(hgn_model, hgn_export):
    path, module = hgn_export
    saved = json.loads((path / "hgn_config.json").read_text())
    assert saved["serving_caps"] == HGN_CAPS
    assert {name: int(getattr(module, name).numpy()) for name in HGN_CAPS} == HGN_CAPS
    defaults = HGNModule(hgn_model).caps
    assert defaults == {"max_steps": MAX_STEPS, "max_batch": MAX_BATCH, "max_samples": MAX_SAMPLES,
                        "max_frames": max_frames_within(hgn_model)}
    for bad in ({"max_steps": 0}, {"max_batch": -1}, {"max_frames": 2.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            HGNModule(hgn_model, **bad)


def test_default_frame_cap_follows_the_decoder_size(hgn_model):
    """max_frames_within: budget / (5 x largest decoder activation + 2 float32 frames), so a
    decoder four times wider allows about four times fewer frames."""
    budget = 2**30
    frames = max_frames_within(hgn_model, budget)
    # The tiny decoder's widest output: 32 x 32 x 8 float32 values.
    assert frames == budget // (5 * S * S * HGN_CONFIG.decoder_width * 4 + 2 * S * S * 3 * 4)
    wide = hgn.build_model(dataclasses.replace(HGN_CONFIG, decoder_width=4 * HGN_CONFIG.decoder_width))
    ratio = frames / max_frames_within(wide, budget)
    assert 3.0 < ratio < 4.0  # 4x the activations; the frame term does not grow


def test_nhf_signatures_refuse_oversized_requests_then_serve(nhf_export):
    m = nhf_export
    for oversized in (lambda: m.log_prob(tf.zeros([11, 2])), lambda: m.signatures["log_prob"](q=tf.zeros([11, 2]))):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"the batch of q \(axis 0\) must be <= max_batch = 10"):
            oversized()
    lp = m.log_prob(tf.zeros([10, 2]))
    assert lp.shape == (10,) and np.all(np.isfinite(lp.numpy()))
    for oversized in (lambda: m.sample(tf.constant(21)), lambda: m.signatures["sample"](n=tf.constant(21))):
        with pytest.raises(tf.errors.InvalidArgumentError, match="n must be <= max_samples = 20"):
            oversized()
    assert m.sample(tf.constant(20)).shape == (20, 2)
    assert m.signatures["sample"](n=tf.constant(20))["q"].shape == (20, 2)
    assert {name: int(getattr(m, name).numpy()) for name in NHF_CAPS} == NHF_CAPS


def test_nhf_default_caps_scale_with_momenta(nhf_model):
    """A log_prob point costs K times a sample: the default max_batch is max_samples / K."""
    caps = serving_caps_within(nhf_model, 256)
    assert caps["max_batch"] == caps["max_samples"] // 256
    per_point = 8 * (8 + 2 * 2) * 4  # widest layer 8, d = 2, float32
    assert caps["max_samples"] == MEMORY_BUDGET // per_point
    assert serving_caps_within(nhf_model, 512)["max_batch"] == caps["max_batch"] // 2


def test_serving_cap_flags(capsys, tmp_path):
    """--serve-max-* on both command lines: config fields in [1, 2**31 - 1] (requests carry int32
    counts), one-line errors otherwise; a resumed HGN run keeps its caps (it re-exports with
    them; they were flags outside the config, and a resume re-exported with the defaults)."""
    from hgn import cli

    config = cli._resolve(["--serve-max-steps", "50", "--serve-max-frames", "7"])[1]
    assert (config.serve_max_steps, config.serve_max_batch, config.serve_max_frames) == (50, MAX_BATCH, 7)
    (tmp_path / "config.json").write_text(json.dumps({"dataset": "pendulum", "config": config_lib.to_dict(config)}))
    resumed = cli._resolve(["--run-dir", str(tmp_path), "--resume", "--serve-max-batch", "3"])[1]
    assert (resumed.serve_max_steps, resumed.serve_max_batch, resumed.serve_max_frames) == (50, 3, 7)
    for argv, message in [(["--serve-max-batch", "0"], "--serve-max-batch must be > 0, got 0"),
                          (["--serve-max-steps", str(2 ** 31)], "--serve-max-steps must be <= 2,147,483,647"),
                          (["--serve-max-frames", "1.5"], "--serve-max-frames expects an integer, got '1.5'")]:
        with pytest.raises(SystemExit) as info:
            cli._resolve(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err
    parser = config_lib.config_parser(nhf.NHFConfig, nhf.PRESETS, "small")
    config = config_lib.config_from_args(nhf.NHFConfig, nhf.PRESETS, parser.parse_args(["--serve-max-batch", "9"]))
    assert (config.serve_max_batch, config.serve_max_samples) == (9, None)
    with pytest.raises(ValueError, match="--serve-max-samples must be > 0"):
        config_lib.config_from_args(nhf.NHFConfig, nhf.PRESETS, parser.parse_args(["--serve-max-samples", "0"]))
    with pytest.raises(ValueError, match="--serve-max-batch must be <= 2,147,483,647"):
        config_lib.config_from_args(nhf.NHFConfig, nhf.PRESETS, parser.parse_args(["--serve-max-batch", str(10 ** 20)]))


def test_a_fused_rollout_model_exports_and_serves_its_own_trajectories(tmp_path):
    # With --fused-rollout the Keras model XLA-compiles its rollouts; the signatures export them
    # uncompiled (a server need not have XLA). Same trajectories both ways (float32, XLA's kernels
    # against the graph's: tolerance 1e-5).
    model = hgn.build_model(dataclasses.replace(HGN_CONFIG, fused_rollout=True))
    path = hgn.export(model, tmp_path / "saved_model", **HGN_CAPS)
    assert b"_XlaMustCompile" not in (path / "saved_model.pb").read_bytes()
    module = tf.saved_model.load(str(path))
    frames, n, dt = _frames(2, seed=2), 6, tf.constant(HGN_CONFIG.dt)
    for name, backward in (("rollout", False), ("rollout_backward", True)):
        out = getattr(module, name)(frames, tf.constant(n), dt)
        expected = model.rollout(frames, n, backward=backward)
        for key in ("frames", "q", "p", "energy"):
            np.testing.assert_allclose(out[key], expected[key], rtol=1e-5, atol=1e-5, err_msg=(name, key))
    assert n in model._fused_fns  # the Keras model's rollouts were compiled


# ----------------------------------------------------------------------------- rollout_backward
def test_rollout_backward_starts_at_the_clip_end_and_runs_back_in_time(hgn_model, hgn_export):
    _, module = hgn_export
    frames, n, dt = _frames(2, t=K + 3, seed=1), 6, 0.125
    out = module.rollout_backward(frames, tf.constant(n), tf.constant(dt))
    # Frame 0 is the decoding of the state inferred at the clip's last frame (from its last k).
    state, _, _ = hgn_model.infer(frames, backward=True)
    np.testing.assert_allclose(out["frames"][:, 0], hgn_model.decode(state.q), atol=1e-5)
    np.testing.assert_allclose(out["q"][:, 0], state.q, atol=1e-5)
    # Same trajectory as the Keras model's backward rollout (frame i = i steps earlier); tolerance
    # 1e-5: the same float32 graph.
    expected = hgn_model.rollout(frames, n, backward=True)
    for key in ("frames", "q", "p", "energy"):
        np.testing.assert_allclose(out[key], expected[key], rtol=1e-5, atol=1e-5, err_msg=key)
    # Only the last k frames matter: changing the earlier ones changes nothing.
    altered = tf.concat([1.0 - frames[:, :-K], frames[:, -K:]], axis=1)
    np.testing.assert_allclose(module.rollout_backward(altered, tf.constant(n), tf.constant(dt))["q"], out["q"],
                               atol=1e-6)
    # Back in time for real: the earliest state, rolled forward n steps of dt, returns to the
    # clip-end state (leapfrog is time-reversible; tolerance: float32 round-off over 2n steps).
    earliest = PhaseSpace(out["q"][:, -1], out["p"][:, -1])
    replay = hgn_model.integrate(earliest, n, dt)
    np.testing.assert_allclose(replay.q[-1], out["q"][:, 0], atol=1e-4)
    # ...and a forward rollout does not (the check can fail).
    assert np.abs(hgn_model.integrate(earliest, n, -dt).q[-1] - out["q"][:, 0]).max() > 1e-3


# ----------------------------------------------------------------------------- hgn.predict
def _disc_clip(n=12, width=64, height=48):
    """A red disc on grey moving on a circle, as BGR uint8 frames (OpenCV's order)."""
    frames, centres = [], []
    for i in range(n):
        frame = np.full((height, width, 3), 128, np.uint8)
        a = 2 * math.pi * i / n
        centre = (width / 2 + 12 * math.cos(a), height / 2 + 12 * math.sin(a))
        cv2.circle(frame, (round(centre[0]), round(centre[1])), 6, (0, 0, 255), -1)
        frames.append(frame)
        centres.append(centre)
    return np.stack(frames), np.array(centres)


def _write_video(path, frames, color=True):
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h), isColor=color)
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def disc_video(tmp_path_factory):
    frames, centres = _disc_clip()
    return _write_video(tmp_path_factory.mktemp("clip") / "disc.mp4", frames), centres


def _red_centroid(frame):
    """Centroid (x, y) of the red pixels of an RGB frame in [0, 1]."""
    red = (frame[..., 0] > 0.6) & (frame[..., 1] < 0.35) & (frame[..., 2] < 0.35)
    ys, xs = np.nonzero(red)
    assert len(xs), "no red pixel: channels swapped?"
    return np.array([xs.mean(), ys.mean()])


def test_read_clip_crops_resizes_and_keeps_colours(disc_video, tmp_path):
    path, centres = disc_video
    clip = predict.read_clip(path, S)
    assert clip.shape == (12, S, S, 3) and clip.dtype == np.float32
    assert 0.0 <= clip.min() and clip.max() <= 1.0
    # The centre 48 x 48 square of the 64 x 48 frame, scaled by 32 / 48: the disc's centre moves
    # with it (tolerance 1 pixel: MPEG-4 compression and area averaging blur the edge).
    for frame, (x, y) in zip(clip, centres):
        expected = (np.array([x - 8, y]) + 0.5) * S / 48 - 0.5
        np.testing.assert_allclose(_red_centroid(frame), expected, atol=1.0)
    # The PNG folder path reads the same pictures losslessly: equal to cropping them directly.
    frames, _ = _disc_clip()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"frame_{i:02d}.png"), frame)
    from_png = predict.read_clip(tmp_path, S)
    direct = predict.to_model_frames(frames[..., ::-1].astype(np.float32) / 255, S)
    np.testing.assert_allclose(from_png, direct, atol=1e-6)


def test_predict_writes_mp4_and_gif(hgn_export, disc_video, tmp_path):
    path, _ = hgn_export
    video, centres = disc_video
    out = tmp_path / "movies" / "disc.mp4"
    steps = 7
    assert predict.main([str(path), "--video", str(video), "--steps", str(steps), "--dt", "-0.0625",
                         "--out", str(out)]) == 0
    capture = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    side = 4 * S
    assert len(frames) == steps + 1
    assert frames[0].shape == (predict.LABEL_HEIGHT + side, 2 * side + predict.PANEL_GAP, 3)
    gif = Image.open(out.with_suffix(".gif"))
    assert gif.n_frames == steps + 1 and gif.size == (2 * side + predict.PANEL_GAP, predict.LABEL_HEIGHT + side)
    # The input panel of the first frame shows the red disc where the clip has it (RGB kept
    # through OpenCV's BGR; cropped, resized, then upscaled 4x; tolerance 4 pixels: one model pixel).
    first = np.asarray(gif.convert("RGB")).astype(np.float32) / 255
    x, y = centres[0]
    expected = ((np.array([x - 8, y]) + 0.5) * S / 48) * 4 - 0.5
    np.testing.assert_allclose(_red_centroid(first[predict.LABEL_HEIGHT:, :side]), expected, atol=4.0)
    assert not list(out.parent.glob(".*tmp*"))  # no temporary file left behind


def test_predict_dataset_clip_with_ground_truth(hgn_export, tmp_path):
    """Ground truth at the model's dt reproduces the dataset's frames, forward and backward."""
    c = HGN_CONFIG
    example = predict.held_out_clip("pendulum", 2, input_frames=K, dt=c.dt, image_size=S)
    clip = example["frames"]
    forward = predict.true_frames("pendulum", example["x"][0], example["params"], example["color_index"], K - 1,
                                  c.dt, S)
    # One 8-bit level: the ODE solver's steps differ between this one-trajectory batch and the dataset's.
    np.testing.assert_allclose(forward, clip, atol=1.5 / 255)
    backward = predict.true_frames("pendulum", example["x"][-1], example["params"], example["color_index"], K - 1,
                                   -c.dt, S)
    np.testing.assert_allclose(backward, clip[::-1], atol=1.5 / 255)
    # The same state rolled forward in time instead does not retrace the clip (the check can fail).
    wrong = predict.true_frames("pendulum", example["x"][-1], example["params"], example["color_index"], K - 1,
                                c.dt, S)
    assert np.abs(wrong - clip[::-1]).max() > 0.1

    path, _ = hgn_export
    out = tmp_path / "pendulum.mp4"
    assert predict.main([str(path), "--dataset", "pendulum", "--index", "2", "--direction", "backward", "--steps", "5",
                         "--out", str(out)]) == 0
    gif = Image.open(out.with_suffix(".gif"))
    assert gif.n_frames == 6 and gif.size[0] == 3 * 4 * S + 2 * predict.PANEL_GAP  # input, prediction, truth


def test_ground_truth_draws_a_run_s_own_palette():
    """A run trained with --colors 3: the truth is drawn in the clip's colours (it was drawn from
    the system's one-colour palette, where colour index 2 raised IndexError)."""
    c = HGN_CONFIG
    example = predict.held_out_clip("pendulum", 0, input_frames=K, dt=c.dt, image_size=S, colors=3)
    assert example["colors"] == 3 and example["color_index"].max() == 2  # this example's bob has colour 2
    truth = predict.true_frames("pendulum", example["x"][0], example["params"], example["color_index"], K - 1, c.dt,
                                S, colors=example["colors"])
    np.testing.assert_allclose(truth, example["frames"], atol=1.5 / 255)


def test_movie_limits_and_png_order():
    """Movies MPEG-4 cannot hold or memory cannot compose are refused before any work; PNG
    frames play in natural order (ffmpeg's %d.png numbering)."""
    assert predict.movie_size(3, 64, 4) == (predict.LABEL_HEIGHT + 256, 3 * 256 + 2 * predict.PANEL_GAP)
    assert predict._movie_problem(31, 3, 64, 4) is None
    assert "at most 8190 a side" in predict._movie_problem(31, 3, 64, 43)  # 3 x 2,752 + 8 pixels wide
    assert predict._movie_problem(31, 3, 64, 38) is None  # 7,304 wide: 3.6 GiB with the GIF's frames
    assert "would take 4.4 GiB" in predict._movie_problem(31, 3, 64, 42)  # 8,072 x 2,704 x (3 + 4) bytes x 31
    assert "would take 13.8 GiB" in predict._movie_problem(10_001, 3, 64, 4)  # 10,001 x 272 x 776 x 7 bytes
    names = ["10.png", "2.png", "1.png", "frame_b.png", "frame_a10.png", "frame_a9.png", "1\u00b22.png"]
    ordered = [p.name for p in sorted(map(Path, names), key=predict._natural_key)]
    assert ordered == ["1.png", "1\u00b22.png", "2.png", "10.png", "frame_a9.png", "frame_a10.png", "frame_b.png"]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    frames, _ = _disc_clip()
    short = _write_video(base / "short.mp4", frames[: K - 1])
    grey = _write_video(base / "grey.mp4", np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]),
                        color=False)
    garbage = base / "garbage.mp4"
    garbage.write_bytes(b"not a video at all")
    grey_png = base / "grey_png"
    grey_png.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(grey_png / f"{i:02d}.png"), cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    nhf_run = base / "nhf_run"
    nhf_run.mkdir()
    # What train_nhf.py writes: the flat config (nhf.experiment.run_experiment).
    (nhf_run / "config.json").write_text(json.dumps(config_lib.to_dict(nhf.PRESETS["small"])))
    empty = base / "empty"
    empty.mkdir()
    foreign = base / "foreign_saved_model"  # a SavedModel without hgn_config.json (e.g. an NHF export)
    foreign.mkdir()
    (foreign / "saved_model.pb").write_bytes(b"")
    return {"short": short, "grey": grey, "garbage": garbage, "grey_png": grey_png, "nhf_run": nhf_run,
            "empty": empty, "foreign": foreign, "missing": base / "missing.mp4"}


PREDICT_BAD_CASES = {
    # case: (PATH (None: the HGN export), clip arguments, phrases of the error line)
    "missing video": (None, ["--video", "{missing}"], ["missing.mp4", "does not exist"]),
    "unreadable video": (None, ["--video", "{garbage}"], ["cannot read the video", "garbage.mp4"]),
    "too few frames": (None, ["--video", "{short}"], [f"the clip has {K - 1} frames", f"input_frames = {K}"]),
    "grey-scale video": (None, ["--video", "{grey}"], ["grey.mp4", "grey-scale", "single channel"]),
    "grey-scale PNG": (None, ["--video", "{grey_png}"], ["00.png", "grey-scale (one channel)"]),
    "train_nhf.py run": ("{nhf_run}", ["--dataset", "pendulum"], ["is a train_nhf.py run", "'target'"]),
    "neither run nor export": ("{empty}", ["--dataset", "pendulum"], ["is neither a train_hgn.py run directory"]),
    "SavedModel of another model": ("{foreign}", ["--dataset", "pendulum"], ["not an HGN export", "hgn_config.json"]),
    "steps over the cap": (None, ["--dataset", "pendulum", "--steps", "21"],
                           ["--steps 21", "max_steps = 20"]),
    "backward with dt < 0": (None, ["--dataset", "pendulum", "--direction", "backward", "--dt", "-0.1"],
                             ["--direction backward needs --dt > 0"]),
    "unknown system": (None, ["--dataset", "pendulun"], ["unknown --dataset 'pendulun'", "mass_spring"]),
    "movie too wide": (None, ["--dataset", "pendulum", "--scale", "200"], ["--scale 200", "at most 8190 a side"]),
    "fps too high": (None, ["--dataset", "pendulum", "--fps", "60"], ["--fps must be in (0, 50]", "got 60"]),
}


@pytest.mark.parametrize("case", sorted(PREDICT_BAD_CASES))
def test_predict_bad_input_one_line(case, bad_inputs, hgn_export, tmp_path, capsys):
    target, clip_args, phrases = PREDICT_BAD_CASES[case]
    names = {k: str(v) for k, v in bad_inputs.items()}
    path = str(hgn_export[0]) if target is None else target.format(**names)
    out = tmp_path / "never.mp4"
    argv = [path, *(a.format(**names) for a in clip_args), "--out", str(out)]
    if "--steps" not in clip_args:
        argv += ["--steps", "4"]
    with pytest.raises(SystemExit) as info:
        predict.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{predict.PROG}: error:"), err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert not out.exists() and not out.with_suffix(".gif").exists()
