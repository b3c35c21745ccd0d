//! The object tree of a checkpoint, as read by the restricted unpickler.

use super::tensor::TensorData;

/// One node of a checkpoint's object tree.
///
/// A PyTorch checkpoint is a pickled Python object (usually a dict); this is that object with
/// Python types mapped onto Rust ones. A safetensors file is seen as one flat `Dict` of
/// `Str` keys to `Tensor`s. Sets and frozensets become `List`s. Objects of the few allowed
/// classes that carry no data this crate needs (`torch.device`, ...) become `Object`s.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Python `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// An integer too large for `i64`: its little-endian two's-complement bytes, as pickled.
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// A `str`.
    Str(String),
    /// A `bytes` or `bytearray`.
    Bytes(Vec<u8>),
    /// A `list` (also a `set` or `frozenset`).
    List(Vec<Value>),
    /// A `tuple`.
    Tuple(Vec<Value>),
    /// A `dict` or `OrderedDict`, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A tensor (or `nn.Parameter`), materialized contiguous.
    Tensor(TensorData),
    /// An instance (or the class itself, when `args` is empty) of an allowed class whose
    /// contents this reader keeps only as constructor arguments, e.g. `torch.device('cuda', 0)`
    /// is `Object { class: "torch.device", args: [Str("cuda"), Int(0)] }`.
    Object {
        /// Fully qualified class name, `module.name`.
        class: String,
        /// The constructor arguments, as pickled.
        args: Vec<Value>,
    },
}

impl Value {
    /// For a `Dict`, the value under the string key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(entries) => entries.iter().find_map(|(k, v)| match k {
                Value::Str(s) if s == key => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }

    /// The tensor, if this is a `Tensor`.
    pub fn as_tensor(&self) -> Option<&TensorData> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The entries, if this is a `Dict`.
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(e) => Some(e),
            _ => None,
        }
    }

    /// The items, if this is a `List` or a `Tuple`.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// The string, if this is a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an `Int` (or a `Bool`, as Python treats it).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The number, if this is a `Float` or an `Int`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// Whether this is a `Dict` whose keys are all strings and whose values are all tensors
    /// (a flat state dict). An empty dict counts.
    pub fn is_tensor_dict(&self) -> bool {
        match self {
            Value::Dict(e) => e
                .iter()
                .all(|(k, v)| matches!(k, Value::Str(_)) && matches!(v, Value::Tensor(_))),
            _ => false,
        }
    }

    /// The Python-like type name: `"dict"`, `"list"`, `"tensor"`, ...
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Tensor(_) => "tensor",
            Value::Object { .. } => "object",
        }
    }

    /// A one-line description: `dict of 12 tensors`, `list of 962 tensors`,
    /// `dict with keys ["decay", "num_updates", "shadow_params"]`, `int 3`, ...
    pub fn summary(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("bool {}", if *b { "True" } else { "False" }),
            Value::Int(i) => format!("int {i}"),
            Value::BigInt(b) => format!("int ({} bytes)", b.len()),
            Value::Float(f) => format!("float {f}"),
            Value::Str(s) => format!("str {:?}", truncate(s, 40)),
            Value::Bytes(b) => format!("bytes ({} bytes)", b.len()),
            Value::Tensor(t) => format!("tensor {} {:?}", t.dtype, t.shape),
            Value::Object { class, .. } => format!("object {class}"),
            Value::List(items) | Value::Tuple(items) => {
                let kind = self.type_name();
                if items.is_empty() {
                    format!("empty {kind}")
                } else if items.iter().all(|v| matches!(v, Value::Tensor(_))) {
                    format!("{kind} of {} tensors", items.len())
                } else if items.iter().all(Value::is_tensor_dict) {
                    format!("{kind} of {} tensor dicts", items.len())
                } else {
                    let kinds: Vec<&str> = items.iter().take(8).map(Value::type_name).collect();
                    let more = if items.len() > 8 { ", ..." } else { "" };
                    format!("{kind} of {} items ({}{more})", items.len(), kinds.join(", "))
                }
            }
            Value::Dict(entries) => {
                if entries.is_empty() {
                    "empty dict".into()
                } else if self.is_tensor_dict() {
                    format!("dict of {} tensors", entries.len())
                } else {
                    let keys: Vec<String> = entries.iter().take(8).map(|(k, _)| key_repr(k)).collect();
                    let more = if entries.len() > 8 {
                        format!(", ... ({} keys)", entries.len())
                    } else {
                        String::new()
                    };
                    format!("dict with keys [{}{more}]", keys.join(", "))
                }
            }
        }
    }

    /// A multi-line outline of the top two levels, for error messages that must help the
    /// caller pick a [`Select::Path`](super::Select::Path).
    pub fn outline(&self) -> String {
        const MAX: usize = 24;
        let mut out = format!("top level: {}", self.summary());
        let children: Vec<(String, &Value)> = match self {
            Value::Dict(e) => e.iter().map(|(k, v)| (key_repr(k), v)).collect(),
            Value::List(v) | Value::Tuple(v) => v.iter().enumerate().map(|(i, x)| (format!("[{i}]"), x)).collect(),
            _ => Vec::new(),
        };
        if self.is_tensor_dict() {
            return out;
        }
        for (name, v) in children.iter().take(MAX) {
            out.push_str(&format!("\n  {name}: {}", v.summary()));
        }
        if children.len() > MAX {
            out.push_str(&format!("\n  ... ({} more)", children.len() - MAX));
        }
        out
    }
}

/// How a dict key is shown in messages: strings quoted, other keys summarized.
pub(crate) fn key_repr(k: &Value) -> String {
    match k {
        Value::Str(s) => format!("{:?}", truncate(s, 60)),
        Value::Int(i) => i.to_string(),
        other => other.summary(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let t = Value::Tensor(TensorData::from_f32(vec![2], &[1.0, 2.0]));
        let d = Value::Dict(vec![(Value::Str("a".into()), t.clone())]);
        assert_eq!(d.summary(), "dict of 1 tensors");
        assert!(d.is_tensor_dict());
        let l = Value::List(vec![t.clone(), t]);
        assert_eq!(l.summary(), "list of 2 tensors");
        let root = Value::Dict(vec![
            (Value::Str("model".into()), d.clone()),
            (Value::Str("step".into()), Value::Int(7)),
        ]);
        let o = root.outline();
        assert!(o.contains("\"model\": dict of 1 tensors"), "{o}");
        assert!(o.contains("\"step\": int 7"), "{o}");
        assert_eq!(root.get("step"), Some(&Value::Int(7)));
        assert!(root.get("nope").is_none());
    }
}
