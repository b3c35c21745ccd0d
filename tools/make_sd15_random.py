#!/usr/bin/env python3
"""A full-size Stable-Diffusion-1.5-shaped pipeline with RANDOM weights, for memory measurements.

Dev-only; nothing in the crate's tests uses it. No published weights are downloaded: every
configuration is written out below (SD 1.5's published UNet, VAE, CLIP text encoder and
scheduler configurations), the networks are initialised by diffusers / transformers with a
fixed torch seed, and the folder is written with `save_pretrained(..., safe_serialization=True)`
in f32 (about 4.3 GB). The tokenizer is a byte-level CLIP BPE with SD 1.5's vocabulary size
(49408): 256 byte symbols, the same 256 with `</w>`, the merges (up to 300) learnt on a short
corpus, then generated letter merges up to the full size, then <|startoftext|> (49406) and
<|endoftext|> (49407). The pictures such a model makes are noise; its memory and compute
are those of the real SD 1.5 (same shapes).

Modes (run from the repository root; needs torch, numpy, Pillow, safetensors, diffusers and
transformers, e.g. installed next to the project's venv with
`.venv/bin/pip install --target /tmp/pydeps diffusers transformers accelerate safetensors`, then
`PYTHONPATH=/tmp/pydeps` on each command below; remove any second torch that pip puts there so
that the venv's torch, the one the crate links, is used):

    # 1. write the pipeline folder (about 40 s on 2 cores) and print parameter counts
    .venv/bin/python tools/make_sd15_random.py /tmp/sd15
    # 2. a deterministic 512x512 RGB test image
    .venv/bin/python tools/make_sd15_random.py --image /tmp/sd15-in.png
    # 3. reference: diffusers' img2img (strength 0.5, 20 steps, guidance 7.5, DDIM, 2 threads)
    /usr/bin/time -v .venv/bin/python tools/make_sd15_random.py --measure /tmp/sd15 /tmp/sd15-in.png
    # 4. the RSS timeline of any command (VmRSS, RssAnon, RssFile of the child, every 0.25 s;
    #    the child's stderr is passed on with the seconds since its start before each line)
    /usr/bin/time -v .venv/bin/python tools/make_sd15_random.py --watch /tmp/rss.tsv -- CMD ARGS...

`--measure` and `--watch` print the peaks (and `--measure` its phases) on stderr; see
docs/benchmarks.md, "Memory: Stable Diffusion 1.5 at 512² (CPU, f32)".
"""

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

SEED = 1505

UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
)

VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

# SD 1.5's text_encoder/config.json (CLIP ViT-L/14's text tower). The token ids 0 / 2 / 1 are
# the published config's (transformers then pools at the argmax id, which SD never uses).
TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=768,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    prediction_type="epsilon",
)

CORPUS = """
a photo of a cat . a photo of a dog . a painting of a house by the sea . portrait of a person ,
highly detailed , sharp focus . an astronaut riding a horse on the moon . landscape with
mountains and a lake at sunset . photograph of a city at night , street lights , rain .
"""

# ------------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------------


def byte_symbols():
    """CLIP's byte -> printable character table, in its vocabulary order."""
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in printable:
        table[b] = chr(b)
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    order = printable + [b for b in range(256) if b not in printable]
    return [table[b] for b in order], table


