#!/usr/bin/env python3
"""Build the Patched Diffusion parity fixtures under tests/fixtures/patched/ (dev-only tool).

Run from the repository root with the project venv (torch, numpy, safetensors):

    .venv/bin/python tools/make_patched_fixtures.py

`PatchUNet` below is an independent PyTorch transcription of the Patched Diffusion network
(Luhman & Luhman 2022, arXiv 2207.04316), written from the paper and from reading
PatchDiffusion-Pytorch's `patch_diffusion/unet.py`, `nn.py`, `gaussian_diffusion.py`,
`respace.py`, `script_util.py` and `scripts/image_sample.py` (the original repository is not
imported, and its weights are lost). Its parameter names are the original state-dict keys.
What it reproduces, and what the Rust port must match:

- patchify: channel (ph*P + pw)*C + c; checked here against the original's
  permute/reshape sequence (`to_patches` / `from_patches`);
- time embedding: [sin, cos] of t*exp(-ln(1e4)*i/(half-1)), Linear(mc,4mc), SiLU,
  Linear(4mc, mc*mult[-1]), SiLU;
- input conv, then the 2-D sinusoidal positional embedding (omega = 64/res) added in place,
  so that skip hs[0] and the variance head's input carry it;
- ResBlock: GN(eps 1e-5) SiLU conv3; emb_layers = bare Linear(emb, 2*out); affine-free
  group_norm(eps 1e-3); h*(1+scale)+shift; SiLU conv3; class gate
  h*sigmoid(classemb_proj(label_embs[y])+2); 1x1 skip when the width changes;
- channel changes only in Downsample (pad right/bottom by 1, conv3 stride 2) and Upsample
  (nearest x2, conv3);
- attention: Conv1d qkv, q,k,v split before (new order) or after (legacy) the heads,
  C_h^-1/4 on q and k, softmax in float32, Conv1d proj_out, residual;
- heads: mean = conv3(SiLU(GN(h))); variance = sigmoid(conv3(SiLU(conv3(cat[x_in, h] +
  conv1x1(SiLU(t_emb)))))), each un-patchified.

Diffusion maths are float64 numpy, cast to float32 per coefficient as guided-diffusion's
`_extract_into_tensor` does: linear betas (scaled by 1000/T, beta_T from `linearB`),
`space_timesteps` respacing, the respaced betas 1 - abar_k/abar_{k-1}, posterior mean
coefficients, log-variance v*log(beta_tilde_clipped) + (1-v)*log(beta) (Patched's
convention), classifier-free guidance on the eps derived from x0 (with the BASE process's
coefficients at the original step), dynamic thresholding torch.quantile(|x0|, 0.995,
interpolation='nearest') as the script does (and 'linear', what the crate's Clip::Dynamic
implements), then clamp(-1, 1).

Configurations (all 16x16 RGB, random weights; GroupNorm groups reduced from 32 so that
the fixtures stay tiny; the output conv is scaled x3 so that x0 leaves [-1, 1] and the
thresholding has work to do):

- `p2/`: P=2, mc 8, mult (1,1), 1 res block, attention at res 4 (2 heads of 4 channels, new
  order), GroupNorm(4), class-conditional (10 classes + null label 10), learn_sigma. Files
  `model.safetensors`, `model.pt` (torch.save zip), `config.json` (original kwargs).
- `pair/`: P=4, mc 4, mult (1,2) (channel changes at the resamplers), attention at res 2
  (legacy order, num_heads 2), GroupNorm(2), class-conditional 10, learn_sigma, snr_splits
  0.25: `model_0.safetensors`, `model_1.safetensors`, `model_0.pt`, `config.json`.
- `unc/`: P=2, mc 4, mult (1,1.5) (width 6), 2 res blocks, attention at res 8 (num_heads 2,
  num_heads_upsample 4), unconditional, learn_sigma False, model_mean_type eps,
  noise_schedule linear0.025: `model.safetensors`, `config.json`.

Reference files:
- `io_<name>.safetensors`: `x` (4,3,16,16), `times` (4,) per item, `labels` (4,), `out`
  (raw network output of both heads), and for the pair `out_1` of model 1 on the same inputs;
- `steps.json`: space_timesteps results for several section strings;
- `sampling_<name>.safetensors`: for respaced steps k (`ks`, `t`, `t_prev`): the input
  `x_t.<i>`, `labels.<i>`, and the references of the original's p_mean_variance: `x0.<i>`
  (class-conditional models: guided 1.5 on eps, thresholded with 'nearest' quantiles as the
  script, clamped; unc: from eps, clamped), `mean.<i>`, `logvar.<i>` of p(x_{t_prev}|x_t),
  `model.<i>` (the split's model index); for the guided ones also `x0_raw.<i>` (guided, not
  thresholded), `x0_linear.<i>` and `mean_linear.<i>` (thresholded with 'linear' quantiles).
"""

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = Path("tests/fixtures/patched")
torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------
# The network.
# ----------------------------------------------------------------------------------------

