//! The containers `torch.save` writes.
//!
//! * zip (the default since PyTorch 1.6): `<prefix>/data.pkl` holds the pickled object, whose
//!   persistent ids `('storage', StorageType, key, location, numel)` name the records
//!   `<prefix>/data/<key>`; `<prefix>/byteorder` says `little` or `big`.
//! * legacy (`_use_new_zipfile_serialization=False`): a pickled magic number, the protocol
//!   version 1001, a pickled `sys_info` dict, the main pickle (persistent ids
//!   `('storage', StorageType, key, location, numel, view_metadata)`), a pickled list of
//!   storage keys, then for each key its element count (8 bytes, little-endian) and raw
//!   little-endian bytes.
//! * a bare pickle (protocol 2-5) without tensors.
//!
//! Each is parsed into a [`Parsed`]. Pickles whose length is not known up front (legacy
//! files, bare pickles) are read in growing prefixes of the file, so that the storage data
//! after them is never read just to parse them.

use std::collections::HashMap;
use std::rc::Rc;

use super::format::{Format, LEGACY_MAGIC};
use super::limits::{Budget, R};
use super::parsed::{tensor_size, view_extent, view_window, Mode, Parsed, SlotSource, StorageSlot};
use super::pickle::{self, Persistent, StorageDecl, TensorRef, Vm};
use super::source::Source;
use super::text::printable;
use super::value::Value;
use super::zip_index::{self, crc32, ZipIndex};

/// The first prefix read for a pickle of unknown length; it doubles while the pickle needs
/// more.
const FIRST_PREFIX: u64 = 1 << 20;

/// A pickle's error, and whether it ran out of input (so that more might help).
type Starved = (String, bool);

/// Runs `f` on growing prefixes of the file from byte `start` (`partial` when more of the
/// file follows) until it succeeds or fails for a reason other than running out of input.
/// Doubling keeps the total work within twice that of one run on the exact input.
fn on_prefix<T>(src: &Source, start: u64, mut f: impl FnMut(&[u8], bool) -> Result<T, Starved>) -> R<T> {
    let avail = src.len().saturating_sub(start);
    let mut want = FIRST_PREFIX;
    loop {
        let n = want.min(avail);
        let buf = src.read(
            start,
            usize::try_from(n).map_err(|_| "the file does not fit in memory")?,
        )?;
        let partial = n < avail;
        match f(&buf, partial) {
            Ok(v) => return Ok(v),
            Err((_, true)) if partial => want = want.saturating_mul(2),
            Err((e, _)) => return Err(e),
        }
    }
}

/// What one pickle with storage references yields.
struct StoragePickle {
    skeleton: Value,
    tensors: Vec<Rc<TensorRef>>,
    decls: Vec<(String, StorageDecl)>,
    /// The pickle's length.
    len: usize,
}

/// Runs a pickle whose persistent ids are torch storages.
fn run_storage_pickle(data: &[u8], partial: bool) -> Result<StoragePickle, Starved> {
    let mut vm = Vm::with_input(data, partial, Persistent::TorchStorages);
    let root = vm.run().map_err(|e| (e, vm.starved()))?;
    let mut tensors = Vec::new();
    let skeleton = vm.to_value(&root, &mut tensors).map_err(|e| (e, false))?;
    Ok(StoragePickle {
        skeleton,
        tensors,
        decls: vm.storages().to_vec(),
        len: vm.end(),
    })
}

/// Checks what can be checked of the tensors without their data: sizes that overflow, and
/// views that reach past the element count their storage declares.
fn check_declared(tensors: &[Rc<TensorRef>]) -> R<()> {
    for t in tensors {
        tensor_size(t)?;
        let extent = view_extent(t)?;
        if let Some(declared) = t.storage.numel {
            let (_, avail) = view_window(t, declared)?;
            if extent > avail {
                return Err(format!(
                    "a tensor of shape {:?} (stride {:?}, offset {}) reads element {} of storage {}, \
                     which declares only {avail} (corrupt file)",
                    t.shape,
                    t.stride,
                    t.offset,
                    extent - 1,
                    printable(&t.storage.key)
                ));
            }
        }
    }
    Ok(())
}

