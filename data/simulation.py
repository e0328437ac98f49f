"""Ground-truth trajectories: accurate, vectorised over a batch, checked one by one.

Mass-spring uses its closed form. The other systems are integrated with SciPy's DOP853
(8th-order Dormand-Prince, dense output at the frame times) on the whole batch at once as one
large ODE, at rtol = atol = 1e-10; one right-hand-side call evaluates Hamilton's equations for
every trajectory, so the Python overhead is shared by the batch.

Every trajectory is then checked on its own: the relative energy error (see `data.systems`)
must stay below `ENERGY_TOLERANCE` at every frame and every body must stay inside the canvas.
A trajectory failing the energy check is integrated again alone at rtol = atol = 1e-12; one
that still fails, or that leaves the canvas, is re-sampled from its own random stream (as the
suite re-samples trajectories that leave the canvas).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy.integrate import solve_ivp

from data.systems import Params, PhysicalSystem

__all__ = [
    "ENERGY_TOLERANCE",
    "RTOL",
    "inside_canvas",
    "relative_energy_error",
    "sample_trajectories",
    "simulate",
]

RTOL = 1e-10
RTOL_RETRY = 1e-12
# Stored trajectories must beat 1e-6; accepting only below 1e-7 leaves a margin.
ENERGY_TOLERANCE = 1e-7
MAX_ATTEMPTS = 100


def _stack_params(params: Sequence[Dict[str, np.ndarray]]) -> Params:
    return {key: np.stack([p[key] for p in params]) for key in params[0]}


def _take(params: Params, index) -> Params:
    return {key: value[index] for key, value in params.items()}


def simulate(system: PhysicalSystem, x0: np.ndarray, params: Params, times: np.ndarray,
             rtol: float = RTOL) -> np.ndarray:
    """Integrates a batch of initial states to the given times.

    Args:
      system: the physical system.
      x0: initial states `[n, 2 d]` (float64).
      params: per-example parameters (leading axis n).
      times: increasing frame times `[T]`, starting at 0.
      rtol: relative (and absolute) tolerance of the adaptive solver.

    Returns:
      States `[n, T, 2 d]` (float64). Rows whose integration failed are NaN.
    """
    x0 = np.asarray(x0, np.float64)
    times = np.asarray(times, np.float64)
    analytic = system.analytic_trajectory(x0, params, times)
    if analytic is not None:
        return analytic
    n, width = x0.shape

    def field(_, y):
        return system.time_derivative(y.reshape(n, width), params).ravel()

    solution = solve_ivp(field, (times[0], times[-1]), x0.ravel(), method="DOP853", t_eval=times,
                         rtol=rtol, atol=rtol)
    if solution.status != 0 or solution.y.shape[1] != len(times):
        return np.full((n, len(times), width), np.nan)
    return solution.y.reshape(n, width, len(times)).transpose(0, 2, 1)


def relative_energy_error(system: PhysicalSystem, states: np.ndarray, params: Params) -> np.ndarray:
    """max_t |H(t) - H(0)| / max(|H(0)|, energy_scale) per trajectory, for states `[n, T, 2 d]`."""
    energy = system.hamiltonian(np.asarray(states, np.float64), params)
    scale = np.maximum(np.abs(energy[:, 0]), system.energy_scale(params))
    error = np.max(np.abs(energy - energy[:, :1]), axis=1) / scale
    return np.where(np.isfinite(error), error, np.inf)


def inside_canvas(system: PhysicalSystem, states: np.ndarray, params: Params) -> np.ndarray:
    """Whether every body's disk stays inside the canvas at every frame, `[n]` booleans."""
    positions = system.body_positions(np.asarray(states, np.float64), params)  # [n, T, bodies, 2]
    radius = np.sqrt(system.body_masses(params) / np.pi)[:, None, :, None]
    reach = np.abs(positions) + radius
    # A tiny slack: bodies whose reach equals the extent by construction (pendulum at
    # q = pi/2) must not be rejected for round-off.
    inside = np.all(reach <= system.extent * (1.0 + 1e-9), axis=(1, 2, 3))
    return inside & np.all(np.isfinite(states), axis=(1, 2))


def sample_trajectories(system: PhysicalSystem, rngs: Sequence[np.random.Generator],
                        times: np.ndarray) -> Tuple[np.ndarray, Params, int]:
    """Samples one checked trajectory per random stream.

    Example i depends only on `rngs[i]` (and, in its last bits, on which other examples share
    its batch, because the adaptive solver's steps are chosen for the whole batch).

    Args:
      system: the physical system.
      rngs: one generator per example; re-sampling draws again from the same generator.
      times: frame times `[T]`.

    Returns:
      `(states [n, T, 2 d] float64, params, n_resampled)`.

    Raises:
      RuntimeError: if some example fails the checks `MAX_ATTEMPTS` times in a row.
    """
    n = len(rngs)
    states = np.empty((n, len(times), 2 * system.dim), np.float64)
    params_list: List[Dict[str, np.ndarray]] = [None] * n  # type: ignore[list-item]
    pending = np.arange(n)
    resampled = 0
    for _ in range(MAX_ATTEMPTS):
        draws = [system.sample_params(rngs[i]) for i in pending]
        x0 = np.stack([system.sample_initial_state(rngs[i], p) for i, p in zip(pending, draws)])
        batch_params = _stack_params(draws)
        batch = simulate(system, x0, batch_params, times)
        energy_ok = relative_energy_error(system, batch, batch_params) < ENERGY_TOLERANCE
        for j in np.flatnonzero(~energy_ok):
            one = _take(batch_params, slice(j, j + 1))
            batch[j] = simulate(system, x0[j:j + 1], one, times, rtol=RTOL_RETRY)[0]
            energy_ok[j] = relative_energy_error(system, batch[j:j + 1], one)[0] < ENERGY_TOLERANCE
        ok = energy_ok & inside_canvas(system, batch, batch_params)
        for j in np.flatnonzero(ok):
            states[pending[j]] = batch[j]
            params_list[pending[j]] = draws[j]
        pending = pending[~ok]
        if pending.size == 0:
            return states, _stack_params(params_list), resampled
        resampled += pending.size
    raise RuntimeError(f"{system.name}: {pending.size} trajectories failed the energy/canvas checks "
                       f"{MAX_ATTEMPTS} times in a row")
