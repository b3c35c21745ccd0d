#!/usr/bin/env python3
"""Tiny Stable Diffusion fixtures for the parity tests `tests/models/sd_parity.rs` and `tests/models/sd_tokenizer.rs`.

Dev-only. Builds two TINY, randomly initialised Stable Diffusion pipelines with HF diffusers and
transformers, saves them as diffusers-format folders and writes reference outputs computed by the
Python libraries from the SAVED folders (every reference model is reloaded from disk first):

  tests/fixtures/sd/sd1/   SD1-style: conv proj_in/proj_out, `attention_head_dim` = one head COUNT,
                           epsilon prediction, CLIP with quick_gelu, tokenizer padding with EOS,
                           VAE saved with the LEGACY attention names (query/key/value/proj_attn).
  tests/fixtures/sd/sd2/   SD2-style: use_linear_projection, a per-block head-count list giving
                           several head sizes, upcast_attention, v_prediction, CLIP with gelu,
                           tokenizer padding with "!", UNet and text encoder stored ONLY as
                           `.fp16.safetensors` variants (weights rounded to fp16 before the
                           references are computed, so an f32 model loaded from them is exact).
  tests/fixtures/sd/reference/{tokenizer.json,sd1.safetensors,sd2.safetensors}

The tokenizer is a byte-level CLIP BPE laid out exactly like OpenAI's (256 byte symbols, the same
256 with `</w>`, one token per merge, then <|startoftext|> and <|endoftext|>), with merges learnt
by a small deterministic BPE trainer on a short corpus.

The full Boomerang reference follows the crate's contract, not diffusers' img2img: the latent is
noised exactly at step t, x_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps, and deterministic DDIM
(eta = 0) runs on the crate's `Spacing::Uniform(n)` grid from t down to step 0, with classifier-free
guidance applied to the raw network outputs, followed by VAE decoding.

Run from the repository root (about 20 s on a CPU):

    .venv/bin/python tools/make_sd_fixtures.py

Needs torch, numpy, safetensors, diffusers (tested with 0.42.1) and transformers (tested with
5.24.0). Seeds are fixed; re-running reproduces the files bit for bit on the same versions.
"""

import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sd"
torch.set_num_threads(1)

# ------------------------------------------------------------------------------------------------
# Tokenizer files
# ------------------------------------------------------------------------------------------------


def bytes_to_unicode():
    """GPT-2 / CLIP byte -> printable unicode character table, in CLIP's vocabulary order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


CORPUS = """
a photo of a cat . a photo of a dog . a painting of a house by the sea . portrait of a person ,
highly detailed , sharp focus , the cat sat on the mat . a dog's life isn't easy ; it's a photo .
an astronaut riding a horse on the moon . landscape with mountains and a lake at sunset .
photograph of the city at night , street lights , rain . a red car . a blue bird on a tree .
people walking in the park . flowers in a vase . café naïve résumé . 2 cats and 3 dogs .
the the the photo photo of of a a cat cat dog dog
"""


def train_bpe(corpus, num_merges):
    """Deterministic BPE on byte-level symbols with CLIP's `</w>` end-of-word marker."""
    b2u = bytes_to_unicode()
    words = Counter()
    for w in corpus.lower().split():
        chars = [b2u[b] for b in w.encode("utf-8")]
        chars[-1] = chars[-1] + "</w>"
        words[tuple(chars)] += 1
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for w, f in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += f
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], tuple(-ord(c) for c in kv[0][0] + kv[0][1])))[0]
        merges.append(best)
        new_words = Counter()
        for w, f in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += f
        words = new_words
    return merges