/// Parses a PyTorch zip archive.
pub(crate) fn parse_zip(src: Source, mode: Mode) -> R<Parsed> {
    let idx = match ZipIndex::parse(&src) {
        Ok(idx) => idx,
        Err(e) if mode == Mode::Inspect => return inspect_headless_zip(src, e),
        Err(e) => return Err(e),
    };
    let pkls: Vec<&str> = idx
        .entries()
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| is_data_pkl(n))
        .collect();
    let pkl_name = match pkls.as_slice() {
        [one] => one.to_string(),
        [] => return Err("this zip archive is not a torch.save checkpoint (it has no data.pkl)".into()),
        _ => {
            let names: Vec<String> = pkls.iter().take(8).map(|n| printable(n).into_owned()).collect();
            return Err(format!(
                "this zip archive holds several checkpoints ({})",
                names.join(", ")
            ));
        }
    };
    let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or("").to_string();
    if idx.get(&format!("{prefix}constants.pkl")).is_some()
        || idx
            .entries()
            .iter()
            .any(|e| e.name.starts_with(&format!("{prefix}code/")))
    {
        return Err(
            "this is a TorchScript archive (torch.jit.save), not a state dict; load it in \
                    Python with torch.jit.load and save model.state_dict()"
                .into(),
        );
    }
    let mut budget = Budget::for_file(src.len());
    let big_endian = match (mode, idx.get(&format!("{prefix}byteorder"))) {
        (Mode::Inspect, _) | (_, None) => false,
        (Mode::Load, Some(e)) => match idx.read(&src, e, &mut budget)?.as_slice() {
            b"little" => false,
            b"big" => true,
            other => {
                return Err(format!(
                    "unknown byte order {:?} in the archive",
                    String::from_utf8_lossy(&other[..other.len().min(16)])
                ))
            }
        },
    };
    let pkl_entry = idx.get(&pkl_name).ok_or("data.pkl vanished")?;
    let pkl = idx.read(&src, pkl_entry, &mut budget)?;
    let p = run_storage_pickle(&pkl, false).map_err(|(e, _)| e)?;
    drop(pkl);
    check_declared(&p.tensors)?;
    let mut storages = HashMap::new();
    if mode == Mode::Load {
        for (key, decl) in &p.decls {
            let name = format!("{prefix}data/{key}");
            let e = idx.get(&name).ok_or_else(|| {
                format!(
                    "the archive lacks the storage record {} (truncated or incomplete file?)",
                    printable(&name)
                )
            })?;
            let source = match idx.stored_range(&src, e)? {
                Some(r) => SlotSource::File(r),
                None => SlotSource::Deflated(e.clone(), idx.raw_range(&src, e)?.0),
            };
            storages.insert(
                key.clone(),
                StorageSlot {
                    source,
                    dtype: decl.dtype,
                    crc: Some(e.crc),
                    name: printable(&name).into_owned(),
                },
            );
        }
    }
    Ok(Parsed::new(
        Format::TorchZip,
        src,
        p.skeleton,
        p.tensors,
        storages,
        big_endian,
    ))
}

/// `data.pkl` at the top level or one folder down (`archive/data.pkl`).
fn is_data_pkl(n: &str) -> bool {
    n == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1)
}

/// Inspects an archive whose central directory is missing (a partial download): `data.pkl`,
/// which `torch.save` writes first, is read from its local header; the pickle delimits
/// itself, and the data descriptor after it, when present, gives its CRC-32.
fn inspect_headless_zip(src: Source, why: String) -> R<Parsed> {
    let Ok(first) = zip_index::first_local_entry(&src) else {
        return Err(why);
    };
    if !is_data_pkl(&first.name) {
        return Err(why);
    }
    let p = match first.size_crc {
        Some((size, crc)) => {
            let pkl = src.read(first.data_start, usize::try_from(size).map_err(|_| why.clone())?)?;
            if crc32(&pkl) != crc {
                return Err("the archive's data.pkl is corrupt (CRC-32 mismatch)".into());
            }
            run_storage_pickle(&pkl, false).map_err(|(e, _)| e)?
        }
        None => {
            let p = on_prefix(&src, first.data_start, run_storage_pickle)?;
            let at = first.data_start + p.len as u64;
            if let Some(crc) = zip_index::descriptor_crc(&src, at, p.len as u64) {
                let pkl = src.read(first.data_start, p.len)?;
                if crc32(&pkl) != crc {
                    return Err("the archive's data.pkl is corrupt (CRC-32 mismatch)".into());
                }
            }
            p
        }
    };
    check_declared(&p.tensors)?;
    Ok(Parsed::new(
        Format::TorchZip,
        src,
        p.skeleton,
        p.tensors,
        HashMap::new(),
        false,
    ))
}

/// Runs one of the legacy format's plain pickles at the start of `d`.
fn plain(d: &[u8], partial: bool) -> Result<(Value, usize), Starved> {
    pickle::load_plain(d, partial)
}

