//! A restricted pickle virtual machine that never executes anything.
//!
//! It implements the opcodes of pickle protocols 0-5 on its own object model. `GLOBAL` and
//! `STACK_GLOBAL` resolve only against a short allow-list of what `torch.save` writes for
//! state dicts (tensor rebuild functions, storage types, `OrderedDict`, ...); everything else
//! is refused before any of it is used. `REDUCE`, `NEWOBJ` and friends then apply the allowed
//! callables as Rust emulations. Tensors come out as references into storages
//! ([`TensorRef`]); the container format (zip or legacy) supplies the bytes later.
//!
//! Hostile input:
//!
//! * every length is checked against the bytes that remain before anything is allocated;
//! * nothing recurses on the pickle's nesting except behind [`MAX_DEPTH`]: the emulated calls
//!   do not nest (`_rebuild_from_type_v2` may wrap only a plain rebuild function), tuple dict
//!   keys and the conversion to [`Value`] are depth-limited, and teardown is iterative;
//! * containers are shared, never copied, where Python shares them (the memo, `REDUCE`
//!   arguments, `torch.Size` of a tuple); the emulations that must copy (`set`,
//!   `OrderedDict`, `torch.device`, ...) and all hashing are charged to [`Meter`]s that grow
//!   linearly with the pickle's size, so a few hundred bytes of memo references cannot make
//!   the reader hash, copy or convert an exponential number of objects;
//! * tuples used as dict keys are hashed by structural identity, computed once per tuple
//!   object (shared tuples are not re-walked).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::limits::{Meter, MAX_DEPTH, MAX_DIMS, R};
use super::tensor::{DType, TensorData};
use super::text::printable;
use super::value::Value;

/// An allowed global: what the reader emulates in place of a Python callable or class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Callable {
    RebuildTensorV2,
    RebuildTensor,
    RebuildParameter,
    RebuildParameterWithState,
    RebuildFromTypeV2,
    OrderedDict,
    Set,
    FrozenSet,
    ByteArray,
    CodecsEncode,
    TorchSize,
    Device,
    TensorClass,
    ParameterClass,
    Storage(DType),
}

/// A resolved global: its kind and its qualified name.
#[derive(Debug)]
pub(crate) struct GlobalRef {
    pub(crate) kind: Callable,
    pub(crate) qualname: String,
}

/// A storage that a tensor views: a record of the container plus an optional legacy view.
#[derive(Debug)]
pub(crate) struct StorageRef {
    /// The storage's key (zip: `data/<key>`; legacy: the key in the storage list).
    pub(crate) key: String,
    pub(crate) dtype: DType,
    /// Legacy storage views: (offset, size) in elements of the root storage.
    pub(crate) view: Option<(u64, u64)>,
    pub(crate) type_name: String,
    /// The (root) storage's element count as declared, if known.
    pub(crate) numel: Option<u64>,
}

/// A tensor as pickled: a strided view of a storage.
#[derive(Debug)]
pub(crate) struct TensorRef {
    pub(crate) storage: Rc<StorageRef>,
    pub(crate) offset: usize,
    pub(crate) shape: Vec<usize>,
    pub(crate) stride: Vec<usize>,
}

/// What a persistent id (`BINPERSID`) declares about a storage.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StorageDecl {
    pub(crate) dtype: DType,
    /// The element count the persistent id declares.
    pub(crate) numel: u64,
}

/// Whether persistent ids are torch storages or are refused (a bare pickle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persistent {
    Refuse,
    TorchStorages,
}

/// The VM's objects. Containers are shared (`Rc<RefCell<...>>`) because pickles share them
/// through the memo, exactly as Python does.
#[derive(Clone)]
pub(crate) enum Obj {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    List(Rc<RefCell<Vec<Obj>>>),
    Tuple(Rc<RefCell<Vec<Obj>>>),
    Dict(Rc<RefCell<DictObj>>),
    Global(Rc<GlobalRef>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
    Object(Rc<RefCell<ObjectObj>>),
}

/// A dict: entries in insertion order plus an index over hashable keys.
#[derive(Default)]
pub(crate) struct DictObj {
    entries: Vec<(Obj, Obj)>,
    index: HashMap<HKey, usize>,
}

/// An instance of an allowed opaque class (`torch.device`).
pub(crate) struct ObjectObj {
    class: String,
    args: Vec<Obj>,
}

/// Python-like hash key: ints, bools and integral floats compare equal; objects by identity;
/// tuples by the structural identity [`TupleKeys`] gives them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HKey {
    None,
    Int(i64),
    Big(Rc<[u8]>),
    Float(u64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(u64),
    Ptr(usize),
}

/// Structural identities of the tuples used as dict keys: equal tuples get equal ids. Each
/// tuple object is keyed once, by address (tuples never change once built, and the VM's
/// registry keeps every one alive, so an address is never reused), so a tuple shared many
/// times through the memo costs its length once, not its expanded size.
#[derive(Default)]
struct TupleKeys {
    by_ptr: HashMap<usize, u64>,
    by_items: HashMap<Vec<HKey>, u64>,
}

impl Obj {
    fn type_name(&self) -> &'static str {
        match self {
            Obj::None => "None",
            Obj::Bool(_) => "bool",
            Obj::Int(_) | Obj::BigInt(_) => "int",
            Obj::Float(_) => "float",
            Obj::Str(_) => "str",
            Obj::Bytes(_) => "bytes",
            Obj::List(_) => "list",
            Obj::Tuple(_) => "tuple",
            Obj::Dict(_) => "dict",
            Obj::Global(_) => "class or function",
            Obj::Storage(_) => "storage",
            Obj::Tensor(_) => "tensor",
            Obj::Object(_) => "object",
        }
    }
}

impl DictObj {
    fn set(&mut self, key: Obj, value: Obj, hk: HKey) {
        if let Some(&i) = self.index.get(&hk) {
            if let Some(slot) = self.entries.get_mut(i) {
                slot.1 = value;
                return;
            }
        }
        self.index.insert(hk, self.entries.len());
        self.entries.push((key, value));
    }
}

/// Resolves `module.name` against the allow-list, or explains the refusal.
pub(crate) fn resolve_global(module: &str, name: &str) -> R<Callable> {
    use Callable::*;
    let kind = match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor") => RebuildTensor,
        ("torch._utils", "_rebuild_parameter") => RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => RebuildParameterWithState,
        ("torch._tensor", "_rebuild_from_type_v2") => RebuildFromTypeV2,
        ("collections", "OrderedDict") => OrderedDict,
        ("builtins" | "__builtin__", "set") => Set,
        ("builtins" | "__builtin__", "frozenset") => FrozenSet,
        ("builtins" | "__builtin__", "bytearray") => ByteArray,
        ("_codecs", "encode") => CodecsEncode,
        ("torch", "Size") => TorchSize,
        ("torch", "device") => Device,
        ("torch" | "torch._tensor", "Tensor") => TensorClass,
        ("torch.nn.parameter", "Parameter") => ParameterClass,
        ("torch", storage) => match storage_dtype(storage) {
            Some(d) => Storage(d),
            None => return Err(refusal(module, name)),
        },
        _ => return Err(refusal(module, name)),
    };
    Ok(kind)
}

