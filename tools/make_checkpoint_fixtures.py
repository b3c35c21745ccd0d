#!/usr/bin/env python3
"""Generate the checkpoint-reader test fixtures in tests/fixtures/checkpoint/.

Run from the repository root with a Python that has torch (2.x):

    .venv/bin/python tools/make_checkpoint_fixtures.py

Dev tooling only: the Rust crate never calls Python. The tensor values are deterministic
(torch.manual_seed); a few bytes of the files are not (the legacy format names storages by
memory address, and zip archives carry a serialization id), so re-running changes the files
but not what the tests check. `expected.json` lists, for each fixture and selection, the
expected names (in order), dtypes, shapes and values (as f32, row-major, contiguous).

The two "malicious" fixtures are harmless even if loaded with plain pickle / torch.load
(weights_only=False): their payload is `echo payload-ran > BOOMERANG_*_PAYLOAD_RAN`, which
only creates a marker file in the current directory. The Rust tests check that loading them
is refused and that no marker appears.
"""

import collections
import copy
import io
import json
import math
import os
import struct
import sys
import zipfile

import torch
from torch import nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "checkpoint")
OUT = os.path.normpath(OUT)

EXPECTED = []  # list of {"file", "select", "tensors": [[name, dtype, shape, values]]}

DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def path(name):
    return os.path.join(OUT, name)


def values(t):
    return [float(x) for x in t.detach().contiguous().reshape(-1).to(torch.float32).tolist()]


def expect(file, select, entries):
    EXPECTED.append(
        {
            "file": file,
            "select": select,
            "tensors": [[k, DTYPE_NAMES[t.dtype], list(t.shape), values(t)] for k, t in entries],
        }
    )


def save(obj, name, legacy=False):
    torch.save(obj, path(name), _use_new_zipfile_serialization=not legacy)


def small_net(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 5))
    with torch.no_grad():
        net[1].weight.normal_()
        net[1].bias.normal_()
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].num_batches_tracked.fill_(42)
    return net


def plain_dict(sd):
    return [(k, v) for k, v in sd.items()]


def flat_fixtures():
    sd = small_net(0).state_dict()
    save(sd, "flat_zip.pt")
    save(sd, "flat_legacy.pt", legacy=True)
    expect("flat_zip.pt", {"kind": "auto"}, plain_dict(sd))
    expect("flat_legacy.pt", {"kind": "auto"}, plain_dict(sd))

    # Pickle protocol 4 inside the zip container: FRAME, MEMOIZE, SHORT_BINUNICODE, ...
    torch.save(sd, path("flat_p4_zip.pt"), pickle_protocol=4)
    expect("flat_p4_zip.pt", {"kind": "auto"}, plain_dict(sd))

    save({"state_dict": sd, "epoch": 3}, "nested.pt")
    expect("nested.pt", {"kind": "auto"}, plain_dict(sd))
    expect("nested.pt", {"kind": "path", "path": ["state_dict"]}, plain_dict(sd))

    dp = nn.DataParallel(small_net(1))
    dsd = dp.state_dict()
    assert all(k.startswith("module.") for k in dsd)
    save(dsd, "dataparallel_legacy.pt", legacy=True)
    expect("dataparallel_legacy.pt", {"kind": "auto"}, [(k[len("module."):], v) for k, v in dsd.items()])

    # The same dict re-zipped with deflate (as another zip tool might); torch.load reads it.
    with zipfile.ZipFile(path("flat_zip.pt")) as src, zipfile.ZipFile(
        path("flat_deflated.pt"), "w", compression=zipfile.ZIP_DEFLATED
    ) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    reread = torch.load(path("flat_deflated.pt"), weights_only=True)
    assert all(torch.equal(reread[k], v) for k, v in sd.items())
    expect("flat_deflated.pt", {"kind": "auto"}, plain_dict(sd))
    return sd


