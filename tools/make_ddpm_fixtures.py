#!/usr/bin/env python3
"""Build the DDPM UNet parity fixtures under tests/fixtures/ddpm/ (dev-only tool).

Run from the repository root with the project venv (torch, diffusers, safetensors):

    .venv/bin/python tools/make_ddpm_fixtures.py

What it does, for a few TINY DDPM configurations with random weights:

1. builds the network twice, with two independent implementations:
   - `RefUNet` below: a direct transcription of the DDPM UNet of Ho et al. as written in
     FastDPM's `model.py` / pesser's `pytorch_diffusion/model.py` (original key names:
     `temb.dense.0`, `down.0.block.0.norm1`, `mid.attn_1.q`, `up.0.upsample.conv`, ...);
   - diffusers' `UNet2DModel` configured like the `google/ddpm-*` checkpoints
     (act_fn silu, norm_eps 1e-6, flip_sin_to_cos False, freq_shift 1,
     downsample_padding 0, one attention head, AttnDownBlock2D at attention levels);
2. copies the weights from one to the other through an original -> diffusers key map,
   runs both on the same inputs (float times, including non-integer ones such as 17.3) and
   checks in Python that they agree (max |a-b| / max |b| <= 1e-5) before writing anything;
3. writes the weights in the formats the Rust loader must read:
   - config `tiny3` (3 levels, f32), original naming: `tiny3.safetensors`; a torch.save zip
     `tiny3.ckpt` (plain state dict, as pesser's files); `tiny3_ddim_list.ckpt` (DDIM
     CelebA layout `[sd, {}, 0, 0, ema_sd]`, where element 0 holds DIFFERENT weights so
     that picking the wrong element fails); `tiny3_module.pth` (`module.`-prefixed keys, as
     saved from nn.DataParallel); and diffusers naming `tiny3_diffusers/` (`save_pretrained`
     layout: `config.json` + `diffusion_pytorch_model.safetensors`);
   - config `tiny2` (2 levels): diffusers naming only, fp16 weights saved as the HF "fp16"
     variant (`diffusion_pytorch_model.fp16.safetensors`); its references come from the
     same fp16-rounded weights run in f32;
   - config `tinyx`: a UNet2DModel with diffusers' defaults where DDPM differs
     ([cos, sin] time embedding, freq_shift 0, 2-4 attention heads, symmetric downsample
     padding, eps 1e-5), fp16 variant; its reference is diffusers itself (f32 compute);
   - `<name>_io.safetensors`: inputs `x` (N,C,H,W), `times` (K,), and the reference outputs
     `eps.<k>` of the ORIGINAL-naming reference network at `times[k]` (f32, CPU);
   - `ddim_step.safetensors` (config `tiny2`): one DDIM reverse step (eta = 1, train step
     500 -> 480, linear betas 1e-4..0.02) computed in float64 from the reference network's
     eps: `x_t`, `eps`, the step's mean `mean`, its noise `z` and `x_next = mean + sigma*z`,
     `meta = [t_cur, t_next, eta, sigma]`.

Everything is deterministic (fixed seeds) and small (the whole folder stays under ~2 MB).
"""

import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "ddpm"
TOL = 1e-5


# ---------------------------------------------------------------------------------------
# Reference implementation: the DDPM UNet as in FastDPM model.py (original key names).
# The only generalization is the GroupNorm group count (32 in every released model), so
# that a very small fixture network stays small.
# ---------------------------------------------------------------------------------------

def sinusoid(t, dim):
    """DDPM time embedding: freqs exp(-ln(1e4) i / (half - 1)), [sin, cos], float t."""
    half = dim // 2
    scale = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -scale)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


def swish(x):
    return x * torch.sigmoid(x)


def norm(c, groups):
    return nn.GroupNorm(num_groups=groups, num_channels=c, eps=1e-6, affine=True)