fn storage_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "DoubleStorage" => DType::F64,
        "FloatStorage" => DType::F32,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" => DType::U8,
        "BoolStorage" => DType::Bool,
        _ => return None,
    })
}

/// The message for a global outside the allow-list.
fn refusal(module: &str, name: &str) -> String {
    let full = printable(&format!("{module}.{name}")).into_owned();
    let hint = if module == "numpy" || module.starts_with("numpy.") {
        " (numpy arrays and scalars are not supported: convert them to torch tensors or \
         Python numbers before saving)"
    } else if module == "torch" && name.ends_with("Storage") {
        " (this storage type is not supported; supported element types are f64, f32, f16, \
         bf16, i64, i32, i16, i8, u8 and bool)"
    } else if module.starts_with("torch.nn.modules") || module == "__main__" {
        " (the file seems to pickle a whole model object rather than its state_dict)"
    } else if module.starts_with("torch") {
        " (this torch object is outside what plain state dicts contain)"
    } else {
        ""
    };
    format!(
        "refused to load: the pickle references `{full}`{hint}; this reader never executes \
         code from checkpoints. If this is a genuine state dict, re-save it with plain tensors \
         (torch.save(model.state_dict()))"
    )
}

/// The virtual machine for one pickle.
pub(crate) struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    /// Whether `data` may be only a prefix of the pickle (more of the file follows).
    partial: bool,
    /// Set when a partial input ran out: the caller may retry with more of the file.
    starved: bool,
    /// Elements the emulations copy or index (`set(...)`, `OrderedDict(...)`, tuple keys,
    /// tensor shapes, ...): bounds the memory beyond what the opcodes themselves create.
    copies: Meter,
    /// Bytes hashed and entries scanned: bounds the time spent beyond one pass per opcode.
    work: Meter,
    tuple_keys: TupleKeys,
    stack: Vec<Obj>,
    marks: Vec<Vec<Obj>>,
    memo: HashMap<u64, Obj>,
    /// Every container created, so that teardown can empty them iteratively.
    registry: Vec<Obj>,
    persistent: Persistent,
    /// Storage keys seen in persistent ids, in first-seen order, with their declarations.
    storages: Vec<(String, StorageDecl)>,
    storage_index: HashMap<String, usize>,
}

impl Drop for Vm<'_> {
    fn drop(&mut self) {
        // Empty every container first: children stay alive through the registry, so no
        // drop below recurses, however deeply the pickle nested (or cycled) its objects.
        for o in &self.registry {
            match o {
                Obj::List(l) | Obj::Tuple(l) => drop(std::mem::take(&mut *l.borrow_mut())),
                Obj::Dict(d) => drop(std::mem::take(&mut *d.borrow_mut())),
                Obj::Object(ob) => drop(std::mem::take(&mut ob.borrow_mut().args)),
                _ => {}
            }
        }
    }
}

