//! The container formats, recognised by a file's first bytes (never by its name).

use super::limits::R;

/// The container format of a checkpoint file.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A safetensors file.
    SafeTensors,
    /// A PyTorch zip archive (`torch.save`'s default since PyTorch 1.6).
    TorchZip,
    /// The legacy `torch.save` stream of pickles followed by raw storages.
    TorchLegacy,
    /// A bare pickle, without tensor storages.
    Pickle,
}

/// How many leading bytes [`detect`] looks at.
pub(crate) const HEAD_LEN: usize = 512;

/// The pickled magic number that starts a legacy `torch.save` file.
pub(crate) const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Safetensors headers larger than this are refused (the reference implementation's limit).
pub(crate) const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Identifies the format from the first bytes `d` (up to [`HEAD_LEN`]) of a file of
/// `file_len` bytes.
pub(crate) fn detect(d: &[u8], file_len: u64) -> R<Format> {
    if d.is_empty() {
        return Err("the file is empty (an interrupted download or save?)".into());
    }
    if d.starts_with(b"PK\x03\x04") || d.starts_with(b"PK\x05\x06") {
        return Ok(Format::TorchZip);
    }
    if d.len() >= 15 && d[0] == 0x80 && d[2] == 0x8a && d[3] == 0x0a && d[4..14] == LEGACY_MAGIC {
        return Ok(Format::TorchLegacy);
    }
    if d.len() >= 9 {
        let n = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        // A header that fits the file, or a plausible one cut short (a truncated download,
        // reported as such by the parser); text that happens to have a `{` at byte 8 reads
        // as an absurd length and is neither.
        if d[8] == b'{' && n >= 2 && (n <= file_len.saturating_sub(8) || n <= MAX_SAFETENSORS_HEADER) {
            return Ok(Format::SafeTensors);
        }
    }
    if d[0] == 0x80 && d.len() >= 2 && (2..=5).contains(&d[1]) {
        return Ok(Format::Pickle);
    }
    if d.len() > 262 && &d[257..262] == b"ustar" {
        return Err(
            "this is a tar archive: the pre-1.0 torch.save format, which this reader does not \
                    support; load it with an old PyTorch and re-save it"
                .into(),
        );
    }
    if d.starts_with(b"version https://git-lfs") {
        return Err(
            "this is a Git LFS pointer file, not the checkpoint itself; fetch the real file \
                    with `git lfs pull`"
                .into(),
        );
    }
    let head: String = String::from_utf8_lossy(&d[..d.len().min(64)]).to_ascii_lowercase();
    if head.trim_start().starts_with("<!doctype html") || head.trim_start().starts_with("<html") {
        return Err("this is an HTML page, not a checkpoint (a failed or login-walled download?)".into());
    }
    let shown: String = d
        .iter()
        .take(16)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect();
    Err(format!(
        "not a recognised checkpoint: it starts with \"{shown}\"; expected a safetensors file, \
         a PyTorch zip archive (torch.save), a legacy torch.save file or a pickle"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(d: &[u8]) -> R<Format> {
        detect(d, d.len() as u64)
    }

    #[test]
    fn detection_errors_are_helpful() {
        assert!(det(b"").unwrap_err().contains("empty"));
        assert!(det(b"version https://git-lfs.github.com/spec/v1\noid sha256:")
            .unwrap_err()
            .contains("git lfs pull"));
        assert!(det(b"<!DOCTYPE html><html>").unwrap_err().contains("HTML"));
        assert!(det(b"hello world, this is text").unwrap_err().contains("hello world"));
        assert_eq!(det(b"\x80\x04K\x01.").unwrap(), Format::Pickle);
        assert_eq!(det(b"PK\x03\x04rest").unwrap(), Format::TorchZip);
        // A safetensors file cut inside its header is still recognised (and then reported
        // as truncated); JSON text is not mistaken for one.
        assert_eq!(
            det(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap(),
            Format::SafeTensors
        );
        assert!(det(b"{\n  \"a\": {\"b\": 1}}").is_err());
    }
}
