#!/usr/bin/env python3
"""The five-system HGN table: one row per system from its `bench/hgn_quality.py` result.

    python bench/hgn_systems.py                   # the results named in RUNS
    python bench/hgn_systems.py --markdown-only   # print the README table, write nothing
    python bench/hgn_systems.py --quickstart      # the default command's table (see below)
    python bench/hgn_systems.py --settings double_pendulum   # every run of one system (see below)

Reads `bench/results/hgn_quality_<system>_<tag>.json` (written by the commands recorded in
each file), prints the README's table (test MSE x 1e-4 over 30 frames forward and backward,
the mean-frame baseline, VPT, the long horizon, latent R^2, energy drift, steps and training
minutes, the paper's Table 1 and the PyTorch re-implementation beside them) and writes
`bench/results/hgn_systems.json` (the rows, with the commands and CPUs they came from) and
`bench/results/hgn_systems.png` (each system's forward rollout strip, ground truth above
prediction).

`--quickstart` does the same for the default command, `python train_hgn.py --dataset SYSTEM`,
timed end to end by `bench/hgn_quickstart.py --dataset SYSTEM --name SYSTEM` into
`bench/results/hgn_quickstart_systems_<machine>.json` (`--machine`: `epyc`, the default, or
`zen5`; pendulum: the README's quick start on that CPU, `QUICKSTART_PENDULUM`, unless that file
has its own run): the table and `bench/results/hgn_quickstart_systems_<machine>.png`.

`--settings SYSTEM` compares every `bench/hgn_quality.py` run of one system measured on one kind
of CPU (`--cpu`, a substring of the CPU model; default "AMD EPYC"), whatever its tag: the
flags each run gave beyond those every run shares (printed once), its final test MSE, the forward test MSE after 10, 20, 30,
60 and 90 training minutes, and `bench/results/hgn_settings_<SYSTEM>.png` (forward test MSE
against training minutes and against steps, one line per run) with `hgn_settings_<SYSTEM>.json`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "bench"))  # its sibling hgn_quality.py, run from any folder

from hgn_quality import PUBLISHED  # noqa: E402
# system -> the tag of its quality run (the file hgn_quality_<system>_<tag>.json).
RUNS = {
    "pendulum": "quality_50min",
    "mass_spring": "quality_30min",
    "double_pendulum": "curriculum2400",  # its per-system setting (hgn.config.SYSTEM_SETTINGS)
    "two_body": "quality_50min",
    "three_body": "quality_50min",
}
# Published test MSE x 1e-4, from bench/hgn_quality.py's table of the paper (Toth et al. 2020
# Table 1, leapfrog) and the PyTorch re-implementation (pendulum: its leapfrog test figure; the
# others: its 5-frame model; the table gives 7.12 for mass_spring, a figure we could not
# trace, so the traced 12.21 is shown).
PAPER = {system: figures["paper_leapfrog"][1] for system, figures in PUBLISHED.items()}
PYTORCH = {system: figures.get("pytorch_leapfrog_test", figures.get("pytorch_5frame", [None, None])[1])
           for system, figures in PUBLISHED.items()}
GOAL = {"pendulum": 11.72, "mass_spring": 6.23, "two_body": 6.33, "three_body": 9.80}
# The default command's runs per kind of CPU (`--machine`): bench/hgn_quickstart.py --dataset S
# --name S writes hgn_quickstart_systems_<machine>.json. Pendulum, unless that file has its own
# run, is the README's quick start on that CPU (file, run name); None: the file must have it.
QUICKSTART_PENDULUM = {
    "epyc": (RESULTS / "hgn_quickstart_epyc.json", "default"),  # Zen 3, an earlier default
    "zen5": None,  # AMD EPYC Zen 5 (family 26), today's default, all five systems in one file
}


def quickstart_file(machine: str) -> Path:
    return RESULTS / f"hgn_quickstart_systems_{machine}.json"


def scores(result: dict) -> dict:
    """What every table here reads from a `bench/hgn_quality.py` result: its scores, steps,
    training minutes, command and CPU."""
    return {
        "test_forward": result["test_mse_x1e4"]["forward"],
        "test_backward": result["test_mse_x1e4"]["backward"],
        "mean_frame": result.get("mean_frame_mse_x1e4"),
        "vpt_forward": result["vpt_median_frames"]["test_forward"],
        "vpt_backward": result["vpt_median_frames"]["test_backward"],
        "latent_r2": result.get("latent_r2"),
        "steps": result["steps"],
        "train_minutes": None if result.get("train_seconds") is None else round(result["train_seconds"] / 60, 1),
        "command": result.get("command"),
        "cpu": (result.get("cpu") or {}).get("model"),
        "note": result.get("note"),
    }


def row(system: str, result: dict) -> dict:
    long = result.get("long_horizon") or {}
    out = {
        "system": system,
        "file": f"hgn_quality_{system}_{RUNS[system]}.json",
        **scores(result),
        "long_forward": long.get("forward", {}).get("mse_x1e4"),
        "long_backward": long.get("backward", {}).get("mse_x1e4"),
        "long_vpt_forward": long.get("forward", {}).get("vpt_median_frames"),
        "long_vpt_backward": long.get("backward", {}).get("vpt_median_frames"),
        "long_frames_beyond": long.get("frames_beyond"),
        "energy_relative_drift": result["energy"]["relative_drift"],
        "energy_steps": result["energy"]["steps"],
        "paper_test": PAPER.get(system),
        "pytorch_test": PYTORCH.get(system),
        "goal": GOAL.get(system),
    }
    if out["goal"] is not None:
        out["goal_met"] = max(out["test_forward"], out["test_backward"]) <= out["goal"]
    return out


def _num(value, fmt="{:.2f}"):
    return "—" if value is None else fmt.format(value)


def markdown(rows) -> str:
    lines = ["| system | test MSE fwd / bwd | mean frame | VPT fwd / bwd | 60 frames beyond: MSE fwd / bwd, VPT | "
             "latent R^2 | energy drift | steps, train min | paper | PyTorch | goal |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        long = (f"{_num(r['long_forward'], '{:.1f}')} / {_num(r['long_backward'], '{:.1f}')}, "
                f"{_num(r['long_vpt_forward'], '{:g}')} / {_num(r['long_vpt_backward'], '{:g}')}")
        goal = "report" if r["goal"] is None else f"<= {r['goal']:g} " + ("(met)" if r["goal_met"] else "(missed)")
        lines.append(
            f"| {r['system']} | **{r['test_forward']:.2f} / {r['test_backward']:.2f}** | {_num(r['mean_frame'], '{:.1f}')} "
            f"| {r['vpt_forward']:g} / {r['vpt_backward']:g} | {long} | {r['latent_r2']:.2f} "
            f"| {r['energy_relative_drift']:.3f} | {r['steps']}, {_num(r['train_minutes'], '{:g}')} "
            f"| {_num(r['paper_test'], '{:g}')} | {_num(r['pytorch_test'], '{:g}')} | {goal} |")
    return "\n".join(lines)


def strips(rows, path: Path, files=None) -> None:
    """Stacks each row's forward rollout strip (`files`: one PNG per row; default the quality runs')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = files or [RESULTS / f"hgn_quality_{r['system']}_{RUNS[r['system']]}_rollout_forward.png" for r in rows]
    images = [plt.imread(f) for f in files]
    fig, axes = plt.subplots(len(images), 1, figsize=(12, 1.6 * len(images) * images[0].shape[0] / 140))
    for ax, image, r in zip(np.atleast_1d(axes), images, rows):
        ax.imshow(image)
        ax.set_axis_off()
        ax.set_title(f"{r['system']}: test MSE x1e-4 {r['test_forward']:.2f} forward (ground truth above prediction)",
                     fontsize=8, loc="left")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def quickstart_rows(machine: str):
    """The default command's runs on `machine`, one per system found; returns (rows, missing
    systems)."""
    def runs_in(path: Path) -> dict:
        return json.loads(path.read_text())["runs"] if path.is_file() else {}

    systems_file = quickstart_file(machine)
    runs = runs_in(systems_file)
    rows, missing = [], []
    for system in RUNS:
        path, name = systems_file, system
        if system not in runs and system == "pendulum" and QUICKSTART_PENDULUM[machine] is not None:
            path, name = QUICKSTART_PENDULUM[machine]
        result = (runs if path == systems_file else runs_in(path)).get(name)
        if result is None:
            missing.append(system)
            continue
        rows.append({
            "system": system, "file": path.name, "run": name, "command": result["command"],
            "wall_clock_seconds": result["wall_clock_seconds"], "steps": result["steps"],
            "compute_dtype": result["compute_dtype"],
            "test_forward": result["test_mse_x1e4"]["forward"], "test_backward": result["test_mse_x1e4"]["backward"],
            "mean_frame": result["mean_frame_mse_x1e4"],
            "vpt_forward": result["vpt_median_frames"]["forward"],
            "vpt_backward": result["vpt_median_frames"]["backward"],
            "peak_rss_gb": result["peak_rss_gb"], "paper_test": PAPER.get(system), "goal": GOAL.get(system),
            "strip": result["rollout_strips"].get("forward"), "cpu": (result.get("cpu") or {}).get("model"),
            "commit": result.get("commit"), "date": result.get("date"),
        })
    return rows, missing