impl<'a> Vm<'a> {
    /// A VM over `data`, which must start with the pickle's first opcode; `data` may be only
    /// a prefix of the pickle if `partial`, and after a failed [`Vm::run`], [`Vm::starved`]
    /// says whether more input might have helped.
    pub(crate) fn with_input(data: &'a [u8], partial: bool, persistent: Persistent) -> Self {
        Vm {
            data,
            pos: 0,
            partial,
            starved: false,
            copies: Meter::linear(
                "copied or indexed elements",
                1 << 20,
                2,
                data.len(),
                "a pickle",
                "large containers copied over and over by set, OrderedDict, torch.device or tensor shapes",
            ),
            work: Meter::linear(
                "hashed bytes and scanned entries",
                1 << 26,
                64,
                data.len(),
                "a pickle",
                "long strings used as dict keys over and over",
            ),
            tuple_keys: TupleKeys::default(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            registry: Vec::new(),
            persistent,
            storages: Vec::new(),
            storage_index: HashMap::new(),
        }
    }

    /// The byte after the `STOP` opcode (valid after [`Vm::run`] succeeded).
    pub(crate) fn end(&self) -> usize {
        self.pos
    }

    /// Whether the last [`Vm::run`] failed because a partial input ended.
    pub(crate) fn starved(&self) -> bool {
        self.starved
    }

    /// The storages the pickle's persistent ids declared, in first-seen order.
    pub(crate) fn storages(&self) -> &[(String, StorageDecl)] {
        &self.storages
    }

    fn bad(&self, msg: impl std::fmt::Display) -> String {
        format!("corrupt pickle data near byte {}: {msg}", self.pos)
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let rest = self.data.len().saturating_sub(self.pos);
        if n > rest {
            self.starved = self.partial;
            return Err(self.bad(format!(
                "a field claims {n} bytes but only {rest} remain (truncated file?)"
            )));
        }
        let s = self
            .data
            .get(self.pos..self.pos + n)
            .ok_or_else(|| self.bad("out of range"))?;
        self.pos += n;
        Ok(s)
    }

    fn take_len(&mut self, n: u64) -> R<&'a [u8]> {
        let n = usize::try_from(n).map_err(|_| self.bad("length does not fit in memory"))?;
        self.take(n)
    }

    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> R<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn line(&mut self) -> R<&'a str> {
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            self.starved = self.partial;
            return Err(self.bad("unterminated text line (truncated file?)"));
        };
        let s = self.take(n)?;
        self.pos += 1; // the newline
        std::str::from_utf8(s).map_err(|_| self.bad("a text field is not valid UTF-8"))
    }

    fn push(&mut self, o: Obj) {
        self.stack.push(o);
    }

    fn pop(&mut self) -> R<Obj> {
        match self.stack.pop() {
            Some(o) => Ok(o),
            None => Err(self.bad("stack underflow")),
        }
    }

    fn top(&self) -> R<&Obj> {
        self.stack.last().ok_or_else(|| self.bad("stack underflow"))
    }

    fn pop_mark(&mut self) -> R<Vec<Obj>> {
        let prev = self.marks.pop().ok_or_else(|| self.bad("MARK missing"))?;
        Ok(std::mem::replace(&mut self.stack, prev))
    }

    fn new_list(&mut self, items: Vec<Obj>) -> Obj {
        let o = Obj::List(Rc::new(RefCell::new(items)));
        self.registry.push(o.clone());
        o
    }

    fn new_tuple(&mut self, items: Vec<Obj>) -> Obj {
        let o = Obj::Tuple(Rc::new(RefCell::new(items)));
        self.registry.push(o.clone());
        o
    }

    fn new_dict(&mut self) -> Obj {
        let o = Obj::Dict(Rc::new(RefCell::new(DictObj::default())));
        self.registry.push(o.clone());
        o
    }

    fn new_object(&mut self, class: &str, args: Vec<Obj>) -> Obj {
        let o = Obj::Object(Rc::new(RefCell::new(ObjectObj {
            class: class.to_string(),
            args,
        })));
        self.registry.push(o.clone());
        o
    }

    fn memo_get(&mut self, idx: u64) -> R<()> {
        let o = self
            .memo
            .get(&idx)
            .cloned()
            .ok_or_else(|| self.bad(format!("memo entry {idx} is missing")))?;
        self.push(o);
        Ok(())
    }

    fn memo_put(&mut self, idx: u64) -> R<()> {
        let o = self.top()?.clone();
        self.memo.insert(idx, o);
        Ok(())
    }

    fn set_items(&mut self, dict: &Obj, kv: Vec<Obj>) -> R<()> {
        let Obj::Dict(d) = dict else {
            return Err(self.bad(format!("SETITEM on a {}", dict.type_name())));
        };
        if !kv.len().is_multiple_of(2) {
            return Err(self.bad("SETITEMS with an odd number of items"));
        }
        let mut it = kv.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            let hk = self.hkey(&k, 0).map_err(|e| self.bad(e))?;
            d.borrow_mut().set(k, v, hk);
        }
        Ok(())
    }

    /// The hash key of `o` as a dict key (Python's `hash` and `==`, in the forms pickles use).
    fn hkey(&mut self, o: &Obj, depth: usize) -> R<HKey> {
        Ok(match o {
            Obj::None => HKey::None,
            Obj::Bool(b) => HKey::Int(i64::from(*b)),
            Obj::Int(i) => HKey::Int(*i),
            Obj::BigInt(b) => {
                self.work.charge_usize(b.len())?;
                HKey::Big(b.clone())
            }
            Obj::Float(f) => {
                if f.fract() == 0.0 && *f >= -9.2e18 && *f <= 9.2e18 {
                    HKey::Int(*f as i64)
                } else {
                    HKey::Float(f.to_bits())
                }
            }
            Obj::Str(s) => {
                self.work.charge_usize(s.len())?;
                HKey::Str(s.clone())
            }
            Obj::Bytes(b) => {
                self.work.charge_usize(b.len())?;
                HKey::Bytes(b.clone())
            }
            Obj::Tuple(t) => {
                let ptr = Rc::as_ptr(t) as *const u8 as usize;
                if let Some(&id) = self.tuple_keys.by_ptr.get(&ptr) {
                    return Ok(HKey::Tuple(id));
                }
                if depth >= MAX_DEPTH {
                    return Err(format!(
                        "a dict key is a tuple nested more than {MAX_DEPTH} levels deep; refusing \
                         it as corrupt or hostile"
                    ));
                }
                let t = t.clone();
                let items = t.borrow();
                self.copies.charge_usize(items.len())?;
                let mut keys = Vec::with_capacity(items.len());
                for it in items.iter() {
                    keys.push(self.hkey(it, depth + 1)?);
                }
                let next = self.tuple_keys.by_items.len() as u64;
                let id = *self.tuple_keys.by_items.entry(keys).or_insert(next);
                self.tuple_keys.by_ptr.insert(ptr, id);
                HKey::Tuple(id)
            }
            Obj::Global(g) => HKey::Ptr(Rc::as_ptr(g) as *const u8 as usize),
            Obj::Storage(s) => HKey::Ptr(Rc::as_ptr(s) as *const u8 as usize),
            Obj::Tensor(t) => HKey::Ptr(Rc::as_ptr(t) as *const u8 as usize),
            Obj::Object(o) => HKey::Ptr(Rc::as_ptr(o) as *const u8 as usize),
            Obj::List(_) | Obj::Dict(_) => {
                return Err(format!("a {} is used as a dict key (unhashable)", o.type_name()))
            }
        })
    }

    fn append_items(&mut self, target: &Obj, items: Vec<Obj>) -> R<()> {
        match target {
            Obj::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            other => Err(self.bad(format!("APPEND to a {}", other.type_name()))),
        }
    }

    /// Runs to `STOP` and returns the pickled object.
    pub(crate) fn run(&mut self) -> R<Obj> {
        loop {
            let op = self.u8()?;
            match op {
                // ---- framing and protocol
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(self.bad(format!("pickle protocol {p} is not supported (0-5 are)")));
                    }
                }
                0x95 => {
                    self.array::<8>()?; // FRAME: an optimization; the opcodes follow inline
                }
                b'.' => return self.pop(),
                // ---- marks and stack
                b'(' => {
                    let s = std::mem::take(&mut self.stack);
                    self.marks.push(s);
                }
                b'0' => {
                    if self.stack.pop().is_none() {
                        self.pop_mark()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let o = self.top()?.clone();
                    self.push(o);
                }
                // ---- constants and numbers
                b'N' => self.push(Obj::None),
                0x88 => self.push(Obj::Bool(true)),
                0x89 => self.push(Obj::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Obj::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Obj::Int(i64::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Obj::Int(i64::from(v)));
                }
                0x8a => {
                    let n = self.u8()?;
                    let b = self.take(usize::from(n))?;
                    self.push(long_from_bytes(b));
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.array()?);
                    let n = u64::try_from(n).map_err(|_| self.bad("LONG4 with a negative length"))?;
                    let b = self.take_len(n)?;
                    self.push(long_from_bytes(b));
                }
                b'I' => {
                    let line = self.line()?;
                    let o = match line {
                        "00" => Obj::Bool(false),
                        "01" => Obj::Bool(true),
                        s => Obj::Int(
                            s.trim()
                                .parse::<i64>()
                                .map_err(|_| self.bad(format!("bad INT literal {s:?}")))?,
                        ),
                    };
                    self.push(o);
                }
                b'L' => {
                    let line = self.line()?;
                    let s = line.trim().trim_end_matches('L');
                    let v = s
                        .parse::<i64>()
                        .map_err(|_| self.bad(format!("LONG literal {s:?} is not an integer in i64 range")))?;
                    self.push(Obj::Int(v));
                }
                b'F' => {
                    let line = self.line()?;
                    let v = line
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| self.bad(format!("bad FLOAT literal {line:?}")))?;
                    self.push(Obj::Float(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push(Obj::Float(v));
                }
                // ---- strings and bytes
                b'X' => {
                    let n = u32::from_le_bytes(self.array()?);
                    let s = self.take_len(u64::from(n))?;
                    self.push(Obj::Str(String::from_utf8_lossy(s).into()));
                }
                0x8c => {
                    let n = self.u8()?;
                    let s = self.take(usize::from(n))?;
                    self.push(Obj::Str(String::from_utf8_lossy(s).into()));
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.array()?);
                    let s = self.take_len(n)?;
                    self.push(Obj::Str(String::from_utf8_lossy(s).into()));
                }
                b'V' => {
                    let rest = self.data.get(self.pos..).unwrap_or(&[]);
                    let Some(n) = rest.iter().position(|&b| b == b'\n') else {
                        self.starved = self.partial;
                        return Err(self.bad("unterminated UNICODE line"));
                    };
                    let raw = self.take(n)?;
                    self.pos += 1;
                    let s = raw_unicode_unescape(raw).map_err(|e| self.bad(e))?;
                    self.push(Obj::Str(s.into()));
                }
                b'S' => {
                    let line = self.line()?;
                    let bytes = unquote_py_string(line).map_err(|e| self.bad(e))?;
                    self.push(py2_str(bytes));
                }
                b'T' => {
                    let n = i32::from_le_bytes(self.array()?);
                    let n = u64::try_from(n).map_err(|_| self.bad("BINSTRING with a negative length"))?;
                    let s = self.take_len(n)?;
                    self.push(py2_str(s.to_vec()));
                }
                b'U' => {
                    let n = self.u8()?;
                    let s = self.take(usize::from(n))?;
                    self.push(py2_str(s.to_vec()));
                }
                b'B' => {
                    let n = u32::from_le_bytes(self.array()?);
                    let s = self.take_len(u64::from(n))?;
                    self.push(Obj::Bytes(s.into()));
                }
                b'C' => {
                    let n = self.u8()?;
                    let s = self.take(usize::from(n))?;
                    self.push(Obj::Bytes(s.into()));
                }
                0x8e | 0x96 => {
                    let n = u64::from_le_bytes(self.array()?);
                    let s = self.take_len(n)?;
                    self.push(Obj::Bytes(s.into()));
                }
                0x97 => return Err(self.bad("out-of-band buffers (NEXT_BUFFER) are not supported")),
                0x98 => {} // READONLY_BUFFER: bytes are immutable here anyway
                // ---- containers
                b'}' => {
                    let d = self.new_dict();
                    self.push(d);
                }
                b']' | 0x8f => {
                    let l = self.new_list(Vec::new());
                    self.push(l);
                }
                b')' => {
                    let t = self.new_tuple(Vec::new());
                    self.push(t);
                }
                0x85 => {
                    let a = self.pop()?;
                    let t = self.new_tuple(vec![a]);
                    self.push(t);
                }
                0x86 => {
                    let b = self.pop()?;
                    let a = self.pop()?;
                    let t = self.new_tuple(vec![a, b]);
                    self.push(t);
                }
                0x87 => {
                    let c = self.pop()?;
                    let b = self.pop()?;
                    let a = self.pop()?;
                    let t = self.new_tuple(vec![a, b, c]);
                    self.push(t);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let t = self.new_tuple(items);
                    self.push(t);
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    let l = self.new_list(items);
                    self.push(l);
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let l = self.new_list(items);
                    self.push(l);
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = self.new_dict();
                    self.set_items(&d, items)?;
                    self.push(d);
                }
                b'a' => {
                    let v = self.pop()?;
                    let target = self.top()?.clone();
                    self.append_items(&target, vec![v])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    self.append_items(&target, items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top()?.clone();
                    self.set_items(&target, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    self.set_items(&target, items)?;
                }
                // ---- memo
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(u64::from(i))?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.array()?);
                    self.memo_put(u64::from(i))?;
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?;
                }
                b'p' => {
                    let line = self.line()?;
                    let i = line.trim().parse::<u64>().map_err(|_| self.bad("bad PUT index"))?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()?;
                    self.memo_get(u64::from(i))?;
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.array()?);
                    self.memo_get(u64::from(i))?;
                }
                b'g' => {
                    let line = self.line()?;
                    let i = line.trim().parse::<u64>().map_err(|_| self.bad("bad GET index"))?;
                    self.memo_get(i)?;
                }
                // ---- globals and calls
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = self.global(module, name)?;
                    self.push(g);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Obj::Str(m), Obj::Str(n)) = (&module, &name) else {
                        return Err(self.bad("STACK_GLOBAL needs two strings"));
                    };
                    let g = self.global(m, n)?;
                    self.push(g);
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let args = self.tuple_of(&args, "REDUCE")?;
                    let r = self.call(&f, &args.borrow())?;
                    self.push(r);
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let args = self.tuple_of(&args, "NEWOBJ")?;
                    let r = self.call(&cls, &args.borrow())?;
                    self.push(r);
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let empty_kwargs = matches!(&kwargs, Obj::Dict(d) if d.borrow().entries.is_empty());
                    if !empty_kwargs {
                        return Err(self.bad("NEWOBJ_EX with keyword arguments is not supported"));
                    }
                    let args = self.tuple_of(&args, "NEWOBJ_EX")?;
                    let r = self.call(&cls, &args.borrow())?;
                    self.push(r);
                }
                b'i' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let cls = self.global(module, name)?;
                    let args = self.pop_mark()?;
                    let r = self.call(&cls, &args)?;
                    self.push(r);
                }
                b'o' => {
                    let items = self.pop_mark()?;
                    let (cls, args) = items.split_first().ok_or_else(|| self.bad("OBJ without a class"))?;
                    let r = self.call(cls, args)?;
                    self.push(r);
                }
                b'b' => {
                    let _state = self.pop()?;
                    match self.top()? {
                        // Dict state on an (Ordered)dict sets attributes such as
                        // `_metadata`, not items; tensors and opaque objects keep none we need.
                        Obj::Dict(_) | Obj::List(_) | Obj::Tensor(_) | Obj::Object(_) => {}
                        other => {
                            let t = other.type_name();
                            return Err(self.bad(format!("BUILD on a {t}")));
                        }
                    }
                }
                0x82..=0x84 => {
                    return Err("refused to load: the pickle uses the copyreg extension registry \
                                (EXT opcodes); this reader never executes code from checkpoints"
                        .to_string())
                }
                // ---- persistent ids
                b'Q' => {
                    let pid = self.pop()?;
                    let s = self.persistent_load(&pid)?;
                    self.push(s);
                }
                b'P' => return Err(self.bad("text persistent ids (PERSID) are not used by torch.save")),
                other => {
                    self.pos -= 1;
                    return Err(self.bad(format!("unknown opcode 0x{other:02x}")));
                }
            }
        }
    }

    fn global(&mut self, module: &str, name: &str) -> R<Obj> {
        let kind = resolve_global(module, name)?;
        Ok(Obj::Global(Rc::new(GlobalRef {
            kind,
            qualname: format!("{module}.{name}"),
        })))
    }

    /// The tuple `args` is, shared (its items are borrowed by the call, never copied).
    fn tuple_of(&self, args: &Obj, op: &str) -> R<Rc<RefCell<Vec<Obj>>>> {
        match args {
            Obj::Tuple(t) => Ok(t.clone()),
            other => Err(self.bad(format!("{op} arguments are a {}, not a tuple", other.type_name()))),
        }
    }

    fn persistent_load(&mut self, pid: &Obj) -> R<Obj> {
        if self.persistent == Persistent::Refuse {
            return Err(self.bad(
                "this pickle refers to external storages (persistent ids) but is not inside a \
                 torch.save container; open the checkpoint file it came from instead",
            ));
        }
        let Obj::Tuple(t) = pid else {
            return Err(self.bad("a persistent id is not a tuple"));
        };
        let t = t.clone();
        let items = t.borrow();
        let typename = match items.first() {
            Some(Obj::Str(s)) => s.to_string(),
            Some(Obj::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => return Err(self.bad("a persistent id does not start with its type name")),
        };
        if typename == "module" {
            return Err(
                "refused to load: the checkpoint pickles a whole nn.Module class with its \
                        source code; save model.state_dict() instead"
                    .to_string(),
            );
        }
        if typename != "storage" || !(items.len() == 5 || items.len() == 6) {
            return Err(self.bad(format!(
                "unsupported persistent id `{}` with {} fields",
                printable(&typename),
                items.len()
            )));
        }
        let (dtype, type_name) = match &items[1] {
            Obj::Global(g) => match g.kind {
                Callable::Storage(d) => (d, g.qualname.clone()),
                _ => {
                    return Err(self.bad(format!("`{}` is not a storage type", g.qualname)));
                }
            },
            other => return Err(self.bad(format!("storage type is a {}", other.type_name()))),
        };
        let key = match &items[2] {
            Obj::Str(s) => s.to_string(),
            Obj::Int(i) => i.to_string(),
            other => return Err(self.bad(format!("storage key is a {}", other.type_name()))),
        };
        let numel = match &items[4] {
            Obj::Int(n) if *n >= 0 => *n as u64,
            _ => return Err(self.bad("storage size is not a non-negative integer")),
        };
        let view = match items.get(5) {
            None | Some(Obj::None) => None,
            Some(Obj::Tuple(v)) => {
                let v = v.borrow();
                match (v.get(1), v.get(2)) {
                    (Some(Obj::Int(off)), Some(Obj::Int(size))) if *off >= 0 && *size >= 0 => {
                        Some((*off as u64, *size as u64))
                    }
                    _ => return Err(self.bad("malformed storage view metadata")),
                }
            }
            Some(_) => return Err(self.bad("malformed storage view metadata")),
        };
        match self.storage_index.get(&key) {
            Some(&i) => {
                if let Some((_, decl)) = self.storages.get(i) {
                    if decl.dtype != dtype {
                        return Err(self.bad(format!(
                            "storage {} is used both as {} and as {dtype}",
                            printable(&key),
                            decl.dtype
                        )));
                    }
                    if decl.numel != numel {
                        return Err(self.bad(format!(
                            "storage {} is declared with both {} and {numel} elements",
                            printable(&key),
                            decl.numel
                        )));
                    }
                }
            }
            None => {
                self.storage_index.insert(key.clone(), self.storages.len());
                self.storages.push((key.clone(), StorageDecl { dtype, numel }));
            }
        }
        Ok(Obj::Storage(Rc::new(StorageRef {
            key,
            dtype,
            view,
            type_name,
            numel: Some(numel),
        })))
    }

    /// Applies an allowed callable (a Rust emulation; nothing from the file is executed).
    /// The arguments are borrowed: only the emulations that build a new container copy them,
    /// charged to the copy meter. Calls never nest more than two deep.
    fn call(&mut self, f: &Obj, args: &[Obj]) -> R<Obj> {
        let Obj::Global(g) = f else {
            return Err(self.bad(format!("a {} is called as a function", f.type_name())));
        };
        let g = g.clone();
        let nargs = args.len();
        let arity = |ok: bool| -> R<()> {
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "corrupt pickle data: `{}` called with {nargs} arguments",
                    g.qualname
                ))
            }
        };
        match g.kind {
            Callable::RebuildTensorV2 => {
                arity(nargs == 6 || nargs == 7)?;
                if let Some(meta) = args.get(6) {
                    self.check_tensor_metadata(meta)?;
                }
                self.rebuild_tensor(args)
            }
            Callable::RebuildTensor => {
                arity(nargs == 4)?;
                self.rebuild_tensor(args)
            }
            Callable::RebuildParameter | Callable::RebuildParameterWithState => {
                arity(if g.kind == Callable::RebuildParameter {
                    nargs == 3
                } else {
                    nargs == 4
                })?;
                match args.first() {
                    Some(t @ Obj::Tensor(_)) => Ok(t.clone()),
                    _ => Err(self.bad("a parameter is rebuilt from something that is not a tensor")),
                }
            }
            Callable::RebuildFromTypeV2 => {
                arity(nargs == 4)?;
                let (func, new_type, fargs) = (&args[0], &args[1], &args[2]);
                match new_type {
                    Obj::Global(t) if matches!(t.kind, Callable::TensorClass | Callable::ParameterClass) => {}
                    Obj::Global(t) => {
                        return Err(format!(
                            "refused to load: a tensor subclass `{}` is pickled; only plain \
                             tensors and parameters are supported. Re-save with plain tensors \
                             (torch.save(model.state_dict()))",
                            t.qualname
                        ))
                    }
                    _ => return Err(self.bad("malformed _rebuild_from_type_v2")),
                }
                // torch wraps a plain rebuild function here, never itself: refusing the
                // nesting keeps a chain of wrapped calls from recursing down the stack.
                match func {
                    Obj::Global(f)
                        if matches!(
                            f.kind,
                            Callable::RebuildTensorV2
                                | Callable::RebuildTensor
                                | Callable::RebuildParameter
                                | Callable::RebuildParameterWithState
                        ) => {}
                    Obj::Global(f) => {
                        return Err(self.bad(format!(
                            "_rebuild_from_type_v2 wraps `{}`, not a tensor rebuild function \
                             (nested rebuild calls are refused)",
                            f.qualname
                        )))
                    }
                    other => {
                        return Err(self.bad(format!(
                            "_rebuild_from_type_v2 wraps a {}, not a function",
                            other.type_name()
                        )))
                    }
                }
                let fargs = self.tuple_of(fargs, "_rebuild_from_type_v2")?;
                let r = self.call(func, &fargs.borrow())?;
                if !matches!(r, Obj::Tensor(_)) {
                    return Err(self.bad("_rebuild_from_type_v2 did not produce a tensor"));
                }
                Ok(r)
            }
            Callable::OrderedDict => {
                let d = self.new_dict();
                match args {
                    [] => {}
                    [Obj::List(pairs)] | [Obj::Tuple(pairs)] => {
                        let pairs = pairs.clone();
                        let pairs = pairs.borrow();
                        self.copies.charge_usize(pairs.len().saturating_mul(2))?;
                        let mut kv = Vec::with_capacity(pairs.len().saturating_mul(2));
                        for p in pairs.iter() {
                            match p {
                                Obj::Tuple(t) | Obj::List(t) if t.borrow().len() == 2 => {
                                    kv.extend(t.borrow().iter().cloned());
                                }
                                _ => return Err(self.bad("OrderedDict items are not pairs")),
                            }
                        }
                        self.set_items(&d, kv)?;
                    }
                    _ => return Err(self.bad("unsupported OrderedDict arguments")),
                }
                Ok(d)
            }
            Callable::Set | Callable::FrozenSet => match args {
                [] => Ok(self.new_list(Vec::new())),
                [Obj::List(src)] | [Obj::Tuple(src)] => {
                    // A new set is a new container: a copy, charged.
                    self.copies.charge_usize(src.borrow().len())?;
                    let copy = src.borrow().clone();
                    Ok(self.new_list(copy))
                }
                _ => Err(self.bad("unsupported set arguments")),
            },
            Callable::ByteArray => match args {
                [] => Ok(Obj::Bytes(Rc::from(&[][..]))),
                [Obj::Bytes(b)] => Ok(Obj::Bytes(b.clone())),
                [Obj::Str(s), Obj::Str(enc)] => Ok(Obj::Bytes(encode_str(s, enc)?.into())),
                _ => Err(self.bad("unsupported bytearray arguments")),
            },
            Callable::CodecsEncode => match args {
                [Obj::Str(s), Obj::Str(enc)] => Ok(Obj::Bytes(encode_str(s, enc)?.into())),
                [Obj::Str(s)] => Ok(Obj::Bytes(s.as_bytes().into())),
                _ => Err(self.bad("unsupported _codecs.encode arguments")),
            },
            Callable::TorchSize => match args {
                [] => Ok(self.new_tuple(Vec::new())),
                // A tuple is immutable: the size is the same object, as in Python.
                [t @ Obj::Tuple(_)] => Ok(t.clone()),
                [Obj::List(items)] => {
                    let n = items.borrow().len();
                    self.copies.charge_usize(n)?;
                    let copy = items.borrow().clone();
                    Ok(self.new_tuple(copy))
                }
                _ => Err(self.bad("unsupported torch.Size arguments")),
            },
            Callable::Device => {
                self.copies.charge_usize(args.len())?;
                Ok(self.new_object("torch.device", args.to_vec()))
            }
            Callable::TensorClass | Callable::ParameterClass | Callable::Storage(_) => Err(format!(
                "refused to load: the pickle constructs `{}` directly, which torch.save never \
                 does for plain state dicts",
                g.qualname
            )),
        }
    }

    fn check_tensor_metadata(&mut self, meta: &Obj) -> R<()> {
        if let Obj::Dict(d) = meta {
            let d = d.borrow();
            self.work.charge_usize(d.entries.len())?;
            for (k, v) in d.entries.iter() {
                let set = match v {
                    Obj::Bool(b) => *b,
                    Obj::Int(i) => *i != 0,
                    _ => true,
                };
                if set {
                    let name = match k {
                        Obj::Str(s) => printable(s).into_owned(),
                        _ => "?".into(),
                    };
                    return Err(format!(
                        "a tensor carries the lazy `{name}` flag (a conjugate or negative view); \
                         this reader does not support it. Call .resolve_conj()/.resolve_neg() on \
                         such tensors before saving"
                    ));
                }
            }
        }
        Ok(())
    }

    fn rebuild_tensor(&mut self, args: &[Obj]) -> R<Obj> {
        let storage = match args.first() {
            Some(Obj::Storage(s)) => s.clone(),
            _ => return Err(self.bad("a tensor is rebuilt from something that is not a storage")),
        };
        let offset = match args.get(1) {
            Some(Obj::Int(o)) if *o >= 0 => usize::try_from(*o).map_err(|_| self.bad("tensor offset too large"))?,
            _ => return Err(self.bad("tensor storage offset is not a non-negative integer")),
        };
        let shape = self.usize_tuple(args.get(2), "size")?;
        let stride = self.usize_tuple(args.get(3), "stride")?;
        if shape.len() != stride.len() {
            return Err(self.bad(format!(
                "tensor size has {} dimensions but its stride has {}",
                shape.len(),
                stride.len()
            )));
        }
        Ok(Obj::Tensor(Rc::new(TensorRef {
            storage,
            offset,
            shape,
            stride,
        })))
    }

    fn usize_tuple(&mut self, o: Option<&Obj>, what: &str) -> R<Vec<usize>> {
        let items = match o {
            Some(Obj::Tuple(t)) | Some(Obj::List(t)) => t.clone(),
            _ => return Err(self.bad(format!("tensor {what} is not a tuple"))),
        };
        let items = items.borrow();
        if items.len() > MAX_DIMS {
            return Err(self.bad(format!(
                "a tensor {what} has {} dimensions; at most {MAX_DIMS} are accepted",
                items.len()
            )));
        }
        self.copies.charge_usize(items.len())?;
        items
            .iter()
            .map(|x| match x {
                Obj::Int(i) if *i >= 0 => usize::try_from(*i).map_err(|_| self.bad(format!("tensor {what} too large"))),
                Obj::Int(_) => Err(self.bad(format!("negative tensor {what}"))),
                _ => Err(self.bad(format!("tensor {what} holds a non-integer"))),
            })
            .collect()
    }

    /// Converts the object tree to a [`Value`], with tensors as placeholders (correct dtype
    /// and shape, empty data) whose [`TensorRef`]s are appended to `tensors` in depth-first
    /// order (dict entries key first, then value).
    ///
    /// Shared objects are expanded (a `Value` is a tree), so the conversion is charged to
    /// meters proportional to the pickle's length: at most 2^20 nodes plus 4 per byte, and
    /// 64 MiB plus 4 bytes per byte of strings, bytes and shapes. Nesting deeper than
    /// [`MAX_DEPTH`] (or a container that contains itself) is refused.
    pub(crate) fn to_value(&self, root: &Obj, tensors: &mut Vec<Rc<TensorRef>>) -> R<Value> {
        let len = self.pos.max(1);
        let mut conv = Convert {
            nodes: Meter::linear(
                "objects",
                1 << 20,
                4,
                len,
                "a pickle",
                "objects shared through the memo and repeated many times",
            ),
            bytes: Meter::linear(
                "bytes of strings and shapes",
                64 << 20,
                4,
                len,
                "a pickle",
                "long strings shared through the memo and repeated many times",
            ),
            tensors,
        };
        conv.convert(root, 0)
    }
}