def ddim_fixture():
    net = small_net(2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(2, 3, 3, 3)).pow(2).mean().backward()
    opt.step()
    ema = copy.deepcopy(net)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(0.5)
    states = [net.state_dict(), opt.state_dict(), 7, 1234, ema.state_dict()]
    save(states, "ddim_list.pt")
    expect("ddim_list.pt", {"kind": "auto"}, plain_dict(ema.state_dict()))
    expect("ddim_list.pt", {"kind": "path", "path": ["0"]}, plain_dict(net.state_dict()))


class Fourier(nn.Module):
    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(4) * 16, requires_grad=False)


class TinyScore(nn.Module):
    """DLSM's layout in miniature: a `sigmas` buffer first, a frozen Fourier `W`."""

    def __init__(self):
        super().__init__()
        self.register_buffer("sigmas", torch.exp(torch.linspace(math.log(50.0), math.log(0.01), 10)))
        self.all_modules = nn.ModuleList([Fourier(), nn.Linear(8, 6), nn.Conv2d(3, 2, 3), nn.GroupNorm(2, 2)])


def dlsm_fixture():
    torch.manual_seed(3)
    model = nn.DataParallel(TinyScore())
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=2e-4)
    loss = model.module.all_modules[1](torch.randn(2, 8)).pow(2).sum()
    loss = loss + model.module.all_modules[2](torch.randn(1, 3, 4, 4)).sum()
    loss.backward()
    opt.step()
    shadow = [p.clone().detach() + 0.01 * torch.randn_like(p) for p in trainable]
    state = {
        "optimizer": opt.state_dict(),
        "model": model.state_dict(),
        "ema": {"decay": 0.999, "num_updates": 17, "shadow_params": shadow},
        "step": 17,
    }
    save(state, "dlsm.pt")
    msd = model.state_dict()
    names = [k[len("module."):] for k in msd]
    assert names[:2] == ["sigmas", "all_modules.0.W"], names
    exclude = ["sigmas", "all_modules.0.W"]
    it = iter(shadow)
    ema_entries = []
    for name, t in zip(names, msd.values()):
        ema_entries.append((name, t if name in exclude else next(it)))
    expect(
        "dlsm.pt",
        {"kind": "ema_shadow", "model": ["model"], "shadow": ["ema", "shadow_params"], "exclude": exclude},
        ema_entries,
    )
    expect("dlsm.pt", {"kind": "path", "path": ["model"]}, list(zip(names, msd.values())))


def dtype_fixtures():
    torch.manual_seed(4)
    d = collections.OrderedDict()
    d["f16"] = torch.randn(2, 3).half()
    d["bf16"] = torch.randn(5).bfloat16()
    d["f64"] = torch.randn(3, dtype=torch.float64)
    d["i64"] = torch.tensor([-3, 0, 2**40], dtype=torch.int64)
    d["i32"] = torch.arange(-2, 4, dtype=torch.int32)
    d["i16"] = torch.tensor([-300, 7], dtype=torch.int16)
    d["i8"] = torch.tensor([-128, -1, 127], dtype=torch.int8)
    d["u8"] = torch.tensor([0, 200, 255], dtype=torch.uint8)
    d["bool"] = torch.tensor([True, False, True])
    d["scalar_f16"] = torch.tensor(1.5).half()
    d["empty"] = torch.zeros(0, 3)
    save(d, "dtypes_zip.pt")
    save(d, "dtypes_legacy.pt", legacy=True)
    expect("dtypes_zip.pt", {"kind": "auto"}, list(d.items()))
    expect("dtypes_legacy.pt", {"kind": "auto"}, list(d.items()))

    # A big-endian archive, as a big-endian machine writes it: byteorder "big" and every
    # storage byte-swapped per element. torch.load swaps it back.
    # Storage records are numbered in the order torch.save meets them: here, dict order.
    sizes = {f"data/{i}": t.element_size() for i, t in enumerate(d.values())}
    with zipfile.ZipFile(path("dtypes_zip.pt")) as z:
        with zipfile.ZipFile(path("dtypes_bigendian.pt"), "w", compression=zipfile.ZIP_STORED) as dst:
            for info in z.infolist():
                data = z.read(info.filename)
                _, _, rest = info.filename.partition("/")
                if rest == "byteorder":
                    data = b"big"
                elif rest in sizes and sizes[rest] > 1:
                    n = sizes[rest]
                    data = b"".join(data[i : i + n][::-1] for i in range(0, len(data), n))
                dst.writestr(info, data)
    reread = torch.load(path("dtypes_bigendian.pt"), weights_only=True)
    assert all(torch.equal(reread[k], v) for k, v in d.items()), "big-endian fixture mismatch"
    expect("dtypes_bigendian.pt", {"kind": "auto"}, list(d.items()))


