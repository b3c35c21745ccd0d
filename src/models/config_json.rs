//! Reading model `config.json` files with serde derive: the one place that turns a serde
//! error into the key it is about, and the lenient value forms the original scripts write
//! (numbers as strings, `"1,2,2,2"` lists, `str2bool` booleans).
//!
//! Readers derive `Deserialize` for their settings (unknown keys ignored, defaults with
//! `#[serde(default)]`) and call [`parse`]; a [`Fault`] tells a syntax error from a value
//! of the wrong type and names the key (`model.ch`) from the error's position, so every
//! family's message can say which file and key to fix.

use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::Deserialize;
use serde_json::Value;

/// Why a config text did not deserialize.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fault {
    /// The dotted key path the error is about (`model.ch`), when it lies inside an object.
    pub key: Option<String>,
    /// serde's message, with its line and column.
    pub message: String,
    /// The text is not JSON at all (as opposed to JSON with a wrong or missing value).
    pub syntax: bool,
}

impl Fault {
    /// `"{file}: {what}"` naming the key (`... key `ch`: invalid type ...`), with the
    /// remedy for a text that is not JSON.
    pub fn describe(&self, file: &str) -> String {
        match (&self.key, self.syntax) {
            (_, true) => format!(
                "{file} is not valid JSON ({}); fix or regenerate the file",
                self.message
            ),
            (Some(k), false) => format!("{file}: key `{k}`: {}", self.message),
            (None, false) => format!("{file}: {}", self.message),
        }
    }
}

/// Deserialize `T` from JSON text; a failure names the key it is about.
pub(crate) fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Fault> {
    serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        let syntax = matches!(e.classify(), Category::Syntax | Category::Eof | Category::Io);
        let key = if syntax {
            None
        } else {
            key_at(text, e.line(), e.column(), &e.to_string())
        };
        Fault {
            key,
            message: e.to_string(),
            syntax,
        }
    })
}

/// The dotted path of the key a serde error at the (1-based) `line` / `column` of `text`
/// is about. serde_json places a type error just after the offending value, but an error
/// raised by a field's own deserializer (or a missing field) just after the object that
/// holds it: then the last key of that object is meant, unless a field is missing.
fn key_at(text: &str, line: usize, column: usize, message: &str) -> Option<String> {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let mut end = (line_start + column).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = &text.as_bytes()[..end];
    // One entry per open container: `Some(key)` for an object (its current key), `None`
    // for an array.
    let mut stack: Vec<Option<Option<String>>> = Vec::new();
    let path =
        |stack: &[Option<Option<String>>]| -> Vec<String> { stack.iter().flatten().flatten().cloned().collect() };
    // The path of the last key of an object closed by the last character read.
    let mut closed: Option<Vec<String>> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !b.is_ascii_whitespace() {
            closed = None;
        }
        match b {
            b'{' => stack.push(Some(None)),
            b'[' => stack.push(None),
            b'}' | b']' => {
                if b == b'}' {
                    closed = Some(path(&stack));
                }
                stack.pop();
            }
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                let s = String::from_utf8_lossy(&bytes[start..i.min(bytes.len())]).into_owned();
                let mut j = i + 1;
                while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                    j += 1;
                }
                if j < bytes.len() && bytes[j] == b':' {
                    if let Some(Some(key)) = stack.last_mut() {
                        *key = Some(s);
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    let keys = match closed {
        Some(keys) if !message.starts_with("missing field") => keys,
        _ => path(&stack),
    };
    (!keys.is_empty()).then(|| keys.join("."))
}

/// For `Option<Option<T>>` fields that tell an absent key (`None`, with
/// `#[serde(default)]`) from an explicit `null` (`Some(None)`).
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// An integer as the scripts write it: a JSON integer, an integral float (`64.0`) or a
/// string (`"64"`); `null` is absent.
#[cfg_attr(not(feature = "tch"), allow(dead_code))] // read by the tch families
pub(crate) fn lenient_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Value::deserialize(d)?;
    let i = match &v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    i.map(Some)
        .ok_or_else(|| D::Error::custom(format!("expected an integer, got {v}")))
}

/// A non-negative integer in the forms of [`lenient_int`].
#[cfg_attr(not(feature = "tch"), allow(dead_code))] // read by the tch families
pub(crate) fn lenient_uint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    match lenient_int(d)? {
        None => Ok(None),
        Some(i) => usize::try_from(i)
            .map(Some)
            .map_err(|_| D::Error::custom(format!("expected a non-negative integer, got {i}"))),
    }
}

/// A finite number: a JSON number or a string (`"1.5"`); `null` is absent.
#[cfg_attr(not(feature = "tch"), allow(dead_code))] // read by the tch families
pub(crate) fn lenient_float<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = Value::deserialize(d)?;
    let f = match &v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    f.filter(|f| f.is_finite())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("expected a finite number, got {v}")))
}

/// A boolean as the scripts' `str2bool` reads it (`yes`/`no`, `true`/`false`, `t`/`f`,
/// `y`/`n`, `1`/`0`), or a JSON boolean or 0/1; `null` is absent.
#[cfg_attr(not(feature = "tch"), allow(dead_code))] // read by the tch families
pub(crate) fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = Value::deserialize(d)?;
    let b = match &v {
        Value::Null => return Ok(None),
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_lowercase().as_str() {
            "yes" | "true" | "t" | "y" | "1" => Some(true),
            "no" | "false" | "f" | "n" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    };
    b.map(Some)
        .ok_or_else(|| D::Error::custom(format!("expected a boolean (true/false, yes/no, 1/0), got {v}")))
}

/// Text as the scripts write lists and names: a string, a number (`16`), or a list of
/// numbers and strings (`[1, 2, 2, 2]`, joined as `"1,2,2,2"`); `null` is absent.
#[cfg_attr(not(feature = "tch"), allow(dead_code))] // read by the tch families
pub(crate) fn lenient_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::Number(n) => Ok(n.to_string()),
                Value::String(s) => Ok(s.clone()),
                _ => Err(D::Error::custom(format!("expected numbers, got {x}"))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Some(v.join(","))),
        _ => Err(D::Error::custom(format!("expected a string, got {v}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        ch: usize,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        model: Inner,
        #[serde(default, deserialize_with = "lenient_bool")]
        flag: Option<bool>,
    }

    #[test]
    fn faults_name_the_key() {
        let f = parse::<Outer>("{\"data\": {\"x\": [1, 2]},\n \"model\": {\"ch\": \"128\"}}").unwrap_err();
        assert_eq!(f.key.as_deref(), Some("model.ch"), "{f:?}");
        assert!(!f.syntax);
        let f = parse::<Outer>(r#"{"model": {"ch": 1}, "flag": "maybe"}"#).unwrap_err();
        assert_eq!(f.key.as_deref(), Some("flag"), "{f:?}");
        assert!(f.describe("config.json").contains("key `flag`"));
        assert!(parse::<Outer>("{").unwrap_err().syntax);
        let f = parse::<Outer>(r#"{"flag": true, "model": {}}"#).unwrap_err();
        assert_eq!(f.key.as_deref(), Some("model"), "{f:?}");
        assert!(f.message.contains("missing field `ch`"));
        let ok: Outer = parse(r#"{"model": {"ch": 1}, "flag": "yes", "other": 3}"#).unwrap();
        assert_eq!(ok.flag, Some(true));
    }
}