/// The state of one [`Vm::to_value`].
struct Convert<'t> {
    nodes: Meter,
    bytes: Meter,
    tensors: &'t mut Vec<Rc<TensorRef>>,
}

impl Convert<'_> {
    fn items(&mut self, items: &[Obj], depth: usize) -> R<Vec<Value>> {
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            out.push(self.convert(it, depth + 1)?);
        }
        Ok(out)
    }

    fn convert(&mut self, o: &Obj, depth: usize) -> R<Value> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "the checkpoint's objects are nested more than {MAX_DEPTH} levels deep (or refer to \
                 themselves); refusing it as corrupt or hostile"
            ));
        }
        self.nodes.charge(1)?;
        Ok(match o {
            Obj::None => Value::None,
            Obj::Bool(b) => Value::Bool(*b),
            Obj::Int(i) => Value::Int(*i),
            Obj::BigInt(b) => {
                self.bytes.charge_usize(b.len())?;
                Value::BigInt(b.to_vec())
            }
            Obj::Float(f) => Value::Float(*f),
            Obj::Str(s) => {
                self.bytes.charge_usize(s.len())?;
                Value::Str(s.to_string())
            }
            Obj::Bytes(b) => {
                self.bytes.charge_usize(b.len())?;
                Value::Bytes(b.to_vec())
            }
            Obj::List(l) => Value::List(self.items(&l.borrow(), depth)?),
            Obj::Tuple(l) => Value::Tuple(self.items(&l.borrow(), depth)?),
            Obj::Dict(d) => {
                let d = d.borrow();
                let mut out = Vec::with_capacity(d.entries.len());
                for (k, v) in d.entries.iter() {
                    let k = self.convert(k, depth + 1)?;
                    let v = self.convert(v, depth + 1)?;
                    out.push((k, v));
                }
                Value::Dict(out)
            }
            Obj::Global(g) => Value::Object {
                class: g.qualname.clone(),
                args: Vec::new(),
            },
            Obj::Storage(s) => {
                self.bytes.charge_usize(s.key.len())?;
                Value::Object {
                    class: s.type_name.clone(),
                    args: vec![Value::Str(s.key.clone())],
                }
            }
            Obj::Object(ob) => {
                let ob = ob.borrow();
                Value::Object {
                    class: ob.class.clone(),
                    args: self.items(&ob.args, depth)?,
                }
            }
            Obj::Tensor(t) => {
                self.bytes.charge_usize(t.shape.len().saturating_mul(8))?;
                self.tensors.push(t.clone());
                Value::Tensor(TensorData {
                    dtype: t.storage.dtype,
                    shape: t.shape.clone(),
                    data: Vec::new(),
                })
            }
        })
    }
}

