//! Hostile checkpoint files: pickle bombs (deep nesting, exponential sharing, repeated
//! copies), files that change while they are read, special files, absurd sizes, overlapping
//! safetensors regions and names that carry terminal escape sequences.
//!
//! Every input is generated here (or derived from the committed fixtures). The bombs are
//! also run through `boomerang info` under a 2 GB address-space cap (`ulimit -v`): each must
//! end with a clean error (exit status 2 and a message naming the file and the limit), never
//! with a signal or an abort.

use std::path::{Path, PathBuf};
use std::process::Command;

use boomerang::checkpoint::{self, load_state_dict, Checkpoint, Inventory, Select, StateDict, Value};

use crate::cli_common::{scratch, BIN};

/// Pickle protocol 2 header.
fn proto2() -> Vec<u8> {
    vec![0x80, 2]
}

/// `_rebuild_from_type_v2(_rebuild_from_type_v2, Tensor, (_rebuild_from_type_v2, Tensor, (...),
/// None), None)`, nested `levels` deep: 7 bytes a level, so 160 KB nest 23 000 calls.
fn nested_rebuild_calls(levels: usize) -> Vec<u8> {
    let mut p = proto2();
    p.extend_from_slice(b"ctorch._tensor\n_rebuild_from_type_v2\nq\x00");
    p.extend_from_slice(b"ctorch._tensor\nTensor\nq\x010");
    for _ in 0..levels {
        p.extend_from_slice(b"(h\x00h\x01");
    }
    p.push(b')');
    for _ in 0..levels {
        p.extend_from_slice(b"Nt");
    }
    p.extend_from_slice(b"R.");
    p
}

/// A list in a list in a list ..., `levels` deep (2 bytes a level).
fn nested_lists(levels: usize) -> Vec<u8> {
    let mut p = proto2();
    p.extend(std::iter::repeat_n(b']', levels));
    p.extend(std::iter::repeat_n(b'a', levels - 1));
    p.push(b'.');
    p
}

/// `{0: {0: {0: ...}}}`, `levels` deep (4 bytes a level).
fn nested_dicts(levels: usize) -> Vec<u8> {
    let mut p = proto2();
    p.push(b'}');
    for _ in 0..levels {
        p.extend_from_slice(b"K\x00}");
    }
    p.extend(std::iter::repeat_n(b's', levels));
    p.push(b'.');
    p
}

/// `((((...))))` through MARK / TUPLE, `levels` deep (2 bytes a level).
fn nested_tuples(levels: usize) -> Vec<u8> {
    let mut p = proto2();
    p.extend(std::iter::repeat_n(b'(', levels));
    p.extend(std::iter::repeat_n(b't', levels));
    p.push(b'.');
    p
}

/// `t0 = (); t(i+1) = (t(i), t(i))` through the memo, then `{t(levels): 1}`: a few hundred
/// bytes whose dict key is a tree of 2^levels tuples if expanded.
fn shared_tuple_key(levels: u8) -> Vec<u8> {
    let mut p = proto2();
    p.extend_from_slice(b")q\x00");
    for i in 0..levels {
        p.extend_from_slice(&[b'h', i, b'h', i, 0x86, b'q', i + 1]);
    }
    p.extend_from_slice(&[b'}', b'h', levels, b'K', 1, b's', b'.']);
    p
}

/// The same shared tuples as a value, not a key: `[t(levels)]`.
fn shared_tuple_value(levels: u8) -> Vec<u8> {
    let mut p = proto2();
    p.extend_from_slice(b")q\x00");
    for i in 0..levels {
        p.extend_from_slice(&[b'h', i, b'h', i, 0x86, b'q', i + 1]);
    }
    p.extend_from_slice(b"\x85.");
    p
}

