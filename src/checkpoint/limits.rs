//! The limits that keep a hostile checkpoint from exhausting the stack, memory or time, and
//! the internal error type every reader module shares.
//!
//! Nothing here depends on another module of the reader: it is the bottom of the module graph.
//!
//! * Nesting is bounded by [`MAX_DEPTH`] wherever the reader recurses on the file's structure;
//!   everything else is iterative.
//! * Work and memory are bounded by [`Meter`]s whose limits grow linearly with the size of the
//!   pickle (or file) being read: a constant allowance plus a few units per byte, far above
//!   what `torch.save` ever produces, far below what a bomb needs.
//! * Large buffers are allocated with [`alloc_bytes`], which reports failure instead of
//!   aborting the process.

/// Internal result: the error is a message; the caller adds the file's path.
pub(crate) type R<T> = std::result::Result<T, String>;

/// Deepest nesting of containers (and of tuple dict keys) the reader accepts. `torch.save`
/// state dicts nest a handful of levels; 100 leaves room for any real checkpoint and keeps
/// the recursive conversion and the drop of the resulting [`Value`](super::value::Value)
/// tree far from the stack's end.
pub(crate) const MAX_DEPTH: usize = 100;

/// Most dimensions a tensor may have (PyTorch's own limit is 64 for most operations).
pub(crate) const MAX_DIMS: usize = 1024;

/// A countdown of one kind of work, with the limit kept for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Meter {
    /// What is counted, for messages: "objects", "bytes of strings", ...
    what: &'static str,
    /// What it is charged against, for messages: "a pickle of 123 bytes".
    basis: String,
    /// What exceeding it usually means, for messages.
    cause: &'static str,
    limit: u64,
    left: u64,
}

impl Meter {
    /// A meter of `base + per_byte × len` units, where `len` is the size of what is read
    /// (`basis`: "a pickle", "a file"); `cause` says what exceeding it usually means.
    pub(crate) fn linear(
        what: &'static str,
        base: u64,
        per_byte: u64,
        len: usize,
        basis: &str,
        cause: &'static str,
    ) -> Meter {
        let limit = base.saturating_add((len as u64).saturating_mul(per_byte));
        Meter {
            what,
            basis: format!("{basis} of {len} bytes"),
            cause,
            limit,
            left: limit,
        }
    }

    /// Charges `n` units, or explains which limit was reached.
    pub(crate) fn charge(&mut self, n: u64) -> R<()> {
        match self.left.checked_sub(n) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => {
                self.left = 0;
                Err(format!(
                    "the checkpoint exceeds the reader's limit of {} {} for {} ({}); refusing it \
                     as corrupt or hostile",
                    self.limit, self.what, self.basis, self.cause
                ))
            }
        }
    }

    /// Charges `n` units given as a `usize`.
    pub(crate) fn charge_usize(&mut self, n: usize) -> R<()> {
        self.charge(n as u64)
    }
}

/// What materializing tensors may cost, each 64 MiB plus four times the file's size: the
/// bytes of the tensors made (views that expand a storage, e.g. stride-0 broadcasts, may
/// exceed the file; nothing honest exceeds it four times over), and the bytes of storage read
/// for them (a storage that several tensors view is re-read when they are not adjacent).
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    bytes: Meter,
    reads: Meter,
}

impl Budget {
    /// The budget for a file of `file_len` bytes.
    pub(crate) fn for_file(file_len: u64) -> Budget {
        let len = usize::try_from(file_len).unwrap_or(usize::MAX);
        Budget {
            bytes: Meter::linear(
                "bytes of tensor data",
                64 << 20,
                4,
                len,
                "a file",
                "tensors that expand their storage far beyond its size",
            ),
            reads: Meter::linear(
                "bytes of storage read",
                64 << 20,
                4,
                len,
                "a file",
                "large storages re-read for many tensors",
            ),
        }
    }

    /// Charges `n` bytes of materialized data.
    pub(crate) fn bytes(&mut self, n: usize) -> R<()> {
        self.bytes.charge_usize(n)
    }

    /// Charges `n` bytes read from the file.
    pub(crate) fn read(&mut self, n: usize) -> R<()> {
        self.reads.charge_usize(n)
    }
}

/// A zeroed buffer of `n` bytes, or an error if the allocator refuses (a size read from a
/// file must never abort the process).
pub(crate) fn alloc_bytes(n: usize) -> R<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| format!("cannot allocate {n} bytes for the checkpoint's data (out of memory?)"))?;
    v.resize(n, 0);
    Ok(v)
}

/// An empty vector with room for `n` bytes, or an error if the allocator refuses.
pub(crate) fn with_capacity(n: usize) -> R<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| format!("cannot allocate {n} bytes for the checkpoint's data (out of memory?)"))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meters_name_their_limit() {
        let mut m = Meter::linear("objects", 10, 2, 5, "a pickle", "a test");
        assert!(m.charge(20).is_ok());
        let e = m.charge(1).unwrap_err();
        assert!(
            e.contains("limit of 20 objects for a pickle of 5 bytes (a test)"),
            "{e}"
        );
        assert!(m.charge(1).is_err());
        assert!(alloc_bytes(usize::MAX).is_err());
        assert_eq!(alloc_bytes(3).unwrap(), vec![0, 0, 0]);
    }
}
