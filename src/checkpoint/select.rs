//! Finding the state dict inside a checkpoint's object tree.

use std::collections::HashSet;

use super::limits::R;
use super::tensor::TensorData;
use super::text::printable;
use super::value::{key_repr, Value};

/// Where the state dict lies inside a checkpoint's object tree.
///
/// Every variant removes a `module.` prefix from the names when all of them carry it (the
/// mark of `torch.nn.DataParallel`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Select<'a> {
    /// Guess from the layout:
    ///
    /// * a flat dict of tensors: itself;
    /// * a dict with an `"ema"` dict of tensors: that (sampling uses the EMA weights); else
    ///   `"state_dict"`, else `"model"`;
    /// * a dict whose `"ema"` is `{decay, num_updates, shadow_params: [...]}` (DLSM /
    ///   score_sde): an error that explains how to use [`Select::EmaShadow`], since the
    ///   model's non-trainable names cannot be guessed;
    /// * a list or tuple (DDIM's `[model, optimizer, epoch, step, ema]`): its last element
    ///   that is a dict of tensors;
    /// * anything else: an error that outlines the top-level structure.
    #[default]
    Auto,
    /// Follow dict keys and list indices given as strings, e.g. `&["ema"]`, `&["state_dict"]`
    /// or `&["4"]` (`"-1"` is the last item); the target must be a dict of tensors.
    Path(&'a [&'a str]),
    /// Name an unnamed list of EMA shadow parameters with a model dict's names: the names at
    /// `model`, in stored order and without those in `exclude` (matched after removing
    /// `module.`), are zipped with the tensors at `shadow`; the excluded names take their
    /// tensors from the model dict. Counts and shapes must agree; the error names the first
    /// mismatch.
    EmaShadow {
        /// Path to the named model dict, e.g. `&["model"]`.
        model: &'a [&'a str],
        /// Path to the list of shadow tensors, e.g. `&["ema", "shadow_params"]`.
        shadow: &'a [&'a str],
        /// The model's entries that have no shadow: buffers and parameters with
        /// `requires_grad=False`.
        exclude: &'a [&'a str],
    },
}

/// The prefix `torch.nn.DataParallel` adds to every name.
const DATA_PARALLEL_PREFIX: &str = "module.";

/// The `(name, tensor)` pairs `sel` picks out of `root`, in stored order, with a `module.`
/// prefix removed when every name carries it.
pub(crate) fn select<'v>(root: &'v Value, sel: &Select<'_>) -> R<Vec<(String, &'v TensorData)>> {
    let mut out = match sel {
        Select::Auto => auto(root)?,
        Select::Path(path) => {
            let v = walk(root, path)?;
            tensor_dict(v, &describe_path(path))?
        }
        Select::EmaShadow { model, shadow, exclude } => ema_shadow(root, model, shadow, exclude)?,
    };
    strip_data_parallel(&mut out);
    Ok(out)
}

fn strip_data_parallel(entries: &mut [(String, &TensorData)]) {
    if !entries.is_empty() && entries.iter().all(|(k, _)| k.starts_with(DATA_PARALLEL_PREFIX)) {
        for (k, _) in entries.iter_mut() {
            k.drain(..DATA_PARALLEL_PREFIX.len());
        }
    }
}

fn nonempty_tensor_dict(v: &Value) -> bool {
    v.is_tensor_dict() && v.as_dict().is_some_and(|d| !d.is_empty())
}

fn auto(root: &Value) -> R<Vec<(String, &TensorData)>> {
    if root.is_tensor_dict() {
        return tensor_dict(root, "the top level");
    }
    match root {
        Value::Dict(_) => {
            if let Some(ema) = root.get("ema") {
                if nonempty_tensor_dict(ema) {
                    return tensor_dict(ema, "[\"ema\"]");
                }
                if let Some(shadow) = ema.get("shadow_params") {
                    return Err(dlsm_message(root, shadow));
                }
            }
            for key in ["state_dict", "model"] {
                if let Some(v) = root.get(key) {
                    if nonempty_tensor_dict(v) {
                        return tensor_dict(v, &format!("[{key:?}]"));
                    }
                }
            }
            Err(format!(
                "cannot tell where the state dict is: no \"ema\", \"state_dict\" or \"model\" \
                 entry holds a dict of tensors. Pick one with Select::Path; {}",
                root.outline()
            ))
        }
        Value::List(items) | Value::Tuple(items) => {
            // DDIM's checkpoints: [model, optimizer, epoch, step, ema]; the last tensor dict
            // is the EMA copy.
            match items.iter().rposition(nonempty_tensor_dict) {
                Some(i) => tensor_dict(&items[i], &format!("[\"{i}\"]")),
                None => Err(format!(
                    "no element of the top-level {} is a dict of tensors. Pick the state dict \
                     with Select::Path; {}",
                    root.type_name(),
                    root.outline()
                )),
            }
        }
        other => Err(format!(
            "the checkpoint holds a {}, not a state dict; {}",
            other.type_name(),
            other.outline()
        )),
    }
}