/// A container built once and memoized, then `global(container)` (or, with `splat`,
/// `global(*container)`) called `calls` times: an emulation that copies the items on each call
/// needs items × calls slots (gigabytes from ~100 KB). Ends with an invalid opcode, so that a
/// reader that survives the calls still reports an error.
fn repeated_copies(global: &[u8], items: &[u8], calls: usize, splat: bool) -> Vec<u8> {
    let mut p = proto2();
    p.extend_from_slice(items);
    p.extend_from_slice(b"q\x000c");
    p.extend_from_slice(global);
    p.extend_from_slice(b"q\x010");
    let call: &[u8] = if splat { b"h\x01h\x00R0" } else { b"h\x01h\x00\x85R0" };
    for _ in 0..calls {
        p.extend_from_slice(call);
    }
    p.extend_from_slice(b"N\xff");
    p
}

/// 10 000 `None`s in a tuple.
fn many_nones() -> Vec<u8> {
    let mut items = vec![b'('];
    items.extend(std::iter::repeat_n(b'N', 10_000));
    items.push(b't');
    items
}

/// 6 000 distinct `(i, None)` pairs in a list.
fn many_pairs() -> Vec<u8> {
    let mut items = vec![b'('];
    for i in 0..6_000u16 {
        items.push(b'M');
        items.extend_from_slice(&i.to_le_bytes());
        items.extend_from_slice(b"N\x86");
    }
    items.push(b'l');
    items
}

/// The bombs: name, pickle, and what the error must say.
fn bombs() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let copied = "limit of";
    vec![
        (
            "nested_rebuild_calls",
            nested_rebuild_calls(23_000),
            "nested rebuild calls",
        ),
        ("nested_lists", nested_lists(80_000), "nested more than 100 levels"),
        ("nested_dicts", nested_dicts(40_000), "nested more than 100 levels"),
        ("nested_tuples", nested_tuples(80_000), "nested more than 100 levels"),
        ("shared_tuple_key", shared_tuple_key(40), "objects"),
        ("shared_tuple_value", shared_tuple_value(60), "objects"),
        // torch.Size of a tuple is that tuple (no copy): the calls succeed, the opcode after
        // them fails.
        (
            "torch_size_calls",
            repeated_copies(b"torch\nSize\n", &many_nones(), 13_000, false),
            "unknown opcode 0xff",
        ),
        (
            "set_copies",
            repeated_copies(b"__builtin__\nset\n", &many_nones(), 13_000, false),
            copied,
        ),
        (
            "device_copies",
            repeated_copies(b"torch\ndevice\n", &many_nones(), 15_000, true),
            copied,
        ),
        (
            "ordered_dict_copies",
            repeated_copies(b"collections\nOrderedDict\n", &many_pairs(), 10_000, false),
            copied,
        ),
    ]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Runs `boomerang ARGS` under an address-space cap of `kib` KiB.
fn run_capped(kib: u64, args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -v {kib}; exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .output()
        .expect("run bash")
}

/// The address-space cap for the bombs: 2 GB, or, for a build linked with libtorch (whose
/// shared libraries alone can map more than that), 2 GB above the smallest power-of-two cap
/// under which the binary starts at all.
fn memory_cap_kib() -> u64 {
    const CAP: u64 = 2_000_000;
    let starts = |kib: u64| run_capped(kib, &["--help".as_ref()]).status.success();
    if starts(CAP) {
        return CAP;
    }
    let base = [4u64, 8, 16, 32, 64]
        .into_iter()
        .map(|g| g * 1_000_000)
        .find(|&kib| starts(kib))
        .expect("the binary does not start even under a 64 GB address-space cap");
    base + CAP
}

#[test]
fn pickle_bombs_end_in_a_clean_error_under_a_memory_cap() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch("hostile-bombs");
    let cap = memory_cap_kib();
    let mut failures = Vec::new();
    for (name, bytes, want) in bombs() {
        let p = write(&dir, &format!("{name}.pkl"), &bytes);
        let started = std::time::Instant::now();
        let out = run_capped(cap, &["info".as_ref(), p.as_os_str()]);
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .last()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect::<String>();
        let clean = out.status.signal().is_none()
            && out.status.code() == Some(2)
            && stderr.contains("error")
            && !stderr.contains("panicked")
            && stderr.contains(want)
            && stderr.contains(&format!("{name}.pkl"))
            && took < std::time::Duration::from_secs(60);
        if !clean {
            failures.push(format!(
                "{name} ({} bytes): status {:?}, signal {:?}, {took:?}, want {want:?}: {last}",
                bytes.len(),
                out.status.code(),
                out.status.signal()
            ));
        }
    }
    assert!(failures.is_empty(), "not a clean error:\n{}", failures.join("\n"));
}

