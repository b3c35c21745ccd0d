#!/usr/bin/env python3
"""Build the DLSM (NCSN++ / time-conditional classifier) parity fixtures under
tests/fixtures/dlsm/ (dev-only tool).

Run from the repository root with the project venv (torch, numpy, safetensors):

    .venv/bin/python tools/make_dlsm_fixtures.py

The networks below are an independent PyTorch transcription of DLSM's definitions
(github.com/chen-hao-chao/dlsm: models/ncsnpp.py, layerspp.py, layers.py,
up_or_down_sampling.py, op/upfirdn2d.py's native path, resnet_cond.py, classifier.py,
ema.py), written for this crate; the original repository is not imported (it compiles CUDA
extensions at import time). Module registration order, and so the state-dict key order,
follows the original exactly: `sigmas` buffer first, then `all_modules.<i>`.

References are computed in float64 from the f32 weights (so they carry no f32 rounding of
their own) and stored as f32; before finishing, every written weights file is loaded into a
fresh network and checked to reproduce its references.

What it writes, all from fixed seeds and small (about 1.1 MB):

- `tiny_a/`: the DLSM CIFAR architecture in miniature (nf 8, ch_mult (1, 2), 1 block,
  attention at 8, 16x16 RGB, BigGAN blocks, FIR [1, 3, 3, 1], skip rescaling, residual input
  pyramid, Fourier features, scale_by_sigma, data in [0, 1]):
  - `checkpoint.pth`: the released training-container shape,
    `torch.save({'optimizer', 'model', 'ema', 'step'})` with `model` from nn.DataParallel
    (`module.` keys, RAW weights), `ema = {'decay', 'num_updates', 'shadow_params'}` whose
    unnamed shadow list (the trainable parameters in registration order) DIFFERS from the
    raw weights, and an Adam state after one step;
  - `ema.safetensors`: the same EMA weights as a flat state dict (what converting the
    container gives);
  - `config.json`: the original ml_collections config as JSON (nested sections, unknown
    keys such as `optim`, `eval` and `device` included, plus the classifier section);
  - `io.safetensors`: inputs `x` (2x3x16x16 in [0, 1]) and `sigmas` (K); `score.<k>`: the
    EMA model's output at sigmas[k] for both items; `x_items`/`sigma_items`/`score_items`:
    one call with a different sigma per item; `score_raw`: the RAW weights at sigmas[1].
- `tiny_b/`: other options (nf 4, DDPM++ blocks, FIR resampling layers with convs, residual
  output pyramid, input_skip with cat, positional embedding of the discrete index, ELU, no
  skip rescaling, centered data, 8x8): `checkpoint.pth` is a container WITHOUT `ema`
  (`{'optimizer', 'model', 'step'}`), `config.json`, and `io.safetensors` with `labels` (the
  discrete indices), `sigmas = sigmas_buffer[labels]`, `score.<k>`.
- `tiny_c/`: nf 4, ch_mult (1, 1), DDPM++ blocks without FIR (nearest / strided convs), output_skip pyramid,
  residual input pyramid without FIR, unconditional, ReLU, 8x8: `model.safetensors` (flat),
  `config.json`, `io.safetensors`.
- `tiny_clf/`: a tiny time-conditional ResNet (width 4, blocks [1, 2, 1, 1], nf 8, 10
  classes, 16x16, average pooling 2) as the classifier container
  `{'optimizer', 'model', 'step'}` (`checkpoint.pth`), `config.json`, and `io.safetensors`:
  `x`, `sigmas`, `logits.<k>`, per-item `sigma_items`, `labels`, and
  `grad = d/dx sum_i log(softmax(clf(x, sigma_i))[y_i] + 1e-8)` as DLSM computes it.
"""

import copy
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "dlsm")


# ----------------------------------------------------------------------------------------
# FIR resampling (StyleGAN2's upfirdn2d, native form).
# ----------------------------------------------------------------------------------------


def fir_kernel(k):
    k = np.asarray(k, dtype=np.float32)
    k = np.outer(k, k)
    return k / k.sum()


