"""Reference values for the crate's image metrics: tests/core/apps_metrics.rs and tests/models/apps_lpips.rs.

Dev tooling only (the library never runs Python). Writes into tests/fixtures/lpips/:

- metrics_reference.json: pairs of small float32 images in [0, 1] (C x H x W) with their
  MSE, PSNR (data range 1) and mean SSIM from scikit-image's structural_similarity with
  Wang et al.'s settings (gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1, channel_axis=0: an 11x11 window, K1=0.01, K2=0.03, mean over channels).
- alex_random_fp16.pt: the state dict of lpips.LPIPS(pretrained=False, pnet_rand=True,
  net='alex', version='0.1') (the `lpips` PyPI package, v0.1 layout: `net.sliceK.M.weight/bias`
  for the torchvision AlexNet trunk and `linK.model.1.weight` for the 1x1 heads) with RANDOM
  weights (seed 0). The real weights cannot be downloaded here; random ones test the
  arithmetic just as well. To keep the file small, every weight is drawn uniformly from a
  coarse grid, k * b / 32 with an integer k in [-32, 32] and b the power of two nearest to
  PyTorch's default init bound 1/sqrt(fan_in) (the heads get k in [0, 32], non-negative like
  trained LPIPS heads). Such values are exact in float16, which is how they are stored, and
  the archive's entries are deflated (the crate's checkpoint reader and torch.load both read
  deflated zip entries). AlexNet's trunk has 2.47 M parameters: 9.9 MB in float32, 4.9 MB in
  float16, about 2 MB here. The reference runs on exactly these weights.
- lpips_inputs.pt: three image pairs in [-1, 1] (float16 values, deflated): two 64x64 and one
  56x72; the reference runs on exactly these values (cast to float32).
- lpips_reference.json: LPIPS distance of each pair and the per-layer terms.

Run (needs torch, torchvision, lpips==0.1.4, scikit-image, numpy; made with torch 2.13.0,
torchvision 0.28.0, lpips 0.1.4, scikit-image 0.26.0, numpy 2.4):
    pip install lpips==0.1.4 torchvision==0.28.0 scikit-image   # next to torch==2.13.0
    python tools/make_lpips_fixtures.py
"""
import json
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "lpips")


def metrics_cases():
    from skimage.metrics import structural_similarity, peak_signal_noise_ratio, mean_squared_error

    rng = np.random.default_rng(2024)
    cases = []

    def smooth(c, h, w):
        y, x = np.mgrid[0:h, 0:w].astype(np.float64)
        img = np.stack([0.5 + 0.4 * np.sin(0.3 * x + 0.2 * y + k) * np.cos(0.15 * y - 0.1 * k * x) for k in range(c)])
        return img.astype(np.float32)

    a = smooth(3, 24, 20)
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
    cases.append(("smooth_vs_noisy_rgb", a, b))
    a = rng.random((3, 16, 16)).astype(np.float32)
    b = rng.random((3, 16, 16)).astype(np.float32)
    cases.append(("uniform_noise_pair", a, b))
    a = smooth(1, 13, 17)
    b = np.clip(a * 0.7 + 0.1, 0, 1).astype(np.float32)
    cases.append(("gray_contrast_change", a, b))
    a = smooth(3, 11, 11)
    b = a[:, ::-1, :].copy()
    cases.append(("flipped_11x11", a, b))

    out = []
    for name, a, b in cases:
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        ssim = structural_similarity(
            a64, b64, channel_axis=0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=1.0,
        )
        out.append({
            "name": name,
            "shape": list(a.shape),
            "a": [float(v) for v in a.ravel()],
            "b": [float(v) for v in b.ravel()],
            "mse": float(mean_squared_error(a64, b64)),
            "psnr": float(peak_signal_noise_ratio(a64, b64, data_range=1.0)),
            "ssim": float(ssim),
        })
    return out


def save_deflated(obj, path):
    """torch.save, then rewrite the zip archive with deflated entries (same names, same order)."""
    import io
    import zipfile

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    back = torch.load(path, weights_only=True)
    assert all(torch.equal(back[k], obj[k]) for k in obj), path


def lpips_fixture():
    import lpips

    torch.manual_seed(0)
    model = lpips.LPIPS(pretrained=False, pnet_rand=True, net="alex", version="0.1", verbose=False)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    state = {}
    with torch.no_grad():
        for k, v in model.state_dict().items():
            # Canonical names only: `lins.K.*` aliases `linK.*`; the scaling layer's buffers
            # are constants of the method.
            if not (k.startswith("net.") or (k.startswith("lin") and not k.startswith("lins."))):
                continue
            weight = k.replace(".bias", ".weight")
            shape = model.state_dict()[weight].shape
            fan_in = int(np.prod(shape[1:]))
            bound = 2.0 ** round(np.log2(1.0 / np.sqrt(fan_in)))
            low = 0 if k.startswith("lin") else -32
            q = torch.randint(low, 33, v.shape, generator=gen).to(torch.float32) * (bound / 32)
            state[k] = q.to(torch.float16).contiguous()
            assert torch.equal(state[k].float(), q), k
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    save_deflated(state, os.path.join(OUT, "alex_random_fp16.pt"))

    g = torch.Generator().manual_seed(1)

    def image(h, w):
        # Smooth structure plus noise, in [-1, 1].
        y = torch.linspace(0, 1, h)[:, None]
        x = torch.linspace(0, 1, w)[None, :]
        base = torch.stack([torch.sin(6 * x + 4 * y + k) for k in range(3)])
        return (0.7 * base + 0.3 * (2 * torch.rand(3, h, w, generator=g) - 1)).clamp(-1, 1)

    pairs = []
    a = image(64, 64)
    pairs.append((a, (a + 0.1 * torch.randn(3, 64, 64, generator=g)).clamp(-1, 1)))
    pairs.append((image(64, 64), image(64, 64)))
    a = image(56, 72)
    pairs.append((a, torch.flip(a, dims=[2])))
    pairs = [(p.half().float(), q.half().float()) for p, q in pairs]
    inputs = {}
    for i, (p, q) in enumerate(pairs):
        inputs[f"pair{i}.a"] = p.half().contiguous()
        inputs[f"pair{i}.b"] = q.half().contiguous()
    save_deflated(inputs, os.path.join(OUT, "lpips_inputs.pt"))

    ref = []
    with torch.no_grad():
        for i, (p, q) in enumerate(pairs):
            val, layers = model(p[None], q[None], retPerLayer=True)
            ref.append({
                "pair": i,
                "shape": list(p.shape),
                "distance": float(val.flatten()[0]),
                "layers": [float(l.flatten()[0]) for l in layers],
            })
        # A batch of two: the per-item results must not depend on batching.
        batch = model(torch.stack([pairs[0][0], pairs[1][0]]), torch.stack([pairs[0][1], pairs[1][1]]))
        batch = [float(v) for v in batch.flatten()]
    return {"pairs": ref, "batch_of_pairs_0_1": batch, "lpips_version": lpips.__version__ if hasattr(lpips, "__version__") else "0.1.4",
            "torch": torch.__version__}


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "metrics_reference.json"), "w") as f:
        json.dump({"cases": metrics_cases()}, f)
    ref = lpips_fixture()
    with open(os.path.join(OUT, "lpips_reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(os.path.join(OUT, name)), "bytes")


if __name__ == "__main__":
    main()
