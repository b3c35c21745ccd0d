#!/usr/bin/env python3
"""Side-by-side benchmark, Python half: diffusers' DDPM UNet on the CPU (dev-only tool).

The Rust half is `examples/bench_side_by_side.rs`; docs/benchmarks.md ("Side by side with
PyTorch / diffusers") has the measured table and the commands. Run from the repository
root with a Python that has torch, numpy, diffusers and safetensors:

    python tools/bench_side_by_side.py make /tmp/ddpm_cifar10_random
    python tools/bench_side_by_side.py time /tmp/ddpm_cifar10_random --threads 1 --what forward1
    python tools/bench_side_by_side.py time /tmp/ddpm_cifar10_random --threads 2 --what boomerang:0.3

Set OMP_WAIT_POLICY=PASSIVE on a shared machine (spinning OpenMP threads make both sides
many times slower under load).

`make DIR` writes a diffusers model folder with RANDOM weights (fixed seed) and the
architecture of `google/ddpm-cifar10-32` (35.7M parameters):

- `DIR/config.json`, `DIR/diffusion_pytorch_model.safetensors` (`save_pretrained`);
- `DIR/scheduler_config.json`: DDPMScheduler, linear betas 1e-4..0.02, 1000 steps,
  clip_sample true (the released model's scheduler);
- `DIR/reference/`: raw little-endian f32 files, shapes in `reference/meta.json`:
  - `x.f32` (16, 3, 32, 32): the input batch of the agreement check, `t.f32` (16,): its
    training steps (integers stored as f32), `eps.f32` (16, 3, 32, 32): diffusers' output;
  - `x0.f32` (1, 3, 32, 32): a smooth image in [-1, 1] (the Boomerang input), `z.f32`
    (1, 3, 32, 32): the forward noise, `boomerang_0.3.f32` (1, 3, 32, 32): diffusers'
    DDIM (eta 0, 100 steps) Boomerang result from t = 0.3 with that noise.

`time DIR --threads T --what W` runs workload W `--iters` times (default 5) after one
warm-up, in one process, with torch.set_num_threads(T), under torch.inference_mode(), f32
on the CPU, and prints one JSON line with the median seconds per iteration:

- `forward1`, `forward16`: one UNet call on the first 1 / all 16 items of `x.f32`;
- `boomerang:F`: a Boomerang run of `x0.f32` (batch 1) from t = F: forward noise to the
  start step, then the DDIM (eta 0) reverse process of diffusers' DDIMScheduler with 100
  inference steps, for the SAME number of UNet calls as the crate's `Spacing::Uniform(100)`
  from t = F (`Boomerang::plan(t).len()`: the start step is s = round(F * 999) and the
  crate visits round(99 * s / 999) + 1 evenly spaced steps from s to 0). diffusers'
  100-step grid is 990, 980, ..., 0; the Python run takes its LAST that many steps (for
  F = 0.2 and 0.3 exactly the crate's grid, 200..0 and 300..0 by tens; for F = 0.8 the
  crate runs 80 steps from 799, this script 80 steps from 790).
"""

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

# The released google/ddpm-cifar10-32 config.json (diffusers' UNet2DModel keys). Attention
# sits at the 16x16 level: the second down block and, mirrored, the third up block.
CIFAR10_CONFIG = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    center_input_sample=False,
    time_embedding_type="positional",
    freq_shift=1,
    flip_sin_to_cos=False,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(128, 256, 256, 256),
    layers_per_block=2,
    mid_block_scale_factor=1,
    downsample_padding=0,
    act_fn="silu",
    attention_head_dim=None,
    norm_num_groups=32,
    norm_eps=1e-6,
)

SCHEDULER_CONFIG = {
    "_class_name": "DDPMScheduler",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "num_train_timesteps": 1000,
    "clip_sample": True,
    "variance_type": "fixed_small",
    "trained_betas": None,
}

SEED = 0
BATCH = 16
BOOMERANG_CHECK_T = 0.3


def crate_calls(fraction, num_train=1000, steps=100):
    """Network calls of the crate's Spacing::Uniform(steps) from t = fraction."""
    s = round(fraction * (num_train - 1))
    return min(round((steps - 1) * s / (num_train - 1)) + 1, s + 1)


def write_f32(path, tensor):
    path.write_bytes(tensor.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes())


def read_f32(path, shape):
    return torch.from_numpy(np.fromfile(path, dtype="<f4").reshape(shape).copy())


def load_unet(folder):
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(folder)
    return unet.eval()