def upfirdn2d(x, k, up=1, down=1, pad=(0, 0)):
    """Zero-insert by `up`, pad (p0, p1) on both axes, convolve with `k`, keep every
    `down`-th sample. Per channel."""
    n, c, h, w = x.shape
    k = torch.as_tensor(k, dtype=x.dtype)
    t = x.reshape(n * c, 1, h, w)
    if up > 1:
        z = torch.zeros(n * c, 1, h, up, w, up, dtype=x.dtype)
        z[:, :, :, 0, :, 0] = t
        t = z.reshape(n * c, 1, h * up, w * up)
    p0, p1 = pad
    t = F.pad(t, [p0, p1, p0, p1])
    kf = torch.flip(k, [0, 1])[None, None]
    y = F.conv2d(t, kf)
    y = y[:, :, ::down, ::down]
    return y.reshape(n, c, y.shape[2], y.shape[3])


def upsample_2d(x, k, factor=2):
    k = fir_kernel(k) * factor**2
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x, k, factor=2):
    k = fir_kernel(k)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x, w, k, factor=2):
    out_c, in_c, kh, kw = w.shape
    # Transposed convolution with flipped, in/out-swapped weights.
    wt = torch.flip(w, [2, 3]).permute(1, 0, 2, 3)
    y = F.conv_transpose2d(x, wt, stride=factor, padding=0)
    k = fir_kernel(k) * factor**2
    p = (k.shape[0] - factor) - (kw - 1)
    return upfirdn2d(y, k, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x, w, k, factor=2):
    kw = w.shape[3]
    k = fir_kernel(k)
    p = (k.shape[0] - factor) + (kw - 1)
    y = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
    return F.conv2d(y, w, stride=factor, padding=0)


# ----------------------------------------------------------------------------------------
# NCSN++ layers.
# ----------------------------------------------------------------------------------------


def get_act(name):
    return {"elu": nn.ELU(), "relu": nn.ReLU(), "lrelu": nn.LeakyReLU(0.2), "swish": nn.SiLU()}[name]