class Norm32(nn.GroupNorm):
    """Affine group norm evaluated in float32."""

    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


def sinusoid(t, dim):
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32)
    freqs = torch.exp(-math.log(10000.0) * k / (half - 1))
    a = t.float()[:, None] * freqs[None, :]
    e = torch.cat([torch.sin(a), torch.cos(a)], dim=1)
    if dim % 2 == 1:
        e = F.pad(e, (0, 1))
    return e


def position_2d(dim, res):
    """[1, dim, res, res]: channels < dim/2 vary along the columns, the rest along rows."""
    half = dim // 2
    step = (torch.log(torch.tensor(10000)) / (half - 1)).float()
    f = torch.exp(torch.arange(half, dtype=torch.float32) * -step)
    pos = torch.arange(res, dtype=torch.float32)
    table = torch.sin((pos[:, None] * f[None, :]) * (64 / res))  # [res, half]
    cols = table[None, :, :].expand(res, res, half)  # [row, col, k] = table[col, k]
    rows = table[:, None, :].expand(res, res, half)  # [row, col, k] = table[row, k]
    return torch.cat([cols, rows], dim=-1).permute(2, 0, 1)[None].contiguous()


class Res(nn.Module):
    def __init__(self, cin, cout, emb, cls, groups):
        super().__init__()
        self.groups, self.cout = groups, cout
        self.in_layers = nn.Sequential(Norm32(groups, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        if cls:
            self.classemb_proj = nn.Linear(cls, cout)
        self.has_cls = bool(cls)
        self.emb_layers = nn.Linear(emb, 2 * cout)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x, temb, cemb):
        h = self.in_layers(x)
        e = self.emb_layers(temb).to(h.dtype)[:, :, None, None]
        scale, shift = e[:, : self.cout], e[:, self.cout :]
        h = F.group_norm(h.float(), self.groups, eps=1e-3).to(h.dtype)
        h = self.out_layers(h * (1 + scale) + shift)
        if self.has_cls:
            h = h * torch.sigmoid(self.classemb_proj(cemb) + 2.0)[:, :, None, None].to(h.dtype)
        return self.skip_connection(x) + h


class Attn(nn.Module):
    def __init__(self, c, heads, groups, new_order):
        super().__init__()
        self.heads, self.new_order = heads, new_order
        self.norm = Norm32(groups, c)
        self.qkv = nn.Conv1d(c, 3 * c, 1)
        self.proj_out = nn.Conv1d(c, c, 1)

    def forward(self, x):
        b, c, hh, ww = x.shape
        n = hh * ww
        flat = x.reshape(b, c, n)
        qkv = self.qkv(self.norm(flat))
        d = c // self.heads
        s = d ** -0.25
        if self.new_order:
            q, k, v = [p.reshape(b * self.heads, d, n) for p in qkv.chunk(3, dim=1)]
        else:
            q, k, v = qkv.reshape(b * self.heads, 3 * d, n).split(d, dim=1)
        w = torch.einsum("zdt,zds->zts", q * s, k * s)
        w = torch.softmax(w.float(), dim=-1).to(w.dtype)
        a = torch.einsum("zts,zds->zdt", w, v).reshape(b, c, n)
        return (flat + self.proj_out(a)).reshape(b, c, hh, ww)


class Down(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.op = nn.Conv2d(cin, cout, 3, stride=2)

    def forward(self, x):
        return self.op(F.pad(x, (0, 1, 0, 1)))


class Up(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Seq(nn.ModuleList):
    def forward(self, x, temb, cemb):
        for m in self:
            x = m(x, temb, cemb) if isinstance(m, Res) else m(x)
        return x


class PatchUNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        P, C, mc = cfg["patch_size"], 3, cfg["num_channels"]
        mult = [float(m) for m in cfg["channel_mult"].split(",")]
        nrb, g = cfg["num_res_blocks"], cfg["norm_groups"]
        res = cfg["image_size"] // P
        rates = {res // int(r) for r in cfg["attention_resolutions"].split(",")}
        widths = [int(mc * m) for m in mult]
        emb = widths[-1]
        pc = C * P * P
        new_order = cfg.get("use_new_attention_order", False)
        nhc = cfg.get("num_head_channels", -1)

        def heads(c, up):
            if nhc != -1:
                return c // nhc
            h = cfg.get("num_heads", 4)
            if up and cfg.get("num_heads_upsample", -1) != -1:
                h = cfg["num_heads_upsample"]
            return h

        self.P, self.C, self.mc, self.learn = P, C, mc, cfg.get("learn_sigma", False)
        ncls = cfg.get("num_classes", 1000) if cfg.get("class_cond", False) else None
        cls = widths[0] if ncls else None
        if ncls:
            self.label_embs = nn.Embedding(ncls + 1, widths[0])
        self.has_cls = bool(ncls)
        self.time_embed = nn.Sequential(nn.Linear(mc, 4 * mc), nn.SiLU(), nn.Linear(4 * mc, emb), nn.SiLU())
        self.input_blocks = nn.ModuleList([Seq([nn.Conv2d(pc, widths[0], 3, padding=1)])])
        skips = [widths[0]]
        ds = 1
        for l, w in enumerate(widths):
            for _ in range(nrb):
                layers = [Res(w, w, emb, cls, g)]
                if ds in rates:
                    layers.append(Attn(w, heads(w, False), g, new_order))
                self.input_blocks.append(Seq(layers))
                skips.append(w)
            if l + 1 < len(widths):
                self.input_blocks.append(Seq([Down(w, widths[l + 1])]))
                skips.append(widths[l + 1])
                ds *= 2
        top = widths[-1]
        self.middle_block = Seq([Res(top, top, emb, cls, g), Attn(top, heads(top, False), g, new_order),
                                 Res(top, top, emb, cls, g)])
        self.output_blocks = nn.ModuleList()
        for l in reversed(range(len(widths))):
            w = widths[l]
            for i in range(nrb + 1):
                layers = [Res(w + skips.pop(), w, emb, cls, g)]
                if ds in rates:
                    layers.append(Attn(w, heads(w, True), g, new_order))
                if l > 0 and i == nrb:
                    layers.append(Up(w, widths[l - 1]))
                    ds //= 2
                self.output_blocks.append(Seq(layers))
        self.out = nn.Sequential(Norm32(g, widths[0]), nn.SiLU(), nn.Conv2d(widths[0], pc, 3, padding=1))
        if self.learn:
            self.variance_output_t_emb = nn.Conv2d(emb, 2 * mc, 1)
            self.variance_output_model = nn.Sequential(
                nn.Conv2d(2 * mc, mc, 3, padding=1), nn.SiLU(), nn.Conv2d(mc, pc, 3, padding=1), nn.Sigmoid()
            )
        self.register_buffer("pos", position_2d(widths[0], res), persistent=False)

    def patchify(self, x):
        b, c, h, w = x.shape
        p = self.P
        return x.view(b, c, h // p, p, w // p, p).permute(0, 3, 5, 1, 2, 4).reshape(b, p * p * c, h // p, w // p)

    def unpatchify(self, y):
        b, cp, h, w = y.shape
        p = self.P
        c = cp // (p * p)
        return y.reshape(b, p, p, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(b, c, h * p, w * p)

    def forward(self, x, t, y=None):
        x = self.patchify(x)
        temb = self.time_embed(sinusoid(t, self.mc))
        cemb = self.label_embs(y) if self.has_cls else None
        x_in = self.input_blocks[0](x, temb, cemb) + self.pos
        hs = [x_in]
        h = x_in
        for blk in self.input_blocks[1:]:
            h = blk(h, temb, cemb)
            hs.append(h)
        h = self.middle_block(h, temb, cemb)
        for blk in self.output_blocks:
            h = blk(torch.cat([h, hs.pop()], dim=1), temb, cemb)
        mean = self.unpatchify(self.out(h))
        if not self.learn:
            return mean
        cat = torch.cat([x_in, h], dim=1) + self.variance_output_t_emb(F.silu(temb)[:, :, None, None])
        return torch.cat([mean, self.unpatchify(self.variance_output_model(cat))], dim=1)


def original_patch_order(x, p):
    """The original's to_patches as a sequence of NHWC permutes/reshapes (written here from
    its description, to check the view/permute form above)."""
    b, c, h, w = x.shape
    y = x.permute(0, 2, 3, 1).reshape(b, h, w // p, c * p)
    y = y.permute(0, 2, 1, 3).reshape(b, w // p, h // p, c * p * p)
    return y.permute(0, 3, 2, 1)


def randomize(model, seed, out_gain=3.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, p in params.items():
            if name == "label_embs.weight":
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.dim() == 1 and (".norm." in name or "in_layers.0" in name or name.startswith("out.0")):
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            else:
                wname = name[: -len("bias")] + "weight" if name.endswith("bias") else name
                fan_in = max(1, int(np.prod(params[wname].shape[1:])))
                bound = 1.0 / math.sqrt(fan_in)
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
        params["out.2.weight"].mul_(out_gain)
        params["out.2.bias"].mul_(out_gain)


# ----------------------------------------------------------------------------------------
# The diffusion maths (float64, guided-diffusion's formulas).
# ----------------------------------------------------------------------------------------

def betas_of(name, T):
    assert name.startswith("linear")
    scale = 1000 / T
    bmax = 0.02 if name == "linear" else float(name[6:])
    return np.linspace(scale * 0.0001, scale * bmax, T, dtype=np.float64)


def py_round(v):
    return int(round(v))  # Python's round: ties to even


def space(T, spec):
    if spec == "":
        return list(range(T))
    if spec.startswith("ddim"):
        n = int(spec[4:])
        for i in range(1, T):
            if len(range(0, T, i)) == n:
                return list(range(0, T, i))
        raise ValueError(spec)
    counts = [int(c) for c in spec.split(",")]
    per, extra = T // len(counts), T % len(counts)
    start, steps = 0, []
    for i, n in enumerate(counts):
        size = per + (1 if i < extra else 0)
        if size < n:
            raise ValueError(spec)
        stride = 1 if n <= 1 else (size - 1) / (n - 1)
        cur = 0.0
        for _ in range(n):
            steps.append(start + py_round(cur))
            cur += stride
        start += size
    return sorted(set(steps))


class Process:
    """A (respaced) process: abar over the kept steps and the derived coefficients."""

    def __init__(self, kept_abar):
        # SpacedDiffusion: betas from the kept abar's, then abar recomputed from them.
        kept_abar = np.asarray(kept_abar, dtype=np.float64)
        self.betas = 1.0 - kept_abar / np.append(1.0, kept_abar[:-1])
        self.abar = np.cumprod(1.0 - self.betas)
        prev = np.append(1.0, self.abar[:-1])
        self.prev = prev
        self.post_var = self.betas * (1.0 - prev) / (1.0 - self.abar)
        self.post_logvar_clipped = np.log(np.append(self.post_var[1], self.post_var[1:]))
        self.coef1 = self.betas * np.sqrt(prev) / (1.0 - self.abar)
        self.coef2 = (1.0 - prev) * np.sqrt(1.0 - self.betas) / (1.0 - self.abar)
        self.sqrt_recip = np.sqrt(1.0 / self.abar)
        self.sqrt_recipm1 = np.sqrt(1.0 / self.abar - 1.0)
        self.snr = self.abar / np.sqrt(1.0 - self.abar) ** 2


def f32(v):
    return torch.tensor(float(v), dtype=torch.float64).float()


def threshold(x0, q, mode):
    s = torch.quantile(x0.abs().reshape(x0.shape[0], -1), q, dim=-1, interpolation=mode)
    s = torch.maximum(s, torch.ones_like(s))[:, None, None, None]
    return x0.clamp(-s, s) / s


# ----------------------------------------------------------------------------------------
# Fixtures.
# ----------------------------------------------------------------------------------------

P2 = dict(image_size=8, num_channels=6, channel_mult="1,1", num_res_blocks=1, attention_resolutions="2",
          num_head_channels=3, num_heads=4, patch_size=2, class_cond=True, num_classes=10,
          classifier_free=True, learn_sigma=True, use_scale_shift_norm=True, use_new_attention_order=True,
          diffusion_steps=1000, noise_schedule="linear", timestep_respacing="250", norm_groups=3,
          model_mean_type="xstart", guidance_scale=1.5, use_fp16=False, dropout=0.0)
PAIR = dict(image_size=16, num_channels=4, channel_mult="1,2", num_res_blocks=1, attention_resolutions="2",
            num_head_channels=-1, num_heads=2, patch_size=4, class_cond=True, num_classes=10,
            classifier_free=True, learn_sigma=True, use_scale_shift_norm=True, use_new_attention_order=False,
            diffusion_steps=1000, noise_schedule="linear", timestep_respacing="250", norm_groups=2,
            snr_splits="0.25", model_mean_type="xstart", guidance_scale=1.5)
UNC = dict(image_size=8, num_channels=5, channel_mult="1.2,1.6", num_res_blocks=2, attention_resolutions="4",
           num_head_channels=-1, num_heads=2, num_heads_upsample=3, patch_size=2, class_cond=False,
           learn_sigma=False, use_scale_shift_norm=True, use_new_attention_order=True, diffusion_steps=1000,
           noise_schedule="linear0.025", timestep_respacing="100", norm_groups=2, model_mean_type="eps")


def save_model(model, folder, stem, formats):
    if "safetensors" in formats:
        sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(sd, str(folder / f"{stem}.safetensors"))
    if "pt" in formats:
        torch.save(model.state_dict(), folder / f"{stem}.pt")


def inputs(seed, labels, size):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, size, size, generator=g)
    return x, torch.tensor(labels, dtype=torch.int64)


def main():
    OUT.mkdir(parents=True, exist_ok=True)

    # Patch order: the view/permute form equals the original's NHWC sequence.
    z = torch.randn(2, 3, 16, 16)
    for p in (2, 4, 8):
        m = PatchUNet(dict(P2, patch_size=p))
        assert torch.equal(m.patchify(z), original_patch_order(z, p))
        assert torch.equal(m.unpatchify(m.patchify(z)), z)

    models = {}
    formats = {"p2": [("safetensors", "pt")], "pair": [("pt",), ("safetensors",)], "unc": [("safetensors",)]}
    for name, cfg, seeds in (("p2", P2, [11]), ("pair", PAIR, [21, 22]), ("unc", UNC, [31])):
        folder = OUT / name
        folder.mkdir(exist_ok=True)
        nets = []
        for k, seed in enumerate(seeds):
            net = PatchUNet(cfg)
            randomize(net, seed)
            net.eval()
            nets.append(net)
            stem = "model" if len(seeds) == 1 else f"model_{k}"
            save_model(net, folder, stem, formats[name][k])
        kwargs = {k: v for k, v in cfg.items()}
        (folder / "config.json").write_text(json.dumps(kwargs, indent=1) + "\n")
        models[name] = (cfg, nets)

    # Raw outputs at per-item times.
    with torch.no_grad():
        for name, (cfg, nets) in models.items():
            labels = [3, 0, 9, 10] if cfg.get("class_cond") else [0, 0, 0, 0]
            x, y = inputs(100 + len(name), labels, cfg["image_size"])
            t = torch.tensor([0, 37, 500, 999], dtype=torch.int64)
            yy = y if cfg.get("class_cond") else None
            rec = {"x": x, "times": t.float(), "labels": y.float()}
            if len(nets) == 1:
                rec["out"] = nets[0](x, t, yy)
            else:
                # The split's output: model 0 for SNR > 0.25 (t = 0, 37), model 1 else.
                abar = np.cumprod(1.0 - betas_of(cfg["noise_schedule"], cfg["diffusion_steps"]))
                owner = [0 if abar[s] / (1 - abar[s]) > 0.25 else 1 for s in t.tolist()]
                assert owner == [0, 0, 1, 1], owner
                rec["out"] = torch.cat([nets[o](x[i:i + 1], t[i:i + 1], y[i:i + 1]) for i, o in enumerate(owner)])
            save_file({k: v.contiguous() for k, v in rec.items()}, str(OUT / f"io_{name}.safetensors"))

    # Respacing.
    cases = [(1000, "250"), (1000, "100"), (1000, "ddim50"), (1000, "ddim7"), (300, "10,15,20"),
             (1000, "50,30,20"), (1000, ""), (1000, "1000"), (4000, "250"), (1000, "27")]
    steps = [{"num_train": T, "spec": s, "steps": space(T, s)} for T, s in cases]
    (OUT / "steps.json").write_text(json.dumps(steps) + "\n")

    # Reverse steps p(x_{t_prev} | x_t) on the respaced grid.
    for name in ("pair", "p2", "unc"):
        cfg, nets = models[name]
        T = cfg["diffusion_steps"]
        base = Process(np.cumprod(1.0 - betas_of(cfg["noise_schedule"], T)))
        kept = space(T, cfg["timestep_respacing"])
        sp = Process(base.abar[kept])
        splits = [1e9] + ([float(s) for s in cfg["snr_splits"].split(",")] if cfg.get("snr_splits") else []) + [0]
        # Steps whose predecessor on the crate's Spacing::Uniform grid started there is the
        # respaced predecessor (true for 246 of the 249 steps of "250"), so that the tests can
        # also run them through Boomerang::reverse_from.
        ks = {"pair": [249, 1], "p2": [100, 2], "unc": [40, 2]}[name]
        guided = cfg.get("class_cond", False)  # the script guides class-conditional models
        rec = {"ks": torch.tensor(ks, dtype=torch.float32),
               "t": torch.tensor([kept[k] for k in ks], dtype=torch.float32),
               "t_prev": torch.tensor([kept[k - 1] for k in ks], dtype=torch.float32)}
        g = torch.Generator().manual_seed(7)
        report = []
        for i, k in enumerate(ks):
            t_orig = kept[k]
            j = next(j for j in range(len(splits) - 1) if splits[j] >= sp.snr[k] > splits[j + 1])
            net = nets[j]
            size = cfg["image_size"]
            x_t = torch.randn(2, 3, size, size, generator=g)
            tt = torch.full((2,), t_orig, dtype=torch.int64)
            with torch.no_grad():
                if guided:
                    y = torch.tensor([1, 8])
                    oc = net(x_t, tt, y)
                    ou = net(x_t, tt, torch.full_like(y, cfg["num_classes"]))
                    x0c, var = oc[:, :3], oc[:, 3:]
                    x0u = ou[:, :3]
                    a, b = f32(base.sqrt_recip[t_orig]), f32(base.sqrt_recipm1[t_orig])
                    eps_c, eps_u = (a * x_t - x0c) / b, (a * x_t - x0u) / b
                    eps = eps_u + cfg["guidance_scale"] * (eps_c - eps_u)
                    x0_raw = a * x_t - b * eps
                    direct = x0u + cfg["guidance_scale"] * (x0c - x0u)
                    report.append(float((x0_raw - direct).abs().max() / direct.abs().max()))
                    x0 = threshold(x0_raw, 0.995, "nearest").clamp(-1, 1)
                    x0_lin = threshold(x0_raw, 0.995, "linear").clamp(-1, 1)
                    rec[f"labels.{i}"] = y.float()
                    rec[f"x0_raw.{i}"] = x0_raw
                    rec[f"x0_linear.{i}"] = x0_lin
                else:
                    out = net(x_t, tt, None)
                    if cfg["model_mean_type"] == "eps":
                        eps = out[:, :3]
                        x0 = (f32(base.sqrt_recip[t_orig]) * x_t - f32(base.sqrt_recipm1[t_orig]) * eps).clamp(-1, 1)
                    else:
                        x0 = out[:, :3].clamp(-1, 1)
                    var = out[:, 3:] if cfg.get("learn_sigma") else None
            mean = f32(sp.coef1[k]) * x0 + f32(sp.coef2[k]) * x_t
            if guided:
                rec[f"mean_linear.{i}"] = f32(sp.coef1[k]) * x0_lin + f32(sp.coef2[k]) * x_t
            if var is not None:
                logvar = var * f32(sp.post_logvar_clipped[k]) + (1 - var) * f32(np.log(sp.betas[k]))
            else:
                # FIXED_LARGE: log(append(post_var[1], betas[1:])).
                fixed = np.append(sp.post_var[1], sp.betas[1:])
                logvar = torch.full_like(x_t, float(np.log(fixed[k])))
            rec[f"x_t.{i}"] = x_t
            rec[f"x0.{i}"] = x0
            rec[f"mean.{i}"] = mean
            rec[f"logvar.{i}"] = logvar
            rec[f"model.{i}"] = torch.tensor([float(j)])
        save_file({k: v.contiguous() for k, v in rec.items()}, str(OUT / f"sampling_{name}.safetensors"))
        if report:
            print(f"{name}: guidance on eps vs on x0, max relative difference per step: {report}")

    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    sys.exit(main())
