"""HGN configuration: one frozen dataclass, named presets, every field a command-line flag.

Presets:

* `paper`: the published architecture and hyper-parameters (Toth et al. 2020, DeepMind's
  `hgn_paper_config`): all 31 frames of the window stacked into the encoder, strided conv
  encoder to a 4x4x32 posterior, 5-layer latent transformer, separable K(p) + V(q) conv
  Hamiltonians (channels 32-64-64-64-1, kernels 3-2-2-2-2), an upsampling decoder of 3 blocks of
  two 3x3 convs of 64, GECO with kappa = 1e-3, Adam 1.5e-4.
* `pytorch`: the CampusAI PyTorch re-implementation's default configuration (5 input frames,
  26 reconstructed frames per training window, full-resolution 7-conv encoder to 48 channels,
  strided transformer, one joint H(q, p) conv net of channels 32-64-64-64 and kernels 3-2-2-2-2,
  residual upsampling decoder), for like-for-like benchmarks.
* `quick` (the default) and `quality`: the CPU recipe measured by `bench/hgn_recipe.py`: DeepMind's
  HGN++ layout (vector latent, an MLP potential V(q) with the kinetic energy fixed at |p|^2 / 2)
  at CPU size with a rollout-length curriculum, forward + backward training and the sub-pixel
  decoder, its schedule paced by the time budget: `quick` trains 10.5 minutes or 6,000 steps
  (15 minutes in all on 2 cores), `quality` an hour or 40,000 steps.
* `hgnpp`: DeepMind's improved HGN (Botev et al. 2021) at its published size.
* `small`: the earlier quick-start default (spatial latent, small conv nets, 12-frame windows).
* `tiny`: for the test suite only (seconds per step).
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Dict, Optional, Tuple

from common.config import field, non_negative, one_of, positive, serving_caps
from data.generation import VARIANT_HELP  # NumPy only: the config module stays free of TensorFlow

ENCODERS = ("strided", "full_res")
DECODERS = ("upsample", "residual", "subpixel")
HAMILTONIANS = ("separable", "fixed_kinetic", "joint")
LATENTS = ("spatial", "vector")
ACTIVATIONS = ("softplus", "swish")
OBJECTIVES = ("geco", "beta")
TRAINING_MODES = ("forward", "forward_backward", "split")
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")
PACES = ("steps", "time")
# common.integrators' built-in methods, named here so that the flags are checked before TensorFlow
# loads (tests/test_hgn_model.py checks them against the registry).
INTEGRATORS = ("euler", "leapfrog", "rk4", "symplectic_euler", "yoshida4")
# Default serving caps of an exported SavedModel (`hgn.serving`; `train_hgn.py --serve-max-*`).
MAX_STEPS = 10_000  # n_steps per request
MAX_BATCH = 1024  # clips (or states) per request
MAX_SAMPLES = 10_000  # n of a sample request


@dataclasses.dataclass(frozen=True)
class HGNConfig:
    """Every knob of an HGN run: architecture, objective, optimisation, data and evaluation."""

    # Sequence layout.
    input_frames: int = field(31, "frames stacked on channels for inference (k)")
    window: int = field(31, "frames per training example, all reconstructed (rollout of window-1 steps)")
    dt: float = field(0.125, "latent integration step per frame (the data's frame interval)")
    curriculum_steps: int = field(
        0, "rollout-length curriculum: the training window grows linearly from --curriculum-start frames to "
           "--window over this many steps (short, cheap rollouts first); 0: always --window")
    curriculum_start: int = field(10, "training window at step 0 of the curriculum (>= --input-frames)")
    image_size: int = field(32, "frame height and width (a multiple of 8)")
    # Latent layout.
    latent: str = field(
        "spatial", f"latent state: {', '.join(LATENTS)}. spatial (paper): q and p are 4x4 maps of --state-channels "
                   "channels, conv Hamiltonians, a conv transformer z -> (q, p). vector (DeepMind's HGN++, "
                   "Botev et al. 2021): the encoder's map is flattened and linearly projected to z = (q, p), "
                   "vectors of --state-channels each; MLP Hamiltonians; the decoder projects q back to a 4x4 map")
    # Encoder q(z | frames).
    encoder: str = field("strided", f"encoder architecture: {', '.join(ENCODERS)}")
    encoder_widths: Tuple[int, ...] = field(
        (32, 64, 64, 64, 64, 64),
        "strided: per block (2x2 stride-2 conv, 4x4 conv) channel pairs; full_res: one 3x3 conv per entry")
    latent_channels: int = field(32, "channels of the posterior z (mean and log-scale maps)")
    # Transformer z -> (q, p).
    transformer_widths: Tuple[int, ...] = field((64, 64, 64, 64), "hidden 3x3 conv channels of the z -> (q, p) transformer")
    transformer_strides: Tuple[int, ...] = field((1, 1, 1, 1), "strides of those convs (same length)")
    state_channels: int = field(16, "channels of q and of p (spatial maps), or their dimension (vector latent)")
    # Hamiltonian.
    hamiltonian: str = field(
        "separable", f"Hamiltonian form: {', '.join(HAMILTONIANS)}. separable: learned K(p) + V(q); fixed_kinetic: "
                     "K(p) = |p|^2 / 2 and a learned V(q) (Souveton et al. 2024's fixed-kinetic form: the leapfrog "
                     "evaluates one network per step, not two); joint: a learned H(q, p)")
    hamiltonian_widths: Tuple[int, ...] = field(
        (32, 64, 64, 64), "hidden widths of each energy net: conv channels (spatial latent) or MLP units (vector)")
    hamiltonian_kernels: Tuple[int, ...] = field((3, 2, 2, 2, 2), "spatial latent: kernel sizes, one per hidden conv plus the final 1-channel conv")
    hamiltonian_strides: Tuple[int, ...] = field((1, 2, 1, 2, 1), "spatial latent: strides (stride 2 convs use VALID padding, others SAME)")
    hamiltonian_activation: str = field("softplus", f"energy-net activation: {', '.join(ACTIVATIONS)} (smooth: "
                                                    "training needs second derivatives of H)")
    integrator: str = field("leapfrog", "common.integrators method for the latent rollout")
    # Decoder q -> frame.
    decoder: str = field(
        "upsample", f"decoder architecture: {', '.join(DECODERS)}. upsample (paper): x2 nearest upsampling and "
                    "--decoder-depth 3x3 convs per block; residual (PyTorch re-implementation): residual blocks; "
                    "subpixel: upsample blocks to half resolution, then a sub-pixel conv (3x3 conv to 12 channels, "
                    "depth-to-space): no conv at full resolution")
    decoder_width: int = field(64, "conv channels of the decoder")
    decoder_depth: int = field(2, "3x3 convs per x2 upsampling block (upsample decoder)")
    decoder_chunks: int = field(
        1, "the objective decodes the window's T*B frames in this many chunks of time steps (<= --window), "
           "each under tf.recompute_grad: the backward pass keeps one chunk's decoder activations at a time "
           "instead of all T*B frames', for one extra decoder forward pass; 1: one batched decoder call")
    decoded_frames: int = field(
        0, "training decodes only this many of each window's frames, drawn at random per example and step "
           "(the MSE over them is an unbiased estimate of the window's, at this fraction of the decoder's "
           "cost; the rollout still covers the whole window); 0: all")
    # Objective.
    variational: bool = field(True, "sample z from the posterior while training (False: deterministic, no KL)")
    objective: str = field("geco", f"{', '.join(OBJECTIVES)}: GECO constraint on per-pixel MSE, or fixed beta-weighted KL")
    geco_kappa: float = field(1e-3, "GECO tolerance: constraint C = mse - kappa")
    geco_init_lambda: float = field(1.0, "initial Lagrange multiplier softplus(param)")
    geco_learning_rate: float = field(1e-2, "Adam learning rate of the Lagrange multiplier's parameter")
    beta: float = field(1e-3, "KL weight of the fixed-beta objective: mse + beta * kl (both per pixel)")
    training_mode: str = field(
        "forward", f"{', '.join(TRAINING_MODES)}. forward: infer from the first k frames and roll forward; "
                   "forward_backward: also infer from the last k and roll backward (twice the cost); split: half "
                   "of each batch forward, half backward (both directions at the cost of one)")
    # Optimisation.
    batch_size: int = field(32, "training batch size")
    learning_rate: float = field(1.5e-4, "Adam learning rate (the peak, with --warmup-steps / --decay)")
    warmup_steps: int = field(0, "linear learning-rate warm-up from 0 over this many steps")
    decay: str = field("none", "learning-rate decay after warm-up: none, or cosine (to --final-lr-fraction of "
                               "the peak at --steps)")
    final_lr_fraction: float = field(0.1, "cosine decay ends at this fraction of --learning-rate")
    steps: int = field(500_000, "training steps (batches)")
    max_train_minutes: Optional[float] = field(
        None, "stop training after this many minutes of training steps, counted over resumes (the wall clock "
              "less compilation and test-curve scoring; none: run all --steps)")
    pace: str = field(
        "steps", f"{', '.join(PACES)}: what the warm-up, the curriculum and the cosine decay follow. steps: the "
                 "step count, reaching their ends at --steps. time (needs --max-train-minutes): the training "
                 "time as well, the schedule placed at max(step, --steps * minutes / --max-train-minutes), so it "
                 "ends with the budget on a slower CPU instead of being cut off half-way (--steps becomes a cap)")
    checkpoint_every: int = field(1000, "steps between checkpoints (also the progress-bar epoch length)")
    max_nonfinite_steps: int = field(3, "consecutive non-finite steps (skipped, never applied) before the run "
                                        "rolls back to its last checkpoint")
    max_rollbacks: int = field(2, "rollbacks to the last checkpoint (each with a lower learning rate) before the "
                                  "run stops with an error")
    rollback_lr_factor: float = field(0.5, "learning-rate multiplier applied at each rollback, in (0, 1]")
    jit_compile: bool = field(False, "compile the training step with XLA (measured slower than oneDNN's convolutions "
                                     "on a 2-core AVX-512/AMX CPU: see bench/results/hgn_throughput.json)")
    fused_rollout: bool = field(False, "XLA-compile the latent leapfrog rollout (many tiny convs), with its "
                                       "gradient, as one function inside a non-XLA step whose big convs run on "
                                       "oneDNN. Only rollouts of a length fixed when traced, up to 64 steps: "
                                       "training under --curriculum-steps, longer rollouts and the exported "
                                       "signatures run uncompiled")
    compute_dtype: str = field(
        "auto", f"encoder/decoder compute dtype: {', '.join(COMPUTE_DTYPES)}. auto: bfloat16 where the CPU computes "
                "it natively (AMX or AVX-512 BF16 in /proc/cpuinfo), float32 elsewhere (bfloat16 is emulated "
                "there, tens of times slower)")
    seed: int = field(0, "seed of weights, posterior samples and data order")
    # Data.
    n_train: int = field(50_000, "training trajectories")
    n_test: int = field(10_000, "test trajectories")
    # The dataset variant (the flags of `python -m data.generate`, same meaning: --frames and
    # --data-frames are one flag; the dataset's --seed is --data-seed here).
    data_frames: int = field(32, VARIANT_HELP["frames"] + " (>= --window and >= --eval-frames)", aliases=("--frames",))
    data_seed: int = field(0, VARIANT_HELP["seed"])
    colors: Optional[int] = field(None, VARIANT_HELP["colors"])
    noise_std: float = field(0.0, VARIANT_HELP["noise_std"])
    # Evaluation.
    eval_frames: int = field(30, "frames per evaluation rollout (the paper's 30)")
    eval_trajectories: int = field(1000, "train and test trajectories scored by the evaluation")
    energy_steps: int = field(1000, "rollout length for the latent energy drift")
    long_horizon_frames: int = field(
        60, "long-horizon evaluation (Botev et al. 2021's protocol): MSE and VPT over this many frames beyond "
            "the training window, forward and backward, on freshly rendered longer test trajectories; 0: off")
    long_horizon_trajectories: int = field(256, "trajectories of that long-horizon evaluation")
    export: bool = field(True, "write the SavedModel (saved_model/) after the evaluation")
    # Serving caps of that SavedModel (hgn.serving), saved with the run: a resumed run re-exports
    # with them unless the flags are given again.
    serve_max_steps: int = field(MAX_STEPS, "SavedModel serving cap: n_steps per request")
    serve_max_batch: int = field(MAX_BATCH, "SavedModel serving cap: clips (or states) per request")
    serve_max_samples: int = field(MAX_SAMPLES, "SavedModel serving cap: n of a sample request")
    serve_max_frames: Optional[int] = field(None, "SavedModel serving cap: frames decoded per request, batch x "
                                                  "(n_steps + 1) (none: what fits in 2 GiB for this decoder)")
    curve_every_minutes: Optional[float] = field(
        None, "score test MSE (forward and backward) every this many minutes of training time into "
              "test_curve.json and TensorBoard (the time spent scoring is not counted; none: off)")
    curve_trajectories: int = field(100, "test trajectories scored for each point of that curve")

    def validate(self) -> None:
        positive(self, "input_frames", "window", "dt", "image_size", "latent_channels", "state_channels",
                 "decoder_width", "decoder_depth", "decoder_chunks", "batch_size", "learning_rate", "steps",
                 "checkpoint_every", "max_nonfinite_steps", "n_train", "n_test", "data_frames", "eval_frames",
                 "eval_trajectories", "energy_steps", "encoder_widths", "hamiltonian_widths", "hamiltonian_kernels",
                 "geco_init_lambda", "geco_learning_rate", "max_train_minutes", "curve_every_minutes",
                 "curve_trajectories", "colors", "long_horizon_trajectories")
        serving_caps(self, "serve_max_steps", "serve_max_batch", "serve_max_samples", "serve_max_frames")
        non_negative(self, "geco_kappa", "beta", "max_rollbacks", "warmup_steps", "curriculum_steps", "noise_std",
                     "decoded_frames", "long_horizon_frames")
        if not 0.0 < self.rollback_lr_factor <= 1.0:
            raise ValueError(f"--rollback-lr-factor must be in (0, 1], got {self.rollback_lr_factor}")
        one_of(self, "encoder", ENCODERS)
        one_of(self, "decoder", DECODERS)
        one_of(self, "hamiltonian", HAMILTONIANS)
        one_of(self, "objective", OBJECTIVES)
        one_of(self, "training_mode", TRAINING_MODES)
        one_of(self, "compute_dtype", COMPUTE_DTYPES)
        one_of(self, "latent", LATENTS)
        one_of(self, "hamiltonian_activation", ACTIVATIONS)
        one_of(self, "decay", ("none", "cosine"))
        one_of(self, "pace", PACES)
        if self.pace == "time" and not self.max_train_minutes:
            raise ValueError("--pace time needs --max-train-minutes: the schedule follows that budget")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ValueError(f"--final-lr-fraction must be in [0, 1], got {self.final_lr_fraction}")
        if self.input_frames > self.window:
            raise ValueError(f"--input-frames ({self.input_frames}) must be <= --window ({self.window})")
        if self.window > self.data_frames or self.eval_frames > self.data_frames:
            raise ValueError(f"--data-frames ({self.data_frames}) must be >= --window ({self.window}) "
                             f"and >= --eval-frames ({self.eval_frames})")
        if self.input_frames > self.eval_frames:
            raise ValueError(f"--input-frames ({self.input_frames}) must be <= --eval-frames ({self.eval_frames})")
        if self.training_mode == "split" and self.batch_size < 2:
            raise ValueError(f"--training-mode split needs --batch-size >= 2, got {self.batch_size}")
        if self.curriculum_steps and not self.input_frames < self.curriculum_start <= self.window:
            raise ValueError(f"--curriculum-start ({self.curriculum_start}) must be > --input-frames "
                             f"({self.input_frames}) and <= --window ({self.window})")
        if self.curriculum_steps and self.decoder_chunks > 1:
            raise ValueError("--decoder-chunks > 1 needs a fixed window length: not with --curriculum-steps")
        if self.decoded_frames and self.decoder_chunks > 1:
            raise ValueError("--decoded-frames and --decoder-chunks > 1 are two ways to cut the decoder's "
                             "memory or cost: choose one")
        if self.decoded_frames > self.window:
            raise ValueError(f"--decoded-frames ({self.decoded_frames}) must be <= --window ({self.window})")
        if self.decoder_chunks > self.window:
            raise ValueError(f"--decoder-chunks ({self.decoder_chunks}) must be <= --window ({self.window}): "
                             f"chunks split the window's frames")
        if self.image_size % 8:
            raise ValueError(f"--image-size must be a multiple of 8, got {self.image_size}")
        if self.encoder == "strided" and len(self.encoder_widths) != 6:
            raise ValueError(f"--encoder-widths: the strided encoder needs 3 (stride-2, 4x4) pairs = 6 values, "
                             f"got {len(self.encoder_widths)}")
        if len(self.transformer_widths) != len(self.transformer_strides):
            raise ValueError(f"--transformer-widths and --transformer-strides differ in length "
                             f"({len(self.transformer_widths)} vs {len(self.transformer_strides)})")
        if self.latent == "spatial" and (len(self.hamiltonian_kernels) != len(self.hamiltonian_widths) + 1 or
                                         len(self.hamiltonian_strides) != len(self.hamiltonian_widths) + 1):
            raise ValueError("--hamiltonian-kernels and --hamiltonian-strides need one entry per hidden width plus one")
        # The registry (common.integrators) needs TensorFlow: asked only when it is loaded already,
        # which is when a caller may have registered a method of its own.
        registry = sys.modules.get("common.integrators")
        one_of(self, "integrator", registry.names() if registry else INTEGRATORS)

    def data_variant(self) -> Dict[str, object]:
        """The dataset variant as keyword arguments of `data.prepare` and `data.generate_arrays`."""
        return dict(n_frames=self.data_frames, dt=self.dt, image_size=self.image_size, n_colors=self.colors,
                    noise_std=self.noise_std, seed=self.data_seed)

    @property
    def long_horizon_start(self) -> int:
        """The first frame of the long-horizon evaluation: past the training window and the
        standard `eval_frames` rollout."""
        return max(self.window, self.eval_frames)


# The CPU recipe (bench/hgn_recipe.py; README "HGN recipe"): DeepMind's HGN++ layout (vector
# latent of q, p in R^16, MLP Hamiltonian of 4 x 250 swish units, 5 input frames) with CPU-sized
# conv nets, a nearly deterministic beta-ELBO, 30-frame training windows reached through a
# rollout-length curriculum (8 -> 30 frames over 800 steps), half of each batch trained forward
# and half backward, Adam 1e-3 after a 100-step warm-up. The kinetic energy is fixed,
# K(p) = |p|^2 / 2, with a learned V(q): on one Zen 4 core for 10.5 minutes it ran 4,096 steps
# to a pendulum test MSE x1e-4 of 5.96 / 6.03, against 2,938 steps and 20.41 / 21.08 with a
# learned K(p) (bench/results/hgn_recipe_round6_zen4.json).
_CPU_RECIPE = dict(
    latent="vector", input_frames=5, window=30, encoder_widths=(32, 32, 32, 32, 32, 32), state_channels=16,
    hamiltonian="fixed_kinetic", hamiltonian_widths=(250, 250, 250, 250), hamiltonian_activation="swish",
    decoder_width=32, decoder_depth=1,
    objective="beta", beta=1e-3, training_mode="split", curriculum_steps=800, curriculum_start=8,
    learning_rate=1e-3, warmup_steps=100, decay="cosine", final_lr_fraction=0.1, batch_size=16,
    n_train=20_000, n_test=1_000, eval_trajectories=1_000, energy_steps=300, checkpoint_every=200,
    curve_trajectories=100)

PRESETS: Dict[str, HGNConfig] = {
    # The default: the CPU recipe within 15 minutes on 2 cores, data generation and evaluation
    # included (at most 10.5 minutes of training), with the sub-pixel decoder: its steps cost
    # less than half as much in float32, which is what a CPU without native bfloat16 runs.
    # 6,000 steps: more than the CPUs measured here complete in the 10.5 minutes, so the budget
    # ends the run and a faster CPU learns more (the learned-K recipe's 3,600-step cap ended the
    # Zen 4's run after 7.9 minutes once the split step ran as one pass). A budget that stops the
    # cosine decay part-way costs less than a cap that stops training early: on the Zen 4,
    # 2,494 steps of a 3,600-step decay scored 14.11 / 15.21, 2,600 of a 2,600-step one
    # 16.9 / 18.7 (bench/results/hgn_quickstart_zen4.json).
    # Paced by time: on a CPU that completes fewer than 6,000 steps in the 10.5 minutes, the
    # warm-up, curriculum and decay end with the budget instead of being cut off part-way. With
    # compilation left out of the clock, pacing costs a CPU that reaches the cap nothing (Zen 5:
    # 3.15 / 3.61 paced, 3.57 / 3.73 and 3.36 / 3.68 step-paced); with a 3.5-minute budget
    # standing in for a 3x slower CPU it scored 5.25 / 5.48 against 8.24 / 8.11 step-paced
    # (bench/results/hgn_quickstart_zen5_pacing.json).
    "quick": HGNConfig(**_CPU_RECIPE, decoder="subpixel", steps=6_000, max_train_minutes=10.5, pace="time",
                       curve_every_minutes=2.0),
    # The same recipe for the long run: an hour of training (120 CPU-minutes on 2 cores), paced by
    # it, with the sub-pixel decoder. 40,000 steps is a cap only the fastest CPUs reach. On one
    # Zen 5 core for 15 minutes the sub-pixel decoder scored 2.79 / 3.14 in 10,000 steps, the
    # upsampling one (the earlier preset's) 4.79 / 5.33 in 4,500
    # (bench/results/hgn_quality_pendulum_quality_{subpixel_10000,upsample_4500}_zen5.json).
    "quality": HGNConfig(**_CPU_RECIPE, decoder="subpixel", steps=40_000, max_train_minutes=60.0, pace="time",
                         curve_every_minutes=5.0),
    # DeepMind's HGN++ at its published size (default_config_dict in physics_inspired_models/
    # jaxline_configs.py): 64-channel encoder and decoder blocks of depth 2, 60 target frames after
    # the 5 inferred ones, forward + backward training, beta-ELBO (beta swept over {0.001, 0.1, 1, 2}
    # there), Adam 1.5e-4 at batch 128 for 500k steps on 4 GPUs (batch 32 here).
    "hgnpp": HGNConfig(
        latent="vector", input_frames=5, window=65, data_frames=65, encoder_widths=(64, 64, 64, 64, 64, 64),
        state_channels=16, hamiltonian_widths=(250, 250, 250, 250), hamiltonian_activation="swish",
        decoder_width=64, decoder_depth=2, objective="beta", beta=0.1, training_mode="forward_backward",
        learning_rate=1.5e-4, batch_size=32, eval_frames=30),
    # The paper's encoder sees the whole 31-frame window, so its rollouts are scored over 31 frames.
    # Its rollout (30 leapfrog steps of its conv Hamiltonian) is XLA-compiled: on the Intel Xeon
    # (medians of three processes), 10% more samples/s with AVX2 code paths, 22% natively in
    # float32 and 28% in bfloat16, for 2.34-2.41 GiB of peak memory against 1.36-1.44
    # (bench/results/hgn_throughput_xeon{_avx2,}_paper_fusion.json; 2.18-2.24 since the build
    # compiles no rollout, hgn_throughput_xeon_fused_build.json).
    "paper": HGNConfig(eval_frames=31, fused_rollout=True),
    # CampusAI's experiment_params/train_config_default.yaml: its training step encodes frames 0-4
    # of a 30-frame rollout and reconstructs frames 4-29 (26, a window of 26 here); its joint H is
    # [32, 64, 64, 64] channels, kernels [3, 2, 2, 2, 2], strides [1, 2, 1, 1, 1].
    # Its rollout (25 leapfrog steps of 4x4 and 2x2 convs, about 2,000 small ops a step with their
    # gradients) is XLA-compiled: on the Intel Xeon, side by side with the PyTorch code, 2-3% more
    # samples/s with AVX2 code paths, 3-7% natively in float32 and 4-5% in bfloat16, for 1.2 GiB
    # more peak memory (bench/results/hgn_vs_pytorch_xeon{_avx2,}_e9_fused.json; about 1.0 since
    # the build compiles no rollout, hgn_throughput_xeon_fused_build.json).
    "pytorch": HGNConfig(
        input_frames=5, window=26, encoder="full_res", encoder_widths=(32, 64, 64, 64, 64, 64, 64),
        latent_channels=48, transformer_widths=(64, 64, 64), transformer_strides=(2, 2, 2),
        hamiltonian="joint", hamiltonian_widths=(32, 64, 64, 64),
        hamiltonian_kernels=(3, 2, 2, 2, 2), hamiltonian_strides=(1, 2, 1, 1, 1),
        decoder="residual", decoder_width=64, objective="beta", beta=1e-3, batch_size=16,
        steps=15_625, n_train=50_000, n_test=10_000, fused_rollout=True),
    "small": HGNConfig(
        input_frames=5, window=12, encoder_widths=(16, 32, 32, 32, 32, 32), latent_channels=16,
        transformer_widths=(32, 32), transformer_strides=(1, 1), hamiltonian_widths=(32, 32, 32, 32),
        decoder_width=32, decoder_depth=1, learning_rate=1e-3, batch_size=16, steps=500,
        checkpoint_every=100, n_train=400, n_test=100, eval_trajectories=100, energy_steps=300),
    "tiny": HGNConfig(
        input_frames=3, window=6, encoder_widths=(8, 8, 8, 8, 8, 8), latent_channels=8,
        transformer_widths=(8,), transformer_strides=(1,), state_channels=4,
        hamiltonian_widths=(8, 8), hamiltonian_kernels=(3, 2, 2), hamiltonian_strides=(1, 2, 1),
        decoder_width=8, decoder_depth=1, learning_rate=3e-3, batch_size=4, steps=20, checkpoint_every=10,
        compute_dtype="float32",  # tests compare against float32 references on every CPU
        n_train=16, n_test=8, data_frames=12, eval_frames=10, eval_trajectories=8, energy_steps=50,
        long_horizon_frames=6, long_horizon_trajectories=4),
}

DEFAULT_PRESET = "quick"

# Fields that may change when a run is resumed: they change neither the model nor the data, the
# random stream or the optimiser state of the steps already taken (--steps moves the end of a
# cosine decay; the rest are budgets, evaluation, export and execution). Any other change is
# refused, naming the fields (hgn.experiment.check_saved_config).
RESUMABLE_CHANGES = ("steps", "max_train_minutes", "checkpoint_every", "max_nonfinite_steps", "max_rollbacks",
                     "rollback_lr_factor", "jit_compile", "fused_rollout", "decoder_chunks", "compute_dtype",
                     "n_test", "eval_frames", "eval_trajectories", "energy_steps", "long_horizon_frames",
                     "long_horizon_trajectories", "export", "serve_max_steps", "serve_max_batch", "serve_max_samples",
                     "serve_max_frames", "curve_every_minutes", "curve_trajectories")

# Per-system settings of the recipe presets (`quick`, `quality`), applied when `--dataset` names
# the system; flags given on the command line still win. Each entry says what was measured
# (README "HGN on five systems"; one seed each, one core, `--preset quality --steps 4200`).
RECIPE_PRESETS = ("quick", "quality")
SYSTEM_SETTINGS: Dict[str, Dict[str, object]] = {
    # The recipe's curriculum (8 -> 30 frames over 800 steps) left double_pendulum near the mean
    # frame: test MSE x1e-4 69.2 / 70.8 (mean frame 84.5), latent R^2 0.02. Starting from 6-frame
    # windows and growing over 2,400 steps was ahead at every step count and ended at 61.8 / 63.4,
    # R^2 0.15 (bench/results/hgn_quality_double_pendulum_curriculum2400.json): better, though
    # the system is still not learned.
    "double_pendulum": dict(curriculum_start=6, curriculum_steps=2400),
}


def presets_for(dataset: str) -> Dict[str, HGNConfig]:
    """`PRESETS` with `dataset`'s `SYSTEM_SETTINGS` applied to the recipe presets."""
    settings = SYSTEM_SETTINGS.get(dataset, {})
    return {name: dataclasses.replace(preset, **settings) if name in RECIPE_PRESETS else preset
            for name, preset in PRESETS.items()}
