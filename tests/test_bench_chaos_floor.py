"""`bench/hgn_chaos_floor.py`: the score of the true dynamics from a perturbed state.

Its figures are the README's evidence that the double pendulum's score is not a limit of its
physics, so the method itself is checked here: no perturbation, no error; a larger
perturbation, a larger error; an error that grows along a pendulum's rollout and not along
the isochronous spring's.
"""
import pytest


@pytest.fixture(scope="module")
def chaos_floor(load_bench):
    return load_bench("hgn_chaos_floor")


def test_no_perturbation_scores_zero_and_error_grows_with_it(chaos_floor):
    result = chaos_floor.floor("pendulum", 8, [0.0, 0.01, 0.1])
    zero, small, large = result["rows"]
    # Re-simulating and re-rendering the same state is exact up to the uint8 frames' rounding.
    assert zero["mse_x1e4"] < 1e-3 and zero["vpt_median_frames"] == 25
    assert 0 < small["mse_x1e4"] < large["mse_x1e4"]
    assert small["inferred_frames_mse_x1e4"] < small["mse_x1e4"]  # the error grows along the rollout
    assert len(large["per_frame_mse_x1e4"]) == chaos_floor.FRAMES
    # A tenth of the initial states' spread loses the pendulum within the window.
    assert large["vpt_median_frames"] < 25


def test_an_error_grows_on_the_pendulum_and_not_on_the_isochronous_spring(chaos_floor):
    # The spring's period does not depend on its amplitude, so a state error stays the size it
    # starts; the pendulum's does, so the error grows along the rollout. Measured with --n 200
    # at epsilon 0.03 (bench/results/hgn_chaos_floor.json): spring 0.23 over 30 frames against
    # 0.21 over frames 0-4; pendulum 29.2 against 2.3.
    spring = chaos_floor.floor("mass_spring", 16, [0.03])["rows"][0]
    pendulum = chaos_floor.floor("pendulum", 16, [0.03])["rows"][0]
    assert spring["mse_x1e4"] < 2 * spring["inferred_frames_mse_x1e4"]
    assert pendulum["mse_x1e4"] > 5 * pendulum["inferred_frames_mse_x1e4"]
