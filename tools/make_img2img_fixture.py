#!/usr/bin/env python3
"""Reference run of HF diffusers' `StableDiffusionImg2ImgPipeline` with DDIM, for `tests/models/sd_img2img.rs`.

Dev-only. Loads the committed tiny SD1-style pipeline `tests/fixtures/sd/sd1` (written by
`tools/make_sd_fixtures.py`) with `StableDiffusionImg2ImgPipeline`, swaps in a `DDIMScheduler`
built from that folder's `scheduler/scheduler_config.json` (leading spacing, steps_offset 1,
set_alpha_to_one false) and runs img2img with eta 0, 10 inference steps, strength 0.5 (so
diffusers' `get_timesteps` keeps `timesteps[5:]` = 401, 301, 201, 101, 1, noises the image
latents at 401, and its last step goes from 1 to alphas_cumprod[0]), classifier-free guidance
7.5 with one prompt and one negative prompt per image, on two deterministic 16x16 images
(latents 2x4x8x8).

Two runs are recorded:

  ddim.*       `DDIMScheduler.from_config(config, clip_sample=False)`: what Stable Diffusion 1.5's
               published scheduler config says (`"clip_sample": false`);
  ddim_clip.*  `DDIMScheduler.from_config(config)` exactly as the folder's config reads. The tiny
               folder's PNDM config has no `clip_sample` key, so DDIM's default `clip_sample=True`
               (range 1) applies; the random tiny UNet predicts |x0-hat| up to ~18, so the clamp
               to [-1, 1] acts at every step.

Everything random is fixed, by patching the installed diffusers 0.42.1 img2img module
(`diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img`):

  - the VAE encoding: its `retrieve_latents` is replaced by the original called with
    `sample_mode="argmax"`, i.e. the posterior MODE (the crate's `LatentMode::Mode`), and
    `DiagonalGaussianDistribution.sample` is made an error;
  - the forward noise: its `randn_tensor`, which `prepare_latents` calls exactly once (checked;
    with eta 0 DDIM's step draws nothing), returns a fixed N(0, 1) tensor, saved as `noise`;
  - the image goes through the pipeline's own preprocessing (a [0, 1] tensor, normalised to
    [-1, 1], no resize at 16x16): the tensor the VAE really encoded is captured and saved as
    `image` (checked to equal 2 * image01 - 1).

Each run is repeated with the whole pipeline in float64 (networks, image, noise, and the
scheduler's alphas_cumprod recomputed in float64 from float64 betas, as the crate computes
them), stored rounded to f32 under `<run>.exact.*`: the yardstick of f32 rounding. The clipping
run is ill-conditioned (after the clamp the latents are small next to the guided eps-hat, and
x0-hat = (x_t - sqrt(1 - abar) eps-hat)/sqrt(abar) cancels large terms): there diffusers' own
f32 run drifts ~5e-4 (relative) from its float64 run, against ~4e-6 without clipping.

Recorded per run (f32): `<run>.x_t`, the latents `prepare_latents` returned
(`scheduler.add_noise` at 401); `<run>.step_latents` (steps, N, 4, 8, 8), the latents after
each step from `callback_on_step_end`; `<run>.step_pred_x0`, the `pred_original_sample` of each
`scheduler.step`; `<run>.latents`, the `output_type="latent"` result; `<run>.decoded` =
`vae.decode(latents / scaling_factor).sample` as the pipeline computes it before
postprocessing (no clamping; checked to give the pipeline's own `output_type="pt"` image,
`(decoded / 2 + 0.5).clamp(0, 1)`, exactly). Shared: `image`, `noise`, `encoded` =
scaling_factor * posterior mode, `timesteps` (i64, the whole `set_timesteps(10)` list),
`run_timesteps` (i64, the steps run), `start_timestep` (i64), `final_alpha_cumprod` (f64 of the
scheduler's f32), `alphas_cumprod_run` (f64 of the scheduler's f32 values at the run's steps),
`params` (f64: steps, strength, guidance, eta). The prompts are in the file's metadata
(key `prompts`).

Run from the repository root (about a minute on a CPU):

    .venv/bin/python tools/make_img2img_fixture.py

Needs torch, numpy, safetensors, diffusers (tested with 0.42.1) and transformers (tested with
5.24.0). Re-running reproduces the file bit for bit on the same versions and thread count.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

import diffusers
from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline
from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_img2img as img2img_module

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sd"
OUT = ROOT / "reference" / "img2img.safetensors"
torch.set_num_threads(1)

STEPS, STRENGTH, GUIDANCE, ETA = 10, 0.5, 7.5, 0.0
PROMPTS = ["a photo of a cat", "a dog's life, highly detailed"]
NEGATIVE = ["blurry", "a painting of a house"]
SIZE = 16


def images01():
    """Two deterministic 16x16 RGB images in [0, 1] (smooth patterns, no randomness)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    a = torch.stack([torch.sin(3 * xx + 1) * torch.cos(2 * yy), xx * yy, torch.tanh(2 * (xx - yy))])
    b = torch.stack([torch.cos(5 * xx * yy), torch.sin(2 * yy - xx), (xx**2 + yy**2) - 1])
    return (torch.stack([a, b]).clamp(-1, 1) * 0.5 + 0.5).contiguous()


