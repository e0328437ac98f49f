"""Predict with a trained HGN: a clip in, a movie of its future (or past) out.

    python -m hgn.predict runs/hgn-pendulum --dataset pendulum --index 3 --steps 60 --out pendulum.mp4
    python -m hgn.predict runs/hgn-pendulum --video clip.mp4 --steps 120 --dt 0.0625 --out slow.mp4
    python -m hgn.predict runs/hgn-pendulum/saved_model --video frames/ --direction backward --out past.mp4

PATH is a `train_hgn.py` run directory (its `saved_model/` is used) or a SavedModel written by
`hgn.serving` (with its `hgn_config.json`); the model runs through `tf.saved_model.load`, so
any such export works without this project's model code.

The clip is a video file OpenCV reads (`--video clip.mp4`, `.avi`, ...), a folder of PNG frames
read in natural name order, frame2.png before frame10.png (`--video frames/`), or test
trajectory I of a rendered physics dataset (`--dataset SYSTEM --index I`, generated as
`train_hgn.py` generates its test split: same seed, frame count, dt and size as the run, or the
defaults for a bare SavedModel; the clip is its first k frames). Frames are centre-cropped to a
square and resized to the model's image size (`cv2.INTER_AREA`).

`--direction forward` infers the state at the clip's first frame from its first k frames and
rolls it out `--steps` steps of `--dt` (default: the model's dt; smaller is slow motion,
larger fast forward, negative runs time backward); `--direction backward` infers the state at
the clip's last frame from its last k frames and rolls it back in time (`rollout_backward`,
dt > 0). The output (`--out FILE.mp4`, and `FILE.gif` beside it) has `--steps` + 1 frames of
side-by-side panels: the input clip (played in the prediction's direction of time, then held),
the prediction and, for dataset clips, the ground truth at the same times (simulated from the
true state, whose momentum is negated to run backward in time).

Bad input (a missing or unreadable video, a grey-scale clip, fewer frames than the model's k,
a path that is not an HGN run or export, a `train_nhf.py` run) ends with one line on stderr
and exit status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from common.config import ArgumentParser
from common.runs import refresh_export_command

PROG = "python -m hgn.predict"
LABEL_HEIGHT = 16  # pixels of the caption strip above each panel
PANEL_GAP = 4  # pixels between panels
MAX_MOVIE_SIDE = 8190  # pixels: OpenCV's MPEG-4 writer fails to open above 8,190 (measured: 8,200 failed)
MAX_MOVIE_BYTES = 4 * 2 ** 30  # memory for the composed movie and the GIF's frames together
MOVIE_BYTES_PER_PIXEL = 3 + 4  # the movie's RGB, and the GIF's Pillow images (RGB stored as 4 bytes)
MAX_FPS = 50.0  # a GIF stores delays in hundredths of a second; players treat 0 and 1 as 10


# ----------------------------------------------------------------------------- the model
def locate_export(path) -> Tuple[Path, Dict[str, object]]:
    """Finds the HGN SavedModel of a run directory or an export folder (without loading it).

    Args:
      path: a `train_hgn.py` run directory (holding `config.json` and `saved_model/`) or a
        SavedModel folder written by `hgn.serving.export`.

    Returns:
      `(export folder, info)`: info holds `input_frames`, `dt`, `image_size` and
      `serving_caps` (empty for exports older than the caps) from `hgn_config.json`, and
      `data`: the run's dataset settings `{"dataset", "data_seed", "data_frames", "colors",
      "noise_std"}` when known
      (a run directory, or an export inside one), else None; `stale`: a note when the run's
      metrics.json is from a later step than the export (a run resumed with `--no-export`), else None.

    Raises:
      ValueError: naming what `path` is instead (missing, a `train_nhf.py` run, a run without
        an export, a SavedModel without `hgn_config.json`, anything else).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{str(path)!r} does not exist")
    run_config = None
    if (path / "config.json").is_file():
        run_config = _read_json(path / "config.json")
        if "target" in run_config and "dataset" not in run_config:
            raise ValueError(f"{str(path)!r} is a train_nhf.py run (its config.json has a 'target'), not a "
                             "train_hgn.py run")
        if "dataset" not in run_config:
            raise ValueError(f"{str(path)!r} is not a train_hgn.py run (its config.json has no 'dataset')")
        export = path / "saved_model"
        if not (export / "saved_model.pb").is_file():
            raise ValueError(f"the run {str(path)!r} has no saved_model/ yet; write it with: "
                             f"{refresh_export_command('train_hgn.py', path)}")
    elif (path / "saved_model.pb").is_file():
        export = path
        parent = path.parent / "config.json"
        if parent.is_file():  # an export inside a run directory: the run knows its dataset
            with contextlib.suppress(ValueError):
                run_config = _read_json(parent)
            run_config = run_config if run_config and "dataset" in run_config else None
    else:
        raise ValueError(f"{str(path)!r} is neither a train_hgn.py run directory (config.json, saved_model/) nor a "
                         "SavedModel written by hgn/serving.py (saved_model.pb, hgn_config.json)")
    if not (export / "hgn_config.json").is_file():
        raise ValueError(f"{str(export)!r} is a SavedModel but not an HGN export (it has no hgn_config.json)")
    info = _read_json(export / "hgn_config.json")
    info.setdefault("serving_caps", {})
    info["data"] = None
    info["stale"] = None
    metrics = export.parent / "metrics.json"
    if run_config is not None and "step" in info and metrics.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            run_step = int(_read_json(metrics)["step"])
            if run_step != info["step"]:
                info["stale"] = (f"the export holds the weights of step {info['step']}, the run was evaluated at "
                                 f"step {run_step} (--no-export); refresh it: "
                                 f"{refresh_export_command('train_hgn.py', export.parent)}")
    if run_config is not None:
        c = run_config.get("config", {})
        info["data"] = {"dataset": run_config["dataset"], "data_seed": c.get("data_seed", 0),
                        "data_frames": c.get("data_frames"), "colors": c.get("colors"),
                        "noise_std": c.get("noise_std", 0.0)}
    return export, info


def load_export(export: Path):
    """`tf.saved_model.load` of an export folder (`locate_export`).

    Raises:
      ValueError: the SavedModel cannot be loaded (a damaged export), with TensorFlow's reason.
    """
    import tensorflow as tf

    try:
        return tf.saved_model.load(str(export))
    except Exception as e:  # any loader failure: say which folder, keep TensorFlow's reason short
        raise ValueError(f"cannot load the SavedModel {str(export)!r}: {' '.join(str(e).split())[:200]}") from None


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {str(path)!r}: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{str(path)!r} does not hold a JSON object")
    return value


def roll_out(module, frames: np.ndarray, steps: int, dt: float, direction: str) -> np.ndarray:
    """The predicted frames of one clip through the SavedModel's `rollout` / `rollout_backward`.

    Args:
      module: a loaded HGN export (`load_export`).
      frames: the clip `[T >= k, S, S, 3]` float32 in [0, 1] at the model's image size.
      steps: steps to roll out.
      dt: step (`forward`: any sign; `backward`: > 0).
      direction: `forward` (state at the first frame) or `backward` (state at the last frame,
        rolled back in time).

    Returns:
      Frames `[steps + 1, S, S, 3]` float32; frame 0 is the first (forward) or last (backward)
      frame of the clip as the model reconstructs it.
    """
    import tensorflow as tf

    signature = module.rollout_backward if direction == "backward" else module.rollout
    out = signature(tf.constant(frames[None], tf.float32), tf.constant(steps, tf.int32), tf.constant(dt, tf.float32))
    return out["frames"].numpy()[0]


# ----------------------------------------------------------------------------- clips
def to_model_frames(frames: np.ndarray, image_size: int) -> np.ndarray:
    """Centre-crops frames `[T, H, W, 3]` to squares and resizes them to `image_size` (INTER_AREA)."""
    return np.stack([_square(frame, image_size) for frame in frames])


def _square(frame: np.ndarray, image_size: int) -> np.ndarray:
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = np.ascontiguousarray(frame[top:top + side, left:left + side])
    return cv2.resize(crop, (image_size, image_size), interpolation=cv2.INTER_AREA)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Sends file descriptor 2 to /dev/null: FFmpeg reports undecodable files there itself."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def read_clip(path, image_size: int) -> np.ndarray:
    """Reads a video file or a folder of PNG frames as the model's input clip.

    Frames are converted BGR -> RGB and to float32 in [0, 1], centre-cropped to squares and
    resized to `image_size` (`to_model_frames`).

    Args:
      path: a video file OpenCV's `cv2.VideoCapture` reads (mp4, avi, ...) or a folder of PNG
        files (read in natural name order, `_natural_key`, with `cv2.imread`; an alpha channel is
        dropped).
      image_size: the model's frame size.

    Returns:
      Frames `[T, image_size, image_size, 3]` float32.

    Raises:
      ValueError: a missing path, an unreadable video or PNG, a folder without PNGs, or a
        grey-scale clip (one channel, or R = G = B in every frame): the model needs colour.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"--video {str(path)!r} does not exist")
    frames, colour = [], False
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() == ".png"), key=_natural_key)
        if not files:
            raise ValueError(f"--video {str(path)!r} is a folder without PNG frames")
        for f in files:
            image = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise ValueError(f"cannot read the PNG {str(f)!r}")
            if image.ndim == 2 or image.shape[2] < 3:
                raise ValueError(f"the PNG {str(f)!r} is grey-scale (one channel); the model needs colour (RGB) "
                                 "frames")
            scale = np.iinfo(image.dtype).max if np.issubdtype(image.dtype, np.integer) else 1.0
            rgb = image[..., 2::-1].astype(np.float32) / np.float32(scale)
            colour = colour or not _grey(rgb)
            frames.append(_square(rgb, image_size))
    else:
        with _stderr_silenced():
            capture = cv2.VideoCapture(str(path))
            try:
                while capture.isOpened():
                    ok, bgr = capture.read()
                    if not ok:
                        break
                    colour = colour or not _grey(bgr)
                    frames.append(_square(bgr[..., ::-1].astype(np.float32) / np.float32(255.0), image_size))
            finally:
                capture.release()
        if not frames:
            raise ValueError(f"cannot read the video {str(path)!r} (no frame decoded: not a video file OpenCV "
                             "can read, or empty)")
    if not colour:
        raise ValueError(f"--video {str(path)!r} is grey-scale (a single channel: R = G = B in every frame); the "
                         "model needs colour (RGB) frames")
    return np.stack(frames)


def _natural_key(path: Path) -> Tuple:
    """Sort key of a file name with its digit runs compared as numbers: `ffmpeg ... %d.png`
    writes 1.png ... 10.png, which plain sorting would play as 1, 10, 11, ..., 2."""
    parts = re.split(r"([0-9]+)", path.name.lower())  # text, digits, text, ...: like types meet
    return [int(part) if i % 2 else part for i, part in enumerate(parts)], path.name


def _grey(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def held_out_clip(system: str, index: int, *, input_frames: int, dt: float, image_size: int, data_seed: int = 0,
                  data_frames: int = 32, colors: Optional[int] = None, noise_std: float = 0.0) -> Dict[str, object]:
    """Test trajectory `index` of a rendered physics dataset: the clip and its true state.

    The trajectory is example `index` of the test stream that `data.prepare` renders into the
    test split for these settings (identical up to the ODE solver's tolerance, as the solver's
    steps are chosen per batch of examples).

    Args:
      system: one of `data.SYSTEMS`.
      index: the example (>= 0).
      input_frames: k; the clip is the first k frames.
      dt, image_size, data_seed, data_frames, colors, noise_std: the dataset variant (the run's;
        a bare SavedModel gets the data package's defaults: seed 0, 32 frames, the system's
        colours, no noise).

    Returns:
      dict: `frames` `[k, S, S, 3]` float32, `x` `[k, 2 d]` the true state at each frame,
      `params` (the example's physical parameters, leading axis 1), `color_index` `[1, bodies]`
      and `colors`, the size of the palette `color_index` indexes.

    Raises:
      ValueError: an unknown system or a negative index.
    """
    import data
    from data.generation import generate_chunks

    if system not in data.SYSTEMS:
        raise ValueError(f"unknown --dataset {system!r}; valid: {', '.join(data.SYSTEMS)}")
    if index < 0:
        raise ValueError(f"--index must be >= 0, got {index}")
    chunk = next(generate_chunks(system, index, index + 1, stream=1, n_frames=max(data_frames, input_frames), dt=dt,
                                 image_size=image_size, n_colors=colors, noise_std=noise_std, seed=data_seed))
    return {"frames": chunk["frames"][0, :input_frames].astype(np.float32) / np.float32(255.0),
            "x": chunk["x"][0, :input_frames], "params": chunk["params"], "color_index": chunk["color_index"],
            "colors": int(data.get_system(system).palette_size(colors))}


def true_frames(system: str, state: np.ndarray, params: Dict[str, np.ndarray], color_index: np.ndarray,
                steps: int, dt: float, image_size: int, colors: Optional[int] = None) -> np.ndarray:
    """Ground truth of a prediction: the system simulated from `state` for `steps` steps of `dt`.

    A negative `dt` runs time backward: the momentum is negated and the motion run forward
    (every system here has H(q, p) = H(q, -p), so the positions retrace the past).

    Args:
      system: one of `data.SYSTEMS`.
      state: the true state `[2 d]` (q then p) at the prediction's frame 0.
      params, color_index: the example's parameters and palette indices (leading axis 1).
      steps, dt: as the prediction's.
      image_size: frame size.
      colors: the palette's size (`held_out_clip`'s `colors`); None for the system's default.

    Returns:
      Frames `[steps + 1, S, S, 3]` float32 in [0, 1], rendered (and 8-bit quantised) as the
      dataset's.
    """
    import data
    from data.rendering import palette

    sys_ = data.get_system(system)
    x0 = np.array(state, np.float64)[None]
    if dt < 0:
        x0[:, sys_.dim:] *= -1.0
    times = abs(dt) * np.arange(steps + 1, dtype=np.float64)
    states = data.simulate(sys_, x0, params, times)
    rgb = palette(sys_.palette_size(colors))[color_index]
    radii = np.sqrt(sys_.body_masses(params) / np.pi)
    frames = data.render(sys_.body_positions(states, params), radii, rgb, sys_.extent, image_size, dtype=np.uint8)
    return frames[0].astype(np.float32) / np.float32(255.0)


# ----------------------------------------------------------------------------- the movie
Caption = Union[str, Sequence[str]]  # one caption, or one per frame


def movie_size(n_panels: int, image_size: int, scale: int) -> Tuple[int, int]:
    """`(height, width)` in pixels of a movie of `n_panels` captioned panels (`compose_movie`)."""
    side = image_size * scale
    return LABEL_HEIGHT + side, n_panels * side + (n_panels - 1) * PANEL_GAP


def _movie_problem(n_frames: int, n_panels: int, image_size: int, scale: int) -> Optional[str]:
    """Why that movie cannot be written (too wide for MPEG-4, too big for memory), or None."""
    height, width = movie_size(n_panels, image_size, scale)
    if max(height, width) > MAX_MOVIE_SIDE:
        return (f"--scale {scale} makes the movie {width} x {height} pixels ({n_panels} panels of {image_size} x "
                f"{scale}); MPEG-4 allows at most {MAX_MOVIE_SIDE} a side: lower --scale")
    nbytes = n_frames * height * width * MOVIE_BYTES_PER_PIXEL
    if nbytes > MAX_MOVIE_BYTES:
        return (f"the movie, {n_frames} frames of {width} x {height} pixels, would take {nbytes / 2 ** 30:.1f} GiB "
                f"of memory with its GIF (at most {MAX_MOVIE_BYTES // 2 ** 30}): lower --steps or --scale")
    return None


def compose_movie(panels: Sequence[Tuple[Caption, np.ndarray]], n_frames: int, scale: int) -> np.ndarray:
    """Side-by-side captioned panels, each upscaled `scale` times (nearest neighbour).

    Args:
      panels: `(caption, frames [T_i, S, S, 3] float32 in [0, 1])`; a panel shorter than
        `n_frames` holds its last frame. The caption is a string or one string per frame.
      n_frames: frames of the movie.
      scale: integer upscaling factor.

    Returns:
      RGB frames `[n_frames, LABEL_HEIGHT + S * scale, width, 3]` uint8.
    """
    side = panels[0][1].shape[1] * scale
    movie = np.full((n_frames, *movie_size(len(panels), panels[0][1].shape[1], scale), 3), 255, np.uint8)
    for p, (caption, frames) in enumerate(panels):
        left = p * (side + PANEL_GAP)
        for t in range(n_frames):
            frame = frames[min(t, len(frames) - 1)]
            pixels = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
            movie[t, LABEL_HEIGHT:, left:left + side] = cv2.resize(pixels, (side, side),
                                                                   interpolation=cv2.INTER_NEAREST)
            text = caption if isinstance(caption, str) else caption[t]
            cv2.putText(movie[t], text, (left + 2, LABEL_HEIGHT - 4), cv2.FONT_HERSHEY_SIMPLEX,
                        0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return movie


def write_movie(movie: np.ndarray, out, fps: float) -> Tuple[Path, Path]:
    """Writes RGB frames as `out` (MPEG-4, fourcc mp4v) and as a GIF with the same stem.

    Each file is written under a temporary name and renamed, so a failure leaves no half file.

    Returns:
      `(mp4 path, gif path)`.

    Raises:
      ValueError: the files cannot be written.
    """
    from PIL import Image

    out = Path(out)
    gif = out.with_suffix(".gif")
    # Temporary names beside the targets (same file system, so the renames are atomic).
    tmp_mp4 = out.with_name(f".{out.stem}.{os.getpid()}.tmp.mp4")
    tmp_gif = gif.with_name(f".{gif.stem}.{os.getpid()}.tmp.gif")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        height, width = movie.shape[1:3]
        writer = cv2.VideoWriter(str(tmp_mp4), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        if not writer.isOpened():
            raise ValueError(f"cannot write --out {str(out)!r} (OpenCV could not open an MPEG-4 writer there)")
        for frame in movie:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
        writer.release()
        images = [Image.fromarray(frame) for frame in movie]
        images[0].save(tmp_gif, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps),
                       loop=0)
        os.replace(tmp_mp4, out)
        os.replace(tmp_gif, gif)
    except OSError as e:
        raise ValueError(f"cannot write --out {str(out)!r}: {e.strerror or e}") from None
    finally:
        for tmp in (tmp_mp4, tmp_gif):
            with contextlib.suppress(OSError):
                tmp.unlink()
    return out, gif


# ----------------------------------------------------------------------------- command line
DESCRIPTION = __doc__


def build_parser() -> ArgumentParser:
    """The command line (see the module docstring)."""
    parser = ArgumentParser(prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", metavar="PATH", help="a train_hgn.py run directory or an HGN SavedModel folder")
    clip = parser.add_mutually_exclusive_group(required=True)
    clip.add_argument("--video", metavar="FILE",
                      help="the input clip: a video file (mp4, avi, ...) or a folder of PNGs")
    clip.add_argument("--dataset", metavar="SYSTEM",
                      help="the input clip: a held-out test trajectory of this system (pendulum, mass_spring, "
                           "double_pendulum, two_body, three_body), with ground truth")
    parser.add_argument("--index", type=int, default=0, help="with --dataset: which test trajectory (default 0)")
    parser.add_argument("--direction", choices=("forward", "backward"), default="forward",
                        help="forward: from the clip's first frame; backward: from its last frame, back in time "
                             "(default forward)")
    parser.add_argument("--steps", type=int, default=30, help="steps to roll out; the movie has steps + 1 frames "
                                                              "(default 30)")
    parser.add_argument("--dt", type=float, default=None,
                        help="step (default: the model's dt); smaller: slow motion, larger: fast forward, "
                             "negative: reverse (forward only; backward needs dt > 0)")
    parser.add_argument("--out", required=True, metavar="FILE.mp4", help="the movie; a GIF is written beside it")
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second of the movie (default 10)")
    parser.add_argument("--scale", type=int, default=4, help="upscaling of each panel, nearest neighbour (default 4)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on unexpected errors")
    return parser


def _check_arguments(parser: ArgumentParser, args) -> None:
    if not args.out.lower().endswith(".mp4"):
        parser.error(f"--out must name an .mp4 file, got {args.out!r}")
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.dt is not None and (not math.isfinite(args.dt) or args.dt == 0):
        parser.error(f"--dt must be a finite non-zero number, got {args.dt}")
    if args.direction == "backward" and args.dt is not None and args.dt < 0:
        parser.error("--direction backward needs --dt > 0 (it already steps back in time; a negative --dt with "
                     "--direction forward runs backward from the clip's first frame)")
    if not (math.isfinite(args.fps) and 0 < args.fps <= MAX_FPS):
        parser.error(f"--fps must be in (0, {MAX_FPS:g}] (a GIF plays no faster), got {args.fps:g}")
    if args.scale < 1:
        parser.error(f"--scale must be >= 1, got {args.scale}")
    if args.video is None and args.index < 0:
        parser.error(f"--index must be >= 0, got {args.index}")


def _over_caps(steps: int, caps: Dict[str, int]) -> Optional[str]:
    if "max_steps" in caps and steps > caps["max_steps"]:
        return (f"--steps {steps} exceeds the export's serving cap max_steps = {caps['max_steps']} "
                "(train_hgn.py --serve-max-steps sets it)")
    if "max_frames" in caps and steps + 1 > caps["max_frames"]:
        return (f"--steps {steps} decodes {steps + 1} frames, over the export's serving cap max_frames = "
                f"{caps['max_frames']} (train_hgn.py --serve-max-frames sets it)")
    return None


def _clip_and_truth(args: argparse.Namespace, info: Dict, k: int, size: int, signed_dt: float
                    ) -> Tuple[np.ndarray, str, Optional[np.ndarray]]:
    """The input clip `[T, size, size, 3]`, its name, and the true frames of the rollout (a
    held-out `--dataset` clip only; None for a video). Raises ValueError on unusable input."""
    import data

    if args.video is not None:
        return read_clip(args.video, size), Path(args.video).name, None
    settings = info["data"] or {}
    if settings.get("dataset") not in (None, args.dataset):
        print(f"note: the model was trained on {settings['dataset']!r}, the clip is {args.dataset!r}", file=sys.stderr)
    example = held_out_clip(args.dataset, args.index, input_frames=k, dt=float(info["dt"]), image_size=size,
                            data_seed=int(settings.get("data_seed") or 0),
                            data_frames=int(settings.get("data_frames") or data.DEFAULT_FRAMES),
                            colors=settings.get("colors"), noise_std=float(settings.get("noise_std") or 0.0))
    reference = 0 if args.direction == "forward" else k - 1
    truth = true_frames(args.dataset, example["x"][reference], example["params"], example["color_index"],
                        args.steps, signed_dt, size, colors=example["colors"])
    return example["frames"], f"{args.dataset} #{args.index}", truth


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `python -m hgn.predict` (see the module docstring); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    try:
        export, info = locate_export(args.path)
    except ValueError as e:
        parser.error(str(e))
    if info["stale"]:
        print(f"{PROG}: note: {info['stale']}", file=sys.stderr)
    k, size = int(info["input_frames"]), int(info["image_size"])
    dt = float(info["dt"]) if args.dt is None else args.dt
    backward = args.direction == "backward"
    signed_dt = -dt if backward else dt
    problem = (_over_caps(args.steps, info["serving_caps"])
               or _movie_problem(args.steps + 1, 2 if args.video is not None else 3, size, args.scale))
    if problem:
        parser.error(problem)
    try:
        clip, source, truth = _clip_and_truth(args, info, k, size, signed_dt)
    except ValueError as e:
        parser.error(str(e))
    if len(clip) < k:
        parser.error(f"the clip has {len(clip)} frame{'s' if len(clip) != 1 else ''}; the model needs at least "
                     f"input_frames = {k}")
    if not args.debug:
        from common.runs import import_tensorflow_quietly

        import_tensorflow_quietly()  # after every check that needs no TensorFlow; hides its start-up lines
    try:
        module = load_export(export)
    except ValueError as e:
        parser.error(str(e))
    if backward and not hasattr(module, "rollout_backward"):
        run = export.parent if (export.parent / "config.json").is_file() else "RUN"
        parser.error(f"the export {str(export)!r} predates rollout_backward; re-export it: "
                     f"{refresh_export_command('train_hgn.py', run)}")
    predicted = roll_out(module, clip, args.steps, dt, args.direction)
    panels: List[Tuple[Caption, np.ndarray]] = [
        ("input, reversed" if backward else "input", clip[::-1] if backward else clip),
        ([f"HGN t={i * signed_dt:+.3f}" for i in range(args.steps + 1)], predicted)]
    if truth is not None:
        panels.append(("ground truth", truth))
    movie = compose_movie(panels, args.steps + 1, args.scale)
    try:
        mp4, gif = write_movie(movie, args.out, args.fps)
    except ValueError as e:
        parser.error(str(e))
    print(f"{source}: {args.direction} {args.steps} steps of dt {dt:g} -> {mp4} and {gif} ({args.steps + 1} frames)")
    return 0

if __name__ == "__main__":
    from common.runs import run_cli

    sys.exit(run_cli(main))
