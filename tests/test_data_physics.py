"""Physics, rendering and determinism of the generated arrays (NumPy side of `data`)."""
import hashlib

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import data
from data.generation import CHUNK_SIZE
from data.rendering import BACKGROUND, palette

ENERGY_LIMIT = 1e-6  # The bound on every stored trajectory's relative energy error.


@pytest.fixture(scope="module", params=data.SYSTEMS)
def generated(request):
    return request.param, data.generate_arrays(request.param, 12, seed=3)


def test_every_stored_trajectory_conserves_energy_and_stays_on_canvas(generated):
    name, arrays = generated
    system = data.get_system(name)
    errors = data.relative_energy_error(system, arrays["x"], arrays["params"])
    assert errors.shape == (12,)
    assert np.all(errors < ENERGY_LIMIT), errors.max()
    assert np.all(data.inside_canvas(system, arrays["x"], arrays["params"]))


def test_energy_and_canvas_checks_can_fail(generated):
    name, arrays = generated
    system = data.get_system(name)
    bad = arrays["x"].copy()
    bad[:, 1:, system.dim:] *= 1.01  # 1% more momentum after frame 0: kinetic energy +2% at every frame.
    assert np.all(data.relative_energy_error(system, bad, arrays["params"]) > ENERGY_LIMIT)
    far = arrays["x"].copy()
    far[:, 3, :system.dim] += 10.0 * system.extent  # Pushes every body of frame 3 off the canvas
    if name not in ("pendulum", "double_pendulum"):  # (angles wrap around: a pendulum cannot leave)
        assert not np.any(data.inside_canvas(system, far, arrays["params"]))


def test_shapes_dtypes_and_pixel_range(generated):
    name, arrays = generated
    system = data.get_system(name)
    assert arrays["images"].shape == (12, 32, 32, 32, 3) and arrays["images"].dtype == np.float32
    assert arrays["x"].shape == (12, 32, 2 * system.dim) and arrays["dx"].shape == arrays["x"].shape
    assert arrays["x"].dtype == np.float64
    assert arrays["images"].min() >= 0.0 and arrays["images"].max() <= 1.0
    # 8-bit quantised frames: every value is k / 255 (tolerance: float32 round-off).
    assert np.allclose(arrays["images"] * 255.0, np.rint(arrays["images"] * 255.0), atol=1e-3)
    assert set(arrays["params"]) == set(system.parameters)
    for key, value in arrays["params"].items():
        assert value.shape[0] == 12 and np.allclose(value, system.parameters[key]), key


@pytest.mark.parametrize("name", data.SYSTEMS)
def test_gradients_match_finite_differences(name):
    system = data.get_system(name)
    rng = np.random.default_rng(0)
    params = {k: v[None] for k, v in system.sample_params(rng).items()}
    x = system.sample_initial_state(rng, {k: v[0] for k, v in params.items()})[None]
    dh_dq, dh_dp = system.gradients(x, params)
    grad = np.concatenate([dh_dq, dh_dp], axis=-1)[0]
    eps = 1e-6
    numeric = np.array([(system.hamiltonian(x + eps * e, params) - system.hamiltonian(x - eps * e, params))[0]
                        / (2 * eps) for e in np.eye(x.shape[-1])])
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["pendulum", "double_pendulum", "three_body"])
def test_dx_is_the_time_derivative_of_x(name):
    dt = 0.01
    arrays = data.generate_arrays(name, 3, n_frames=5, dt=dt, image_size=8)
    central = (arrays["x"][:, 2:] - arrays["x"][:, :-2]) / (2 * dt)
    # Central differences are accurate to O(dt^2 |x'''|) ~ 1e-4 here.
    np.testing.assert_allclose(central, arrays["dx"][:, 1:-1], rtol=1e-3, atol=1e-3)


