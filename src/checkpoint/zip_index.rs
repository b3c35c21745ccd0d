//! A minimal, bounds-checked zip reader for `torch.save` archives.
//!
//! `torch.save` writes uncompressed ("stored") entries, so this reader indexes the central
//! directory itself and reads entries by position: a tensor's bytes are read only when the
//! tensor is materialized. ZIP64 records (archives over 4 GiB) are supported. The rare
//! deflated entry (an archive re-zipped by another tool) is inflated with the `zip` crate.
//! Every entry read is checked against its CRC-32.
//!
//! Every size is bounded before use: the central directory by [`MAX_CENTRAL_DIRECTORY`] and
//! the file's length, the entry count by the directory's size, entries by the file's length,
//! inflated sizes by deflate's best ratio and the caller's budget.

use std::collections::HashMap;
use std::io::Read;
use std::ops::Range;

use super::limits::{with_capacity, Budget, R};
use super::source::Source;
use super::text::printable;

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;

/// Largest central directory read: 256 MiB holds about two million entries, a hundred times
/// more tensors than the largest checkpoints have.
pub(crate) const MAX_CENTRAL_DIRECTORY: u64 = 256 << 20;

/// One file in the archive.
#[derive(Debug, Clone)]
pub(crate) struct ZipEntry {
    pub(crate) name: String,
    method: u16,
    flags: u16,
    pub(crate) crc: u32,
    comp_size: u64,
    pub(crate) size: u64,
    local_offset: u64,
}

/// The archive's central directory.
#[derive(Debug, Default)]
pub(crate) struct ZipIndex {
    entries: Vec<ZipEntry>,
    by_name: HashMap<String, usize>,
}

fn rd<const N: usize>(d: &[u8], at: usize) -> R<[u8; N]> {
    let end = at.checked_add(N).ok_or_else(eof)?;
    let s = d.get(at..end).ok_or_else(eof)?;
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Ok(a)
}

fn eof() -> String {
    "corrupt zip archive: a record runs past the end of the file (truncated download?)".into()
}

fn u16at(d: &[u8], at: usize) -> R<u16> {
    Ok(u16::from_le_bytes(rd(d, at)?))
}
fn u32at(d: &[u8], at: usize) -> R<u32> {
    Ok(u32::from_le_bytes(rd(d, at)?))
}
fn u64at(d: &[u8], at: usize) -> R<u64> {
    Ok(u64::from_le_bytes(rd(d, at)?))
}

fn to_usize(v: u64) -> R<usize> {
    usize::try_from(v).map_err(|_| "corrupt zip archive: an offset does not fit in memory".to_string())
}

/// Reads `n` bytes at `at`, reporting a short file as a corrupt archive.
fn read_record(src: &Source, at: u64, n: usize) -> R<Vec<u8>> {
    if at.checked_add(n as u64).is_none_or(|e| e > src.len()) {
        return Err(eof());
    }
    src.read(at, n)
}