fn checkpoint_message(e: &boomerang::Error) -> String {
    match e {
        boomerang::Error::Checkpoint { message, .. } => message.clone(),
        other => panic!("expected Error::Checkpoint, got {other:?}"),
    }
}

#[test]
fn pickle_bombs_are_errors_in_process_too() {
    for (name, bytes, want) in bombs() {
        let e = checkpoint_message(&Checkpoint::from_bytes(bytes.clone()).unwrap_err());
        assert!(e.contains(want), "{name}: {e}");
        let e = checkpoint_message(&Inventory::from_bytes(bytes.clone()).unwrap_err());
        assert!(e.contains(want), "{name} (inspect): {e}");
        // The same pickle as the data.pkl of a torch.save archive.
        let z = torch_zip(&bytes, &[]);
        let e = checkpoint_message(&Checkpoint::from_bytes(z).unwrap_err());
        assert!(e.contains(want), "{name} (zip): {e}");
    }
}

#[test]
fn shared_tuples_as_dict_keys_are_hashed_once_each() {
    // {t40: 1} with t40 a tree of 2^40 shared tuples: hashing is linear (the conversion to a
    // Value tree is what the object limit stops); the same key given twice is one entry.
    let mut p = proto2();
    p.extend_from_slice(b")q\x00");
    for i in 0..40u8 {
        p.extend_from_slice(&[b'h', i, b'h', i, 0x86, b'q', i + 1]);
    }
    // {t3: 1, (t2, t2): 2} — equal tuples built separately are the same key.
    p.extend_from_slice(b"}h\x03K\x01sh\x02h\x02\x86K\x02s.");
    let v = Checkpoint::from_bytes(p).unwrap().into_root();
    let d = v.as_dict().unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].1, Value::Int(2));
}

/// A pickle with `BINUNICODE`.
fn put_str(p: &mut Vec<u8>, s: &str) {
    p.push(b'X');
    p.extend_from_slice(&(s.len() as u32).to_le_bytes());
    p.extend_from_slice(s.as_bytes());
}

/// A pickle with `LONG1` of eight bytes.
fn put_int(p: &mut Vec<u8>, v: i64) {
    p.extend_from_slice(&[0x8a, 8]);
    p.extend_from_slice(&v.to_le_bytes());
}

/// `data.pkl` of `{name: tensor}` whose tensor views float storage "0" (declared `numel`
/// elements) with `shape`, contiguous strides and `offset`.
fn tensor_pickle(name: &str, numel: i64, shape: &[i64], offset: i64) -> Vec<u8> {
    let mut p = proto2();
    p.extend_from_slice(b"}(");
    put_str(&mut p, name);
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    p.push(b'(');
    put_str(&mut p, "storage");
    p.extend_from_slice(b"ctorch\nFloatStorage\n");
    put_str(&mut p, "0");
    put_str(&mut p, "cpu");
    put_int(&mut p, numel);
    p.extend_from_slice(b"tQ");
    put_int(&mut p, offset);
    p.push(b'(');
    for &d in shape {
        put_int(&mut p, d);
    }
    p.extend_from_slice(b"t(");
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].wrapping_mul(shape[i + 1]);
    }
    for s in strides {
        put_int(&mut p, s);
    }
    p.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtRu.");
    p
}

