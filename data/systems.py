"""The five physical systems of the HGN datasets, in NumPy.

Each system is a Hamiltonian H(q, p) with fixed physical parameters, an initial-state sampler
and a map from the state to the positions of the bodies drawn on the canvas. Parameters and
samplers follow DeepMind's Hamiltonian dynamics suite (the HGN paper's data); the three-body
sampler follows the CampusAI re-implementation, which documents its radius bounds.

Conventions:

* A state `x` is `[..., 2 d]`: the d positions q, then the d momenta p (`d = system.dim`).
* `params` is a dict of float64 arrays with a leading batch axis `[n]` (or `[n, bodies]` for
  per-body masses); the batch axis of `x` is the leading one, time (if any) comes second.
* World coordinates have y pointing up; the canvas is the square `[-extent, extent]^2`.
  `extent` is the suite's canvas bound for that system (the farthest a body centre can
  reach plus the largest disk radius), so a rendered body never crosses the image edge.
* Relative energy error is `|H(t) - H(0)| / max(|H(0)|, energy_scale)`: the double pendulum
  and the n-body systems have energies that can be near zero, where a plain relative error is
  meaningless; `energy_scale` is the system's natural energy unit (e.g. m g l).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np

Params = Dict[str, np.ndarray]

__all__ = [
    "DoublePendulum",
    "MassSpring",
    "NBody",
    "Pendulum",
    "PhysicalSystem",
    "SYSTEMS",
    "get_system",
]


def _annulus(rng: np.random.Generator, low: float, high: float) -> Tuple[float, float]:
    """A point at radius r ~ U[low, high] and uniform angle (the suite's `uniform_annulus=False`)."""
    radius = rng.uniform(low, high)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    return radius * math.cos(angle), radius * math.sin(angle)


class PhysicalSystem:
    """A time-independent Hamiltonian system that can be simulated and drawn.

    Attributes:
      name: registry name.
      dim: degrees of freedom d; states have 2 d columns (q then p).
      n_bodies: number of disks drawn.
      extent: half-width of the square canvas in world units.
      default_colors: the suite's number of colours for this system.
      parameters: the fixed physical parameters (scalars), for documentation and `params`.
    """

    name: str = ""
    dim: int = 0
    n_bodies: int = 1
    extent: float = 1.0
    default_colors: int = 1
    parameters: Dict[str, float] = {}

    # --- physics -------------------------------------------------------------------------
    def hamiltonian(self, x: np.ndarray, params: Params) -> np.ndarray:
        """H(q, p) for states `[n, ..., 2 d]`; returns `[n, ...]`."""
        raise NotImplementedError

    def gradients(self, x: np.ndarray, params: Params) -> Tuple[np.ndarray, np.ndarray]:
        """(dH/dq, dH/dp) for states `[n, ..., 2 d]`, each `[n, ..., d]`."""
        raise NotImplementedError

    def time_derivative(self, x: np.ndarray, params: Params) -> np.ndarray:
        """Hamilton's equations dx/dt = (dH/dp, -dH/dq), same shape as `x`."""
        dh_dq, dh_dp = self.gradients(x, params)
        return np.concatenate([dh_dp, -dh_dq], axis=-1)

    def energy_scale(self, params: Params) -> np.ndarray:
        """Natural energy unit `[n]`, the floor of the relative energy error's denominator."""
        raise NotImplementedError

    def analytic_trajectory(self, x0: np.ndarray, params: Params, times: np.ndarray) -> Optional[np.ndarray]:
        """Exact states `[n, len(times), 2 d]` when a closed form exists, else None."""
        return None

    # --- sampling ------------------------------------------------------------------------
    def sample_params(self, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        """Physical parameters of one example (fixed values here, drawn for uniformity)."""
        return {k: np.asarray(v, np.float64) for k, v in self.parameters.items()}

    def sample_initial_state(self, rng: np.random.Generator, params: Dict[str, np.ndarray]) -> np.ndarray:
        """One initial state `[2 d]` drawn from the system's initial-state distribution."""
        raise NotImplementedError

    # --- drawing -------------------------------------------------------------------------
    def palette_size(self, n_colors: Optional[int]) -> int:
        """The palette size of a dataset variant: `n_colors`, or `default_colors` for None."""
        return self.default_colors if n_colors is None else n_colors

    def body_positions(self, x: np.ndarray, params: Params) -> np.ndarray:
        """World positions of the bodies, `[n, ..., n_bodies, 2]` (x, y), for states `[n, ..., 2 d]`."""
        raise NotImplementedError

    def body_masses(self, params: Params) -> np.ndarray:
        """Masses `[n, n_bodies]`; a body is drawn as a disk of radius sqrt(m / pi)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, parameters={self.parameters})"


def _expand(value: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Broadcasts a per-example `[n]` array against `[n, ...]` (everything but the last axis)."""
    value = np.asarray(value, np.float64)
    return value.reshape(value.shape[:1] + (1,) * (like.ndim - 2))


class MassSpring(PhysicalSystem):
    """H = k q^2 / 2 + p^2 / (2 m); the mass moves vertically. Solved analytically."""

    name = "mass_spring"
    dim = 1
    parameters = {"k": 2.0, "m": 0.5}
    radius_range = (0.1, 1.0)
    extent = radius_range[1] + math.sqrt(parameters["m"] / math.pi)

    def hamiltonian(self, x, params):
        k, m = _expand(params["k"], x), _expand(params["m"], x)
        return 0.5 * k * x[..., 0] ** 2 + x[..., 1] ** 2 / (2.0 * m)

    def gradients(self, x, params):
        k, m = _expand(params["k"], x), _expand(params["m"], x)
        return (k * x[..., 0])[..., None], (x[..., 1] / m)[..., None]

    def energy_scale(self, params):
        # The smallest energy the sampler produces: k r_min^2 / 2.
        return 0.5 * np.asarray(params["k"]) * self.radius_range[0] ** 2

    def analytic_trajectory(self, x0, params, times):
        k, m = np.asarray(params["k"])[:, None], np.asarray(params["m"])[:, None]
        omega = np.sqrt(k / m)
        phase = omega * np.asarray(times, np.float64)[None, :]
        cos, sin = np.cos(phase), np.sin(phase)
        q0, p0 = x0[:, :1], x0[:, 1:]
        q = q0 * cos + p0 / (m * omega) * sin
        p = p0 * cos - m * omega * q0 * sin
        return np.stack([q, p], axis=-1)

    def sample_initial_state(self, rng, params):
        # Uniform radius in the (q, p / sqrt(k m)) plane: the oscillation amplitude.
        q, scaled_p = _annulus(rng, *self.radius_range)
        return np.array([q, scaled_p * math.sqrt(float(params["k"]) * float(params["m"]))])

    def body_positions(self, x, params):
        q = x[..., 0]
        return np.stack([np.zeros_like(q), q], axis=-1)[..., None, :]

    def body_masses(self, params):
        return np.asarray(params["m"], np.float64)[:, None]


class Pendulum(PhysicalSystem):
    """H = m g l (1 - cos q) + p^2 / (2 m l^2); q is the angle from the downward vertical."""

    name = "pendulum"
    dim = 1
    parameters = {"m": 0.5, "g": 3.0, "l": 1.0}
    radius_range = (1.3, 2.3)
    extent = parameters["l"] + math.sqrt(parameters["m"] / math.pi)

    def hamiltonian(self, x, params):
        m, g, l = (_expand(params[k], x) for k in ("m", "g", "l"))
        return m * g * l * (1.0 - np.cos(x[..., 0])) + x[..., 1] ** 2 / (2.0 * m * l**2)

    def gradients(self, x, params):
        m, g, l = (_expand(params[k], x) for k in ("m", "g", "l"))
        return (m * g * l * np.sin(x[..., 0]))[..., None], (x[..., 1] / (m * l**2))[..., None]

    def energy_scale(self, params):
        return np.asarray(params["m"]) * np.asarray(params["g"]) * np.asarray(params["l"])

    def sample_initial_state(self, rng, params):
        return np.array(_annulus(rng, *self.radius_range))

    def body_positions(self, x, params):
        l = _expand(params["l"], x)
        q = x[..., 0]
        return np.stack([l * np.sin(q), -l * np.cos(q)], axis=-1)[..., None, :]

    def body_masses(self, params):
        return np.asarray(params["m"], np.float64)[:, None]


class DoublePendulum(PhysicalSystem):
    """Two bobs on rigid rods; q_i are the rods' angles from the downward vertical.

    H = [m2 l2^2 p1^2 + (m1 + m2) l1^2 p2^2 - 2 m2 l1 l2 p1 p2 cos(q1 - q2)]
        / [2 m2 l1^2 l2^2 (m1 + m2 sin^2(q1 - q2))]
        - (m1 + m2) g l1 cos(q1) - m2 g l2 cos(q2)
    """

    name = "double_pendulum"
    dim = 2
    n_bodies = 2
    default_colors = 2
    parameters = {"m1": 0.5, "m2": 0.5, "l1": 1.0, "l2": 1.0, "g": 3.0}
    radius_range = (1.3, 2.3)
    extent = parameters["l1"] + parameters["l2"] + math.sqrt(max(parameters["m1"], parameters["m2"]) / math.pi)

    def _unpack(self, x, params):
        return [_expand(params[k], x) for k in ("m1", "m2", "l1", "l2", "g")]

    def hamiltonian(self, x, params):
        m1, m2, l1, l2, g = self._unpack(x, params)
        q1, q2, p1, p2 = (x[..., i] for i in range(4))
        delta = q1 - q2
        numerator = m2 * l2**2 * p1**2 + (m1 + m2) * l1**2 * p2**2 - 2 * m2 * l1 * l2 * p1 * p2 * np.cos(delta)
        denominator = 2 * m2 * l1**2 * l2**2 * (m1 + m2 * np.sin(delta) ** 2)
        return numerator / denominator - (m1 + m2) * g * l1 * np.cos(q1) - m2 * g * l2 * np.cos(q2)

    def gradients(self, x, params):
        m1, m2, l1, l2, g = self._unpack(x, params)
        q1, q2, p1, p2 = (x[..., i] for i in range(4))
        delta = q1 - q2
        cos, sin = np.cos(delta), np.sin(delta)
        d = m1 + m2 * sin**2
        numerator = m2 * l2**2 * p1**2 + (m1 + m2) * l1**2 * p2**2 - 2 * m2 * l1 * l2 * p1 * p2 * cos
        dk_ddelta = sin * (l1 * l2 * p1 * p2 * d - numerator * cos) / (l1**2 * l2**2 * d**2)
        dh_dq1 = dk_ddelta + (m1 + m2) * g * l1 * np.sin(q1)
        dh_dq2 = -dk_ddelta + m2 * g * l2 * np.sin(q2)
        dh_dp1 = (l2 * p1 - l1 * p2 * cos) / (l1**2 * l2 * d)
        dh_dp2 = ((m1 + m2) * l1 * p2 - m2 * l2 * p1 * cos) / (m2 * l1 * l2**2 * d)
        return np.stack([dh_dq1, dh_dq2], axis=-1), np.stack([dh_dp1, dh_dp2], axis=-1)

    def energy_scale(self, params):
        return (np.asarray(params["m1"]) + np.asarray(params["m2"])) * np.asarray(params["g"]) * np.asarray(params["l1"])

    def sample_initial_state(self, rng, params):
        q1, p1 = _annulus(rng, *self.radius_range)
        q2, p2 = _annulus(rng, *self.radius_range)
        return np.array([q1, q2, p1, p2])

    def body_positions(self, x, params):
        _, _, l1, l2, _ = self._unpack(x, params)
        q1, q2 = x[..., 0], x[..., 1]
        bob1 = np.stack([l1 * np.sin(q1), -l1 * np.cos(q1)], axis=-1)
        bob2 = bob1 + np.stack([l2 * np.sin(q2), -l2 * np.cos(q2)], axis=-1)
        return np.stack([bob1, bob2], axis=-2)

    def body_masses(self, params):
        return np.stack([np.asarray(params["m1"]), np.asarray(params["m2"])], axis=-1).astype(np.float64)


class NBody(PhysicalSystem):
    """Newtonian gravity in the plane: H = -sum_{i<j} g m_i m_j / |q_i - q_j| + sum_i |p_i|^2 / (2 m_i).

    The state is `q = (x_1, y_1, ..., x_N, y_N)`, `p` likewise (momenta).

    Args:
      n_bodies: 2 or 3.
    """

    default_extent = 2.75  # The suite's two-body canvas bound; used for three bodies too.

    def __init__(self, n_bodies: int):
        if n_bodies not in (2, 3):
            raise ValueError(f"n_bodies must be 2 or 3, got {n_bodies}")
        self.n_bodies = n_bodies
        self.dim = 2 * n_bodies
        self.default_colors = n_bodies
        self.name = {2: "two_body", 3: "three_body"}[n_bodies]
        self.parameters = {"m": 1.0, "g": 1.0}
        self.extent = self.default_extent
        # Two bodies: the suite's position coordinates ~ U[0.5, 1.5]. Three bodies: orbit radius
        # ~ U[0.9, 1.2] and a small velocity perturbation (the CampusAI re-implementation's
        # largest stable `orbit_noise`), which breaks the symmetric circular orbit.
        self.radius_range = (0.5, 1.5) if n_bodies == 2 else (0.9, 1.2)
        self.orbit_noise = 0.0 if n_bodies == 2 else 0.005

    def sample_params(self, rng):
        return {"m": np.full([self.n_bodies], self.parameters["m"]), "g": np.asarray(self.parameters["g"])}

    def _split(self, x):
        lead = x.shape[:-1]
        q = x[..., : self.dim].reshape(lead + (self.n_bodies, 2))
        p = x[..., self.dim:].reshape(lead + (self.n_bodies, 2))
        return q, p

    def _masses(self, params, like):
        m = np.asarray(params["m"], np.float64)  # [n, bodies]
        return m.reshape(m.shape[:1] + (1,) * (like.ndim - 3) + m.shape[1:])

    def hamiltonian(self, x, params):
        q, p = self._split(x)
        m = self._masses(params, q)
        g = _expand(params["g"], x)
        kinetic = np.sum(np.sum(p**2, axis=-1) / (2.0 * m), axis=-1)
        potential = np.zeros_like(kinetic)
        for i in range(self.n_bodies):
            for j in range(i + 1, self.n_bodies):
                distance = np.linalg.norm(q[..., i, :] - q[..., j, :], axis=-1)
                potential = potential - g * m[..., i] * m[..., j] / distance
        return kinetic + potential

    def gradients(self, x, params):
        q, p = self._split(x)
        m = self._masses(params, q)
        g = _expand(params["g"], x)
        dh_dq = np.zeros_like(q)
        for i in range(self.n_bodies):
            for j in range(i + 1, self.n_bodies):
                r = q[..., i, :] - q[..., j, :]
                distance = np.sqrt(np.sum(r**2, axis=-1))
                # d/dq_i of -g m_i m_j / |q_i - q_j| is g m_i m_j (q_i - q_j) / |q_i - q_j|^3.
                pull = (g * m[..., i] * m[..., j] / distance**3)[..., None] * r
                dh_dq[..., i, :] += pull
                dh_dq[..., j, :] -= pull
        dh_dp = p / m[..., None]
        lead = x.shape[:-1]
        return dh_dq.reshape(lead + (self.dim,)), dh_dp.reshape(lead + (self.dim,))

    def energy_scale(self, params):
        m = np.asarray(params["m"], np.float64)
        return np.asarray(params["g"]) * m[:, 0] * m[:, 1]

    def sample_initial_state(self, rng, params):
        masses = np.asarray(params["m"], np.float64)
        g = float(params["g"])
        if self.n_bodies == 2:
            # The suite: body 1 at pos, body 2 at -pos, opposite velocities of a circular orbit
            # about the centre of mass (equal masses).
            pos = rng.uniform(*self.radius_range, size=2)
            r = float(np.linalg.norm(pos))
            vel = np.array([pos[1], -pos[0]]) * math.sqrt(g * masses[1]) / (2.0 * r**1.5)
            q = np.concatenate([pos, -pos])
            p = np.concatenate([masses[0] * vel, -masses[1] * vel])
            return np.concatenate([q, p])
        # Three equal masses on an equilateral triangle of circumradius r, each on the circular
        # orbit of that configuration: speed^2 = g m / (sqrt(3) r).
        r = rng.uniform(*self.radius_range)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        direction = 1.0 if rng.uniform() < 0.5 else -1.0
        speed = math.sqrt(g * masses[0] / (math.sqrt(3.0) * r))
        q, p = [], []
        for i in range(3):
            a = angle + 2.0 * math.pi * i / 3.0
            q.append([r * math.cos(a), r * math.sin(a)])
            v = direction * speed * np.array([-math.sin(a), math.cos(a)])
            v = v * (1.0 + self.orbit_noise * rng.uniform(-1.0, 1.0, size=2))
            p.append(masses[i] * v)
        return np.concatenate([np.ravel(q), np.ravel(p)])

    def body_positions(self, x, params):
        q, _ = self._split(x)
        return q

    def body_masses(self, params):
        return np.asarray(params["m"], np.float64)


_SYSTEMS: Dict[str, PhysicalSystem] = {
    system.name: system for system in (Pendulum(), MassSpring(), DoublePendulum(), NBody(2), NBody(3))
}

SYSTEMS: Tuple[str, ...] = ("pendulum", "mass_spring", "double_pendulum", "two_body", "three_body")


def get_system(name: str) -> PhysicalSystem:
    """The system registered as `name`.

    Raises:
      ValueError: for an unknown name, listing the valid ones.
    """
    try:
        return _SYSTEMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown system {name!r}; valid systems: {', '.join(SYSTEMS)}") from None