fn dlsm_message(root: &Value, shadow: &Value) -> String {
    let n_shadow = shadow.as_list().map_or(0, <[Value]>::len);
    let n_model = root.get("model").and_then(Value::as_dict).map(<[(Value, Value)]>::len);
    let counts = match n_model {
        Some(m) if m >= n_shadow => format!(
            " The model dict has {m} entries and the shadow list {n_shadow} tensors, so {} \
             names must be excluded.",
            m - n_shadow
        ),
        _ => String::new(),
    };
    format!(
        "this checkpoint stores its EMA weights as an unnamed list (ema.shadow_params, {n_shadow} \
         tensors; the DLSM / score_sde format), so Select::Auto cannot tell which names they \
         belong to. Use Select::EmaShadow {{ model: &[\"model\"], shadow: &[\"ema\", \
         \"shadow_params\"], exclude: <the model's non-trainable entries: buffers and parameters \
         with requires_grad=False, e.g. [\"sigmas\", \"all_modules.0.W\"] for DLSM's NCSN++> }}, \
         or Select::Path(&[\"model\"]) for the non-EMA weights.{counts}"
    )
}

fn describe_path(path: &[&str]) -> String {
    if path.is_empty() {
        "the top level".into()
    } else {
        format!("{path:?}")
    }
}

fn key_matches(k: &Value, seg: &str) -> bool {
    match k {
        Value::Str(s) => s == seg,
        Value::Int(i) => seg.parse::<i64>().is_ok_and(|x| x == *i),
        _ => false,
    }
}

/// Follows dict keys and list indices (`"4"`, or `"-1"` for the last item).
fn walk<'v>(root: &'v Value, path: &[&str]) -> R<&'v Value> {
    let mut cur = root;
    for (i, seg) in path.iter().enumerate() {
        let here = describe_path(&path[..i]);
        cur = match cur {
            Value::Dict(entries) => match entries.iter().find(|(k, _)| key_matches(k, seg)) {
                Some((_, v)) => v,
                None => {
                    let keys: Vec<String> = entries.iter().take(30).map(|(k, _)| key_repr(k)).collect();
                    let more = if entries.len() > 30 { ", ..." } else { "" };
                    return Err(format!(
                        "Select::Path: no key {seg:?} in the dict at {here}; its keys are [{}{more}]",
                        keys.join(", ")
                    ));
                }
            },
            Value::List(items) | Value::Tuple(items) => {
                let n = items.len();
                let idx = seg.parse::<i64>().ok().and_then(|x| {
                    if x < 0 {
                        n.checked_sub(usize::try_from(x.unsigned_abs()).ok()?)
                    } else {
                        usize::try_from(x).ok().filter(|&x| x < n)
                    }
                });
                match idx.and_then(|j| items.get(j)) {
                    Some(v) => v,
                    None => {
                        return Err(format!(
                            "Select::Path: {seg:?} is not a valid index into the {} of {n} items at {here}",
                            cur.type_name()
                        ))
                    }
                }
            }
            other => {
                return Err(format!(
                    "Select::Path: cannot look up {seg:?} in {} at {here}",
                    other.summary()
                ))
            }
        };
    }
    Ok(cur)
}