def test_mass_spring_closed_form_matches_a_numerical_solution():
    system = data.get_system("mass_spring")
    rng = np.random.default_rng(1)
    params = {k: np.stack([v, v]) for k, v in system.sample_params(rng).items()}
    x0 = np.stack([system.sample_initial_state(rng, system.sample_params(rng)) for _ in range(2)])
    times = np.arange(20) * 0.125
    exact = system.analytic_trajectory(x0, params, times)
    for i in range(2):
        one = {k: v[i:i + 1] for k, v in params.items()}
        sol = solve_ivp(lambda t, y: system.time_derivative(y[None], one)[0], (0, times[-1]), x0[i],
                        method="DOP853", t_eval=times, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(exact[i], sol.y.T, atol=1e-9)


def test_rendering_background_body_colour_and_size():
    # One red body of mass m at the canvas centre on a 32x32 canvas of half-width 2.
    m, extent, size = 1.0, 2.0, 32
    frames = data.render(np.zeros((1, 1, 1, 2)), np.full((1, 1), np.sqrt(m / np.pi)), palette(1)[None],
                         extent, size)
    corner = frames[0, 0, 0, 0]
    np.testing.assert_allclose(corner, BACKGROUND, atol=1e-6)
    centre = frames[0, 0, size // 2, size // 2]
    np.testing.assert_allclose(centre, [1.0, 0.0, 0.0], atol=1e-2)
    # Pixels more than half covered ~ the disk's area in pixels, pi (r / pixel pitch)^2, within 15%.
    alpha = (frames[0, 0, ..., 1] - BACKGROUND[1]) / (0.0 - BACKGROUND[1])
    pitch = 2 * extent / (size - 1)
    expected = np.pi * (np.sqrt(m / np.pi) / pitch) ** 2
    assert abs(np.sum(alpha > 0.5) - expected) < 0.15 * expected
    np.testing.assert_allclose(palette(2), [[1, 0, 0], [0, 1, 1]], atol=1e-6)


def test_pendulum_hangs_down_in_the_picture():
    # q = 0: the bob is straight below the pivot, so the bottom half of the frame is brighter in red.
    system = data.get_system("pendulum")
    params = {k: np.asarray(v)[None] for k, v in system.parameters.items()}
    x = np.zeros((1, 1, 2))
    frames = data.render(system.body_positions(x, params), np.sqrt(system.body_masses(params) / np.pi),
                         palette(1)[None], system.extent, 32)
    red = frames[0, 0, ..., 0]
    assert red[16:].sum() > red[:16].sum() + 10.0


def _digest(arrays):
    h = hashlib.sha256()
    for key in ("images", "x", "dx", "color_index"):
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    for key in sorted(arrays["params"]):
        h.update(arrays["params"][key].tobytes())
    return h.hexdigest()


def test_same_seed_same_bytes_different_seed_different_bytes():
    a = data.generate_arrays("two_body", 6, n_frames=8, image_size=16, seed=5)
    b = data.generate_arrays("two_body", 6, n_frames=8, image_size=16, seed=5)
    c = data.generate_arrays("two_body", 6, n_frames=8, image_size=16, seed=6)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_worker_count_does_not_change_the_data():
    n = CHUNK_SIZE + 3  # two chunks, so two workers really split the work
    one = data.generate_arrays("mass_spring", n, n_frames=4, image_size=8, num_workers=1)
    two = data.generate_arrays("mass_spring", n, n_frames=4, image_size=8, num_workers=2)
    assert _digest(one) == _digest(two)


def test_colours_noise_and_empty():
    arrays = data.generate_arrays("two_body", 4, n_frames=3, image_size=8, n_colors=6, noise_std=0.1)
    assert arrays["color_index"].shape == (4, 2)
    assert np.all(arrays["color_index"][:, 0] != arrays["color_index"][:, 1])
    assert arrays["images"].min() >= 0.0 and arrays["images"].max() <= 1.0
    # Noise and colours draw from their own stream: the physics is unchanged.
    plain = data.generate_arrays("two_body", 4, n_frames=3, image_size=8)
    np.testing.assert_array_equal(arrays["x"], plain["x"])
    empty = data.generate_arrays("pendulum", 0, n_frames=3, image_size=8)
    assert empty["images"].shape == (0, 3, 8, 8, 3) and empty["x"].shape == (0, 3, 2)


def test_unknown_system_lists_valid_ones():
    with pytest.raises(ValueError, match="pendulum, mass_spring, double_pendulum, two_body, three_body"):
        data.generate_arrays("triple_pendulum", 2)
    with pytest.raises(ValueError, match="valid systems"):
        data.get_system("nope")


@pytest.mark.parametrize("kwargs, argument", [
    ({"n_frames": 0}, "n_frames"),
    ({"dt": -0.1}, "dt"),
    ({"dt": 0.0}, "dt"),
    ({"image_size": 7}, "image_size"),
    ({"n": -1}, "n"),
    ({"noise_std": -1.0}, "noise_std"),
    ({"n_colors": 0}, "n_colors"),
    ({"seed": -2}, "seed"),
])
def test_nonsensical_arguments_raise_value_error_naming_them(kwargs, argument):
    args = {"n": 2, **kwargs}
    n = args.pop("n")
    with pytest.raises(ValueError, match=rf"^{argument}\b"):
        data.generate_arrays("pendulum", n, **args)


def test_two_body_needs_enough_colours():
    with pytest.raises(ValueError, match="n_colors"):
        data.generate_arrays("three_body", 1, n_colors=2)