/// A `torch.save`-style archive (stored entries): `archive/data.pkl`, `archive/byteorder`
/// and `archive/data/<key>` for each record.
fn torch_zip(pkl: &[u8], records: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        let o = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        w.start_file("archive/data.pkl", o).unwrap();
        w.write_all(pkl).unwrap();
        w.start_file("archive/byteorder", o).unwrap();
        w.write_all(b"little").unwrap();
        for (k, b) in records {
            w.start_file(format!("archive/data/{k}"), o).unwrap();
            w.write_all(b).unwrap();
        }
        w.finish().unwrap();
    }
    buf.into_inner()
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
}

#[test]
fn generated_torch_zip_loads() {
    let z = torch_zip(&tensor_pickle("w", 6, &[2, 3], 0), &[("0", &f32_bytes(6))]);
    let sd = load_state_dict_from(&z);
    assert_eq!(sd.get("w").unwrap().shape, vec![2, 3]);
    assert_eq!(
        sd.get("w").unwrap().to_f32_vec().unwrap(),
        vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    );
}

fn load_state_dict_from(bytes: &[u8]) -> StateDict {
    Checkpoint::from_bytes(bytes.to_vec())
        .unwrap()
        .state_dict(&Select::Auto)
        .unwrap()
}

#[test]
fn tensor_sizes_are_bounded_by_their_storage_before_allocating() {
    // Bigger than the declared storage, bigger than the record, overflowing, too many dims.
    let data = f32_bytes(6);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (tensor_pickle("w", 6, &[1 << 20, 1 << 20], 0), "declares only 6"),
        (tensor_pickle("w", 6, &[2, 3], 1), "declares only 6"),
        (tensor_pickle("w", 1 << 40, &[1 << 20, 1 << 20], 0), "which has only 6"),
        (tensor_pickle("w", 6, &[1 << 40, 1 << 40], 0), "overflows"),
        (tensor_pickle("w", 6, &[1 << 62, 4], 0), "overflows"),
        (tensor_pickle("w", 6, &[1; 2000], 0), "at most 1024"),
    ];
    for (pkl, want) in cases {
        let z = torch_zip(&pkl, &[("0", &data)]);
        let e = checkpoint_message(&Checkpoint::from_bytes(z.clone()).unwrap_err());
        assert!(e.contains(want), "{want}: {e}");
        if want != "which has only 6" {
            let e = checkpoint_message(&Inventory::from_bytes(z).unwrap_err());
            assert!(e.contains(want), "{want} (inspect): {e}");
        }
    }
}

#[test]
fn zip_entry_sizes_are_bounded_by_the_file() {
    let z = torch_zip(&tensor_pickle("w", 6, &[6], 0), &[("0", &f32_bytes(6))]);
    // Claim 4 GiB - 16 for every entry's sizes in the central directory.
    let cd = z.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    let mut bad = z.clone();
    let mut p = cd;
    while bad.get(p..p + 4) == Some(b"PK\x01\x02") {
        bad[p + 20..p + 28].copy_from_slice(&[0xf0, 0xff, 0xff, 0xff, 0xf0, 0xff, 0xff, 0xff]);
        let n = u16::from_le_bytes([bad[p + 28], bad[p + 29]]) as usize;
        let m = u16::from_le_bytes([bad[p + 30], bad[p + 31]]) as usize;
        let k = u16::from_le_bytes([bad[p + 32], bad[p + 33]]) as usize;
        p += 46 + n + m + k;
    }
    let e = checkpoint_message(&Checkpoint::from_bytes(bad).unwrap_err());
    assert!(e.contains("runs past the end"), "{e}");
}

#[test]
fn pickle_lengths_are_bounded_by_the_file() {
    for (p, what) in [
        (&b"\x80\x04\x8d\x00\x00\x00\x00\x00\x00\x00\x40abc."[..], "BINUNICODE8"),
        (b"\x80\x04\x8e\x00\x00\x00\x00\x00\x00\x00\x40abc.", "BINBYTES8"),
        (b"\x80\x05\x96\xff\xff\xff\xff\xff\xff\xff\x7fabc.", "BYTEARRAY8"),
        (b"\x80\x03B\xff\xff\xff\xffabc.", "BINBYTES"),
        (b"\x80\x02\x8b\xff\xff\xff\x7f.", "LONG4"),
        (b"\x80\x02X\xff\xff\xff\xff.", "BINUNICODE"),
        (b"\x80\x02T\xff\xff\xff\x7f.", "BINSTRING"),
    ] {
        let e = checkpoint_message(&Checkpoint::from_bytes(p.to_vec()).unwrap_err());
        assert!(e.contains("remain") || e.contains("memory"), "{what}: {e}");
    }
}