/// The entries of a dict of tensors, or an error that says what `v` is instead.
fn tensor_dict<'v>(v: &'v Value, at: &str) -> R<Vec<(String, &'v TensorData)>> {
    match v {
        Value::Dict(entries) => {
            let mut out = Vec::with_capacity(entries.len());
            let mut bad = Vec::new();
            for (k, x) in entries {
                match (k, x) {
                    (Value::Str(name), Value::Tensor(t)) => out.push((name.clone(), t)),
                    _ => bad.push(format!("{}: {}", key_repr(k), x.summary())),
                }
            }
            if bad.is_empty() {
                Ok(out)
            } else {
                let n = bad.len();
                bad.truncate(8);
                Err(format!(
                    "the dict at {at} is not a flat dict of named tensors; {n} entries are not: {}. \
                     Pick a deeper entry with Select::Path",
                    bad.join("; ")
                ))
            }
        }
        Value::List(items) | Value::Tuple(items)
            if !items.is_empty() && items.iter().all(|x| matches!(x, Value::Tensor(_))) =>
        {
            Err(format!(
                "{at} is an unnamed {} of {} tensors (like DLSM's ema.shadow_params); use \
                 Select::EmaShadow to pair it with a model dict's names",
                v.type_name(),
                items.len()
            ))
        }
        other => Err(format!("{at} is not a dict of tensors; {}", other.outline())),
    }
}

fn ema_shadow<'v>(
    root: &'v Value,
    model: &[&str],
    shadow: &[&str],
    exclude: &[&str],
) -> R<Vec<(String, &'v TensorData)>> {
    let mut named = tensor_dict(walk(root, model)?, &describe_path(model))?;
    strip_data_parallel(&mut named);
    let shadow_at = describe_path(shadow);
    let items = match walk(root, shadow)? {
        Value::List(items) | Value::Tuple(items) => items,
        other => {
            return Err(format!(
                "Select::EmaShadow: {shadow_at} is {}, not a list of tensors",
                other.summary()
            ))
        }
    };
    let mut shadow_tensors = Vec::with_capacity(items.len());
    for (i, x) in items.iter().enumerate() {
        match x {
            Value::Tensor(t) => shadow_tensors.push(t),
            other => {
                return Err(format!(
                    "Select::EmaShadow: item {i} of {shadow_at} is {}, not a tensor",
                    other.summary()
                ))
            }
        }
    }
    let names: HashSet<&str> = named.iter().map(|(k, _)| k.as_str()).collect();
    let mut excluded = HashSet::new();
    for &x in exclude {
        let x = x
            .strip_prefix(DATA_PARALLEL_PREFIX)
            .filter(|s| names.contains(s))
            .unwrap_or(x);
        if !names.contains(x) {
            let sample: Vec<&str> = named.iter().take(4).map(|(k, _)| k.as_str()).collect();
            return Err(format!(
                "Select::EmaShadow: the excluded name {x:?} is not in the model dict (after \
                 removing any `module.` prefix, its names look like {sample:?})"
            ));
        }
        excluded.insert(x);
    }
    let trainable = named.iter().filter(|(k, _)| !excluded.contains(k.as_str())).count();
    if trainable != shadow_tensors.len() {
        let hint = if trainable > shadow_tensors.len() {
            format!("exclude {} more names", trainable - shadow_tensors.len())
        } else {
            format!("exclude {} fewer names", shadow_tensors.len() - trainable)
        };
        return Err(format!(
            "Select::EmaShadow: count mismatch: the shadow list {shadow_at} has {} tensors but the \
             model dict has {trainable} names left after excluding {:?} ({} in all); the exclude \
             list must name exactly the model's non-trainable entries (buffers, and parameters \
             with requires_grad=False): {hint}",
            shadow_tensors.len(),
            exclude,
            named.len()
        ));
    }
    let mut out = Vec::with_capacity(named.len());
    let mut next = shadow_tensors.into_iter().enumerate();
    for (name, model_t) in named {
        if excluded.contains(name.as_str()) {
            out.push((name, model_t));
            continue;
        }
        let Some((i, s)) = next.next() else {
            return Err("internal error: shadow list exhausted".into());
        };
        if s.shape != model_t.shape {
            return Err(format!(
                "Select::EmaShadow: shape mismatch: item {i} of the shadow list has shape {:?} \
                 but the model's {i}-th trainable entry `{}` has shape {:?}; the names and \
                 the shadow list are out of step (is the exclude list right?)",
                s.shape,
                printable(&name),
                model_t.shape
            ));
        }
        out.push((name, s));
    }
    Ok(out)
}
