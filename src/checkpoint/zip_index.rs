//! A minimal, bounds-checked zip reader for `torch.save` archives.
//!
//! `torch.save` writes uncompressed ("stored") entries, so this reader indexes the central
//! directory itself and hands out slices of the memory-mapped file: no copy of the tensor
//! data is made before tensors are materialized. ZIP64 records (archives over 4 GiB) are
//! supported. The rare deflated entry (an archive re-zipped by another tool) is inflated with
//! the `zip` crate. Every entry read is checked against its CRC-32.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;

use super::pickle::{Budget, R};

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

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

impl ZipIndex {
    /// Reads the central directory of the archive in `d`.
    pub(crate) fn parse(d: &[u8]) -> R<ZipIndex> {
        let eocd = find_eocd(d)?;
        let mut total = u64::from(u16at(d, eocd + 10)?);
        let mut cd_size = u64::from(u32at(d, eocd + 12)?);
        let mut cd_offset = u64::from(u32at(d, eocd + 16)?);
        if total == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
            let loc = eocd
                .checked_sub(20)
                .ok_or("corrupt zip archive: ZIP64 locator missing")?;
            if u32at(d, loc)? != ZIP64_LOCATOR_SIG {
                return Err("corrupt zip archive: ZIP64 locator missing".into());
            }
            let z = to_usize(u64at(d, loc + 8)?)?;
            if u32at(d, z)? != ZIP64_EOCD_SIG {
                return Err("corrupt zip archive: bad ZIP64 end-of-directory record".into());
            }
            total = u64at(d, z.checked_add(32).ok_or_else(eof)?)?;
            cd_size = u64at(d, z.checked_add(40).ok_or_else(eof)?)?;
            cd_offset = u64at(d, z.checked_add(48).ok_or_else(eof)?)?;
        }
        let cd_start = to_usize(cd_offset)?;
        let cd_end = cd_start.checked_add(to_usize(cd_size)?).ok_or_else(eof)?;
        if cd_end > d.len() {
            return Err(eof());
        }
        // Each central record takes at least 46 bytes: a hostile count cannot make us
        // allocate more than the directory's size allows.
        if total > cd_size / 46 + 1 {
            return Err("corrupt zip archive: the entry count exceeds the directory size".into());
        }
        let mut idx = ZipIndex::default();
        let mut p = cd_start;
        for _ in 0..total {
            if u32at(d, p)? != CENTRAL_SIG {
                return Err("corrupt zip archive: bad central directory record".into());
            }
            let flags = u16at(d, p + 8)?;
            let method = u16at(d, p + 10)?;
            let crc = u32at(d, p + 16)?;
            let mut comp_size = u64::from(u32at(d, p + 20)?);
            let mut size = u64::from(u32at(d, p + 24)?);
            let name_len = usize::from(u16at(d, p + 28)?);
            let extra_len = usize::from(u16at(d, p + 30)?);
            let comment_len = usize::from(u16at(d, p + 32)?);
            let mut local_offset = u64::from(u32at(d, p + 42)?);
            let name_start = p + 46;
            let extra_start = name_start.checked_add(name_len).ok_or_else(eof)?;
            let next = extra_start
                .checked_add(extra_len)
                .and_then(|x| x.checked_add(comment_len))
                .ok_or_else(eof)?;
            if next > cd_end {
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

    /// Where a stored entry's bytes lie in the file.
    pub(crate) fn stored_range(&self, d: &[u8], e: &ZipEntry) -> R<Option<std::ops::Range<usize>>> {
        if e.flags & 1 != 0 {
            return Err(format!("zip entry {} is encrypted", e.name));
        }
        let start = data_start(d, e)?;
        let len = to_usize(e.comp_size)?;
        let end = start.checked_add(len).ok_or_else(eof)?;
        if end > d.len() {
            return Err(format!(
                "zip entry {} runs past the end of the file (truncated download?)",
                e.name
            ));
        }
        match e.method {
            0 => {
                if e.comp_size != e.size {
                    return Err(format!("corrupt zip archive: stored entry {} has two sizes", e.name));
                }
                Ok(Some(start..end))
            }
            8 => Ok(None),
            m => Err(format!(
                "zip entry {} uses compression method {m}; only stored and deflated entries are supported",
                e.name
            )),
        }
    }

    /// The bytes of entry `e`: a slice of `d` when stored, inflated when deflated; the CRC-32
    /// is checked either way.
    pub(crate) fn read<'d>(&self, d: &'d [u8], e: &ZipEntry, budget: &mut Budget) -> R<Cow<'d, [u8]>> {
        let bytes = match self.stored_range(d, e)? {
            Some(r) => Cow::Borrowed(d.get(r).ok_or_else(eof)?),
            None => Cow::Owned(inflate(d, e, budget)?),
        };
        if crc32(&bytes) != e.crc {
            return Err(format!(
                "zip entry {} is corrupt (CRC-32 mismatch); re-download the checkpoint",
                e.name
            ));
        }
        Ok(bytes)
    }
}