class Res(nn.Module):
    def __init__(self, cin, cout, temb_ch, groups):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.norm1 = norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.temb_proj = nn.Linear(temb_ch, cout)
        self.norm2 = norm(cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1, 1, 0)

    def forward(self, x, temb):
        h = self.conv1(swish(self.norm1(x)))
        h = h + self.temb_proj(swish(temb))[:, :, None, None]
        h = self.conv2(swish(self.norm2(h)))  # dropout is the identity at inference
        if self.cin != self.cout:
            x = self.nin_shortcut(x)
        return x + h


class Attn(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = norm(c, groups)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        q = q.reshape(b, c, hh * ww).permute(0, 2, 1)  # b, hw, c
        k = k.reshape(b, c, hh * ww)  # b, c, hw
        w = torch.bmm(q, k) * (int(c) ** -0.5)  # b, hw(q), hw(k)
        w = torch.softmax(w, dim=2)
        v = v.reshape(b, c, hh * ww)
        out = torch.bmm(v, w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Down(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class RefUNet(nn.Module):
    def __init__(self, ch, out_ch, ch_mult, num_res_blocks, attn_resolutions, in_channels,
                 resolution, groups=32):
        super().__init__()
        self.ch = ch
        self.temb_ch = 4 * ch
        self.levels = len(ch_mult)
        self.nrb = num_res_blocks
        self.resolution = resolution
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, self.temb_ch), nn.Linear(self.temb_ch, self.temb_ch)])
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        in_mult = (1,) + tuple(ch_mult)
        res = resolution
        self.down = nn.ModuleList()
        for lvl in range(self.levels):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            cin, cout = ch * in_mult[lvl], ch * ch_mult[lvl]
            for _ in range(num_res_blocks):
                blocks.append(Res(cin, cout, self.temb_ch, groups))
                cin = cout
                if res in attn_resolutions:
                    attns.append(Attn(cin, groups))
            d = nn.Module()
            d.block, d.attn = blocks, attns
            if lvl != self.levels - 1:
                d.downsample = Down(cin)
                res //= 2
            self.down.append(d)
        self.mid = nn.Module()
        self.mid.block_1 = Res(cin, cin, self.temb_ch, groups)
        self.mid.attn_1 = Attn(cin, groups)
        self.mid.block_2 = Res(cin, cin, self.temb_ch, groups)
        ups = []
        for lvl in reversed(range(self.levels)):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            cout = ch * ch_mult[lvl]
            skip = ch * ch_mult[lvl]
            for i in range(num_res_blocks + 1):
                if i == num_res_blocks:
                    skip = ch * in_mult[lvl]
                blocks.append(Res(cin + skip, cout, self.temb_ch, groups))
                cin = cout
                if res in attn_resolutions:
                    attns.append(Attn(cin, groups))
            u = nn.Module()
            u.block, u.attn = blocks, attns
            if lvl != 0:
                u.upsample = Up(cin)
                res *= 2
            ups.insert(0, u)
        self.up = nn.ModuleList(ups)
        self.norm_out = norm(cin, groups)
        self.conv_out = nn.Conv2d(cin, out_ch, 3, 1, 1)

    def forward(self, x, t):
        temb = self.temb.dense[1](swish(self.temb.dense[0](sinusoid(t, self.ch))))
        hs = [self.conv_in(x)]
        for lvl in range(self.levels):
            for i in range(self.nrb):
                h = self.down[lvl].block[i](hs[-1], temb)
                if len(self.down[lvl].attn) > 0:
                    h = self.down[lvl].attn[i](h)
                hs.append(h)
            if lvl != self.levels - 1:
                hs.append(self.down[lvl].downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for lvl in reversed(range(self.levels)):
            for i in range(self.nrb + 1):
                h = self.up[lvl].block[i](torch.cat([h, hs.pop()], dim=1), temb)
                if len(self.up[lvl].attn) > 0:
                    h = self.up[lvl].attn[i](h)
            if lvl != 0:
                h = self.up[lvl].upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


# ---------------------------------------------------------------------------------------
# diffusers UNet2DModel with the google/ddpm-* settings, and the original -> diffusers map.
# ---------------------------------------------------------------------------------------

def diffusers_config(cfg):
    levels = len(cfg["ch_mult"])
    res = [cfg["resolution"] // 2 ** i for i in range(levels)]
    attn = [r in cfg["attn_resolutions"] for r in res]
    return dict(
        sample_size=cfg["resolution"],
        in_channels=cfg["in_channels"],
        out_channels=cfg["out_ch"],
        center_input_sample=False,
        time_embedding_type="positional",
        freq_shift=1,
        flip_sin_to_cos=False,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        block_out_channels=tuple(cfg["ch"] * m for m in cfg["ch_mult"]),
        layers_per_block=cfg["num_res_blocks"],
        mid_block_scale_factor=1,
        downsample_padding=0,
        act_fn="silu",
        attention_head_dim=None,
        norm_num_groups=cfg.get("groups", 32),
        norm_eps=1e-6,
        resnet_time_scale_shift="default",
        add_attention=True,
        dropout=0.0,
    )


def original_to_diffusers(sd, levels):
    """Rename an original-naming state dict to diffusers' UNet2DModel naming."""
    out = {}
    res_names = {"norm1": "norm1", "conv1": "conv1", "temb_proj": "time_emb_proj", "norm2": "norm2",
                 "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
    attn_names = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}

    def res(prefix, rest):
        sub, p = rest.split(".", 1)
        return f"{prefix}.{res_names[sub]}.{p}"

    def attn(prefix, rest, value):
        sub, p = rest.split(".", 1)
        if sub != "norm" and p == "weight":
            value = value.reshape(value.shape[0], value.shape[1])  # 1x1 conv -> Linear
        return f"{prefix}.{attn_names[sub]}.{p}", value

    for key, value in sd.items():
        parts = key.split(".")
        if key.startswith("temb.dense."):
            new = f"time_embedding.linear_{int(parts[2]) + 1}.{parts[3]}"
        elif parts[0] in ("conv_in", "conv_out"):
            new = key
        elif parts[0] == "norm_out":
            new = "conv_norm_out." + parts[1]
        elif parts[0] in ("down", "up"):
            lvl = int(parts[1])
            blk = f"down_blocks.{lvl}" if parts[0] == "down" else f"up_blocks.{levels - 1 - lvl}"
            kind = parts[2]
            if kind == "block":
                new = res(f"{blk}.resnets.{parts[3]}", ".".join(parts[4:]))
            elif kind == "attn":
                new, value = attn(f"{blk}.attentions.{parts[3]}", ".".join(parts[4:]), value)
            elif kind == "downsample":
                new = f"{blk}.downsamplers.0.conv.{parts[-1]}"
            elif kind == "upsample":
                new = f"{blk}.upsamplers.0.conv.{parts[-1]}"
            else:
                raise KeyError(key)
        elif parts[0] == "mid":
            sub = parts[1]
            rest = ".".join(parts[2:])
            if sub == "block_1":
                new = res("mid_block.resnets.0", rest)
            elif sub == "block_2":
                new = res("mid_block.resnets.1", rest)
            elif sub == "attn_1":
                new, value = attn("mid_block.attentions.0", rest, value)
            else:
                raise KeyError(key)
        else:
            raise KeyError(key)
        out[new] = value
    return out


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def randomize(model, gen):
    """Random weights at a scale that keeps every layer's output O(1): GroupNorm scales
    near 1, small biases, other weights N(0, 1/fan_in)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.GroupNorm):
                module.weight.copy_(1.0 + 0.1 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                w = module.weight
                w.copy_(torch.randn(w.shape, generator=gen) / math.sqrt(w[0].numel()))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))


CONFIGS = {
    # Two levels (16 -> 32 channels), attention at the second (8x8), GroupNorm(8). Written
    # in diffusers naming only, with fp16 weights as an HF "fp16" variant (the references
    # are computed from the same fp16-rounded weights in f32).
    # NB: a GroupNorm with ONE channel per group (e.g. 32 channels, 32 groups) removes the
    # per-channel time-embedding bias entirely, making the output independent of t; every
    # fixture keeps >= 2 channels per group, and main() checks that the outputs depend on t.
    "tiny2": dict(ch=16, out_ch=3, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                  in_channels=3, resolution=16, groups=8),
    # Three levels, 2 res blocks, attention at the top level (16x16); GroupNorm(4) keeps it
    # small enough to be written in every checkpoint format (f32).
    "tiny3": dict(ch=8, out_ch=3, ch_mult=(1, 1, 2), num_res_blocks=2, attn_resolutions=(16,),
                  in_channels=3, resolution=16, groups=4),
}
TIMES = [0.0, 17.3, 500.0, 999.0]


def build(name, cfg, seed, fp16_weights):
    gen = torch.Generator().manual_seed(seed)
    ref = RefUNet(**cfg).eval()
    randomize(ref, gen)
    if fp16_weights:
        ref = ref.half().float()
    sd = {k: v.detach().clone().contiguous() for k, v in ref.state_dict().items()}

    from diffusers import UNet2DModel
    dcfg = diffusers_config(cfg)
    dif = UNet2DModel(**dcfg).eval()
    dsd = original_to_diffusers(sd, len(cfg["ch_mult"]))
    missing, unexpected = dif.load_state_dict(dsd, strict=True), None
    del missing, unexpected

    x = torch.randn((2, cfg["in_channels"], cfg["resolution"], cfg["resolution"]), generator=gen)
    outs = {}
    with torch.no_grad():
        for k, t in enumerate(TIMES):
            tt = torch.full((x.shape[0],), t, dtype=torch.float32)
            a = ref(x, tt)
            b = dif(x, tt).sample
            err = rel_err(b, a)
            print(f"{name}: t={t:7.1f} max|ref|={a.abs().max().item():.3f} "
                  f"ref vs diffusers rel err {err:.2e}")
            if not err <= TOL:
                sys.exit(f"{name}: reference and diffusers disagree at t={t}: {err:.3e} > {TOL}")
            outs[f"eps.{k}"] = a.contiguous()
    for k in range(1, len(TIMES)):
        dt = rel_err(outs[f"eps.{k}"], outs["eps.0"])
        if not dt > 1e-2:
            sys.exit(f"{name}: the output barely depends on t ({dt:.1e}): a useless fixture")
    return ref, sd, dif, dcfg, x, outs


def write_original(name, sd):
    save_file(sd, str(OUT / f"{name}.safetensors"))


def write_all_formats(name, sd):
    # pesser-style plain state dict, torch.save zip format.
    torch.save(sd, OUT / f"{name}.ckpt")
    # DDIM CelebA list layout: [model_sd, optimizer, epoch, step, ema_sd]. Element 0 holds
    # OTHER weights (the same tensors shifted by one element), so a loader that picks it
    # instead of the EMA element fails the test; both are views of one storage, which
    # torch.save writes once.
    numels = [v.numel() for v in sd.values()]
    flat = torch.cat([v.flatten() for v in sd.values()] + [torch.zeros(1)])
    ema, other, off = {}, {}, 0
    for (k, v), n in zip(sd.items(), numels):
        ema[k] = flat[off:off + n].view(v.shape)
        other[k] = flat[off + 1:off + 1 + n].view(v.shape)
        off += n
    torch.save([other, {}, 0, 0, ema], OUT / f"{name}_ddim_list.ckpt")
    # nn.DataParallel prefix.
    torch.save({f"module.{k}": v for k, v in sd.items()}, OUT / f"{name}_module.pth")


def write_diffusers(name, dif, fp16):
    d = OUT / f"{name}_diffusers"
    if d.exists():
        shutil.rmtree(d)
    if fp16:
        dif.half().save_pretrained(d, safe_serialization=True, variant="fp16")
    else:
        dif.save_pretrained(d, safe_serialization=True)


def write_io(name, x, outs):
    tensors = {"x": x.contiguous(), "times": torch.tensor(TIMES, dtype=torch.float32)}
    tensors.update(outs)
    save_file(tensors, str(OUT / f"{name}_io.safetensors"))


def write_ddim_step(ref, x0_shape, gen):
    """One DDIM step (eta = 1) on the linear schedule, computed in float64 from the
    reference network's eps: x_t at train step 500 -> step 480, with given noise z."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, dim=0)
    t_cur, t_next, eta = 500, 480, 1.0
    x_t = torch.randn(x0_shape, generator=gen)
    z = torch.randn(x0_shape, generator=gen)
    with torch.no_grad():
        eps = ref(x_t, torch.full((x0_shape[0],), float(t_cur))).double()
    a, an = abar[t_cur], abar[t_next]
    sigma = eta * torch.sqrt((1 - an) / (1 - a) * (1 - a / an))
    x0 = (x_t.double() - torch.sqrt(1 - a) * eps) / torch.sqrt(a)
    mean = torch.sqrt(an) * x0 + torch.sqrt(1 - an - sigma ** 2) * eps
    x_next = mean + sigma * z.double()
    save_file({
        "x_t": x_t.contiguous(),
        "z": z.contiguous(),
        "eps": eps.float().contiguous(),
        "mean": mean.float().contiguous(),
        "x_next": x_next.float().contiguous(),
        "meta": torch.tensor([t_cur, t_next, eta, sigma.item()], dtype=torch.float64),
    }, str(OUT / "ddim_step.safetensors"))


# A UNet2DModel with diffusers' own defaults where DDPM differs: [cos, sin] embedding,
# freq_shift 0, multi-head attention (head dim 4), symmetric downsample padding, eps 1e-5.
# No original-naming counterpart exists; the reference is diffusers itself.
DIFFUSERS_ONLY = {
    "tinyx": dict(
        sample_size=16, in_channels=3, out_channels=3, center_input_sample=False,
        time_embedding_type="positional", freq_shift=0, flip_sin_to_cos=True,
        down_block_types=("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, downsample_padding=1,
        act_fn="silu", attention_head_dim=4, norm_num_groups=4, norm_eps=1e-5,
        resnet_time_scale_shift="default", add_attention=True, dropout=0.0,
    ),
}


def build_diffusers_only(name, dcfg, seed):
    from diffusers import UNet2DModel
    gen = torch.Generator().manual_seed(seed)
    dif = UNet2DModel(**dcfg).eval()
    randomize(dif, gen)
    dif = dif.half().float()
    x = torch.randn((2, 3, 16, 16), generator=gen)
    outs = {}
    with torch.no_grad():
        for k, t in enumerate(TIMES):
            outs[f"eps.{k}"] = dif(x, torch.full((2,), t)).sample.contiguous()
    for k in range(1, len(TIMES)):
        dt = rel_err(outs[f"eps.{k}"], outs["eps.0"])
        if not dt > 1e-2:
            sys.exit(f"{name}: the output barely depends on t ({dt:.1e}): a useless fixture")
    print(f"{name}: diffusers-only reference, {sum(p.numel() for p in dif.parameters())} parameters")
    return dif, x, outs


def main():
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {}
    for seed, (name, cfg) in enumerate(CONFIGS.items()):
        fp16 = name == "tiny2"
        ref, sd, dif, dcfg, x, outs = build(name, cfg, 1234 + seed, fp16)
        write_diffusers(name, dif, fp16)
        write_io(name, x, outs)
        if name == "tiny3":
            write_original(name, sd)
            write_all_formats(name, sd)
        if name == "tiny2":
            write_ddim_step(ref, tuple(x.shape), torch.Generator().manual_seed(99))
        meta[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
        meta[name]["params"] = sum(v.numel() for v in sd.values())
    for name, dcfg in DIFFUSERS_ONLY.items():
        dif, x, outs = build_diffusers_only(name, dcfg, 4321)
        write_diffusers(name, dif, True)
        write_io(name, x, outs)
    (OUT / "configs.json").write_text(json.dumps(meta, indent=2) + "\n")
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")
    for name, m in meta.items():
        print(f"  {name}: {m['params']} parameters")


if __name__ == "__main__":
    main()
