#!/usr/bin/env python3
"""Side-by-side benchmark, Python half: diffusers' DDPM UNet and Stable Diffusion img2img on the
CPU (dev-only tool).

The Rust half is `examples/bench_side_by_side.rs`; docs/benchmarks.md ("Side by side with
PyTorch / diffusers") has the measured table and the commands. Run from the repository
root with a Python that has torch, numpy, diffusers and safetensors (and, for `make-sd` and
the `sd-*` workloads, transformers and Pillow):

    python tools/bench_side_by_side.py make /tmp/ddpm_cifar10_random
    python tools/bench_side_by_side.py time /tmp/ddpm_cifar10_random --threads 1 --what forward1
    python tools/bench_side_by_side.py time /tmp/ddpm_cifar10_random --threads 2 --what boomerang:0.3
    python tools/bench_side_by_side.py make-sd /tmp/sd_mid_random
    python tools/bench_side_by_side.py time /tmp/sd_mid_random --threads 1 --what sd-step
    python tools/bench_side_by_side.py time /tmp/sd_mid_random --threads 1 --what sd-img2img

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

`make-sd DIR` writes a diffusers Stable Diffusion pipeline folder with RANDOM weights (fixed
seed, f32; `StableDiffusionPipeline(...).save_pretrained(DIR, safe_serialization=True)`, no
safety checker): SD 1.5's architecture at reduced size, every setting taken from
`tools/make_sd15_random.py` (which this script imports) except the ones named here:

- `unet/`: `UNet2DConditionModel` with SD 1.5's block types, `layers_per_block` 2,
  `attention_head_dim` 8, `cross_attention_dim` 768, `norm_num_groups` 32, `sample_size` 32
  (32x32 latents, 256x256 images) and `block_out_channels` (64, 128, 256, 256), a fifth of SD
  1.5's widths (about 37.5M parameters; `make-sd` prints the counts);
- `vae/`: SD's `AutoencoderKL` (4 blocks, 2 layers each, 4 latent channels, scaling factor
  0.18215) at half SD's widths, (64, 128, 256, 256), `sample_size` 256;
- `text_encoder/`: SD 1.5's CLIP text tower (width 768, 12 heads, quick_gelu, 77 positions,
  vocabulary 49408) with 4 layers instead of 12; `tokenizer/`: make_sd15_random's
  `write_tokenizer` (a byte-level CLIP BPE of the full vocabulary size);
- `scheduler/`: `DDIMScheduler` on make_sd15_random's `SCHEDULER` (SD 1.5's: scaled_linear
  0.00085..0.012, 1000 steps, leading spacing, `steps_offset` 1, `set_alpha_to_one` false)
  with `clip_sample` false, so that both sides read the DDIM configuration from the folder.

The weights are PyTorch's / transformers' seeded default initialisation; the affine parameters
of every normalisation layer (GroupNorm, LayerNorm) of the three networks are then perturbed
by N(0, 0.05^2) so that they are exercised. `DIR/reference_sd/` holds raw little-endian f32
files (shapes and run settings in `reference_sd/meta.json`), all computed by diffusers from
the saved folder:

- the guided step: `lat.f32` (1, 4, 32, 32), random latents at training step 500;
  `cond.f32` / `uncond.f32` (1, 77, 768), the pipeline's `encode_prompt` of "a photo of a cat"
  and of the negative prompt ""; `guided_eps.f32` = uncond_eps + 7.5 (cond_eps - uncond_eps)
  from ONE UNet call on the batch [lat, lat] with embeddings [uncond, cond] (diffusers' order);
  `guided_pred_x0.f32` and `guided_step.f32`, the `pred_original_sample` and `prev_sample` of
  `DDIMScheduler.step` (eta 0) at 500 after `set_timesteps(20)`: the step goes to
  500 - 1000 // 20 = 450 (500 is not on the 20-step grid, the step rule is the same);
- img2img: `image.f32` (1, 3, 256, 256), the tensor the VAE encoded, i.e. the deterministic
  RGB test image `input.png` (also saved, for the command-line tool) as the pipeline
  preprocesses it (x / 255 * 2 - 1); `noise.f32` (1, 4, 32, 32), the forward noise;
  `img2img_encoded.f32`, scaling_factor * posterior mode; `img2img_latents.f32`, the final
  latents (`output_type="latent"`); `img2img_image.f32`, `vae.decode(latents /
  scaling_factor)` as the pipeline computes it before postprocessing (in [-1, 1] nominally,
  not clamped; checked to give the pipeline's own `output_type="pt"` image after
  `(x / 2 + 0.5).clamp(0, 1)`). The run is `StableDiffusionImg2ImgPipeline.__call__` itself
  (prompt "a photo of a cat", negative prompt "", strength 0.5, 20 steps, guidance 7.5,
  eta 0) made deterministic by two patches of its module
  (`diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img`): `retrieve_latents`
  takes the posterior MODE (`sample_mode="argmax"`, the crate's `LatentMode::Mode`) and
  `randn_tensor`, which `prepare_latents` calls once, returns `noise.f32`. meta.json records
  the 20-step grid, the steps run (diffusers keeps `timesteps[10:]`: 451, 401, ..., 1, then
  steps from 1 to alphas_cumprod[0]) and the start step 451.

`time DIR --threads T --what W` runs workload W `--iters` times (default 5) after one
warm-up, in one process, with torch.set_num_threads(T), under torch.inference_mode(), f32
on the CPU, and prints one JSON line with the median seconds per iteration. On a `make`
folder:

- `forward1`, `forward16`: one UNet call on the first 1 / all 16 items of `x.f32`;
- `boomerang:F`: a Boomerang run of `x0.f32` (batch 1) from t = F: forward noise to the
  start step, then the DDIM (eta 0) reverse process of diffusers' DDIMScheduler with 100
  inference steps, for the SAME number of UNet calls as the crate's `Spacing::Uniform(100)`
  from t = F (`Boomerang::plan(t).len()`: the start step is s = round(F * 999) and the
  crate visits round(99 * s / 999) + 1 evenly spaced steps from s to 0). diffusers'
  100-step grid is 990, 980, ..., 0; the Python run takes its LAST that many steps (for
  F = 0.2 and 0.3 exactly the crate's grid, 200..0 and 300..0 by tens; for F = 0.8 the
  crate runs 80 steps from 799, this script 80 steps from 790).

On a `make-sd` folder (`calls` counts UNet calls, each on a batch of 2):

- `sd-step`: one guided denoising step from the references: the UNet on [lat, lat] with
  [uncond, cond] at step 500, the guidance combination and `DDIMScheduler.step` (eta 0) to
  450; the prompt embeddings are computed once, outside the timing;
- `sd-img2img`: the whole `StableDiffusionImg2ImgPipeline.__call__` on `input.png` (loaded
  once; the pipeline converts it to a tensor): prompt "a photo of a cat", negative prompt "",
  strength 0.5, 20 DDIM steps (eta 0; 10 run), guidance 7.5, `output_type="pt"`, progress bar
  off. It includes what the pipeline does on every call: encoding both prompts (two text
  encoder passes), the VAE encoding, 10 guided UNet calls and the VAE decoding. Unpatched:
  the pipeline draws a posterior SAMPLE and its forward noise from torch's global generator
  (the same network work as the mode the references use).
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

# The Stable Diffusion rows: SD 1.5's configurations (tools/make_sd15_random.py) at reduced
# size. Importing that script defines them and its tokenizer writer; it runs nothing.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_sd15_random as sd15  # noqa: E402

SD_SEED = 1
SD_UNET = dict(sd15.UNET, sample_size=32, block_out_channels=(64, 128, 256, 256))
SD_VAE = dict(sd15.VAE, sample_size=256, block_out_channels=(64, 128, 256, 256))
SD_TEXT = dict(sd15.TEXT, num_hidden_layers=4)
# PNDM's `skip_prk_steps` means nothing to DDIM (diffusers would warn and drop it).
SD_SCHEDULER = {k: v for k, v in sd15.SCHEDULER.items() if k != "skip_prk_steps"} | {"clip_sample": False}
SD_PROMPT, SD_NEGATIVE = "a photo of a cat", ""
SD_GUIDANCE = 7.5
SD_STEPS, SD_STRENGTH = 20, 0.5
SD_STEP_T = 500  # the guided-step reference's training step (not on the 20-step grid)
SD_SIZE = 256


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


def perturb_norms(model, std=0.05):
    """Perturb every normalisation layer's affine parameters (defaults: exactly 1 and 0)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(std * torch.randn_like(p))