/// LONG1/LONG4 payload: little-endian two's complement.
fn long_from_bytes(b: &[u8]) -> Obj {
    if b.is_empty() {
        return Obj::Int(0);
    }
    if b.len() <= 8 {
        let neg = b[b.len() - 1] & 0x80 != 0;
        let mut a = if neg { [0xffu8; 8] } else { [0u8; 8] };
        a[..b.len()].copy_from_slice(b);
        return Obj::Int(i64::from_le_bytes(a));
    }
    // Longer encodings may still fit (redundant sign bytes).
    let neg = b[b.len() - 1] & 0x80 != 0;
    let fill = if neg { 0xff } else { 0 };
    if b[8..].iter().all(|&x| x == fill) && ((b[7] & 0x80 != 0) == neg) {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        return Obj::Int(i64::from_le_bytes(a));
    }
    Obj::BigInt(b.into())
}

/// A Python 2 `str`: decoded as UTF-8 like `torch.load`'s default `encoding="utf-8"`, kept as
/// bytes if that fails.
fn py2_str(b: Vec<u8>) -> Obj {
    match String::from_utf8(b) {
        Ok(s) => Obj::Str(s.into()),
        Err(e) => Obj::Bytes(e.into_bytes().into()),
    }
}

fn encode_str(s: &str, enc: &str) -> R<Vec<u8>> {
    match enc.to_ascii_lowercase().replace('_', "-").as_str() {
        "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" => s
            .chars()
            .map(|c| {
                u8::try_from(u32::from(c)).map_err(|_| "a latin-1 string holds a character above U+00FF".to_string())
            })
            .collect(),
        "utf-8" | "utf8" | "ascii" => Ok(s.as_bytes().to_vec()),
        other => Err(format!(
            "unsupported text encoding `{}` in the pickle",
            printable(other)
        )),
    }
}

