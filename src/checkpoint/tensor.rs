//! Element types, host tensors and ordered state dicts.

use std::collections::HashMap;
use std::fmt;

use crate::error::{Error, Result};

/// The element type of a tensor read from (or written to) a checkpoint.
///
/// The names follow safetensors' (`F32`, `BF16`, ...); PyTorch's storage classes map onto
/// them (`FloatStorage` is [`DType::F32`], `HalfStorage` is [`DType::F16`], `LongStorage` is
/// [`DType::I64`], `CharStorage` is [`DType::I8`], `ByteStorage` is [`DType::U8`], ...).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 64-bit IEEE float (`torch.float64`).
    F64,
    /// 32-bit IEEE float (`torch.float32`).
    F32,
    /// 16-bit IEEE half float (`torch.float16`).
    F16,
    /// bfloat16 (`torch.bfloat16`): the top 16 bits of an `f32`.
    BF16,
    /// Signed 64-bit integer (`torch.int64`).
    I64,
    /// Signed 32-bit integer (`torch.int32`).
    I32,
    /// Signed 16-bit integer (`torch.int16`).
    I16,
    /// Signed 8-bit integer (`torch.int8`).
    I8,
    /// Unsigned 8-bit integer (`torch.uint8`).
    U8,
    /// Boolean stored as one byte, 0 or 1 (`torch.bool`).
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// The safetensors spelling of the type (`"F32"`, `"BF16"`, `"BOOL"`, ...).
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
        }
    }

    /// Parses a safetensors dtype name; `None` for types this crate does not handle
    /// (`U16`, `F8_E4M3`, complex types, ...).
    pub fn from_safetensors_name(name: &str) -> Option<DType> {
        Some(match name {
            "F64" => DType::F64,
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "I64" => DType::I64,
            "I32" => DType::I32,
            "I16" => DType::I16,
            "I8" => DType::I8,
            "U8" => DType::U8,
            "BOOL" => DType::Bool,
            _ => return None,
        })
    }

    /// Whether the type is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
        })
    }
}

/// The number of elements of `shape` (1 for a 0-dim tensor), or `None` on overflow.
pub(crate) fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// A dense host tensor: contiguous, row-major (C order), little-endian bytes.
///
/// The fields are public so that callers can move the bytes out without a copy; a value whose
/// `data` length does not match `shape` and `dtype` is reported as [`Error::Shape`] by every
/// function that reads it. [`TensorData::new`] checks this up front.
#[derive(Clone, PartialEq)]
pub struct TensorData {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first; empty for a 0-dim (scalar) tensor.
    pub shape: Vec<usize>,
    /// `numel() * dtype.size_in_bytes()` bytes, row-major, little-endian.
    pub data: Vec<u8>,
}

impl fmt::Debug for TensorData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bytes can be hundreds of megabytes: show only their count.
        f.debug_struct("TensorData")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("nbytes", &self.data.len())
            .finish()
    }
}

impl TensorData {
    /// Builds a tensor, checking that `data` holds exactly `shape`'s element count of `dtype`.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> Result<Self> {
        let t = TensorData { dtype, shape, data };
        t.check_len()?;
        Ok(t)
    }

    /// Number of elements: the product of `shape` (1 for a 0-dim tensor). Saturates at
    /// `usize::MAX` if the product overflows (such a tensor cannot hold data anyway).
    pub fn numel(&self) -> usize {
        checked_numel(&self.shape).unwrap_or(usize::MAX)
    }

    /// Number of bytes the data should have: `numel() * dtype.size_in_bytes()`.
    pub fn expected_nbytes(&self) -> Option<usize> {
        checked_numel(&self.shape)?.checked_mul(self.dtype.size_in_bytes())
    }

    /// Checks that `data` has the length that `shape` and `dtype` call for.
    pub fn check_len(&self) -> Result<()> {
        match self.expected_nbytes() {
            Some(n) if n == self.data.len() => Ok(()),
            Some(n) => Err(Error::Shape(format!(
                "tensor of dtype {} and shape {:?} needs {} bytes but holds {}",
                self.dtype,
                self.shape,
                n,
                self.data.len()
            ))),
            None => Err(Error::Shape(format!(
                "tensor shape {:?} has more elements than this machine can address",
                self.shape
            ))),
        }
    }

    /// The values converted to `f32`: exact for `f32`, `f16`, `bf16`, small integers and
    /// booleans (0 or 1); `f64` and large 32/64-bit integers are rounded to nearest.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        self.check_len()?;
        let d = &self.data;
        let v: Vec<f32> = match self.dtype {
            DType::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect(),
            DType::F16 => d
                .chunks_exact(2)
                .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            DType::BF16 => d
                .chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            DType::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect(),
            DType::I32 => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
            DType::I16 => d
                .chunks_exact(2)
                .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])))
                .collect(),
            DType::I8 => d.iter().map(|&b| f32::from(b as i8)).collect(),
            DType::U8 => d.iter().map(|&b| f32::from(b)).collect(),
            DType::Bool => d.iter().map(|&b| if b != 0 { 1.0 } else { 0.0 }).collect(),
        };
        Ok(v)
    }

    /// An `f32` tensor holding `values` in row-major order.
    ///
    /// This does not check that `values.len()` equals the element count of `shape`; a
    /// mismatched tensor is reported as [`Error::Shape`] by whatever reads it next
    /// ([`TensorData::to_f32_vec`], [`save_safetensors`](super::save_safetensors), ...).
    /// Call [`TensorData::check_len`] to check at once.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        let mut data = Vec::with_capacity(values.len().saturating_mul(4));
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        TensorData {
            dtype: DType::F32,
            shape,
            data,
        }
    }
}