def quickstart_markdown(rows) -> str:
    lines = ["| system | in all | training steps | test MSE fwd / bwd | mean frame | VPT fwd / bwd | paper |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        minutes, seconds = divmod(round(r["wall_clock_seconds"]), 60)
        lines.append(f"| {r['system']} | {minutes} min {seconds} s | {r['steps']:,} | "
                     f"**{r['test_forward']:.2f} / {r['test_backward']:.2f}** | {r['mean_frame']:.1f} | "
                     f"{r['vpt_forward']:g} / {r['vpt_backward']:g} | {_num(r['paper_test'], '{:g}')} |")
    return "\n".join(lines)


SETTINGS_CPU = "AMD EPYC"  # --settings compares runs of one kind of CPU: this one unless --cpu says
MINUTES = (10, 20, 30, 60, 90)  # the curve's forward test MSE reported at these training minutes


def flag_groups(command: str) -> list:
    """The flags a `bench/hgn_quality.py` command gave `train_hgn.py` (after its " -- "), each
    with its values: `[("--preset", "quality"), ("--no-variational",), ...]`."""
    groups = []
    for token in (command.split(" -- ", 1)[1].split() if " -- " in command else []):
        if token.startswith("--") or not groups:
            groups.append((token,))
        else:
            groups[-1] += (token,)
    return groups


def settings(commands) -> tuple:
    """(the flags every command shares, each command's own flags). `--steps` counts as neither:
    the table has a column of the steps each run made."""
    groups = [[g for g in flag_groups(c) if g[0] != "--steps"] for c in commands]
    shared = [g for g in groups[0] if all(g in other for other in groups[1:])] if groups else []
    own = [" ".join(" ".join(g) for g in run if g not in shared) or "(only the shared flags)" for run in groups]
    return " ".join(" ".join(g) for g in shared), own


def at_minutes(curve, minutes: float, tolerance_s: float = 60.0):
    """The forward test MSE of the curve point nearest `minutes` of training, or None if no point
    lies within `tolerance_s` of it (the run stopped earlier, or its curve was sparser)."""
    near = [p for p in curve if abs(p["train_seconds"] - 60.0 * minutes) <= tolerance_s]
    if not near:
        return None
    return round(min(near, key=lambda p: abs(p["train_seconds"] - 60.0 * minutes))["test_mse_x1e4_forward"], 2)


def settings_rows(system: str, cpu: str, results: Path = RESULTS):
    """One row per `hgn_quality_<system>_<tag>.json` in `results` measured on a CPU whose model
    contains `cpu`, ordered by final forward test MSE."""
    prefix = f"hgn_quality_{system}_"
    rows = []
    for path in sorted(results.glob(prefix + "*.json")):
        result = json.loads(path.read_text())
        if "test_curve" not in result or cpu not in ((result.get("cpu") or {}).get("model") or ""):
            continue
        curve = result["test_curve"]
        base = scores(result)
        rows.append({
            "tag": path.stem[len(prefix):], **base, "batch_size": result.get("batch_size"),
            "test_forward": round(base["test_forward"], 2), "test_backward": round(base["test_backward"], 2),
            "forward_at_minutes": {f"{m:g}": at_minutes(curve, m) for m in MINUTES},
            "curve": curve,
        })
    shared, own = settings([r["command"] or "" for r in rows])
    for r, setting in zip(rows, own):
        r["shared"], r["setting"] = shared, setting
    return sorted(rows, key=lambda r: r["test_forward"])


def settings_markdown(rows) -> str:
    lines = ["| tag | setting | steps, train min | test MSE fwd / bwd | VPT fwd / bwd | latent R^2 | "
             + " | ".join(f"fwd at {m} min" for m in MINUTES) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(MINUTES)]
    for r in rows:
        at = " | ".join(_num(r["forward_at_minutes"][f"{m:g}"], "{:.1f}") for m in MINUTES)
        setting = r["setting"] if r["setting"].startswith("(") else f"`{r['setting']}`"
        lines.append(f"| {r['tag']} | {setting} | {r['steps']:,}, {_num(r['train_minutes'], '{:g}')} | "
                     f"**{r['test_forward']:.2f} / {r['test_backward']:.2f}** | "
                     f"{r['vpt_forward']:g} / {r['vpt_backward']:g} | {_num(r['latent_r2'])} | {at} |")
    return "\n".join(lines)


def settings_plot(rows, system: str, path: Path) -> None:
    """Forward test MSE against training minutes and against steps, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, 20))
    for i, r in enumerate(rows):
        style = dict(color=colours[i % 20], ls=("-", "--", ":")[i // 10 % 3], marker=".", lw=1.2,
                     label=f"{r['setting']} ({r['test_forward']:.1f})")
        points = r["curve"]
        axes[0].plot([p["train_seconds"] / 60 for p in points], [p["test_mse_x1e4_forward"] for p in points], **style)
        axes[1].plot([p["step"] for p in points], [p["test_mse_x1e4_forward"] for p in points], **style)
    baseline = next((r["mean_frame"] for r in rows if r["mean_frame"] is not None), None)
    for ax, label in zip(axes, ("training minutes (one core each)", "training steps")):
        if baseline is not None:
            ax.axhline(baseline, color="grey", ls=":", label="mean-frame baseline" if ax is axes[1] else None)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("forward test MSE x 1e-4 (30 frames)")
    axes[1].legend(fontsize=6.5, loc="upper right", title="setting (final forward)", title_fontsize=7)
    fig.suptitle(f"HGN on {system}, one setting changed per run, on {rows[0]['cpu']}; every run: {rows[0]['shared']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _settings(system: str, cpu: str, markdown_only: bool) -> int:
    rows = settings_rows(system, cpu)
    if not rows:
        raise SystemExit(f"no bench/hgn_quality.py results for {system} on a CPU matching {cpu!r} in "
                         f"{RESULTS.relative_to(ROOT)}")
    print(settings_markdown(rows))
    print(f"\nevery run: {rows[0]['shared']}")
    if not markdown_only:
        out = RESULTS / f"hgn_settings_{system}"
        table = [{k: v for k, v in r.items() if k != "curve"} for r in rows]
        out.with_suffix(".json").write_text(json.dumps({"system": system, "cpu_filter": cpu, "every_run": rows[0]["shared"], "rows": table},
                                                       indent=2) + "\n")
        settings_plot(rows, system, out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


def _quickstart(machine: str, markdown_only: bool) -> int:
    rows, missing = quickstart_rows(machine)
    if not rows:
        raise SystemExit(f"no results in {quickstart_file(machine).relative_to(ROOT)}: "
                         "run bench/hgn_quickstart.py --dataset ... first")
    print(quickstart_markdown(rows))
    if missing:
        print(f"missing: {', '.join(missing)}", file=sys.stderr)
    if not markdown_only:
        out = quickstart_file(machine).with_suffix("")
        out.with_suffix(".table.json").write_text(json.dumps({"rows": rows, "missing": missing}, indent=2) + "\n")
        strips(rows, out.with_suffix(".png"), files=[ROOT / r["strip"] for r in rows])
        print(f"wrote {out.with_suffix('.table.json')} and {out.with_suffix('.png')}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown-only", action="store_true")
    parser.add_argument("--quickstart", action="store_true",
                        help="the default command's runs (bench/hgn_quickstart.py --dataset) "
                             "instead of the quality runs")
    parser.add_argument("--machine", choices=list(QUICKSTART_PENDULUM), default=None,
                        help="with --quickstart: whose runs (the suffix of "
                             "bench/results/hgn_quickstart_systems_<machine>.json; default epyc)")
    parser.add_argument("--settings", metavar="SYSTEM", choices=list(RUNS),
                        help="compare every quality run of SYSTEM on one kind of CPU instead")
    parser.add_argument("--cpu", default=None,
                        help=f"with --settings: only runs whose CPU model contains this (default: {SETTINGS_CPU})")
    args = parser.parse_args(argv)
    if args.cpu is not None and not args.settings:
        parser.error("--cpu selects the runs of --settings: give --settings SYSTEM too")
    if args.machine is not None and not args.quickstart:
        parser.error("--machine selects the runs of --quickstart: give --quickstart too")
    if args.quickstart:
        return _quickstart(args.machine or "epyc", args.markdown_only)
    if args.settings:
        return _settings(args.settings, args.cpu or SETTINGS_CPU, args.markdown_only)
    rows, missing = [], []
    for system, tag in RUNS.items():
        path = RESULTS / f"hgn_quality_{system}_{tag}.json"
        if path.is_file():
            rows.append(row(system, json.loads(path.read_text())))
        else:
            missing.append(str(path.relative_to(ROOT)))
    if not rows:
        parser.error(f"no results: run bench/hgn_quality.py first (missing {', '.join(missing)})")
    print(markdown(rows))
    if missing:
        print(f"missing: {', '.join(missing)}", file=sys.stderr)
    if not args.markdown_only:
        (RESULTS / "hgn_systems.json").write_text(json.dumps({"rows": rows, "missing": missing}, indent=2) + "\n")
        strips(rows, RESULTS / "hgn_systems.png")
        print(f"wrote {RESULTS / 'hgn_systems.json'} and hgn_systems.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