/// Parses a legacy `torch.save` file.
pub(crate) fn parse_legacy(src: Source, mode: Mode) -> R<Parsed> {
    let (p, end) = on_prefix(&src, 0, |d, partial| {
        let rest = |pos: usize| d.get(pos..).unwrap_or(&[]);
        let (magic, mut pos) = plain(d, partial)?;
        if magic != Value::BigInt(LEGACY_MAGIC.to_vec()) {
            return Err(("invalid magic number in a legacy torch.save file".into(), false));
        }
        let (version, n) = plain(rest(pos), partial)?;
        pos += n;
        if version != Value::Int(1001) {
            return Err((
                format!(
                    "unsupported legacy torch.save protocol version {} (expected 1001)",
                    printable(&version.summary())
                ),
                false,
            ));
        }
        // sys_info records the writer's byte order, but torch writes legacy storages
        // little-endian on every machine (it swaps on big-endian hosts), so it is only skipped.
        let (_sys_info, n) = plain(rest(pos), partial)?;
        pos += n;
        let p = run_storage_pickle(rest(pos), partial)?;
        pos += p.len;
        Ok((p, pos))
    })?;
    check_declared(&p.tensors)?;
    if mode == Mode::Inspect {
        return Ok(Parsed::new(
            Format::TorchLegacy,
            src,
            p.skeleton,
            p.tensors,
            HashMap::new(),
            false,
        ));
    }
    let decls: HashMap<&str, &StorageDecl> = p.decls.iter().map(|(k, d)| (k.as_str(), d)).collect();
    let (keys, n) = on_prefix(&src, end as u64, plain)
        .map_err(|e| format!("reading the storage list after the main pickle: {e}"))?;
    let mut pos = end as u64 + n as u64;
    let keys = match keys {
        Value::List(k) => k,
        other => return Err(format!("the storage list is a {}", other.type_name())),
    };
    let mut storages = HashMap::new();
    for k in keys {
        let key = match k {
            Value::Str(s) => s,
            Value::Int(i) => i.to_string(),
            other => return Err(format!("a storage key is a {}", other.type_name())),
        };
        let shown = printable(&key).into_owned();
        let decl = decls
            .get(key.as_str())
            .ok_or_else(|| format!("storage {shown} is listed but no tensor uses it"))?;
        let count = src
            .read(pos, 8)
            .map_err(|_| "the file ends inside the storage data (truncated download?)".to_string())?;
        let count = u64::from_le_bytes([
            count[0], count[1], count[2], count[3], count[4], count[5], count[6], count[7],
        ]);
        let nbytes = count
            .checked_mul(decl.dtype.size_in_bytes() as u64)
            .ok_or("a storage size field is impossibly large (corrupt file)")?;
        let start = pos + 8;
        let end = start
            .checked_add(nbytes)
            .filter(|&e| e <= src.len())
            .ok_or("the file ends inside the storage data (truncated download?)")?;
        storages.insert(
            key,
            StorageSlot {
                source: SlotSource::File(start..end),
                dtype: decl.dtype,
                crc: None,
                name: format!("storage {shown}"),
            },
        );
        pos = end;
    }
    Ok(Parsed::new(
        Format::TorchLegacy,
        src,
        p.skeleton,
        p.tensors,
        storages,
        false,
    ))
}

/// Parses a bare pickle (no tensors).
pub(crate) fn parse_bare_pickle(src: Source) -> R<Parsed> {
    let (skeleton, _) = on_prefix(&src, 0, plain)?;
    Ok(Parsed::new(
        Format::Pickle,
        src,
        skeleton,
        Vec::new(),
        HashMap::new(),
        false,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_pickles_are_read_in_growing_prefixes() {
        // A bare pickle longer than the first prefix: a 3 MiB string.
        let n = 3usize << 20;
        let mut p = vec![0x80, 4, 0x8d];
        p.extend_from_slice(&(n as u64).to_le_bytes());
        p.extend(std::iter::repeat_n(b'x', n));
        p.extend_from_slice(b".trailing bytes that are never parsed");
        let parsed = parse_bare_pickle(Source::from_bytes(p)).unwrap();
        assert_eq!(parsed.skeleton.as_str().map(str::len), Some(n));
        // Cut inside the string: an error, not a retry forever.
        let mut p = vec![0x80, 4, 0x8d];
        p.extend_from_slice(&(n as u64).to_le_bytes());
        p.extend(std::iter::repeat_n(b'x', n / 2));
        assert!(parse_bare_pickle(Source::from_bytes(p)).is_err());
    }
}