impl TensorData {
    /// The tensor with its values rounded to another floating-point `dtype` (`F64`, `F32`,
    /// `F16`, `BF16`; round to nearest even), e.g. to store f32 weights in half precision.
    /// Non-float tensors and targets are an error.
    pub fn to_float_dtype(&self, dtype: DType) -> Result<TensorData> {
        if !self.dtype.is_float() || !dtype.is_float() {
            return Err(Error::InvalidInput(format!(
                "can only convert between float dtypes, not {} to {}",
                self.dtype, dtype
            )));
        }
        if dtype == self.dtype {
            return Ok(self.clone());
        }
        let values = self.to_f32_vec()?;
        let mut data = Vec::with_capacity(values.len() * dtype.size_in_bytes());
        for &v in &values {
            match dtype {
                DType::F64 => data.extend_from_slice(&f64::from(v).to_le_bytes()),
                DType::F32 => data.extend_from_slice(&v.to_le_bytes()),
                DType::F16 => data.extend_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes()),
                _ => data.extend_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes()),
            }
        }
        TensorData::new(dtype, self.shape.clone(), data)
    }
}

/// An ordered map from parameter names to tensors: a model's `state_dict`.
///
/// The order is the order in the file (for PyTorch pickles, `state_dict()`'s registration
/// order; for safetensors, the order of the tensors' data in the file). Lookups by name are
/// O(1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateDict {
    entries: Vec<(String, TensorData)>,
    index: HashMap<String, usize>,
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The tensor named `key`.
    pub fn get(&self, key: &str) -> Option<&TensorData> {
        self.index.get(key).and_then(|&i| self.entries.get(i)).map(|(_, t)| t)
    }

    /// The tensor named `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut TensorData> {
        match self.index.get(key) {
            Some(&i) => self.entries.get_mut(i).map(|(_, t)| t),
            None => None,
        }
    }

    /// Whether a tensor named `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// `(name, tensor)` pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TensorData)> + '_ {
        self.entries.iter().map(|(k, t)| (k.as_str(), t))
    }

    /// Inserts a tensor. A new name goes at the end; an existing name keeps its position
    /// and its old tensor is returned.
    pub fn insert(&mut self, key: String, tensor: TensorData) -> Option<TensorData> {
        if let Some(&i) = self.index.get(&key) {
            if let Some(slot) = self.entries.get_mut(i) {
                return Some(std::mem::replace(&mut slot.1, tensor));
            }
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, tensor));
        None
    }

    /// Removes and returns the tensor named `key`; the others keep their order.
    pub fn remove(&mut self, key: &str) -> Option<TensorData> {
        let i = self.index.remove(key)?;
        if i >= self.entries.len() {
            return None;
        }
        let (_, t) = self.entries.remove(i);
        for v in self.index.values_mut() {
            if *v > i {
                *v -= 1;
            }
        }
        Some(t)
    }

    /// Removes `prefix` from every name, but only if ALL names start with it (e.g.
    /// `"module."`, which `torch.nn.DataParallel` adds). Returns whether it stripped; an
    /// empty dict or an empty prefix is left alone.
    pub fn strip_prefix(&mut self, prefix: &str) -> bool {
        if prefix.is_empty() || self.entries.is_empty() || !self.entries.iter().all(|(k, _)| k.starts_with(prefix)) {
            return false;
        }
        for (k, _) in self.entries.iter_mut() {
            k.drain(..prefix.len());
        }
        self.rebuild_index();
        true
    }

    /// The `(name, tensor)` pairs, in order.
    pub fn into_entries(self) -> Vec<(String, TensorData)> {
        self.entries
    }

    fn rebuild_index(&mut self) {
        self.index = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
    }
}