/// A safetensors file from a header and data.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn safetensors_regions_must_tile_the_data_exactly() {
    let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    assert_eq!(load_state_dict_from(&safetensors(ok, &[0; 12])).len(), 2);
    let cases = [
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
            "overlaps",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            8,
            "overlaps",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            8,
            "gap of 4 bytes",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            8,
            "holds 4 bytes after",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            4,
            "truncated",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            4,
            "needs 8 bytes",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}}"#,
            4,
            "impossibly large",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            8,
            "twice",
        ),
    ];
    for (h, n, want) in cases {
        let file = safetensors(h, &vec![0; n]);
        let e = checkpoint_message(&Checkpoint::from_bytes(file.clone()).unwrap_err());
        assert!(e.contains(want), "{h}: {e}");
        // The reference implementation refuses them too.
        assert!(safetensors::SafeTensors::deserialize(&file).is_err(), "{h}");
    }
}

#[test]
fn absurd_safetensors_header_lengths_are_refused_without_allocating() {
    let dir = scratch("hostile-header");
    // A sparse 120 MB file whose header claims 110 MB: refused before reading it.
    let p = dir.join("huge-header.safetensors");
    let mut head = 110_000_000u64.to_le_bytes().to_vec();
    head.extend_from_slice(b"{\"a\":");
    std::fs::write(&p, &head).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(120_000_000)
        .unwrap();
    let e = checkpoint_message(&Checkpoint::open(&p).unwrap_err());
    assert!(e.contains("100000000-byte limit"), "{e}");
    let e = checkpoint_message(&checkpoint::inspect(&p).unwrap_err());
    assert!(e.contains("100000000-byte limit"), "{e}");
    let _ = std::fs::remove_file(&p);
    // A header length past the end of a small file.
    let mut v = 5000u64.to_le_bytes().to_vec();
    v.extend_from_slice(b"{\"a\":1}");
    let e = checkpoint_message(&Checkpoint::from_bytes(v).unwrap_err());
    assert!(e.contains("runs past the end"), "{e}");
}

#[test]
fn special_files_are_refused_at_once() {
    use std::sync::mpsc;
    use std::time::Duration;
    let dir = scratch("hostile-special");
    let fifo = dir.join("fifo.pt");
    let ok = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(ok.success());
    for p in [PathBuf::from("/dev/zero"), fifo.clone(), dir.clone()] {
        let (tx, rx) = mpsc::channel();
        let q = p.clone();
        std::thread::spawn(move || {
            let a = Checkpoint::open(&q).map(|_| ()).map_err(|e| e.to_string());
            let b = checkpoint::inspect(&q).map(|_| ()).map_err(|e| e.to_string());
            let c = load_state_dict(&q).map(|_| ()).map_err(|e| e.to_string());
            let _ = tx.send((a, b, c));
        });
        let got = rx.recv_timeout(Duration::from_secs(20));
        if got.is_err() {
            // Unblock a reader stuck opening the FIFO before failing.
            let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        }
        let (a, b, c) = got.unwrap_or_else(|_| panic!("{}: the reader did not return", p.display()));
        for r in [a, b, c] {
            let e = r.expect_err("a special file was read as a checkpoint");
            let want = if p == dir { "a folder" } else { "not a regular file" };
            assert!(e.contains(want), "{}: {e}", p.display());
        }
    }
}