def learn_merges(corpus, count, table):
    """Greedy BPE over the corpus' words (the most frequent pair first, ties by the pair)."""
    words = Counter()
    for word in corpus.lower().split():
        syms = [table[b] for b in word.encode("utf-8")]
        syms[-1] += "</w>"
        words[tuple(syms)] += 1
    merges = []
    while len(merges) < count:
        pairs = Counter()
        for w, n in words.items():
            for pair in zip(w, w[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = Counter()
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return merges


def fill_merges(merges, known, total):
    """Append letter merges (prefix + letter, and prefix + final letter) until `total` merges,
    each producing a token not yet in `known` from two tokens already in it."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    prefixes = list(letters)
    while len(merges) < total:
        longer = []
        for pre in prefixes:
            for c in letters:
                for right, result in ((c, pre + c), (c + "</w>", pre + c + "</w>")):
                    if len(merges) == total:
                        return merges
                    if pre in known and right in known and result not in known:
                        merges.append((pre, right))
                        known.add(result)
                longer.append(pre + c)
        prefixes = longer
    return merges


def write_tokenizer(folder):
    folder.mkdir(parents=True, exist_ok=True)
    base, table = byte_symbols()
    vocab = base + [s + "</w>" for s in base]
    merges = learn_merges(CORPUS, 300, table)
    known = set(vocab)
    learnt = []
    for a, b in merges:  # keep only merges whose result is new, so that every id is distinct
        if a + b not in known:
            learnt.append((a, b))
            known.add(a + b)
    n_merges = TEXT["vocab_size"] - len(vocab) - 2
    merges = fill_merges(learnt, known, n_merges)
    vocab += ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    ids = {tok: i for i, tok in enumerate(vocab)}
    assert len(ids) == len(vocab) == TEXT["vocab_size"], (len(ids), len(vocab))
    with open(folder / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(ids, f, ensure_ascii=False)
    with open(folder / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)
    tok = lambda s: {"content": s, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    config = {
        "add_prefix_space": False,
        "bos_token": tok("<|startoftext|>"),
        "do_lower_case": True,
        "eos_token": tok("<|endoftext|>"),
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": tok("<|endoftext|>"),
    }
    with open(folder / "tokenizer_config.json", "w") as f:
        json.dump(config, f, indent=2)
    with open(folder / "special_tokens_map.json", "w") as f:
        json.dump({k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}, f, indent=2)


# ------------------------------------------------------------------------------------------------
# Pipeline folder
# ------------------------------------------------------------------------------------------------


def make(out):
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    t0 = time.time()
    tok_dir = out / "tokenizer"
    write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    with torch.no_grad():
        text = CLIPTextModel(CLIPTextConfig(**TEXT)).eval()
        unet = UNet2DConditionModel(**UNET).eval()
        vae = AutoencoderKL(**VAE).eval()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)

    total_params, total_bytes = 0, 0
    for name, model in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        n = sum(p.numel() for p in model.parameters())
        files = sorted((out / name).glob("*.safetensors"))
        size = sum(f.stat().st_size for f in files)
        total_params += n
        total_bytes += size
        print(f"{name:13s} {n:>13,d} parameters  {n * 4:>15,d} bytes as f32  {size:>15,d} bytes on disk "
              f"({', '.join(f.name for f in files)})")
    print(f"{'total':13s} {total_params:>13,d} parameters  {total_params * 4:>15,d} bytes as f32  "
          f"{total_bytes:>15,d} bytes on disk")
    ids = tokenizer("a photo of a cat").input_ids
    print(f"tokenizer: {len(tokenizer)} tokens; 'a photo of a cat' -> {ids}")
    print(f"wrote {out} in {time.time() - t0:.0f} s")


def make_image(path):
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:512, 0:512].astype(np.float64) / 511.0
    r = 0.5 + 0.5 * np.sin(6.0 * x + 2.0 * y)
    g = 0.5 + 0.5 * np.cos(5.0 * y - 3.0 * x * y)
    b = ((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.09).astype(np.float64) * 0.8 + 0.1
    rgb = (np.stack([r, g, b], -1) * 255.0).round().clip(0, 255).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(path)
    print(f"wrote {path} (512x512 RGB)")


# ------------------------------------------------------------------------------------------------
# Memory
# ------------------------------------------------------------------------------------------------


def status(pid="self"):
    """VmRSS, VmHWM, RssAnon, RssFile of a process in bytes (empty when it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def gb(n):
    return f"{n / 1e9:.2f} GB"


def watch(tsv, cmd):
    """Run `cmd`, sampling its /proc status every 0.25 s into `tsv`; report the peaks."""
    t0 = time.time()
    child = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, errors="replace")

    def relay():  # the child's stderr, each line prefixed with the seconds since the start
        for line in child.stderr:
            sys.stderr.write(f"[+{time.time() - t0:7.2f} s] {line}")

    relayer = threading.Thread(target=relay, daemon=True)
    relayer.start()
    peak = {}
    with open(tsv, "w") as f:
        f.write("seconds\tVmRSS\tRssAnon\tRssFile\n")
        while child.poll() is None:
            s = status(child.pid)
            if s:
                f.write(f"{time.time() - t0:.2f}\t{s.get('VmRSS', 0)}\t{s.get('RssAnon', 0)}\t{s.get('RssFile', 0)}\n")
                for k, v in s.items():
                    peak[k] = max(peak.get(k, 0), v)
            time.sleep(0.25)
    wall = time.time() - t0
    relayer.join(timeout=5)
    print(f"[watch] exit {child.returncode}, {wall:.1f} s; sampled peaks: VmRSS {gb(peak.get('VmRSS', 0))}, "
          f"RssAnon {gb(peak.get('RssAnon', 0))}, RssFile {gb(peak.get('RssFile', 0))}; timeline in {tsv}",
          file=sys.stderr)
    return child.returncode


def measure(model, image_path, threads=2):
    """diffusers' img2img on the folder: strength 0.5, 20 steps, guidance 7.5, DDIM (eta 0)."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline
    from PIL import Image

    torch.set_num_threads(threads)
    phase = {"name": "import"}
    peaks = {}
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            s = status()
            k = phase["name"]
            if s.get("VmRSS", 0) > peaks.get(k, {}).get("VmRSS", -1):
                peaks[k] = s
            time.sleep(0.1)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    t0 = time.time()
    phase["name"] = "load"
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        model, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    pipe.set_progress_bar_config(disable=True)
    t_load = time.time() - t0
    after_load = status()
    image = Image.open(image_path).convert("RGB")

    # phases, marked by hooks on the sub-networks (each runs once, in this order, inside the call)
    def mark(name):
        return lambda *_: phase.__setitem__("name", name)

    pipe.text_encoder.register_forward_pre_hook(mark("text"))
    pipe.vae.encoder.register_forward_pre_hook(mark("vae-encode"))
    pipe.vae.encoder.register_forward_hook(mark("unet"))
    pipe.vae.decoder.register_forward_pre_hook(mark("vae-decode"))
    t1 = time.time()
    with torch.no_grad():  # img2img at strength 0.5 of 20 steps runs 10 steps
        out = pipe(
            prompt="a photo",
            image=image,
            strength=0.5,
            num_inference_steps=20,
            guidance_scale=7.5,
            generator=torch.Generator().manual_seed(0),
        ).images[0]
    t_run = time.time() - t1
    stop.set()
    th.join()
    end = status()
    print(f"[measure] torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    print(f"[measure] load {t_load:.1f} s: VmRSS after load {gb(after_load['VmRSS'])} "
          f"(RssAnon {gb(after_load['RssAnon'])}, RssFile {gb(after_load['RssFile'])}), "
          f"VmHWM so far {gb(after_load['VmHWM'])}", file=sys.stderr)
    print(f"[measure] run {t_run:.1f} s; peak VmRSS by phase (0.1 s samples): "
          + ", ".join(f"{k} {gb(v['VmRSS'])} (anon {gb(v['RssAnon'])}, file {gb(v['RssFile'])})"
                      for k, v in peaks.items()), file=sys.stderr)
    print(f"[measure] VmHWM (peak RSS) of the process {gb(end['VmHWM'])}; output {out.size}", file=sys.stderr)


def main(argv):
    if len(argv) >= 2 and argv[0] == "--image":
        make_image(argv[1])
    elif len(argv) >= 3 and argv[0] == "--measure":
        measure(argv[1], argv[2])
    elif len(argv) >= 4 and argv[0] == "--watch" and argv[2] == "--":
        sys.exit(watch(argv[1], argv[3:]))
    elif len(argv) == 1 and not argv[0].startswith("-"):
        make(argv[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