def view_fixtures():
    torch.manual_seed(5)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) + torch.randn(4, 6)
    d = collections.OrderedDict()
    d["base"] = base
    d["transposed"] = base.t()
    d["rows"] = base[1:3]
    d["cols"] = base[:, 1::2]
    d["scalar"] = base[2, 3]
    d["expanded"] = torch.randn(3, 1).expand(3, 4)
    d["param"] = nn.Parameter(torch.randn(3))
    assert not d["transposed"].is_contiguous() and d["rows"].storage_offset() == 6
    assert d["transposed"].untyped_storage().data_ptr() == base.untyped_storage().data_ptr()
    save(d, "views_zip.pt")
    save(d, "views_legacy.pt", legacy=True)
    expect("views_zip.pt", {"kind": "auto"}, list(d.items()))
    expect("views_legacy.pt", {"kind": "auto"}, list(d.items()))


def safetensors_fixture(sd):
    """Written by hand in the layout of the reference writer: sorted by dtype size (largest
    first), then name; 8-byte aligned header with __metadata__."""
    torch.manual_seed(6)
    d = collections.OrderedDict(sd)
    d["half"] = torch.randn(3).half()
    items = sorted(d.items(), key=lambda kv: (-kv[1].element_size(), kv[0]))
    header = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for k, t in items:
        b = bytes(t.contiguous().reshape(-1).view(torch.uint8).tolist())
        header[k] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path("flat.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    expect("flat.safetensors", {"kind": "auto"}, items)


def pickle_fixtures():
    import pickle

    obj = {
        "a": 1,
        "b": [1.5, "x", None, True, False],
        "c": (1, 2),
        "d": b"bytes\x00\xff",
        "big": 2**70,
        "neg": -(2**40),
        "s": {3},
        "nested": collections.OrderedDict([("k", {"deep": [1, [2, [3]]]})]),
        "unicode": "h\u00e9llo \u2603",
    }
    with open(path("bare_p2.pkl"), "wb") as f:
        pickle.dump(obj, f, protocol=2)
    with open(path("bare_p5.pkl"), "wb") as f:
        pickle.dump(obj, f, protocol=5)


class ZipPayload:
    def __reduce__(self):
        return (os.system, ("echo payload-ran > BOOMERANG_ZIP_PAYLOAD_RAN",))


def malicious_fixtures():
    # By hand: PROTO 2, GLOBAL 'os system', BINUNICODE cmd, TUPLE1, REDUCE, STOP.
    cmd = b"echo payload-ran > BOOMERANG_PICKLE_PAYLOAD_RAN"
    p = b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd + b"\x85R."
    with open(path("malicious_reduce.pkl"), "wb") as f:
        f.write(p)
    # A real torch.save archive whose data.pkl calls os.system (pickled as posix.system).
    torch.save({"weight": torch.ones(2), "evil": ZipPayload()}, path("malicious_zip.pt"))


def main():
    os.makedirs(OUT, exist_ok=True)
    sd = flat_fixtures()
    ddim_fixture()
    dlsm_fixture()
    dtype_fixtures()
    view_fixtures()
    safetensors_fixture(sd)
    pickle_fixtures()
    malicious_fixtures()
    with open(path("expected.json"), "w") as f:
        json.dump({"torch_version": torch.__version__, "fixtures": EXPECTED}, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(path(n)) for n in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