fn data_start(d: &[u8], e: &ZipEntry) -> R<usize> {
    let lo = to_usize(e.local_offset)?;
    if u32at(d, lo)? != LOCAL_SIG {
        return Err(format!("corrupt zip archive: bad local header for {}", e.name));
    }
    let n = usize::from(u16at(d, lo + 26)?);
    let m = usize::from(u16at(d, lo + 28)?);
    lo.checked_add(30)
        .and_then(|x| x.checked_add(n))
        .and_then(|x| x.checked_add(m))
        .ok_or_else(eof)
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

/// Inflates a deflated entry with the `zip` crate, its size bounded by the budget.
fn inflate(d: &[u8], e: &ZipEntry, budget: &mut Budget) -> R<Vec<u8>> {
    let size = to_usize(e.size)?;
    // Deflate cannot compress better than about 1032:1.
    if e.size / 1032 > e.comp_size.saturating_add(1) {
        return Err(format!(
            "corrupt zip archive: entry {} claims an impossible size",
            e.name
        ));
    }
    budget.bytes(size)?;
    let run = || -> R<Vec<u8>> {
        let mut ar =
            zip::ZipArchive::new(std::io::Cursor::new(d)).map_err(|err| format!("corrupt zip archive: {err}"))?;
        let f = ar
            .by_name(&e.name)
            .map_err(|err| format!("zip entry {}: {err}", e.name))?;
        let mut out = Vec::with_capacity(size);
        f.take(e.size.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|err| format!("zip entry {}: {err}", e.name))?;
        if out.len() != size {
            return Err(format!("zip entry {} inflates to the wrong size", e.name));
        }
        Ok(out)
    };
    // Defence in depth: a panic inside the third-party inflater becomes an error.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .unwrap_or_else(|_| Err(format!("zip entry {} could not be inflated (corrupt archive)", e.name)))
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
        let idx = ZipIndex::parse(&d).unwrap();
        assert_eq!(idx.entries().len(), 2);
        let mut b = Budget::for_file(d.len());
        let e = idx.get("a/data.pkl").unwrap().clone();
        assert_eq!(&*idx.read(&d, &e, &mut b).unwrap(), b"hello");
        let e = idx.get("a/data/0").unwrap().clone();
        assert_eq!(&*idx.read(&d, &e, &mut b).unwrap(), &[7u8; 1000][..]);
        // Truncations and a flipped byte are errors, never panics.
        for cut in 0..d.len() {
            let t = &d[..cut];
            if let Ok(i) = ZipIndex::parse(t) {
                for e in i.entries().to_vec() {
                    let _ = i.read(t, &e, &mut b);
                }
            }
        }
        for at in 0..d.len() {
            let mut m = d.clone();
            m[at] ^= 0x5a;
            if let Ok(i) = ZipIndex::parse(&m) {
                for e in i.entries().to_vec() {
                    let _ = i.read(&m, &e, &mut Budget::for_file(m.len()));
                }
            }
        }
    }
}