impl ZipIndex {
    /// Reads the central directory of the archive in `src`.
    pub(crate) fn parse(src: &Source) -> R<ZipIndex> {
        let len = src.len();
        if len < 22 {
            return Err(eof());
        }
        // The end-of-central-directory record lies in the last 64 KiB + 22 bytes.
        let tail_start = len.saturating_sub(22 + 0xffff);
        let tail = read_record(src, tail_start, to_usize(len - tail_start)?)?;
        let eocd_rel = find_eocd(&tail)?;
        let eocd = tail_start + eocd_rel as u64;
        let mut total = u64::from(u16at(&tail, eocd_rel + 10)?);
        let mut cd_size = u64::from(u32at(&tail, eocd_rel + 12)?);
        let mut cd_offset = u64::from(u32at(&tail, eocd_rel + 16)?);
        if total == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
            let loc = eocd
                .checked_sub(20)
                .ok_or("corrupt zip archive: ZIP64 locator missing")?;
            let l = read_record(src, loc, 20)?;
            if u32at(&l, 0)? != ZIP64_LOCATOR_SIG {
                return Err("corrupt zip archive: ZIP64 locator missing".into());
            }
            let z = read_record(src, u64at(&l, 8)?, 56)?;
            if u32at(&z, 0)? != ZIP64_EOCD_SIG {
                return Err("corrupt zip archive: bad ZIP64 end-of-directory record".into());
            }
            total = u64at(&z, 32)?;
            cd_size = u64at(&z, 40)?;
            cd_offset = u64at(&z, 48)?;
        }
        if cd_size > MAX_CENTRAL_DIRECTORY {
            return Err(format!(
                "corrupt zip archive: its central directory claims {cd_size} bytes, more than the \
                 {MAX_CENTRAL_DIRECTORY}-byte limit"
            ));
        }
        let cd_end = cd_offset.checked_add(cd_size).ok_or_else(eof)?;
        if cd_end > len {
            return Err(eof());
        }
        // Each central record takes at least 46 bytes: a hostile count cannot make us
        // allocate more than the directory's size allows.
        if total > cd_size / 46 + 1 {
            return Err("corrupt zip archive: the entry count exceeds the directory size".into());
        }
        let d = read_record(src, cd_offset, to_usize(cd_size)?)?;
        let mut idx = ZipIndex::default();
        let mut p = 0usize;
        for _ in 0..total {
            if u32at(&d, p)? != CENTRAL_SIG {
                return Err("corrupt zip archive: bad central directory record".into());
            }
            let flags = u16at(&d, p + 8)?;
            let method = u16at(&d, p + 10)?;
            let crc = u32at(&d, p + 16)?;
            let mut comp_size = u64::from(u32at(&d, p + 20)?);
            let mut size = u64::from(u32at(&d, p + 24)?);
            let name_len = usize::from(u16at(&d, p + 28)?);
            let extra_len = usize::from(u16at(&d, p + 30)?);
            let comment_len = usize::from(u16at(&d, p + 32)?);
            let mut local_offset = u64::from(u32at(&d, p + 42)?);
            let name_start = p + 46;
            let extra_start = name_start.checked_add(name_len).ok_or_else(eof)?;
            let next = extra_start
                .checked_add(extra_len)
                .and_then(|x| x.checked_add(comment_len))
                .ok_or_else(eof)?;
            if next > d.len() {
                return Err(eof());
            }
            let name_bytes = d.get(name_start..extra_start).ok_or_else(eof)?;
            let name = String::from_utf8_lossy(name_bytes).into_owned();
            let extra = d.get(extra_start..extra_start + extra_len).ok_or_else(eof)?;
            // ZIP64 extended information: the 64-bit values of the fields saturated above.
            let mut e = 0usize;
            while e + 4 <= extra.len() {
                let id = u16at(extra, e)?;
                let len = usize::from(u16at(extra, e + 2)?);
                let body = extra.get(e + 4..e + 4 + len).ok_or_else(eof)?;
                if id == 1 {
                    let mut q = 0usize;
                    let mut next64 = |field: &mut u64| -> R<()> {
                        if *field == 0xffff_ffff {
                            *field = u64at(body, q)?;
                            q += 8;
                        }
                        Ok(())
                    };
                    next64(&mut size)?;
                    next64(&mut comp_size)?;
                    next64(&mut local_offset)?;
                }
                e += 4 + len;
            }
            idx.by_name.insert(name.clone(), idx.entries.len());
            idx.entries.push(ZipEntry {
                name,
                method,
                flags,
                crc,
                comp_size,
                size,
                local_offset,
            });
            p = next;
        }
        Ok(idx)
    }

    /// All entries, in central-directory order.
    pub(crate) fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    /// The entry called `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&ZipEntry> {
        self.by_name.get(name).and_then(|&i| self.entries.get(i))
    }

    /// Where a stored entry's bytes lie in the file, or `None` for a deflated entry.
    pub(crate) fn stored_range(&self, src: &Source, e: &ZipEntry) -> R<Option<Range<u64>>> {
        let (range, method) = self.raw_range(src, e)?;
        match method {
            0 => {
                if e.comp_size != e.size {
                    return Err(format!(
                        "corrupt zip archive: stored entry {} has two sizes",
                        printable(&e.name)
                    ));
                }
                Ok(Some(range))
            }
            _ => Ok(None),
        }
    }

    /// The entry's raw (possibly compressed) bytes' place in the file, and its method.
    pub(crate) fn raw_range(&self, src: &Source, e: &ZipEntry) -> R<(Range<u64>, u16)> {
        let name = printable(&e.name);
        if e.flags & 1 != 0 {
            return Err(format!("zip entry {name} is encrypted"));
        }
        if !matches!(e.method, 0 | 8) {
            return Err(format!(
                "zip entry {name} uses compression method {}; only stored and deflated entries are \
                 supported",
                e.method
            ));
        }
        let start = data_start(src, e)?;
        let end = start.checked_add(e.comp_size).ok_or_else(eof)?;
        if end > src.len() {
            return Err(format!(
                "zip entry {name} runs past the end of the file (truncated download?)"
            ));
        }
        Ok((start..end, e.method))
    }

    /// The bytes of entry `e`, read (stored) or inflated (deflated); the CRC-32 is checked
    /// either way.
    pub(crate) fn read(&self, src: &Source, e: &ZipEntry, budget: &mut Budget) -> R<Vec<u8>> {
        let bytes = match self.stored_range(src, e)? {
            Some(r) => {
                budget.read(to_usize(e.size)?)?;
                src.read_range(r)?
            }
            None => {
                let (r, _) = self.raw_range(src, e)?;
                inflate(src, r, e, budget)?
            }
        };
        if crc32(&bytes) != e.crc {
            return Err(format!(
                "zip entry {} is corrupt (CRC-32 mismatch); re-download the checkpoint",
                printable(&e.name)
            ));
        }
        Ok(bytes)
    }
}