def ddim_scheduler(folder):
    from diffusers import DDIMScheduler

    with open(Path(folder) / "scheduler_config.json") as f:
        cfg = json.load(f)
    cfg.pop("_class_name", None)
    cfg.pop("variance_type", None)
    sched = DDIMScheduler(**cfg)  # set_alpha_to_one True, steps_offset 0, "leading"
    sched.set_timesteps(100)
    return sched


def boomerang(unet, sched, x0, z, fraction):
    """DDIM (eta 0) Boomerang of x0 from t = fraction with forward noise z."""
    n = crate_calls(fraction)
    steps = sched.timesteps[-n:]
    x = sched.add_noise(x0, z, steps[:1])
    for t in steps:
        eps = unet(x, t).sample
        x = sched.step(eps, t, x, eta=0.0).prev_sample
    return x


def make(folder):
    from diffusers import UNet2DModel

    folder = Path(folder)
    ref = folder / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    unet = UNet2DModel(**CIFAR10_CONFIG)
    # PyTorch's default (seeded) initialisation keeps activations O(1); GroupNorm's affine
    # parameters default to exactly 1 and 0, so perturb them to exercise them too.
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "norm" in name:
                p.add_(0.05 * torch.randn_like(p))
    unet.eval()
    unet.save_pretrained(folder, safe_serialization=True)
    with open(folder / "scheduler_config.json", "w") as f:
        json.dump(SCHEDULER_CONFIG, f, indent=2)

    g = torch.Generator().manual_seed(SEED + 1)
    x = torch.randn(BATCH, 3, 32, 32, generator=g)
    t = torch.linspace(0, 999, BATCH).round()
    hh, ww = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    x0 = torch.stack([torch.sin(3 * hh + c) * torch.cos(2 * ww - c) for c in range(3)])[None] * 0.9
    z = torch.randn(1, 3, 32, 32, generator=g)
    unet = load_unet(folder)  # what the benchmark times: the saved weights
    with torch.inference_mode():
        eps = unet(x, t).sample
        out = boomerang(unet, ddim_scheduler(folder), x0, z, BOOMERANG_CHECK_T)
    for name, v in [("x", x), ("t", t), ("eps", eps), ("x0", x0), ("z", z), (f"boomerang_{BOOMERANG_CHECK_T}", out)]:
        write_f32(ref / f"{name}.f32", v)
    meta = {
        "x": list(x.shape),
        "t": list(t.shape),
        "eps": list(eps.shape),
        "x0": list(x0.shape),
        "z": list(z.shape),
        f"boomerang_{BOOMERANG_CHECK_T}": list(out.shape),
        "boomerang_t": BOOMERANG_CHECK_T,
        "boomerang_calls": crate_calls(BOOMERANG_CHECK_T),
        "seed": SEED,
        "parameters": sum(p.numel() for p in unet.parameters()),
    }
    (ref / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps({"folder": str(folder), "eps_abs_max": eps.abs().max().item(), **meta}))


def timed(fn, iters):
    fn()  # warm-up
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run_time(folder, threads, what, iters):
    torch.set_num_threads(threads)
    folder = Path(folder)
    ref = folder / "reference"
    unet = load_unet(folder)
    x = read_f32(ref / "x.f32", (BATCH, 3, 32, 32))
    t = read_f32(ref / "t.f32", (BATCH,))
    calls = 1
    with torch.inference_mode():
        if what in ("forward1", "forward16"):
            n = 1 if what == "forward1" else BATCH
            xb, tb = x[:n].contiguous(), t[:n].contiguous()

            def fn():
                return unet(xb, tb).sample

        elif what.startswith("boomerang:"):
            fraction = float(what.split(":", 1)[1])
            sched = ddim_scheduler(folder)
            x0 = read_f32(ref / "x0.f32", (1, 3, 32, 32))
            z = read_f32(ref / "z.f32", (1, 3, 32, 32))
            calls = crate_calls(fraction)

            def fn():
                return boomerang(unet, sched, x0, z, fraction)

        else:
            sys.exit(f"unknown workload {what!r} (forward1, forward16, boomerang:F)")
        times = timed(fn, iters)
    print(
        json.dumps(
            {
                "side": "python",
                "what": what,
                "threads": threads,
                "iters": iters,
                "calls": calls,
                "median_s": statistics.median(times),
                "times_s": times,
                "torch": torch.__version__,
            }
        )
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    tm = sub.add_parser("time")
    tm.add_argument("dir")
    tm.add_argument("--threads", type=int, default=1)
    tm.add_argument("--what", default="forward1")
    tm.add_argument("--iters", type=int, default=5)
    a = ap.parse_args()
    if a.mode == "make":
        make(a.dir)
    else:
        run_time(a.dir, a.threads, a.what, a.iters)


if __name__ == "__main__":
    main()
