"""Looks at a physics dataset: `python -m data.show pendulum [--data-dir D] [--out DIR]`.

Writes `<out>/<config>_grid.png` (one trajectory per row, frames left to right) and
`<out>/<config>.gif` (the first trajectory, looping). Reads the prepared TFDS dataset when it
exists in the data directory; otherwise simulates the few trajectories it shows in memory (the
same ones: example i of the train split), so it never waits for a full generation.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
from PIL import Image

from common import console
from common.runs import import_tensorflow_quietly
from data.generate import add_variant_arguments, variant_from_args

__all__ = ["main", "save_gif", "save_grid"]


def _upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(frames, scale, axis=-3), scale, axis=-2)


def save_grid(images: np.ndarray, path: str, scale: int = 3, gap: int = 2) -> None:
    """Saves trajectories `[n, T, H, W, 3]` (floats in [0, 1]) as one PNG, a row per trajectory."""
    n, t, h, w, _ = images.shape
    big = _upscale(np.asarray(images), scale)
    hh, ww = h * scale, w * scale
    canvas = np.ones((n * (hh + gap) - gap, t * (ww + gap) - gap, 3), np.float32)
    for i in range(n):
        for j in range(t):
            canvas[i * (hh + gap):i * (hh + gap) + hh, j * (ww + gap):j * (ww + gap) + ww] = big[i, j]
    Image.fromarray(np.rint(canvas * 255).astype(np.uint8)).save(path)


def save_gif(frames: np.ndarray, path: str, scale: int = 6, frame_ms: int = 125) -> None:
    """Saves one trajectory `[T, H, W, 3]` (floats in [0, 1]) as a looping GIF."""
    big = np.rint(_upscale(np.asarray(frames), scale) * 255).astype(np.uint8)
    pictures = [Image.fromarray(f) for f in big]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0)


def main(argv: Optional[List[str]] = None) -> int:
    from data.systems import SYSTEMS

    parser = argparse.ArgumentParser(prog="python -m data.show", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("system", help=f"one of {', '.join(SYSTEMS)}")
    add_variant_arguments(parser)
    parser.add_argument("--out", default="runs/show", help="output folder")
    parser.add_argument("--count", type=int, default=6, help="trajectories in the grid")
    parser.add_argument("--split", default="train", choices=["train", "test"], help="split to read")
    args = parser.parse_args(argv)

    import_tensorflow_quietly()  # after the flags parse; hides TensorFlow's C++ start-up lines
    console.quiet()  # and TFDS's notices about its own internals
    from data.builder import make_config

    try:
        variant = variant_from_args(args)
        config = make_config(args.system, **variant)
    except ValueError as error:
        parser.error(str(error))
    count = max(1, min(args.count, config.n_train if args.split == "train" else config.n_test))
    info_file = Path(args.data_dir) / "hamiltonian_physics" / config.name / "1.0.0" / "dataset_info.json"
    if info_file.exists():
        import tensorflow_datasets as tfds

        from data.builder import builder_for

        builder = builder_for(config, args.data_dir)
        examples = builder.as_dataset(split=args.split).filter(lambda e: e["index"] < count)
        examples = sorted(tfds.as_numpy(examples), key=lambda e: e["index"])
        images = np.stack([e["frames"] for e in examples]).astype(np.float32) / 255.0
        source = f"{builder.data_dir} ({args.split})"
    else:
        from data.generation import generate_arrays

        kwargs = {k: v for k, v in variant.items() if k not in ("n_train", "n_test")}
        if args.split == "test":
            parser.error(f"the test split is shown from a prepared dataset only; none at {info_file.parent}")
        images = generate_arrays(args.system, count, **kwargs)["images"]
        source = "simulated in memory (no prepared dataset found)"
    os.makedirs(args.out, exist_ok=True)
    grid, gif = os.path.join(args.out, f"{config.name}_grid.png"), os.path.join(args.out, f"{config.name}.gif")
    save_grid(images, grid)
    save_gif(images[0], gif, frame_ms=max(20, int(round(1000 * config.dt))))
    print(f"{args.system}: {len(images)} trajectories from {source}\n  wrote {grid}\n  wrote {gif}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