fn data_start(src: &Source, e: &ZipEntry) -> R<u64> {
    let h = read_record(src, e.local_offset, 30)?;
    if u32at(&h, 0)? != LOCAL_SIG {
        return Err(format!(
            "corrupt zip archive: bad local header for {}",
            printable(&e.name)
        ));
    }
    let n = u64::from(u16at(&h, 26)?);
    let m = u64::from(u16at(&h, 28)?);
    Ok(e.local_offset + 30 + n + m)
}

fn find_eocd(d: &[u8]) -> R<usize> {
    if d.len() < 22 {
        return Err(eof());
    }
    let last = d.len() - 22;
    let first = last.saturating_sub(0xffff);
    let mut fallback = None;
    for at in (first..=last).rev() {
        if u32at(d, at)? == EOCD_SIG {
            let comment = usize::from(u16at(d, at + 20)?);
            if at + 22 + comment == d.len() {
                return Ok(at);
            }
            fallback.get_or_insert(at);
        }
    }
    fallback.ok_or_else(|| "corrupt zip archive: no end-of-central-directory record (truncated download?)".to_string())
}

/// Inflates a deflated entry with the `zip` crate, streaming its compressed bytes from the
/// file; its size is bounded by the budget.
pub(crate) fn inflate(src: &Source, raw: Range<u64>, e: &ZipEntry, budget: &mut Budget) -> R<Vec<u8>> {
    let name = printable(&e.name).into_owned();
    let size = to_usize(e.size)?;
    // Deflate cannot compress better than about 1032:1.
    if e.size / 1032 > e.comp_size.saturating_add(1) {
        return Err(format!("corrupt zip archive: entry {name} claims an impossible size"));
    }
    let (Ok(comp32), Ok(size32)) = (u32::try_from(e.comp_size), u32::try_from(e.size)) else {
        return Err(format!(
            "zip entry {name}: deflated entries over 4 GiB are not supported"
        ));
    };
    budget.bytes(size)?;
    let mut out = with_capacity(size)?;
    // A local header with the sizes filled in (torch-style archives put them in a data
    // descriptor instead), followed by the compressed bytes, read by position.
    let mut header = Vec::with_capacity(30);
    header.extend_from_slice(&LOCAL_SIG.to_le_bytes());
    header.extend_from_slice(&20u16.to_le_bytes()); // version needed
    header.extend_from_slice(&0u16.to_le_bytes()); // flags
    header.extend_from_slice(&8u16.to_le_bytes()); // deflated
    header.extend_from_slice(&[0; 4]); // time, date
    header.extend_from_slice(&e.crc.to_le_bytes());
    header.extend_from_slice(&comp32.to_le_bytes());
    header.extend_from_slice(&size32.to_le_bytes());
    header.extend_from_slice(&[0; 4]); // name and extra lengths
    let run = |out: &mut Vec<u8>| -> R<()> {
        let mut stream = std::io::Cursor::new(header).chain(src.reader(raw));
        let f = zip::read::read_zipfile_from_stream(&mut stream)
            .map_err(|err| format!("zip entry {name}: {err}"))?
            .ok_or_else(|| format!("zip entry {name} could not be inflated"))?;
        f.take(e.size.saturating_add(1))
            .read_to_end(out)
            .map_err(|err| format!("zip entry {name}: {err}"))?;
        Ok(())
    };
    // Defence in depth: a panic inside the third-party inflater becomes an error.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut out)))
        .unwrap_or_else(|_| Err(format!("zip entry {name} could not be inflated (corrupt archive)")))?;
    if out.len() != size {
        return Err(format!("zip entry {name} inflates to the wrong size"));
    }
    Ok(out)
}

/// The first entry of an archive whose end (with the central directory) is missing, read
/// from its local header: for inspecting a partly downloaded or partly overwritten
/// checkpoint, whose `data.pkl` comes first.
pub(crate) struct LocalEntry {
    pub(crate) name: String,
    /// Where its data begins.
    pub(crate) data_start: u64,
    /// Its size and CRC-32, when the local header has them (not when a data descriptor
    /// follows the data, as in `torch.save`'s archives).
    pub(crate) size_crc: Option<(u64, u32)>,
}