#[test]
fn inspection_reads_no_tensor_data() {
    let dir = scratch("hostile-inspect");
    // safetensors cut inside its data; the reference fixture's header is intact.
    let full = std::fs::read(fixture("flat.safetensors")).unwrap();
    let n = u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    let want = checkpoint::inspect(fixture("flat.safetensors")).unwrap();
    for cut in [8 + n, 8 + n + 10, full.len() - 1] {
        let p = write(&dir, "cut.safetensors", &full[..cut]);
        let inv = checkpoint::inspect(&p).unwrap();
        assert_eq!(inv.entries(), want.entries());
        let e = checkpoint_message(&load_state_dict(&p).unwrap_err());
        assert!(e.contains("truncated"), "{e}");
    }
    // A torch.save archive cut after data.pkl (its central directory gone with the end).
    let full = std::fs::read(fixture("dlsm.pt")).unwrap();
    let want = checkpoint::inspect(fixture("dlsm.pt")).unwrap();
    let second = full[4..].windows(4).position(|w| w == b"PK\x03\x04").unwrap() + 4;
    for cut in [second, second + 100, full.len() / 2, full.len() - 30] {
        let p = write(&dir, "cut.pt", &full[..cut]);
        let inv = checkpoint::inspect(&p).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(inv.entries(), want.entries(), "cut at {cut}");
        assert!(load_state_dict(&p).is_err());
        assert!(Checkpoint::open(&p).is_err());
    }
    // Cut inside data.pkl: an error.
    let p = write(&dir, "cut.pt", &full[..second / 2]);
    assert!(checkpoint::inspect(&p).is_err());
    // An archive whose directory is intact but whose storage record is short.
    let z = torch_zip(&tensor_pickle("w", 6, &[2, 3], 0), &[("0", &f32_bytes(2))]);
    let inv = Inventory::from_bytes(z.clone()).unwrap();
    assert_eq!(inv.tensors().count(), 1);
    let e = checkpoint_message(&Checkpoint::from_bytes(z).unwrap_err());
    assert!(e.contains("which has only 2"), "{e}");
    // A legacy file cut after its main pickle.
    let full = std::fs::read(fixture("flat_legacy.pt")).unwrap();
    let want = checkpoint::inspect(fixture("flat_legacy.pt")).unwrap();
    let p = write(&dir, "cut.pt", &full[..full.len() - 100]);
    assert_eq!(checkpoint::inspect(&p).unwrap().entries(), want.entries());
    assert!(load_state_dict(&p).is_err());
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/checkpoint")
        .join(name)
}

#[test]
fn names_from_files_are_printed_escaped() {
    let evil = "w\u{1b}]0;pwned\u{7}\u{1b}[2J";
    // An unsupported dtype and a hostile name in a safetensors header.
    let h = format!(
        r#"{{"{}":{{"dtype":"X\u001b[31m","shape":[1],"data_offsets":[0,4]}}}}"#,
        evil.replace('\u{1b}', "\\u001b").replace('\u{7}', "\\u0007")
    );
    let e = Checkpoint::from_bytes(safetensors(&h, &[0; 4]))
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\u{1b}') && !e.contains('\u{7}'), "{e:?}");
    assert!(e.contains("w\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"), "{e}");
    assert!(e.contains("X\\u{1b}[31m"), "{e}");
    // A refused global whose module name carries escapes.
    let p = b"\x80\x02cos\x1b[31m\nsystem\x1b[0m\n.".to_vec();
    let e = Checkpoint::from_bytes(p).unwrap_err().to_string();
    assert!(!e.contains('\u{1b}'), "{e:?}");
    assert!(e.contains("`os\\u{1b}[31m.system\\u{1b}[0m`"), "{e}");
    // A key in a message (a state dict that is not flat).
    let mut p = proto2();
    p.extend_from_slice(b"}(");
    put_str(&mut p, evil);
    p.extend_from_slice(b"K\x01u.");
    let e = Checkpoint::from_bytes(p)
        .unwrap()
        .state_dict(&Select::Auto)
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\u{1b}'), "{e:?}");
    assert_eq!(checkpoint::printable(evil), "w\\u{1b}]0;pwned\\u{7}\\u{1b}[2J");
}