def rel_err(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


class Patches:
    """The fixed randomness and the records of one pipeline call."""

    def __init__(self):
        self.noise = None
        self.original_retrieve = img2img_module.retrieve_latents
        img2img_module.randn_tensor = self.randn_tensor
        img2img_module.retrieve_latents = self.retrieve_latents

        def no_posterior_sample(*_a, **_k):
            raise AssertionError("a posterior sample was drawn; the run must use the mode")

        diffusers.models.autoencoders.vae.DiagonalGaussianDistribution.sample = no_posterior_sample
        self.reset()

    def reset(self):
        self.randn_calls = 0
        self.modes = []
        self.encoded_images = []
        self.x_t = None
        self.step_latents = []
        self.step_pred_x0 = []
        self.step_t = []

    def randn_tensor(self, shape, generator=None, device=None, dtype=None, layout=None):
        self.randn_calls += 1
        assert tuple(shape) == tuple(self.noise.shape), (shape, self.noise.shape)
        assert dtype == self.noise.dtype, (dtype, self.noise.dtype)
        return self.noise.clone()

    def retrieve_latents(self, encoder_output, generator=None, sample_mode="sample"):
        mode = self.original_retrieve(encoder_output, generator=generator, sample_mode="argmax")
        self.modes.append(mode.detach().clone())
        return mode

    def callback(self, pipe, i, t, kwargs):
        self.step_latents.append(kwargs["latents"].detach().clone())
        self.step_t.append(int(t))
        return {}

    def watch(self, pipe, sched):
        """Record what the VAE encodes, what `prepare_latents` returns and each step's x0-hat."""
        encode, prepare, step = pipe.vae.encode, pipe.prepare_latents, sched.step

        def vae_encode(x, *a, **k):
            self.encoded_images.append(x.detach().clone())
            return encode(x, *a, **k)

        def prepare_latents(*a, **k):
            self.x_t = prepare(*a, **k)
            return self.x_t

        def scheduler_step(*a, **k):
            res = step(*a, **k)
            self.step_pred_x0.append((res[1] if isinstance(res, tuple) else res.pred_original_sample).clone())
            return res

        pipe.vae.encode, pipe.prepare_latents, sched.step = vae_encode, prepare_latents, scheduler_step


def run(patches, dtype, clip):
    """One img2img run in `dtype`; returns the records and the scheduler."""
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        ROOT / "sd1", torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    ).to(dtype)
    pipe.set_progress_bar_config(disable=True)
    config = pipe.scheduler.config
    assert config["_class_name"] == "PNDMScheduler" and "clip_sample" not in config
    sched = DDIMScheduler.from_config(config) if clip else DDIMScheduler.from_config(config, clip_sample=False)
    c = sched.config
    assert c.timestep_spacing == "leading" and c.steps_offset == 1 and not c.set_alpha_to_one
    assert c.clip_sample == clip and c.clip_sample_range == 1.0 and not c.thresholding
    if dtype == torch.float64:
        b0, b1, T = c.beta_start, c.beta_end, c.num_train_timesteps
        betas = torch.linspace(b0**0.5, b1**0.5, T, dtype=torch.float64) ** 2
        sched.alphas_cumprod = torch.cumprod(1.0 - betas, 0)
        sched.final_alpha_cumprod = sched.alphas_cumprod[0]
    pipe.scheduler = sched
    patches.watch(pipe, sched)
    noise = patches.noise
    patches.noise = noise.to(dtype)
    results = {}
    for output_type in ("latent", "pt"):
        patches.reset()
        with torch.no_grad():
            results[output_type] = pipe(
                prompt=PROMPTS,
                negative_prompt=NEGATIVE,
                image=images01().to(dtype),
                strength=STRENGTH,
                num_inference_steps=STEPS,
                guidance_scale=GUIDANCE,
                eta=ETA,
                output_type=output_type,
                callback_on_step_end=patches.callback,
            ).images
        assert patches.randn_calls == 1, patches.randn_calls
        assert len(patches.modes) == 1 and len(patches.encoded_images) == 1
        if output_type == "latent":
            rec = dict(
                image=patches.encoded_images[0],
                encoded=pipe.vae.config.scaling_factor * patches.modes[0],
                x_t=patches.x_t,
                step_latents=torch.stack(patches.step_latents),
                step_pred_x0=torch.stack(patches.step_pred_x0),
                step_t=list(patches.step_t),
            )
    patches.noise = noise
    latents = results["latent"]
    assert torch.equal(latents, rec["step_latents"][-1])
    rec["latents"] = latents
    with torch.no_grad():
        rec["decoded"] = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    assert torch.equal((rec["decoded"] / 2 + 0.5).clamp(0, 1), results["pt"]), "postprocessing differs"
    assert torch.equal(rec["image"], 2 * images01().to(dtype) - 1), "the preprocessing is not 2x - 1"
    return rec, sched