def write_tokenizer(folder, merges, pad_token):
    folder.mkdir(parents=True, exist_ok=True)
    base = list(bytes_to_unicode().values())
    vocab = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    ids = {}
    for tok in vocab:  # a merge result may repeat a base token: keep the first id (as CLIP does)
        ids.setdefault(tok, len(ids))
    with open(folder / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(ids, f, ensure_ascii=False)
    with open(folder / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    special = lambda s: {"content": s, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    config = {
        "add_prefix_space": False,
        "bos_token": special("<|startoftext|>"),
        "do_lower_case": True,
        "eos_token": special("<|endoftext|>"),
        "errors": "replace",
        "model_max_length": 77,
        # A plain string, as in the published SD1 and SD2 folders: transformers then registers
        # the pad token with normalized=False, overriding the flags of an identical EOS.
        "pad_token": pad_token,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": special("<|endoftext|>"),
    }
    with open(folder / "tokenizer_config.json", "w") as f:
        json.dump(config, f, indent=2)
    stm = {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    with open(folder / "special_tokens_map.json", "w") as f:
        json.dump(stm, f, indent=2)
    return len(ids)


TOKENIZER_CASES = [
    "a photo of a cat",
    "  A   PHOTO\tof\na   Cat  ",
    "Hello, world! It's a dog's life; isn't it? They'RE here, we'VE won, I'M ok, you'LL see, he'D go.",
    "Café naïve façade résumé",
    "Cafe\u0301 decomposed accents: e\u0301 a\u0308",
    "emoji 🐱🚀 and 日本語 text, 한국어 and Ελληνικά",
    "numbers 12345 and 3.14 and 1,000,000",
    "",
    "    ",
    " ".join(["photo"] * 30) + " " + " ".join(f"w{i}" for i in range(60)),
    "<|startoftext|>a<|endoftext|>b <|ENDOFTEXT|> c",
    "ΣΑΣ İstanbul ẞ straße ǅ",
    "\u00a0nbsp\u3000ideographic\u200bzero\u2028line\u0085next\x0bvt",
    "tabs\tand\r\nnewlines\fform feed",
    "a!!!b ... ??? !? !",
    "'s 'S 'T 'Re x's x'S ''s",
    "control\x00chars\x07here\x1b[0m",
    "mixed123abc 4x4 x2 ½ ² ①",
    "a" * 200,
    "the cat's café, the dog's résumé!",
]


# The text-encoder references keep only the first cases (the file size budget).
TEXT_CASES = 6

# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------


def perturb_norms(model, gen):
    """Give every normalisation layer a non-trivial affine part (defaults are 1 and 0)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                if name.endswith("weight") and p.dim() == 1:
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
                elif name.endswith("bias") and p.dim() == 1:
                    p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def scale_params(model, gen, std):
    """Re-draw every non-norm parameter N(0, std^2) (larger than default inits, so that every
    path of a tiny network contributes visibly to the output)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                continue
            fan_in = p[0].numel() if p.dim() > 1 else p.numel()
            p.copy_(torch.randn(p.shape, generator=gen) * std / math.sqrt(max(fan_in, 1)) * math.sqrt(3))


def round_to_fp16(model):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def make_pipeline_folder(name, cfg, merges):
    folder = ROOT / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(cfg["seed"])

    vocab_size = write_tokenizer(folder / "tokenizer", merges, cfg["pad_token"])

    # text encoder
    tcfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=cfg["text_hidden"],
        intermediate_size=cfg["text_mlp"],
        num_hidden_layers=cfg["text_layers"],
        num_attention_heads=cfg["text_heads"],
        max_position_embeddings=77,
        hidden_act=cfg["text_act"],
        layer_norm_eps=1e-5,
        projection_dim=cfg["text_hidden"],
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=1,
    )
    torch.manual_seed(cfg["seed"])
    te = CLIPTextModel(tcfg).eval()
    scale_params(te, gen, 1.0)
    with torch.no_grad():
        for n_, p in te.named_parameters():
            if "embedding" in n_:
                p.copy_(torch.randn(p.shape, generator=gen))
    perturb_norms(te, gen)
    if cfg["fp16_variant"]:
        round_to_fp16(te)
        te.half().save_pretrained(folder / "text_encoder", variant="fp16")
    else:
        te.save_pretrained(folder / "text_encoder")

    # unet
    torch.manual_seed(cfg["seed"] + 1)
    unet = UNet2DConditionModel(**cfg["unet"]).eval()
    scale_params(unet, gen, 1.0)
    perturb_norms(unet, gen)
    if cfg["fp16_variant"]:
        round_to_fp16(unet)
        unet.half().save_pretrained(folder / "unet", variant="fp16")
    else:
        unet.save_pretrained(folder / "unet")

    # vae
    torch.manual_seed(cfg["seed"] + 2)
    vae = AutoencoderKL(**cfg["vae"]).eval()
    scale_params(vae, gen, 1.0)
    perturb_norms(vae, gen)
    vae.save_pretrained(folder / "vae")
    if cfg["legacy_vae"]:
        path = folder / "vae" / "diffusion_pytorch_model.safetensors"
        sd = load_file(path)
        renamed = {}
        for k, v in sd.items():
            for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
                if ".attentions." in k and f".{new}." in k:
                    k = k.replace(f".{new}.", f".{old}.")
            renamed[k] = v.contiguous()
        assert any(".proj_attn." in k for k in renamed)
        save_file(renamed, path, metadata={"format": "pt"})

    # scheduler
    sched_cls = cfg["scheduler_cls"]
    sched = sched_cls(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=cfg["prediction_type"],
        **cfg["scheduler_extra"],
    )
    sched.save_pretrained(folder / "scheduler")

    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", sched_cls.__name__],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    with open(folder / "model_index.json", "w") as f:
        json.dump(model_index, f, indent=2)
    return folder


def crate_uniform_grid(s, n, T=1000):
    """The crate's `Spacing::Uniform(n)` grid from integer step `s` down to step 0."""
    k = min(int(round((n - 1) * s / (T - 1))) + 1, s + 1)
    if k == 1:
        return [s]
    return [int(round(s * (k - 1 - i) / (k - 1))) for i in range(k)]


def crate_alphas_cumprod(T=1000, b0=0.00085, b1=0.012):
    """The crate's scaled-linear schedule, in float64 (numpy's linspace is the same formula)."""
    betas = np.linspace(math.sqrt(b0), math.sqrt(b1), T, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def references(name, folder, cfg):
    torch.manual_seed(1234)
    gen = torch.Generator().manual_seed(cfg["seed"] + 100)
    variant = "fp16" if cfg["fp16_variant"] else None
    pipe = StableDiffusionPipeline.from_pretrained(
        folder, torch_dtype=torch.float32, variant=variant, safety_checker=None, requires_safety_checker=False
    )
    unet, vae, te, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    for m in (unet, vae, te):
        m.eval()
        assert all(p.dtype == torch.float32 for p in m.parameters())
    out = {}

    # --- tokenizer + text encoder ---
    ids = tok(TOKENIZER_CASES, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    out["tokenizer.ids"] = ids.to(torch.int64)
    with torch.no_grad():
        enc = te(ids, output_hidden_states=True)
        out["text.hidden"] = enc.last_hidden_state[:TEXT_CASES].contiguous()
        # clip_skip = 1: the penultimate layer's output, then the final layer norm (diffusers'
        # `encode_prompt(..., clip_skip=1)`).
        out["text.hidden_skip1"] = te.final_layer_norm(enc.hidden_states[-2][:TEXT_CASES]).contiguous()
    prompts = ["a photo of a cat", "a dog's life, highly detailed"]
    negative = "blurry"
    with torch.no_grad():
        pe, ne = pipe.encode_prompt(prompts, "cpu", 1, True, negative_prompt=[negative, negative])
    out["prompt.embeds"] = pe.contiguous()
    out["prompt.negative_embeds"] = ne.contiguous()
    with torch.no_grad():
        empty, _ = pipe.encode_prompt([""], "cpu", 1, False)
    out["prompt.empty_embeds"] = empty.contiguous()

    # --- unet ---
    lat = cfg["unet"]["sample_size"]
    x = torch.randn((2, 4, lat, lat), generator=gen)
    ctx = torch.randn((2, 77, cfg["unet"]["cross_attention_dim"]), generator=gen)
    times = [0.0, 37.0, 500.5, 999.0]
    out["unet.x"] = x
    out["unet.context"] = ctx
    out["unet.times"] = torch.tensor(times, dtype=torch.float64)
    with torch.no_grad():
        for k, t in enumerate(times):
            out[f"unet.out.{k}"] = unet(x, torch.tensor([t, t]), encoder_hidden_states=ctx).sample.contiguous()
        # odd latent size: exercises diffusers' `upsample_size` path
        x_odd = torch.randn((1, 4, lat + 3, lat + 1), generator=gen)
        out["unet.x_odd"] = x_odd
        out["unet.out_odd"] = unet(x_odd, torch.tensor([250.0]), encoder_hidden_states=ctx[:1]).sample.contiguous()

    # --- vae ---
    img_size = cfg["image_size"]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, img_size), torch.linspace(-1, 1, img_size), indexing="ij")
    image = torch.stack([torch.sin(3 * xx + 1) * torch.cos(2 * yy), xx * yy, torch.tanh(2 * (xx - yy))])[None]
    image = torch.cat([image, (0.8 * torch.rand((1, 3, img_size, img_size), generator=gen) * 2 - 0.8)], 0)
    out["vae.image"] = image.contiguous()
    with torch.no_grad():
        post = vae.encode(image).latent_dist
        out["vae.mean"] = post.mean.contiguous()
        out["vae.std"] = post.std.contiguous()
        z = torch.randn(post.mean.shape, generator=gen)
        out["vae.latents"] = z
        out["vae.decoded"] = vae.decode(z).sample.contiguous()
    sf = vae.config.scaling_factor
    out["vae.scaling_factor"] = torch.tensor([sf], dtype=torch.float64)

    # --- full guided Boomerang in latent space (crate contract) ---
    t_start, n_steps, g = 600, 20, 7.5
    grid = crate_uniform_grid(t_start, n_steps)
    ac = crate_alphas_cumprod()
    with torch.no_grad():
        z0 = post.mean * sf
        noise = torch.randn(z0.shape, generator=gen)
        a = ac[t_start]
        x = (np.float32(math.sqrt(a)) * z0 + np.float32(math.sqrt(1 - a)) * noise).float()
        out["run.x_t"] = x.contiguous()
        for i, s in enumerate(grid):
            ts = torch.tensor([float(s)] * x.shape[0])
            cond = unet(x, ts, encoder_hidden_states=pe).sample
            unc = unet(x, ts, encoder_hidden_states=ne).sample
            o = (unc + np.float32(g) * (cond - unc)).double()
            a = ac[s]
            xd = x.double()
            if cfg["prediction_type"] == "epsilon":
                eps = o
                x0 = (xd - math.sqrt(1 - a) * eps) / math.sqrt(a)
            else:
                x0 = math.sqrt(a) * xd - math.sqrt(1 - a) * o
                eps = math.sqrt(a) * o + math.sqrt(1 - a) * xd
            x0, eps = x0.float(), eps.float()
            if i + 1 < len(grid):
                an = ac[grid[i + 1]]
                x = np.float32(math.sqrt(an)) * x0 + np.float32(math.sqrt(1 - an)) * eps
            else:
                x = x0
        out["run.latents"] = x.contiguous()
        out["run.decoded"] = vae.decode(x / sf).sample.contiguous()
    out["run.image"] = image.clone()
    out["run.noise"] = noise.contiguous()
    out["run.grid"] = torch.tensor(grid, dtype=torch.int64)
    out["run.params"] = torch.tensor([t_start, n_steps, g], dtype=torch.float64)

    # --- cross-check the loaded VAE really is the one that was saved (legacy names converted) ---
    raw_vae = AutoencoderKL.from_pretrained(folder / "vae")
    with torch.no_grad():
        assert rel_err(raw_vae.encode(image).latent_dist.mean, out["vae.mean"]) == 0.0

    ROOT.joinpath("reference").mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, ROOT / "reference" / f"{name}.safetensors")
    return ids


SD1 = dict(
    seed=11,
    pad_token="<|endoftext|>",
    text_hidden=32,
    text_mlp=64,
    text_layers=2,
    text_heads=4,
    text_act="quick_gelu",
    fp16_variant=False,
    legacy_vae=True,
    image_size=16,
    prediction_type="epsilon",
    scheduler_cls=PNDMScheduler,
    scheduler_extra=dict(set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1),
    unet=dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    ),
    vae=dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    ),
)

SD2 = dict(
    seed=22,
    pad_token="!",
    text_hidden=24,
    text_mlp=48,
    text_layers=3,
    text_heads=3,
    text_act="gelu",
    fp16_variant=True,
    legacy_vae=False,
    image_size=16,
    prediction_type="v_prediction",
    scheduler_cls=DDIMScheduler,
    scheduler_extra=dict(clip_sample=False, set_alpha_to_one=False, steps_offset=1),
    unet=dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24,
        attention_head_dim=[2, 2, 8],
        norm_num_groups=8,
        use_linear_projection=True,
        upcast_attention=True,
    ),
    vae=dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    ),
)


def main():
    merges = train_bpe(CORPUS, 160)
    ids = {}
    for name, cfg in (("sd1", SD1), ("sd2", SD2)):
        folder = make_pipeline_folder(name, cfg, merges)
        ids[name] = references(name, folder, cfg).tolist()
    with open(ROOT / "reference" / "tokenizer.json", "w", encoding="utf-8") as f:
        json.dump({"cases": TOKENIZER_CASES, "sd1": ids["sd1"], "sd2": ids["sd2"]}, f, ensure_ascii=True)
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    print(f"wrote {ROOT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