def gn(c):
    return nn.GroupNorm(num_groups=min(c // 4, 32), num_channels=c, eps=1e-6)


def conv3(i, o, stride=1, padding=1):
    return nn.Conv2d(i, o, 3, stride=stride, padding=padding)


def conv1(i, o):
    return nn.Conv2d(i, o, 1)


class Fourier(nn.Module):
    def __init__(self, n, scale):
        super().__init__()
        self.W = nn.Parameter(torch.randn(n) * scale, requires_grad=False)

    def forward(self, x):
        p = x[:, None] * self.W[None, :] * 2 * np.pi
        return torch.cat([torch.sin(p), torch.cos(p)], dim=-1)


class Nin(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.W = nn.Parameter(torch.randn(i, o) * 0.1)
        self.b = nn.Parameter(torch.zeros(o))

    def forward(self, x):
        return torch.einsum("bchw,co->bohw", x, self.W) + self.b[None, :, None, None]


class Attn(nn.Module):
    def __init__(self, c, skip_rescale):
        super().__init__()
        self.GroupNorm_0 = gn(c)
        self.NIN_0 = Nin(c, c)
        self.NIN_1 = Nin(c, c)
        self.NIN_2 = Nin(c, c)
        self.NIN_3 = Nin(c, c)
        self.skip_rescale = skip_rescale

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.GroupNorm_0(x)
        q, k, v = self.NIN_0(y), self.NIN_1(y), self.NIN_2(y)
        a = torch.einsum("bchw,bcij->bhwij", q, k) * c**-0.5
        a = F.softmax(a.reshape(b, h, w, h * w), dim=-1).reshape(b, h, w, h, w)
        y = self.NIN_3(torch.einsum("bhwij,bcij->bchw", a, v))
        return (x + y) / np.sqrt(2.0) if self.skip_rescale else x + y


class Resample(nn.Module):
    """layerspp.Upsample / Downsample."""

    def __init__(self, cin, cout, up, with_conv, fir, kernel):
        super().__init__()
        self.up, self.with_conv, self.fir, self.kernel = up, with_conv, fir, kernel
        if with_conv:
            if fir:
                self.Conv2d_0 = nn.Module()
                self.Conv2d_0.weight = nn.Parameter(torch.zeros(cout, cin, 3, 3))
                self.Conv2d_0.bias = nn.Parameter(torch.zeros(cout))
            elif up:
                self.Conv_0 = conv3(cin, cout)
            else:
                self.Conv_0 = conv3(cin, cout, stride=2, padding=0)

    def forward(self, x):
        if not self.fir:
            if self.up:
                h = F.interpolate(x, scale_factor=2, mode="nearest")
                return self.Conv_0(h) if self.with_conv else h
            if self.with_conv:
                return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
            return F.avg_pool2d(x, 2, stride=2)
        if not self.with_conv:
            return upsample_2d(x, self.kernel) if self.up else downsample_2d(x, self.kernel)
        w, b = self.Conv2d_0.weight, self.Conv2d_0.bias
        if self.up:
            y = upsample_conv_2d(x, w, self.kernel)
        else:
            y = conv_downsample_2d(x, w, self.kernel)
        return y + b.reshape(1, -1, 1, 1)


class BlockDdpm(nn.Module):
    def __init__(self, act, cin, cout, temb, skip_rescale):
        super().__init__()
        self.GroupNorm_0 = gn(cin)
        self.Conv_0 = conv3(cin, cout)
        self.Dense_0 = nn.Linear(temb, cout)
        self.GroupNorm_1 = gn(cout)
        self.Dropout_0 = nn.Dropout(0.1)
        self.Conv_1 = conv3(cout, cout)
        if cin != cout:
            self.NIN_0 = Nin(cin, cout)
        self.act, self.cout, self.skip_rescale = act, cout, skip_rescale

    def forward(self, x, temb):
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if x.shape[1] != self.cout:
            x = self.NIN_0(x)
        return (x + h) / np.sqrt(2.0) if self.skip_rescale else x + h


class BlockBigGan(nn.Module):
    def __init__(self, act, cin, cout, temb, skip_rescale, fir, kernel, up=False, down=False):
        super().__init__()
        self.GroupNorm_0 = gn(cin)
        self.Conv_0 = conv3(cin, cout)
        self.Dense_0 = nn.Linear(temb, cout)
        self.GroupNorm_1 = gn(cout)
        self.Dropout_0 = nn.Dropout(0.1)
        self.Conv_1 = conv3(cout, cout)
        if cin != cout or up or down:
            self.Conv_2 = conv1(cin, cout)
        self.act, self.skip_rescale, self.fir, self.kernel = act, skip_rescale, fir, kernel
        self.up, self.down, self.shortcut = up, down, cin != cout or up or down

    def resample(self, t):
        if self.up:
            return upsample_2d(t, self.kernel) if self.fir else F.interpolate(t, scale_factor=2, mode="nearest")
        if self.down:
            return downsample_2d(t, self.kernel) if self.fir else F.avg_pool2d(t, 2)
        return t

    def forward(self, x, temb):
        h = self.act(self.GroupNorm_0(x))
        h, x = self.resample(h), self.resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.shortcut:
            x = self.Conv_2(x)
        return (x + h) / np.sqrt(2.0) if self.skip_rescale else x + h


class Combine(nn.Module):
    def __init__(self, d1, d2, method):
        super().__init__()
        self.Conv_0 = conv1(d1, d2)
        self.method = method

    def forward(self, x, y):
        h = self.Conv_0(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


def timestep_embedding(t, dim):
    half = dim // 2
    e = math.log(10000) / (half - 1)
    e = torch.exp(torch.arange(half, dtype=torch.float32) * -e)
    e = t.float()[:, None] * e[None, :]
    e = torch.cat([torch.sin(e), torch.cos(e)], dim=1)
    if dim % 2 == 1:
        e = F.pad(e, (0, 1))
    return e


class Ncsnpp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        m, d = cfg["model"], cfg["data"]
        self.m, self.d = m, d
        sig = np.exp(np.linspace(np.log(m["sigma_max"]), np.log(m["sigma_min"]), m["num_scales"]))
        self.register_buffer("sigmas", torch.tensor(sig))
        self.act = act = get_act(m["nonlinearity"])
        nf, ch_mult, nrb = m["nf"], m["ch_mult"], m["num_res_blocks"]
        res = [d["image_size"] // 2**i for i in range(len(ch_mult))]
        self.res = res
        fir, kernel, sr = m["fir"], m["fir_kernel"], m["skip_rescale"]
        temb = 4 * nf
        mods = []
        if m["embedding_type"] == "fourier":
            mods.append(Fourier(nf, m["fourier_scale"]))
            embed = 2 * nf
        else:
            embed = nf
        if m["conditional"]:
            mods.append(nn.Linear(embed, temb))
            mods.append(nn.Linear(temb, temb))

        def block(cin, cout=None, up=False, down=False):
            cout = cout or cin
            if m["resblock_type"] == "ddpm":
                return BlockDdpm(act, cin, cout, temb, sr)
            return BlockBigGan(act, cin, cout, temb, sr, fir, kernel, up, down)

        ch = d["num_channels"]
        pin = m["progressive_input"]
        pyr_ch = ch
        mods.append(conv3(ch, nf))
        hs_c = [nf]
        in_ch = nf
        for l, mult in enumerate(ch_mult):
            for _ in range(nrb):
                mods.append(block(in_ch, nf * mult))
                in_ch = nf * mult
                if res[l] in m["attn_resolutions"]:
                    mods.append(Attn(in_ch, sr))
                hs_c.append(in_ch)
            if l != len(ch_mult) - 1:
                if m["resblock_type"] == "ddpm":
                    mods.append(Resample(in_ch, in_ch, False, m["resamp_with_conv"], fir, kernel))
                else:
                    mods.append(block(in_ch, down=True))
                if pin == "input_skip":
                    mods.append(Combine(pyr_ch, in_ch, m["progressive_combine"]))
                    if m["progressive_combine"] == "cat":
                        in_ch *= 2
                elif pin == "residual":
                    mods.append(Resample(pyr_ch, in_ch, False, True, fir, kernel))
                    pyr_ch = in_ch
                hs_c.append(in_ch)
        in_ch = hs_c[-1]
        mods += [block(in_ch), Attn(in_ch, sr), block(in_ch)]
        prog = m["progressive"]
        pch = 0
        for l in reversed(range(len(ch_mult))):
            for _ in range(nrb + 1):
                mods.append(block(in_ch + hs_c.pop(), nf * ch_mult[l]))
                in_ch = nf * ch_mult[l]
            if res[l] in m["attn_resolutions"]:
                mods.append(Attn(in_ch, sr))
            if prog != "none":
                if l == len(ch_mult) - 1:
                    mods.append(gn(in_ch))
                    if prog == "output_skip":
                        mods.append(conv3(in_ch, ch))
                        pch = ch
                    else:
                        mods.append(conv3(in_ch, in_ch))
                        pch = in_ch
                else:
                    if prog == "output_skip":
                        mods.append(gn(in_ch))
                        mods.append(conv3(in_ch, ch))
                        pch = ch
                    else:
                        mods.append(Resample(pch, in_ch, True, True, fir, kernel))
                        pch = in_ch
            if l != 0:
                if m["resblock_type"] == "ddpm":
                    mods.append(Resample(in_ch, in_ch, True, m["resamp_with_conv"], fir, kernel))
                else:
                    mods.append(block(in_ch, up=True))
        assert not hs_c
        if prog != "output_skip":
            mods.append(gn(in_ch))
            mods.append(conv3(in_ch, ch))
        self.all_modules = nn.ModuleList(mods)

    def forward(self, x, t):
        m, d = self.m, self.d
        mods, i = self.all_modules, 0
        if m["embedding_type"] == "fourier":
            used = t
            temb = mods[i](torch.log(used))
            i += 1
        else:
            used = self.sigmas[t.long()]
            temb = timestep_embedding(t, m["nf"]).to(x.dtype)
        if m["conditional"]:
            temb = mods[i + 1](self.act(mods[i](temb)))
            i += 2
        else:
            temb = None
        if not d["centered"]:
            x = 2 * x - 1.0
        fir, kernel, sr = m["fir"], m["fir_kernel"], m["skip_rescale"]
        pin, prog = m["progressive_input"], m["progressive"]
        ipyr = x if pin != "none" else None
        hs = [mods[i](x)]
        i += 1
        L = len(m["ch_mult"])
        for l in range(L):
            for _ in range(m["num_res_blocks"]):
                h = mods[i](hs[-1], temb)
                i += 1
                if h.shape[-1] in m["attn_resolutions"]:
                    h = mods[i](h)
                    i += 1
                hs.append(h)
            if l != L - 1:
                if m["resblock_type"] == "ddpm":
                    h = mods[i](hs[-1])
                else:
                    h = mods[i](hs[-1], temb)
                i += 1
                if pin == "input_skip":
                    ipyr = downsample_2d(ipyr, kernel) if fir else F.avg_pool2d(ipyr, 2, stride=2)
                    h = mods[i](ipyr, h)
                    i += 1
                elif pin == "residual":
                    ipyr = mods[i](ipyr)
                    i += 1
                    ipyr = (ipyr + h) / np.sqrt(2.0) if sr else ipyr + h
                    h = ipyr
                hs.append(h)
        h = hs[-1]
        h = mods[i](h, temb)
        h = mods[i + 1](h)
        h = mods[i + 2](h, temb)
        i += 3
        pyr = None
        for l in reversed(range(L)):
            for _ in range(m["num_res_blocks"] + 1):
                h = mods[i](torch.cat([h, hs.pop()], dim=1), temb)
                i += 1
            if h.shape[-1] in m["attn_resolutions"]:
                h = mods[i](h)
                i += 1
            if prog != "none":
                if l == L - 1:
                    pyr = mods[i + 1](self.act(mods[i](h)))
                    i += 2
                elif prog == "output_skip":
                    pyr = upsample_2d(pyr, kernel) if fir else F.interpolate(pyr, scale_factor=2, mode="nearest")
                    pyr = pyr + mods[i + 1](self.act(mods[i](h)))
                    i += 2
                else:
                    pyr = mods[i](pyr)
                    i += 1
                    pyr = (pyr + h) / np.sqrt(2.0) if sr else pyr + h
                    h = pyr
            if l != 0:
                if m["resblock_type"] == "ddpm":
                    h = mods[i](h)
                else:
                    h = mods[i](h, temb)
                i += 1
        if prog == "output_skip":
            h = pyr
        else:
            h = mods[i + 1](self.act(mods[i](h)))
            i += 2
        assert i == len(mods)
        if m["scale_by_sigma"]:
            h = h / used.reshape(-1, 1, 1, 1).to(h.dtype)
        return h


# ----------------------------------------------------------------------------------------
# The time-conditional classifier.
# ----------------------------------------------------------------------------------------


class Basic(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCond(nn.Module):
    def __init__(self, width, blocks, classes, cin, temb, pool):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(cin, w[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.dense_1 = nn.Linear(temb, w[0])
        self.dense_2 = nn.Linear(temb, w[1])
        self.dense_3 = nn.Linear(temb, w[2])
        self.dense_4 = nn.Linear(temb, w[3])
        self.act = nn.SiLU()
        inp = w[0]
        for k in range(4):
            layers = []
            for j in range(blocks[k]):
                stride = 2 if (j == 0 and k > 0) else 1
                layers.append(Basic(inp, w[k], stride))
                inp = w[k]
            setattr(self, f"layer{k + 1}", nn.Sequential(*layers))
        self.linear = nn.Linear(w[3], classes)
        self.pool = pool

    def forward(self, x, temb):
        out = F.relu(self.bn1(self.conv1(x)))
        for k in range(4):
            out = getattr(self, f"layer{k + 1}")(out)
            out = out + getattr(self, f"dense_{k + 1}")(self.act(temb))[:, :, None, None]
        out = F.avg_pool2d(out, self.pool)
        return self.linear(out.view(out.size(0), -1))


class CondModel(nn.Module):
    def __init__(self, c, cin, act):
        super().__init__()
        nf = c["nf"]
        self.act = get_act(act)
        self.condition_modules = nn.ModuleList(
            [Fourier(nf, c["fourier_scale"]), nn.Linear(2 * nf, 4 * nf), nn.Linear(4 * nf, 4 * nf)]
        )
        self.classifier = ResNetCond(c["width"], c["num_blocks"], c["classes"], cin, 4 * nf, c["avg_pool"])

    def forward(self, x, sigma):
        cm = self.condition_modules
        temb = cm[2](self.act(cm[1](cm[0](torch.log(sigma)))))
        return self.classifier(x, temb)


class Classifier(nn.Module):
    def __init__(self, c, cin, act):
        super().__init__()
        self.classifier = CondModel(c, cin, act)

    def forward(self, x, sigma):
        return self.classifier(x, sigma)


# ----------------------------------------------------------------------------------------
# Fixtures.
# ----------------------------------------------------------------------------------------


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue  # the Fourier W keeps its N(0, scale^2) init
            if p.dim() == 1:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[0] if name.endswith(".W") else p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(1.0 + 0.5 * torch.rand(b.shape, generator=g))


def base_config(**model):
    """An ml_collections-style config, as json.dumps(config.to_dict()) would write it."""
    m = {
        "name": "ncsnpp",
        "sigma_min": 0.01,
        "sigma_max": 50,
        "num_scales": 1000,
        "beta_min": 0.1,
        "beta_max": 20.0,
        "dropout": 0.1,
        "embedding_type": "fourier",
        "weighting_dlsm": 0,
        "fourier_scale": 16,
        "scale_by_sigma": True,
        "ema_rate": 0.999,
        "normalization": "GroupNorm",
        "nonlinearity": "swish",
        "nf": 8,
        "ch_mult": [1, 2],
        "num_res_blocks": 1,
        "attn_resolutions": [8],
        "resamp_with_conv": True,
        "conditional": True,
        "fir": True,
        "fir_kernel": [1, 3, 3, 1],
        "skip_rescale": True,
        "resblock_type": "biggan",
        "progressive": "none",
        "progressive_input": "residual",
        "progressive_combine": "sum",
        "attention_type": "ddpm",
        "init_scale": 0.0,
        "conv_size": 3,
        "classifier_restore_path": None,
        "score_restore_path": "results/checkpoint.pth",
    }
    m.update(model)
    return {
        "training": {"batch_size": 128, "sde": "vesde", "continuous": True, "n_iters": 950001},
        "sampling": {
            "n_steps_each": 1,
            "noise_removal": True,
            "probability_flow": False,
            "snr": 0.16,
            "scaling_factor": 1.0,
            "conditional": True,
            "method": "pc",
            "predictor": "reverse_diffusion",
            "corrector": "langevin",
        },
        "eval": {"batch_size": 200, "num_samples": 51000, "mode": "class"},
        "data": {
            "dataset": "CIFAR10",
            "image_size": 16,
            "random_flip": False,
            "centered": False,
            "uniform_dequantization": False,
            "num_channels": 3,
        },
        "model": m,
        "optim": {"weight_decay": 0, "optimizer": "Adam", "lr": 2e-4, "beta1": 0.9, "eps": 1e-8},
        "seed": 42,
        "device": "cpu",
        "classifier": {
            "nf": 8,
            "embedding_type": "fourier",
            "fourier_scale": 16,
            "classes": 10,
            "name": "classifier",
            "model": "resnet18_cond",
            "width": 4,
            "num_blocks": [1, 2, 1, 1],
            "avg_pool": 2,
        },
        "plot": {"type": "precision"},
    }


def f64(model):
    """The reference: a float64 copy of a model (the f32 weights exactly, computed in
    double precision, so the references carry no f32 rounding of their own)."""
    return copy.deepcopy(model).double()


def d(t):
    return t.double() if t.is_floating_point() else t


def adam_state(model, params):
    """An Adam state after one step on a loss that touches a few parameters only (the
    released files carry a full state; a partial one keeps the fixture small)."""
    opt = torch.optim.Adam(params, lr=2e-4)
    loss = sum(p.pow(2).sum() for p in params[-2:])
    loss.backward()
    opt.step()
    opt.zero_grad()
    return opt.state_dict()


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def score_fixture_a():
    cfg = base_config()
    folder = os.path.join(OUT, "tiny_a")
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(11)
    model = Ncsnpp(cfg)
    randomize(model, 12)
    model.eval()
    dp = nn.DataParallel(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    sd_keys = list(model.state_dict().keys())
    assert sd_keys[0] == "sigmas" and sd_keys[1] == "all_modules.0.W", sd_keys[:3]
    assert [k for k in sd_keys if k not in ("sigmas", "all_modules.0.W")] == names
    raw = {k: v.clone() for k, v in dp.state_dict().items()}
    opt = adam_state(model, trainable)
    g = torch.Generator().manual_seed(13)
    shadow = [p.detach().clone() + 0.05 * torch.randn(p.shape, generator=g) for p in trainable]
    ckpt = {
        "optimizer": opt,
        "model": raw,
        "ema": {"decay": 0.999, "num_updates": 123, "shadow_params": shadow},
        "step": 123,
    }
    torch.save(ckpt, os.path.join(folder, "checkpoint.pth"))
    write_json(os.path.join(folder, "config.json"), cfg)

    x = torch.rand(2, 3, 16, 16, generator=g)
    sigmas = torch.tensor([0.01, 0.3, 5.0, 50.0])
    with torch.no_grad():
        # Raw weights first, then the EMA copy (ema.copy_to).
        model.load_state_dict({k[len("module."):]: v for k, v in raw.items()})
        score_raw = f64(model)(d(x), d(sigmas[1].repeat(2)))
        for s, p in zip(shadow, trainable):
            p.copy_(s)
        ref = f64(model)
        io = {"x": x, "sigmas": sigmas, "score_raw": score_raw}
        for k, s in enumerate(sigmas):
            io[f"score.{k}"] = ref(d(x), d(s.repeat(2)))
        x_items = torch.rand(2, 3, 16, 16, generator=g)
        sigma_items = torch.tensor([0.05, 20.0])
        io["x_items"], io["sigma_items"] = x_items, sigma_items
        io["score_items"] = ref(d(x_items), d(sigma_items))
    ema_sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(ema_sd, os.path.join(folder, "ema.safetensors"))
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(folder, "io.safetensors"))
    # The EMA flat file and the container agree on every shadowed entry.
    assert not torch.equal(ema_sd["all_modules.3.weight"], raw["module.all_modules.3.weight"])
    return sum(v.numel() for v in ema_sd.values())


def score_fixture(name, cfg, labels=None, container=False, seed=0):
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(seed)
    model = Ncsnpp(cfg)
    randomize(model, seed + 1)
    model.eval()
    write_json(os.path.join(folder, "config.json"), cfg)
    g = torch.Generator().manual_seed(seed + 2)
    size = cfg["data"]["image_size"]
    lo = -1.0 if cfg["data"]["centered"] else 0.0
    x = lo + (1.0 - lo) * torch.rand(2, 3, size, size, generator=g)
    # The optimizer step changes the weights: take it before the references.
    if container:
        params = [p for p in model.parameters() if p.requires_grad]
        opt = adam_state(model, params)
        ckpt = {"optimizer": opt, "model": nn.DataParallel(model).state_dict(), "step": 5}
        torch.save(ckpt, os.path.join(folder, "checkpoint.pth"))
    else:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(folder, "model.safetensors"))
    io = {"x": x}
    ref = f64(model)
    with torch.no_grad():
        if labels is not None:
            lab = torch.tensor(labels)
            io["labels"] = lab.float()
            io["sigmas"] = model.sigmas[lab].float()
            for k, l in enumerate(labels):
                io[f"score.{k}"] = ref(d(x), torch.tensor([l, l]))
        else:
            sig = torch.tensor([0.02, 1.0, 40.0])
            io["sigmas"] = sig
            for k, s in enumerate(sig):
                io[f"score.{k}"] = ref(d(x), d(s.repeat(2)))
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(folder, "io.safetensors"))
    return sum(v.numel() for v in model.state_dict().values())


def classifier_fixture():
    cfg = base_config()
    c = cfg["classifier"]
    folder = os.path.join(OUT, "tiny_clf")
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(21)
    model = Classifier(c, 3, cfg["model"]["nonlinearity"])
    randomize(model, 22)
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adam_state(model, params)
    dp = nn.DataParallel(model)
    torch.save({"optimizer": opt, "model": dp.state_dict(), "step": 7}, os.path.join(folder, "checkpoint.pth"))
    write_json(os.path.join(folder, "config.json"), cfg)
    g = torch.Generator().manual_seed(23)
    x = torch.rand(2, 3, 16, 16, generator=g)
    sigmas = torch.tensor([0.01, 1.0, 50.0])
    io = {"x": x, "sigmas": sigmas}
    ref = f64(model)
    with torch.no_grad():
        for k, s in enumerate(sigmas):
            io[f"logits.{k}"] = ref(d(x), d(s.repeat(2)))
    sigma_items = torch.tensor([0.1, 2.0])
    labels = torch.tensor([3, 7])
    x_noisy = x + sigma_items[:, None, None, None] * torch.randn(x.shape, generator=g)
    xg = d(x_noisy).requires_grad_(True)
    # DLSM's gradient: log(softmax + 1e-8) at the label, summed over the batch.
    logp = torch.log(F.softmax(ref(xg, d(sigma_items)), dim=1) + 1e-8)
    (grad,) = torch.autograd.grad(logp, xg, grad_outputs=F.one_hot(labels, num_classes=logp.shape[1]).double())
    io.update({"x_noisy": x_noisy, "sigma_items": sigma_items, "labels": labels.float(), "grad": grad})
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(folder, "io.safetensors"))
    return sum(v.numel() for v in model.state_dict().values())


def verify(name, build, weights, call, keys):
    """Reload the written weights into a fresh network and check it reproduces the stored
    references (so references and files cannot drift apart)."""
    from safetensors.torch import load_file

    folder = os.path.join(OUT, name)
    path = os.path.join(folder, weights)
    if path.endswith(".safetensors"):
        sd = load_file(path)
    else:
        sd = {k[len("module."):]: v for k, v in torch.load(path, weights_only=True)["model"].items()}
    model = build()
    model.load_state_dict(sd)
    ref = f64(model.eval())
    io = load_file(os.path.join(folder, "io.safetensors"))
    with torch.no_grad():
        for k in keys:
            got, want = call(ref, io, k), io[k].double()
            err = float((got - want).abs().max() / want.abs().max())
            assert err < 1e-6, (name, k, err)


def main():
    os.makedirs(OUT, exist_ok=True)
    na = score_fixture_a()
    cfg_b = base_config(
        nf=4,
        ch_mult=[1, 2],
        attn_resolutions=[8],
        resblock_type="ddpm",
        fir=True,
        progressive="residual",
        progressive_input="input_skip",
        progressive_combine="cat",
        embedding_type="positional",
        nonlinearity="elu",
        skip_rescale=False,
        sigma_min=0.02,
        sigma_max=20.0,
        num_scales=100,
    )
    cfg_b["data"].update({"image_size": 8, "centered": True})
    cfg_b["training"]["continuous"] = False
    nb = score_fixture("tiny_b", cfg_b, labels=[0, 37, 99], container=True, seed=31)
    cfg_c = base_config(
        nf=4,
        ch_mult=[1, 1],
        attn_resolutions=[4],
        resblock_type="ddpm",
        fir=False,
        resamp_with_conv=True,
        progressive="output_skip",
        progressive_input="residual",
        conditional=False,
        nonlinearity="relu",
        skip_rescale=True,
    )
    cfg_c["data"]["image_size"] = 8
    nc = score_fixture("tiny_c", cfg_c, seed=41)
    nclf = classifier_fixture()
    cfg_a = base_config()

    def at_sigma(m, io, k):
        return m(d(io["x"]), d(io["sigmas"][int(k[-1])].repeat(2)))

    def at_label(m, io, k):
        return m(d(io["x"]), io["labels"][int(k[-1])].long().repeat(2))

    verify("tiny_a", lambda: Ncsnpp(cfg_a), "ema.safetensors", at_sigma, [f"score.{k}" for k in range(4)])
    verify("tiny_b", lambda: Ncsnpp(cfg_b), "checkpoint.pth", at_label, [f"score.{k}" for k in range(3)])
    verify("tiny_c", lambda: Ncsnpp(cfg_c), "model.safetensors", at_sigma, [f"score.{k}" for k in range(3)])
    clf = cfg_a["classifier"]
    logits = [f"logits.{k}" for k in range(3)]
    verify("tiny_clf", lambda: Classifier(clf, 3, "swish"), "checkpoint.pth", at_sigma, logits)
    total = 0
    for root, _, files in os.walk(OUT):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    for root, _, files in os.walk(OUT):
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    print(f"parameters: a {na}, b {nb}, c {nc}, classifier {nclf}; fixtures {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