def main():
    print(f"diffusers {diffusers.__version__}, torch {torch.__version__}")
    patches = Patches()
    patches.noise = torch.randn((len(PROMPTS), 4, SIZE // 2, SIZE // 2), generator=torch.Generator().manual_seed(2024))
    out = {"noise": patches.noise}
    # One metadata key: safetensors writes a metadata map in no fixed order.
    meta = {"prompts": json.dumps({"prompts": PROMPTS, "negative_prompts": NEGATIVE})}
    for name, clip in (("ddim", False), ("ddim_clip", True)):
        rec, sched = run(patches, torch.float32, clip)
        c = sched.config
        print(
            f"{name}: DDIMScheduler timestep_spacing={c.timestep_spacing} steps_offset={c.steps_offset} "
            f"set_alpha_to_one={c.set_alpha_to_one} clip_sample={c.clip_sample} "
            f"(range {c.clip_sample_range}) prediction_type={c.prediction_type} eta={ETA}"
        )
        # The steps, and diffusers' img2img choice of the first one.
        timesteps = sched.timesteps.tolist()
        t_start = max(STEPS - min(int(STEPS * STRENGTH), STEPS), 0)
        step_t = rec["step_t"]
        assert step_t == timesteps[t_start:], (step_t, timesteps)
        print(f"{name}: timesteps {timesteps}, run {step_t}, final alpha {float(sched.final_alpha_cumprod)}")
        ac = sched.alphas_cumprod
        a = ac[step_t[0]]
        assert rel_err(rec["x_t"], a**0.5 * rec["encoded"] + (1 - a) ** 0.5 * patches.noise) < 1e-6
        print(f"{name}: max |x0-hat| per step {[round(float(p.abs().max()), 2) for p in rec['step_pred_x0']]}")
        if clip:
            assert all(bool((p.abs() == 1.0).any()) for p in rec["step_pred_x0"]), "a step did not clip"

        exact, _ = run(patches, torch.float64, clip)
        assert exact["step_t"] == step_t
        for k in ("x_t", "step_latents", "step_pred_x0", "latents", "decoded"):
            out[f"{name}.{k}"] = rec[k]
            out[f"{name}.exact.{k}"] = exact[k].float()
            print(f"{name}: {k} f32 vs float64 run: {rel_err(rec[k], exact[k]):.2e}")

        for k, v in (
            ("image", rec["image"]),
            ("encoded", rec["encoded"]),
            ("timesteps", torch.tensor(timesteps, dtype=torch.int64)),
            ("run_timesteps", torch.tensor(step_t, dtype=torch.int64)),
            ("start_timestep", torch.tensor([step_t[0]], dtype=torch.int64)),
            ("final_alpha_cumprod", torch.tensor([float(sched.final_alpha_cumprod)], dtype=torch.float64)),
            ("alphas_cumprod_run", ac[step_t].double()),
            ("params", torch.tensor([STEPS, STRENGTH, GUIDANCE, ETA], dtype=torch.float64)),
        ):
            assert k not in out or torch.equal(out[k], v), k
            out[k] = v

    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sorted(out.items())}, OUT, metadata=meta)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.1f} kB)")


if __name__ == "__main__":
    main()
