//! Parsing a checkpoint of any format: the one module that knows them all.

use super::format::{detect, Format, HEAD_LEN};
use super::limits::R;
use super::parsed::{Mode, Parsed};
use super::source::Source;
use super::{safetensors_io, torch_format};

/// Parses `src`, whose format is recognised from its first bytes.
pub(crate) fn parse(src: Source, mode: Mode) -> R<Parsed> {
    let head = src.head(HEAD_LEN)?;
    match detect(&head, src.len())? {
        Format::TorchZip => torch_format::parse_zip(src, mode),
        Format::TorchLegacy => torch_format::parse_legacy(src, mode),
        Format::Pickle => torch_format::parse_bare_pickle(src),
        Format::SafeTensors => safetensors_io::parse(src, mode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_file_truncated_while_open_is_an_error_not_a_signal() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint");
        let dir = std::env::temp_dir().join(format!("boomerang-truncated-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["flat_zip.pt", "flat_legacy.pt", "flat.safetensors", "views_zip.pt"] {
            let p = dir.join(name);
            std::fs::copy(fixtures.join(name), &p).unwrap();
            let parsed = parse(Source::open(&p).unwrap(), Mode::Load).unwrap();
            // Another process re-saves the checkpoint: first it truncates it.
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(64)
                .unwrap();
            let e = parsed.into_value().unwrap_err();
            assert!(e.contains("changed while it was being read"), "{name}: {e}");
            assert!(e.contains("64 bytes now"), "{name}: {e}");
        }
        // Rewritten in place with other bytes of the same length: the zip CRC notices.
        let p = dir.join("flat_zip.pt");
        let full = std::fs::read(fixtures.join("flat_zip.pt")).unwrap();
        std::fs::write(&p, &full).unwrap();
        let parsed = parse(Source::open(&p).unwrap(), Mode::Load).unwrap();
        let mut changed = full.clone();
        let n = changed.len();
        for b in &mut changed[n / 3..n * 2 / 3] {
            *b ^= 0x55;
        }
        std::fs::write(&p, &changed).unwrap();
        let e = parsed.into_value().unwrap_err();
        assert!(e.contains("CRC"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