def sd_test_image():
    """A deterministic 256x256 RGB test image (uint8 HWC): smooth waves and a disc."""
    y, x = np.mgrid[0:SD_SIZE, 0:SD_SIZE].astype(np.float64) / (SD_SIZE - 1)
    r = 0.5 + 0.45 * np.sin(7.0 * x - 3.0 * y)
    g = 0.5 + 0.45 * np.cos(4.0 * y + 5.0 * x * y)
    b = np.where((x - 0.4) ** 2 + (y - 0.6) ** 2 < 0.08, 0.85, 0.15 + 0.3 * x)
    return (np.stack([r, g, b], -1) * 255.0).round().clip(0, 255).astype(np.uint8)


def sd_img2img_pipeline(folder):
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float32
    assert isinstance(pipe.scheduler, DDIMScheduler), type(pipe.scheduler)
    c = pipe.scheduler.config
    assert not c.clip_sample and not c.set_alpha_to_one and c.steps_offset == 1 and c.timestep_spacing == "leading"
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd_encode(pipe):
    """(cond, uncond) prompt embeddings, as img2img's `encode_prompt` computes them."""
    cond, uncond = pipe.encode_prompt(SD_PROMPT, torch.device("cpu"), 1, True, negative_prompt=SD_NEGATIVE)
    return cond, uncond