/// Decodes a protocol-0 `STRING` literal: a quoted Python 2 string with escapes.
fn unquote_py_string(line: &str) -> R<Vec<u8>> {
    let b = line.trim_end().as_bytes();
    let inner = match b {
        [q, inner @ .., q2] if (*q == b'\'' || *q == b'"') && q == q2 => inner,
        _ => return Err("STRING literal is not quoted".into()),
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&c) = inner.get(i) {
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = inner.get(i) else {
            return Err("STRING literal ends with a backslash".into());
        };
        i += 1;
        match e {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\\' | b'\'' | b'"' => out.push(e),
            b'x' => {
                let hex = inner.get(i..i + 2).ok_or("short \\x escape")?;
                let s = std::str::from_utf8(hex).map_err(|_| "bad \\x escape")?;
                out.push(u8::from_str_radix(s, 16).map_err(|_| "bad \\x escape")?);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v: u32 = u32::from(e - b'0');
                let mut n = 1;
                while n < 3 {
                    match inner.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                            n += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// Decodes a protocol-0 `UNICODE` literal (raw-unicode-escape: `\uXXXX`, `\UXXXXXXXX`;
/// every other byte is a Latin-1 character).
fn raw_unicode_unescape(raw: &[u8]) -> R<String> {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        if c == b'\\' {
            let width = match raw.get(i + 1) {
                Some(b'u') => 4,
                Some(b'U') => 8,
                _ => 0,
            };
            if width > 0 {
                let hex = raw.get(i + 2..i + 2 + width).ok_or("short \\u escape")?;
                let s = std::str::from_utf8(hex).map_err(|_| "bad \\u escape")?;
                let v = u32::from_str_radix(s, 16).map_err(|_| "bad \\u escape")?;
                out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                i += 2 + width;
                continue;
            }
        }
        out.push(char::from(c));
        i += 1;
    }
    Ok(out)
}

/// Runs one bare pickle (no persistent ids) and converts it to a [`Value`]; used for the small
/// header pickles of the legacy format and for bare pickle files. Returns the value and the
/// length of the pickle; `partial` as for [`Vm::with_input`], with the error's second part
/// saying whether the input ran out.
pub(crate) fn load_plain(data: &[u8], partial: bool) -> std::result::Result<(Value, usize), (String, bool)> {
    let mut vm = Vm::with_input(data, partial, Persistent::Refuse);
    let root = vm.run().map_err(|e| (e, vm.starved()))?;
    let mut tensors = Vec::new();
    let v = vm.to_value(&root, &mut tensors).map_err(|e| (e, false))?;
    Ok((v, vm.end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(data: &[u8]) -> R<Value> {
        load_plain(data, false).map(|(v, _)| v).map_err(|(e, _)| e)
    }

    #[test]
    fn protocol2_dict_with_mixed_values() {
        // pickle.dumps({'a': 1, 'b': [1.5, 'x', None, True], 'c': (1, 2), 'big': 2**70}, 2)
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'('];
        p.extend_from_slice(b"X\x01\x00\x00\x00aK\x01");
        p.extend_from_slice(b"X\x01\x00\x00\x00b]q\x01(G\x3f\xf8\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xN\x88e");
        p.extend_from_slice(b"X\x01\x00\x00\x00cK\x01K\x02\x86");
        p.extend_from_slice(b"X\x03\x00\x00\x00big\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40");
        p.extend_from_slice(b"u.");
        let v = plain(&p).unwrap();
        assert_eq!(v.get("a"), Some(&Value::Int(1)));
        assert_eq!(
            v.get("b"),
            Some(&Value::List(vec![
                Value::Float(1.5),
                Value::Str("x".into()),
                Value::None,
                Value::Bool(true)
            ]))
        );
        assert_eq!(v.get("c"), Some(&Value::Tuple(vec![Value::Int(1), Value::Int(2)])));
        assert_eq!(v.get("big"), Some(&Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x40])));
    }

    #[test]
    fn long1_small_and_negative() {
        assert!(matches!(long_from_bytes(&[0xff]), Obj::Int(-1)));
        assert!(matches!(long_from_bytes(&[0x00, 0x01]), Obj::Int(256)));
        assert!(matches!(long_from_bytes(&[0xff; 9]), Obj::Int(-1)));
        assert!(matches!(
            long_from_bytes(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]),
            Obj::BigInt(_)
        ));
    }

    #[test]
    fn memo_shares_containers_like_python() {
        // d = {}; x = [d, d] with d filled after memoization: ]q\x00(}q\x01h\x01e then
        // SETITEM into memo 1 after the list is built.
        let p = b"\x80\x02]q\x00(}q\x01h\x01eh\x01X\x01\x00\x00\x00kK\x07s0.";
        let v = plain(p).unwrap();
        let inner = Value::Dict(vec![(Value::Str("k".into()), Value::Int(7))]);
        assert_eq!(v, Value::List(vec![inner.clone(), inner]));
    }

    #[test]
    fn refuses_os_system_before_calling_anything() {
        let p = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R.";
        let e = plain(p).unwrap_err();
        assert!(e.contains("`os.system`"), "{e}");
        assert!(e.contains("never executes"), "{e}");
        let p = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93X\x01\x00\x00\x001\x85R.";
        assert!(plain(p).unwrap_err().contains("`builtins.eval`"));
        let p = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\n.";
        let e = plain(p).unwrap_err();
        assert!(
            e.contains("`numpy.core.multiarray._reconstruct`") && e.contains("numpy arrays"),
            "{e}"
        );
        let p = b"\x80\x02csubprocess\nPopen\n.";
        assert!(plain(p).unwrap_err().contains("`subprocess.Popen`"));
        let p = b"\x80\x02ctorch.nn.modules.container\nSequential\n.";
        let e = plain(p).unwrap_err();
        assert!(
            e.contains("`torch.nn.modules.container.Sequential`") && e.contains("whole model"),
            "{e}"
        );
        let p = b"\x80\x02c__main__\nNet\n.";
        assert!(plain(p).unwrap_err().contains("whole model"));
        let p = b"\x80\x02\x82\x01.";
        assert!(plain(p).unwrap_err().contains("extension registry"));
    }

    #[test]
    fn hostile_lengths_do_not_allocate() {
        // BINUNICODE8 claiming 2^62 bytes, BINBYTES claiming 4 GiB, LONG4 claiming 2 GiB.
        for p in [
            &b"\x80\x04\x8d\x00\x00\x00\x00\x00\x00\x00\x40abc."[..],
            &b"\x80\x03B\xff\xff\xff\xffabc."[..],
            &b"\x80\x02\x8b\xff\xff\xff\x7f."[..],
        ] {
            let e = plain(p).unwrap_err();
            assert!(e.contains("remain") || e.contains("memory"), "{e}");
        }
    }

    #[test]
    fn exponential_sharing_is_bounded() {
        // l0 = []; l1 = [l0, l0]; l2 = [l1, l1]; ... 60 levels: 2^60 nodes if expanded.
        let mut p = vec![0x80, 2, b']', b'q', 0];
        for i in 0..60u8 {
            p.extend_from_slice(&[b'(', b'h', i, b'h', i, b'l', b'q', i + 1]);
        }
        p.push(b'.');
        let e = plain(&p).unwrap_err();
        assert!(e.contains("limit of") && e.contains("objects"), "{e}");
    }

    #[test]
    fn deep_nesting_and_cycles_error_without_overflow() {
        // 100 000 nested one-element tuples: must not overflow the stack on drop or convert.
        let mut p = vec![0x80, 2, b'N'];
        p.extend(std::iter::repeat_n(0x85, 100_000));
        p.push(b'.');
        assert!(plain(&p).unwrap_err().contains("nested"));
        // A list that contains itself.
        let p = b"\x80\x02]q\x00h\x00a.";
        assert!(plain(p).unwrap_err().contains("nested"));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        for p in [
            &b""[..],
            b"\x80",
            b"\x80\x09.",
            b"\x80\x02.",
            b"\x80\x02t.",
            b"\x80\x02h\x05.",
            b"\x80\x02K\x01K\x02s.",
            b"\x80\x02]K\x01K\x02s.",
            b"\x80\x02}]K\x01s.",
            b"\x80\x02\xff.",
            b"\x80\x02Q.",
            b"\x80\x02cos\nsys",
            b"\x80\x02(K\x01K\x02u.",
            b"\x80\x02N)R.",
        ] {
            assert!(plain(p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn protocol0_text_opcodes() {
        // (dp0\nS'a'\np1\nI1\nsVh\\u00e9\np2\nF1.5\nsS'b'\nI01\ns.
        let p = b"(dp0\nS'a'\np1\nI1\nsVh\\u00e9\np2\nF1.5\nsS'b'\nI01\ns.";
        let v = plain(p).unwrap();
        assert_eq!(v.get("a"), Some(&Value::Int(1)));
        assert_eq!(v.get("h\u{e9}"), Some(&Value::Float(1.5)));
        assert_eq!(v.get("b"), Some(&Value::Bool(true)));
    }

    #[test]
    fn ordered_dict_build_sets_attributes_not_items() {
        let p = b"\x80\x02ccollections\nOrderedDict\n)R}X\x09\x00\x00\x00_metadataK\x01sb.";
        assert_eq!(plain(p).unwrap(), Value::Dict(vec![]));
    }

    #[test]
    fn duplicate_keys_replace_in_place() {
        let p = b"\x80\x02}(K\x01K\x02K\x03K\x04\x88K\x05u.";
        assert_eq!(
            plain(p).unwrap(),
            Value::Dict(vec![(Value::Int(1), Value::Int(5)), (Value::Int(3), Value::Int(4))])
        );
    }
}
