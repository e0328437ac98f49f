"""Generates a physics dataset with TFDS: `python -m data.generate pendulum --train N --test M`.

    python -m data.generate pendulum                       # default size into datasets/
    python -m data.generate all --paper                     # every system at 50,000 / 10,000
    python -m data.generate two_body --dt 0.1 --frames 64 --data-dir ~/tensorflow_datasets

Afterwards `tfds.load("hamiltonian_physics/<config>", data_dir=...)` reads it (the config name
is printed).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List, Optional

from common import console
from common.runs import import_tensorflow_quietly

__all__ = ["add_variant_arguments", "main", "variant_from_args"]


def add_variant_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that choose a dataset variant (shared by `data.generate` and `data.show`)."""
    from data.generation import (DEFAULT_DATA_DIR, DEFAULT_DT, DEFAULT_FRAMES, DEFAULT_IMAGE_SIZE, DEFAULT_TEST,
                                 DEFAULT_TRAIN, VARIANT_HELP)

    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="TFDS data directory (default: %(default)s; $HAMILTONIAN_DATA_DIR overrides)")
    parser.add_argument("--train", type=int, default=DEFAULT_TRAIN, help="train trajectories (default: %(default)s)")
    parser.add_argument("--test", type=int, default=DEFAULT_TEST, help="test trajectories (default: %(default)s)")
    parser.add_argument("--paper", action="store_true", help="paper scale: 50,000 train / 10,000 test")
    default = " (default: %(default)s)"
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help=VARIANT_HELP["frames"] + default)
    parser.add_argument("--dt", type=float, default=DEFAULT_DT, help=VARIANT_HELP["dt"] + default)
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help=VARIANT_HELP["image_size"] + default)
    parser.add_argument("--colors", type=int, default=None, help=VARIANT_HELP["colors"])
    parser.add_argument("--noise-std", type=float, default=0.0, help=VARIANT_HELP["noise_std"] + default)
    parser.add_argument("--seed", type=int, default=0, help=VARIANT_HELP["seed"] + default)


def variant_from_args(args: argparse.Namespace) -> Dict[str, object]:
    """Keyword arguments for `prepare` / `make_config` from the parsed flags."""
    from data.generation import PAPER_TEST, PAPER_TRAIN

    n_train, n_test = (PAPER_TRAIN, PAPER_TEST) if args.paper else (args.train, args.test)
    return dict(n_train=n_train, n_test=n_test, n_frames=args.frames, dt=args.dt, image_size=args.image_size,
                n_colors=args.colors, noise_std=args.noise_std, seed=args.seed)


def main(argv: Optional[List[str]] = None) -> int:
    from data.systems import SYSTEMS, get_system

    parser = argparse.ArgumentParser(prog="python -m data.generate", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("systems", nargs="+", metavar="system", help=f"one or more of {', '.join(SYSTEMS)}, or 'all'")
    add_variant_arguments(parser)
    parser.add_argument("--workers", type=int, default=None, help="generation processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="delete and rebuild an existing copy")
    args = parser.parse_args(argv)
    systems = list(SYSTEMS) if args.systems == ["all"] else args.systems
    try:
        for system in systems:
            get_system(system)  # the names first: that check needs no TensorFlow
    except ValueError as error:
        parser.error(str(error))

    import_tensorflow_quietly()  # after the flags check out; hides TensorFlow's C++ start-up lines
    console.quiet()  # and TFDS's notices about its own internals
    from data.builder import make_config, prepare

    try:
        variant = variant_from_args(args)
        configs = [make_config(system, **variant) for system in systems]  # Validate all before starting.
    except ValueError as error:
        parser.error(str(error))
    for system, config in zip(systems, configs):
        start = time.perf_counter()
        builder = prepare(system, data_dir=args.data_dir, num_workers=args.workers, overwrite=args.overwrite,
                          **variant)
        splits = {name: split.num_examples for name, split in builder.info.splits.items()}
        print(f"{builder.info.full_name}: {splits} in {builder.data_dir} ({time.perf_counter() - start:.1f} s)\n"
              f"  load with tfds.load('hamiltonian_physics/{config.name}', data_dir='{args.data_dir}')", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