/// Reads the local header at the start of the archive; only stored, unencrypted entries.
pub(crate) fn first_local_entry(src: &Source) -> R<LocalEntry> {
    let h = read_record(src, 0, 30)?;
    if u32at(&h, 0)? != LOCAL_SIG {
        return Err("corrupt zip archive: no local header at its start".into());
    }
    let flags = u16at(&h, 6)?;
    let method = u16at(&h, 8)?;
    let crc = u32at(&h, 14)?;
    let comp = u32at(&h, 18)?;
    let size = u32at(&h, 22)?;
    let n = usize::from(u16at(&h, 26)?);
    let m = u64::from(u16at(&h, 28)?);
    let name = String::from_utf8_lossy(&read_record(src, 30, n)?).into_owned();
    if flags & 1 != 0 || method != 0 {
        return Err(format!(
            "the archive's first entry {} is encrypted or compressed",
            printable(&name)
        ));
    }
    let has_sizes = flags & 8 == 0 && comp != 0xffff_ffff;
    if has_sizes && comp != size {
        return Err(format!(
            "corrupt zip archive: stored entry {} has two sizes",
            printable(&name)
        ));
    }
    Ok(LocalEntry {
        name,
        data_start: 30 + n as u64 + m,
        size_crc: has_sizes.then_some((u64::from(size), crc)),
    })
}

/// The CRC-32 a data descriptor at `at` records for an entry of `len` bytes, if a
/// descriptor is there (with or without its optional signature).
pub(crate) fn descriptor_crc(src: &Source, at: u64, len: u64) -> Option<u32> {
    let d = src.read(at, 16).ok()?;
    let (crc_at, sizes_at) = if u32at(&d, 0).ok()? == DESCRIPTOR_SIG {
        (4, 8)
    } else {
        (0, 4)
    };
    let crc = u32at(&d, crc_at).ok()?;
    let comp = u32at(&d, sizes_at).ok()?;
    (u64::from(comp) == len).then_some(crc)
}

const fn crc_table() -> [[u32; 256]; 4] {
    let mut t = [[0u32; 256]; 4];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 4 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
}

static CRC: [[u32; 256]; 4] = crc_table();

/// CRC-32 (IEEE 802.3, as zip uses), four bytes at a time.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    let mut chunks = data.chunks_exact(4);
    for ch in &mut chunks {
        let v = c ^ u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]);
        c = CRC[3][(v & 0xff) as usize]
            ^ CRC[2][((v >> 8) & 0xff) as usize]
            ^ CRC[1][((v >> 16) & 0xff) as usize]
            ^ CRC[0][(v >> 24) as usize];
    }
    for &b in chunks.remainder() {
        c = CRC[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_known_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414f_a339);
    }

    #[test]
    fn reads_a_zip_written_by_the_zip_crate() {
        use std::io::Write;
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            let stored = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
            let deflated = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
            w.start_file("a/data.pkl", stored).unwrap();
            w.write_all(b"hello").unwrap();
            w.start_file("a/data/0", deflated).unwrap();
            w.write_all(&[7u8; 1000]).unwrap();
            w.finish().unwrap();
        }
        let d = buf.into_inner();
        let src = Source::from_bytes(d.clone());
        let idx = ZipIndex::parse(&src).unwrap();
        assert_eq!(idx.entries().len(), 2);
        let mut b = Budget::for_file(d.len() as u64);
        let e = idx.get("a/data.pkl").unwrap().clone();
        assert_eq!(&*idx.read(&src, &e, &mut b).unwrap(), b"hello");
        let e = idx.get("a/data/0").unwrap().clone();
        assert_eq!(&*idx.read(&src, &e, &mut b).unwrap(), &[7u8; 1000][..]);
        let first = first_local_entry(&src).unwrap();
        assert_eq!(first.name, "a/data.pkl");
        // Truncations and a flipped byte are errors, never panics.
        for cut in 0..d.len() {
            let t = Source::from_bytes(d[..cut].to_vec());
            if let Ok(i) = ZipIndex::parse(&t) {
                for e in i.entries().to_vec() {
                    let _ = i.read(&t, &e, &mut b);
                }
            }
        }
        for at in 0..d.len() {
            let mut m = d.clone();
            m[at] ^= 0x5a;
            let m = Source::from_bytes(m);
            if let Ok(i) = ZipIndex::parse(&m) {
                for e in i.entries().to_vec() {
                    let _ = i.read(&m, &e, &mut Budget::for_file(m.len()));
                }
            }
        }
    }

    #[test]
    fn absurd_directory_sizes_are_refused_before_reading() {
        // An end record claiming a 4 GiB directory with 65535 entries.
        let mut d = vec![0u8; 64];
        d.extend_from_slice(&EOCD_SIG.to_le_bytes());
        d.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xfe, 0xff, 0xfe]);
        d.extend_from_slice(&0xffff_fff0u32.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&[0, 0]);
        let e = ZipIndex::parse(&Source::from_bytes(d)).unwrap_err();
        assert!(e.contains("limit") || e.contains("past the end"), "{e}");
    }
}