def sd_guided_step(pipe, sched, lat, cond, uncond):
    """ONE UNet call on [lat, lat] with [uncond, cond], the guidance, a DDIM (eta 0) step."""
    t = torch.tensor(SD_STEP_T)
    eps = pipe.unet(torch.cat([lat, lat]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    eps_u, eps_c = eps.chunk(2)
    guided = eps_u + SD_GUIDANCE * (eps_c - eps_u)
    out = sched.step(guided, t, lat, eta=0.0)
    return guided, out.pred_original_sample, out.prev_sample


def sd_img2img(pipe, image, output_type, **extra):
    """`StableDiffusionImg2ImgPipeline.__call__` with the benchmark's settings."""
    return pipe(
        prompt=SD_PROMPT,
        negative_prompt=SD_NEGATIVE,
        image=image,
        strength=SD_STRENGTH,
        num_inference_steps=SD_STEPS,
        guidance_scale=SD_GUIDANCE,
        eta=0.0,
        output_type=output_type,
        **extra,
    ).images


def make_sd(folder):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_img2img as img2img_module
    from PIL import Image
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    ref = folder / "reference_sd"
    ref.mkdir(parents=True, exist_ok=True)
    sd15.write_tokenizer(folder / "tokenizer")
    torch.manual_seed(SD_SEED)
    nets = {
        "unet": UNet2DConditionModel(**SD_UNET),
        "vae": AutoencoderKL(**SD_VAE),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**SD_TEXT)),
    }
    for net in nets.values():
        perturb_norms(net)
        net.eval()
    StableDiffusionPipeline(
        vae=nets["vae"],
        text_encoder=nets["text_encoder"],
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        unet=nets["unet"],
        scheduler=DDIMScheduler.from_config(SD_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder, safe_serialization=True)
    params = {k: sum(p.numel() for p in v.parameters()) for k, v in nets.items()}
    del nets

    pipe = sd_img2img_pipeline(folder)  # the saved weights, as the benchmark loads them
    g = torch.Generator().manual_seed(SD_SEED + 1)
    lat = torch.randn(1, 4, SD_SIZE // 8, SD_SIZE // 8, generator=g)
    noise = torch.randn(1, 4, SD_SIZE // 8, SD_SIZE // 8, generator=g)
    rgb = sd_test_image()
    Image.fromarray(rgb, "RGB").save(ref / "input.png")
    image = Image.open(ref / "input.png").convert("RGB")  # what `time` and the CLI read

    # a) the guided step.
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(SD_STEPS)
    with torch.inference_mode():
        cond, uncond = sd_encode(pipe)
        guided, pred_x0, step = sd_guided_step(pipe, sched, lat, cond, uncond)

    # b) img2img, deterministic: the posterior mode and a fixed forward noise.
    record = {"randn": 0, "encoded_images": [], "modes": [], "steps": []}
    original_randn, original_retrieve = img2img_module.randn_tensor, img2img_module.retrieve_latents

    def fixed_randn(shape, generator=None, device=None, dtype=None, layout=None):
        record["randn"] += 1
        assert tuple(shape) == tuple(noise.shape) and dtype == noise.dtype, (shape, dtype)
        return noise.clone()

    def mode_latents(encoder_output, generator=None, sample_mode="sample"):
        mode = original_retrieve(encoder_output, generator=generator, sample_mode="argmax")
        record["modes"].append(mode.clone())
        return mode

    vae_encode = pipe.vae.encode

    def watched_encode(x, *a, **k):
        record["encoded_images"].append(x.clone())
        return vae_encode(x, *a, **k)

    def on_step(_pipe, _i, t, _kwargs):
        record["steps"].append(int(t))
        return {}

    img2img_module.randn_tensor, img2img_module.retrieve_latents = fixed_randn, mode_latents
    pipe.vae.encode = watched_encode
    outputs = {}
    try:
        for output_type in ("latent", "pt"):
            record.update(randn=0, encoded_images=[], modes=[], steps=[])
            with torch.inference_mode():
                outputs[output_type] = sd_img2img(pipe, image, output_type, callback_on_step_end=on_step)
            assert record["randn"] == 1 and len(record["modes"]) == 1, record["randn"]
    finally:
        img2img_module.randn_tensor, img2img_module.retrieve_latents = original_randn, original_retrieve
        pipe.vae.encode = vae_encode
    latents = outputs["latent"]
    sf = pipe.vae.config.scaling_factor
    with torch.inference_mode():
        decoded = pipe.vae.decode(latents / sf, return_dict=False)[0]
    assert torch.equal((decoded / 2 + 0.5).clamp(0, 1), outputs["pt"]), "postprocessing differs"
    image_t = record["encoded_images"][0]
    want = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1
    assert (image_t - want).abs().max() < 1e-6, "the preprocessing is not x / 255 * 2 - 1"
    encoded = sf * record["modes"][0]
    timesteps = [int(v) for v in sched.timesteps]
    t_start = SD_STEPS - min(int(SD_STEPS * SD_STRENGTH), SD_STEPS)
    assert record["steps"] == timesteps[t_start:], (record["steps"], timesteps)

    tensors = {
        "lat": lat,
        "cond": cond,
        "uncond": uncond,
        "guided_eps": guided,
        "guided_pred_x0": pred_x0,
        "guided_step": step,
        "image": image_t,
        "noise": noise,
        "img2img_encoded": encoded,
        "img2img_latents": latents,
        "img2img_image": decoded,
    }
    for name, v in tensors.items():
        write_f32(ref / f"{name}.f32", v)
    meta = {
        **{name: list(v.shape) for name, v in tensors.items()},
        "prompt": SD_PROMPT,
        "negative_prompt": SD_NEGATIVE,
        "guidance_scale": SD_GUIDANCE,
        "eta": 0.0,
        "guided_step_from": SD_STEP_T,
        "guided_step_to": SD_STEP_T - sched.config.num_train_timesteps // SD_STEPS,
        "num_inference_steps": SD_STEPS,
        "strength": SD_STRENGTH,
        "timesteps": timesteps,
        "run_timesteps": record["steps"],
        "start_timestep": record["steps"][0],
        "final_alpha_cumprod": float(sched.final_alpha_cumprod),
        "seed": SD_SEED,
        "parameters": params,
    }
    (ref / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps({"folder": str(folder), "guided_eps_abs_max": guided.abs().max().item(),
                      "img2img_latents_abs_max": latents.abs().max().item(), **meta}))


def timed(fn, iters):
    fn()  # warm-up
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def report(what, threads, iters, calls, times, **extra):
    print(
        json.dumps(
            {
                "side": "python",
                "what": what,
                "threads": threads,
                "iters": iters,
                "calls": calls,
                **extra,
                "median_s": statistics.median(times),
                "times_s": times,
                "torch": torch.__version__,
            }
        )
    )


def run_time_sd(folder, threads, what, iters):
    from PIL import Image

    torch.set_num_threads(threads)
    folder = Path(folder)
    ref = folder / "reference_sd"
    if not (folder / "model_index.json").exists():
        sys.exit(f"{what} needs a make-sd folder; {folder} has no model_index.json")
    pipe = sd_img2img_pipeline(folder)
    with torch.inference_mode():
        if what == "sd-step":
            side = SD_SIZE // 8
            lat = read_f32(ref / "lat.f32", (1, 4, side, side))
            cond, uncond = sd_encode(pipe)
            sched = pipe.scheduler
            sched.set_timesteps(SD_STEPS)
            calls = 1

            def fn():
                return sd_guided_step(pipe, sched, lat, cond, uncond)

        elif what == "sd-img2img":
            image = Image.open(ref / "input.png").convert("RGB")
            calls = min(int(SD_STEPS * SD_STRENGTH), SD_STEPS)

            def fn():
                return sd_img2img(pipe, image, "pt")

        else:
            sys.exit(f"unknown workload {what!r} (sd-step, sd-img2img)")
        times = timed(fn, iters)
    report(what, threads, iters, calls, times, unet_batch=2)


def run_time(folder, threads, what, iters):
    if what.startswith("sd-"):
        return run_time_sd(folder, threads, what, iters)
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
            sys.exit(f"unknown workload {what!r} (forward1, forward16, boomerang:F; sd-step, sd-img2img)")
        times = timed(fn, iters)
    report(what, threads, iters, calls, times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    ms = sub.add_parser("make-sd")
    ms.add_argument("dir")
    tm = sub.add_parser("time")
    tm.add_argument("dir")
    tm.add_argument("--threads", type=int, default=1)
    tm.add_argument("--what", default="forward1")
    tm.add_argument("--iters", type=int, default=5)
    a = ap.parse_args()
    if a.mode == "make":
        make(a.dir)
    elif a.mode == "make-sd":
        make_sd(a.dir)
    else:
        run_time(a.dir, a.threads, a.what, a.iters)


if __name__ == "__main__":
    main()