impl FromIterator<(String, TensorData)> for StateDict {
    /// Collects pairs in order; a repeated name keeps its first position and its last tensor.
    fn from_iter<I: IntoIterator<Item = (String, TensorData)>>(iter: I) -> Self {
        let mut sd = StateDict::new();
        for (k, t) in iter {
            sd.insert(k, t);
        }
        sd
    }
}

impl IntoIterator for StateDict {
    type Item = (String, TensorData);
    type IntoIter = std::vec::IntoIter<(String, TensorData)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: f32) -> TensorData {
        TensorData::from_f32(vec![1], &[v])
    }

    #[test]
    fn state_dict_keeps_order_and_replaces_in_place() {
        let mut sd = StateDict::new();
        assert!(sd.insert("b".into(), t(1.0)).is_none());
        assert!(sd.insert("a".into(), t(2.0)).is_none());
        assert!(sd.insert("c".into(), t(3.0)).is_none());
        assert_eq!(sd.insert("a".into(), t(4.0)), Some(t(2.0)));
        assert_eq!(sd.keys().collect::<Vec<_>>(), ["b", "a", "c"]);
        assert_eq!(sd.remove("b"), Some(t(1.0)));
        assert_eq!(sd.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(sd.get("c"), Some(&t(3.0)));
        assert_eq!(sd.get("a"), Some(&t(4.0)));
        assert!(sd.remove("zz").is_none());
        assert_eq!(sd.len(), 2);
    }

    #[test]
    fn strip_prefix_only_when_all_keys_carry_it() {
        let mut sd: StateDict = [("module.a".to_string(), t(1.0)), ("b".to_string(), t(2.0))]
            .into_iter()
            .collect();
        assert!(!sd.strip_prefix("module."));
        sd.remove("b");
        sd.insert("module.c".into(), t(3.0));
        assert!(sd.strip_prefix("module."));
        assert_eq!(sd.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(sd.get("c"), Some(&t(3.0)));
        assert!(!StateDict::new().strip_prefix("x"));
    }

    #[test]
    fn conversions_to_f32() {
        let h = TensorData::new(
            DType::F16,
            vec![2],
            [half::f16::from_f32(1.5).to_bits(), half::f16::from_f32(-2.0).to_bits()]
                .iter()
                .flat_map(|b| b.to_le_bytes())
                .collect(),
        )
        .unwrap();
        assert_eq!(h.to_f32_vec().unwrap(), vec![1.5, -2.0]);
        let b = TensorData::new(
            DType::BF16,
            vec![],
            half::bf16::from_f32(0.25).to_bits().to_le_bytes().to_vec(),
        )
        .unwrap();
        assert_eq!(b.numel(), 1);
        assert_eq!(b.to_f32_vec().unwrap(), vec![0.25]);
        let i = TensorData::new(DType::I8, vec![3], vec![0xff, 0, 7]).unwrap();
        assert_eq!(i.to_f32_vec().unwrap(), vec![-1.0, 0.0, 7.0]);
        let bad = TensorData::from_f32(vec![3], &[1.0]);
        assert!(matches!(bad.to_f32_vec(), Err(Error::Shape(_))));
        assert!(TensorData::new(DType::F32, vec![usize::MAX, 2], vec![]).is_err());
        assert_eq!(TensorData::from_f32(vec![usize::MAX, 2], &[]).numel(), usize::MAX);
    }

    #[test]
    fn float_casts_round_to_nearest_and_refuse_integers() {
        let t = TensorData::from_f32(vec![4], &[1.0, 1.0 + 1.0 / 4096.0, -3.140625, 65520.0]);
        let h = t.to_float_dtype(DType::F16).unwrap();
        assert_eq!((h.dtype, h.data.len()), (DType::F16, 8));
        // 1 + 2⁻¹² is below half an f16 ulp of 1 (2⁻¹¹) and rounds to 1; -3.140625 needs 7
        // mantissa bits (exact); 65520 is the tie between 65504 (odd) and 2¹⁶, so it rounds
        // to even, past f16's largest finite value, to infinity.
        assert_eq!(h.to_f32_vec().unwrap(), vec![1.0, 1.0, -3.140625, f32::INFINITY]);
        let back = h.to_float_dtype(DType::F32).unwrap();
        assert_eq!(back.to_f32_vec().unwrap(), h.to_f32_vec().unwrap());
        let b = t.to_float_dtype(DType::BF16).unwrap();
        assert_eq!(b.to_f32_vec().unwrap()[2], -3.140625);
        let i = TensorData::new(DType::I8, vec![1], vec![1]).unwrap();
        assert!(i.to_float_dtype(DType::F16).is_err());
        assert!(t.to_float_dtype(DType::I32).is_err());
    }
}
