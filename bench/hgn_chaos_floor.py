#!/usr/bin/env python3
"""What a perfect model of the dynamics scores when its state estimate is slightly off.

    python bench/hgn_chaos_floor.py
    python bench/hgn_chaos_floor.py --systems pendulum double_pendulum --n 100 --epsilons 0 0.01

HGN infers (q, p) from 5 frames of 32x32 pixels, so its state estimate has an error; the true
dynamics carry that error forward, and on a chaotic system they amplify it. This bench asks
how much of a system's 30-frame test MSE that alone costs, with no learned part at all: for `n`
trajectories of each system (the dataset's generator, seed and rendering), it perturbs the
true initial state by `epsilon` times the spread of each state coordinate over the
trajectories' initial states (Gaussian, fixed seed), integrates both states with the
simulator that made the dataset, renders both with the dataset's colours and radii, and scores
the perturbed frames against the true ones as `hgn.evaluation` scores a model: per-pixel MSE
x1e-4 over frames 0-29, and the median VPT over frames 5-29 (mse / mean(gt^2) > 0.025 ends
it; at most 25). It also gives the MSE over frames 0-4, the frames a 5-frame model infers from,
as the size of the perturbation in the pictures themselves. `epsilon = 0` re-simulates the
unperturbed state: it must score about 0, which shows the method sees no error where there is
none.

Writes `bench/results/hgn_chaos_floor.json` (with the command and the CPU) and
`bench/results/hgn_chaos_floor.png`: the 30-frame MSE against epsilon, one line per system,
and each system's per-frame error at one epsilon.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import cpu  # noqa: E402
from common.runs import atomic_write_json, import_tensorflow_quietly  # noqa: E402

cpu.use_onednn()  # recorded by cpu.describe(); nothing here runs TensorFlow
import_tensorflow_quietly()  # hgn.evaluation loads it; its scoring functions are NumPy
from data.generation import DEFAULT_DT, DEFAULT_FRAMES, DEFAULT_IMAGE_SIZE, generate_arrays  # noqa: E402
from data.rendering import palette, render  # noqa: E402
from data.simulation import simulate  # noqa: E402
from data.systems import SYSTEMS, get_system  # noqa: E402
from hgn.evaluation import per_frame_mse, valid_prediction_time  # noqa: E402

RESULTS = ROOT / "bench" / "results"
FRAMES = 30  # scored frames, as hgn.evaluation's 30-frame test MSE
INPUT_FRAMES = 5  # the recipe's inferred frames: VPT counts the frames after them
EPSILONS = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1)


def floor(system_name: str, n: int, epsilons, seed: int = 0) -> dict:
    """The chaos floor of one system: scores of true-dynamics rollouts from perturbed states.

    Returns:
      `{"sigma": [2 d], "mean_frame_mse_x1e4", "rows": [{"epsilon", "mse_x1e4",
      "inferred_frames_mse_x1e4", "vpt_median_frames", "per_frame_mse_x1e4"}, ...]}`.
    """
    system = get_system(system_name)
    # The train split's first n trajectories, exactly (same frames, seed and checks).
    arrays = generate_arrays(system_name, n, n_frames=DEFAULT_FRAMES, dt=DEFAULT_DT, image_size=DEFAULT_IMAGE_SIZE,
                             seed=seed)
    params = arrays["params"]
    x0 = arrays["x"][:, 0]
    sigma = x0.std(axis=0)
    n_colors = system.default_colors
    colors = palette(n_colors)[arrays["color_index"]]
    radii = np.sqrt(system.body_masses(params) / np.pi)
    times = np.arange(FRAMES, dtype=np.float64) * DEFAULT_DT

    def frames_from(state0):
        states = simulate(system, state0, params, times)
        positions = system.body_positions(states, params)
        return render(positions, radii, colors, system.extent, DEFAULT_IMAGE_SIZE, dtype=np.uint8)

    truth = frames_from(x0).astype(np.float64) / 255.0
    noise = np.random.default_rng(seed + 1).standard_normal(x0.shape)
    rows = []
    for epsilon in epsilons:
        pred = frames_from(x0 + epsilon * sigma * noise).astype(np.float64) / 255.0
        err = per_frame_mse(truth, pred)  # [n, FRAMES], as a model's rollout is scored
        vpt = valid_prediction_time(truth, pred, INPUT_FRAMES)
        rows.append({
            "epsilon": float(epsilon),
            "mse_x1e4": round(float(err.mean() * 1e4), 3),
            "inferred_frames_mse_x1e4": round(float(err[:, :INPUT_FRAMES].mean() * 1e4), 3),
            "vpt_median_frames": float(np.median(vpt)),
            "per_frame_mse_x1e4": [round(float(v), 3) for v in err.mean(axis=0) * 1e4],
        })
    mean_frame = float(np.mean(np.square(truth - truth.mean(axis=(0, 1), keepdims=True))) * 1e4)
    return {"sigma": [round(float(s), 4) for s in sigma], "mean_frame_mse_x1e4": round(mean_frame, 2),
            "rows": rows}


def plot(results: dict, epsilon: float, path: Path) -> None:
    """Two panels: 30-frame MSE against epsilon per system, and per-frame error at `epsilon`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for system, result in results.items():
        rows = [r for r in result["rows"] if r["epsilon"] > 0]
        left.plot([r["epsilon"] for r in rows], [r["mse_x1e4"] for r in rows], marker="o", label=system)
        at = [r for r in result["rows"] if r["epsilon"] == epsilon]
        if at:
            right.plot(at[0]["per_frame_mse_x1e4"], label=system)
    left.set(xscale="log", yscale="log", xlabel="epsilon (state error / spread of the initial states)",
             ylabel="30-frame test MSE x 1e-4", title="true dynamics from a perturbed state")
    right.axvline(INPUT_FRAMES - 0.5, color="grey", linestyle=":", linewidth=1)
    right.set(xlabel="frame", ylabel="per-pixel MSE x 1e-4", title=f"per frame, epsilon = {epsilon:g}")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--n", type=int, default=200, help="trajectories per system (default 200)")
    parser.add_argument("--epsilons", nargs="+", type=float, default=list(EPSILONS),
                        help="state errors as fractions of each coordinate's spread")
    parser.add_argument("--plot-epsilon", type=float, default=0.01, help="the right panel's epsilon")
    parser.add_argument("--out", default=str(RESULTS / "hgn_chaos_floor.json"))
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error(f"--n must be at least 2, got {args.n}")
    if any(e < 0 for e in args.epsilons):
        parser.error(f"--epsilons must be >= 0, got {args.epsilons}")

    started = time.time()
    results = {}
    for system in args.systems:
        results[system] = floor(system, args.n, sorted(args.epsilons))
        cells = ", ".join(f"eps {r['epsilon']:g}: {r['mse_x1e4']:.2f} (frames 0-4 {r['inferred_frames_mse_x1e4']:.2f},"
                          f" VPT {r['vpt_median_frames']:g})" for r in results[system]["rows"])
        print(f"{system} (mean frame {results[system]['mean_frame_mse_x1e4']}): {cells}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = out.with_suffix(".png")
    plot(results, args.plot_epsilon, picture)
    atomic_write_json(out, {
        "command": "python bench/hgn_chaos_floor.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "what": "true dynamics from the initial state plus epsilon * spread * N(0, 1), scored against the true "
                f"rollout: MSE x1e-4 over frames 0-{FRAMES - 1}, over frames 0-{INPUT_FRAMES - 1}, median VPT "
                f"over frames {INPUT_FRAMES}-{FRAMES - 1}",
        "n": args.n, "dt": DEFAULT_DT, "image_size": DEFAULT_IMAGE_SIZE, "seconds": round(time.time() - started, 1),
        "cpu": cpu.describe(), "systems": results, "picture": picture.name,
    })
    print(f"wrote {out} and {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
