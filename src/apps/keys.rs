//! Stable item keys for [`NoiseStreams::keyed`](crate::NoiseStreams::keyed).
//!
//! The applications give every item its own noise stream, named by a 64-bit key derived
//! from something that does not change between runs: a file's path relative to the dataset
//! root, an input's index, a candidate or pass number. The hash is written out here (FNV-1a
//! over the bytes, then the SplitMix64 finalizer to spread the bits), so keys are identical
//! on every platform, Rust release and build of this crate. They are part of the
//! reproducibility contract: the tests pin their values.
//!
//! ```
//! use boomerang::apps::keys::{derive_key, path_key};
//! // Keys come from the path's components, so `.` and doubled separators do not matter, and
//! // Windows (`cats\001.png`, two components there) and Unix runs agree.
//! assert_eq!(path_key("cats/001.png"), path_key("./cats//001.png"));
//! // On Unix a backslash is part of a file name: another file, another key.
//! # #[cfg(unix)]
//! assert_ne!(path_key("cats/001.png"), path_key("cats\\001.png"));
//! // A candidate of a pass of an input: one stream each.
//! let k = derive_key(path_key("cats/001.png"), &[2, 0]);
//! assert_ne!(k, derive_key(path_key("cats/001.png"), &[0, 2]));
//! ```

use std::path::{Component, Path};

use crate::apps::paths::{escape_bytes, os_bytes};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function: a bijection of `u64` with good avalanche.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of a byte string (FNV-1a, then [`splitmix64`]).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    splitmix64(h)
}

/// The bytes a path's key is made of: its components as the platform splits them
/// ([`Path::components`]), each as its exact bytes (non-UTF-8 names included), joined by `/`;
/// `.` components and a root are dropped, `..` is kept as `..`. For a
/// [`RelPath`](crate::apps::paths::RelPath) this is its `joined()`. Nothing re-splits the text: on Unix `a\b.png` is one name.
pub fn key_bytes(path: impl AsRef<Path>) -> Vec<u8> {
    let mut out = Vec::new();
    for c in path.as_ref().components() {
        let part: std::borrow::Cow<'_, [u8]> = match c {
            Component::Normal(s) => os_bytes(s),
            Component::ParentDir => std::borrow::Cow::Borrowed(b".."),
            _ => continue,
        };
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(&part);
    }
    out
}

/// [`key_bytes`] as text, for display (bytes that are not UTF-8 appear as `\xNN`): the
/// components of a relative path joined by `/`.
pub fn canonical_relative(path: impl AsRef<Path>) -> String {
    escape_bytes(&key_bytes(path))
}

/// The key of a file from its path relative to the dataset root ([`hash_bytes`] of
/// [`key_bytes`]). For UTF-8 names this is the hash of the `a/b/c.png` text.
pub fn path_key(relative: impl AsRef<Path>) -> u64 {
    hash_bytes(&key_bytes(relative))
}

/// A key for a sub-item of `key` (a candidate, a pass, a copy): each part is folded in with
/// [`splitmix64`], so `derive_key(k, &[a, b])` differs from `derive_key(k, &[b, a])`.
pub fn derive_key(key: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(splitmix64(key), |acc, &p| {
        splitmix64(acc ^ splitmix64(p.wrapping_add(GOLDEN)))
    })
}

/// A uniform draw in `[0, 1)` determined by `key` alone (53 random bits).
pub fn unit_f64(key: u64) -> f64 {
    (splitmix64(key) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The length and a 64-bit content hash (FNV-1a + SplitMix64, [`hash_bytes`],
/// as 16 hex digits) of some bytes, as manifests record written files. It tells a file this
/// job wrote from one it did not; it is not a cryptographic hash (whoever can write the output
/// folder can rewrite its manifest as well).
pub fn content_id(bytes: &[u8]) -> (u64, String) {
    (bytes.len() as u64, format!("{:016x}", hash_bytes(bytes)))
}

/// [`content_id`] of the regular file at `path` (`None` if it is missing, a link or not a
/// regular file, or if it is larger than `max_bytes`).
pub(crate) fn file_content_id(path: &Path, max_bytes: u64) -> Option<(u64, String)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > max_bytes {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    Some(content_id(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_values() {
        // FNV-1a of the empty string is the offset basis.
        assert_eq!(hash_bytes(b""), splitmix64(FNV_OFFSET));
        // SplitMix64 reference: the first output of a generator seeded with 0 is
        // 0xe220a8397b1dcdaf.
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn canonical_paths() {
        assert_eq!(canonical_relative("a/./b/c.png"), "a/b/c.png");
        assert_eq!(canonical_relative("./x.png"), "x.png");
        let rel = crate::apps::paths::RelPath::new("a/b/c.png").unwrap();
        assert_eq!(key_bytes(&rel), rel.joined());
        #[cfg(unix)]
        assert_eq!(canonical_relative("a/b\\c.png"), "a/b\\c.png");
    }

    #[test]
    fn unit_range() {
        for k in 0..1000 {
            let u = unit_f64(k);
            assert!((0.0..1.0).contains(&u));
        }
    }
}
