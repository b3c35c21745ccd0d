//! CLIP's byte-level BPE tokenizer, read from a diffusers folder's `tokenizer/` files
//! (`vocab.json`, `merges.txt`, `tokenizer_config.json`, `special_tokens_map.json`).
//!
//! It reproduces transformers' `CLIPTokenizer` (the `tokenizers`-backed one of transformers
//! 5, which SD pipelines load), step by step:
//!
//! 1. special ("added") tokens are cut out of the text first: those registered with
//!    `normalized = false` (plain-string special tokens such as SD2's pad token `!`) in the
//!    raw text, the others in the normalized text; the longest match wins;
//! 2. normalization: Unicode NFC, every run of whitespace replaced by one space, then
//!    lower-casing character by character;
//! 3. pre-tokenization with CLIP's pattern
//!    `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
//!    (whatever it does not match, i.e. whitespace, is dropped); the byte-level step then
//!    splits each piece again with GPT-2's pattern (this only matters for the literal
//!    `<|endoftext|>` alternative, which becomes `<|`, `endoftext`, `|>`) and maps its UTF-8
//!    bytes to GPT-2's printable byte alphabet;
//! 4. BPE on each piece, its last symbol carrying the end-of-word mark `</w>`: the adjacent
//!    pair with the lowest merge rank (the leftmost among equals) is merged until none is in
//!    `merges.txt`; symbols missing from the vocabulary become the unknown token;
//! 5. `[BOS] + ids[..max_length − 2] + [EOS]`, padded to `model_max_length` (77) with the pad
//!    token: `<|endoftext|>` (49407) for SD1, `!` (0) for SD2.

use std::collections::HashMap;
use std::path::Path;

use ndarray::Array2;
use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use super::config::{read_json, TokenSpec, TokenizerConfig};
use crate::{Error, Result};

/// CLIP's pre-tokenization pattern (applied to lower-cased text).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// GPT-2's pattern, which the byte-level step applies inside each CLIP piece. Its whitespace
/// alternatives (`\s+(?!\S)|\s+`) and optional leading spaces never apply there (CLIP's
/// pieces hold no whitespace) and are left out. It only splits the pieces matched by CLIP's
/// literal `<|startoftext|>`/`<|endoftext|>` alternatives (`<|`, `endoftext`, `|>`).
const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+";

/// The end-of-word suffix of CLIP's BPE symbols.
const END_OF_WORD: &str = "</w>";

/// A special token cut out of the text before BPE.
#[derive(Debug, Clone, PartialEq)]
struct AddedToken {
    /// The text matched (normalized already when `normalized`).
    pattern: String,
    id: u32,
    normalized: bool,
}

/// CLIP's BPE tokenizer (see the [module docs](self) for the exact algorithm).
///
/// ```no_run
/// use boomerang::models::stable_diffusion::ClipTokenizer;
/// let tok = ClipTokenizer::from_folder("stable-diffusion-v1-5/tokenizer")?;
/// let ids = tok.encode("a photo of a cat")?;
/// assert_eq!((ids.len(), ids[0], ids[1]), (77, 49406, 320));
/// # Ok::<(), boomerang::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    decoder: HashMap<u32, String>,
    /// `(left, right)` symbol ids → `(rank, merged id)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    byte_chars: [char; 256],
    pattern: Regex,
    byte_level: Regex,
    whitespace: Regex,
    added: Vec<AddedToken>,
    bos: u32,
    eos: u32,
    pad: u32,
    unk: Option<u32>,
    max_length: usize,
}

impl ClipTokenizer {
    /// Read a folder holding `vocab.json`, `merges.txt` and `tokenizer_config.json` (plus
    /// `special_tokens_map.json` if present, whose entries take precedence).
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join("tokenizer_config.json");
        let mut config = if config_path.exists() {
            TokenizerConfig::load(&config_path)?
        } else {
            TokenizerConfig::default()
        };
        let map_path = dir.join("special_tokens_map.json");
        if map_path.exists() {
            config = config.merged_with(TokenizerConfig::load(&map_path)?);
        }
        for f in ["vocab.json", "merges.txt"] {
            if !dir.join(f).exists() {
                let hint = if dir.join("tokenizer.json").exists() {
                    " (only tokenizer.json is present; this reader needs vocab.json and merges.txt)"
                } else {
                    ""
                };
                return Err(Error::checkpoint(dir.join(f), format!("missing tokenizer file{hint}")));
            }
        }
        Self::from_files(dir.join("vocab.json"), dir.join("merges.txt"), &config)
    }

    /// Build from a `vocab.json`, a `merges.txt` and a configuration.
    pub fn from_files(vocab: impl AsRef<Path>, merges: impl AsRef<Path>, config: &TokenizerConfig) -> Result<Self> {
        let vocab_path = vocab.as_ref();
        let merges_path = merges.as_ref();
        let vocab: HashMap<String, u32> = read_json(vocab_path)?;
        let text = std::fs::read_to_string(merges_path).map_err(|e| Error::io(merges_path, e))?;
        let mut pairs = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with("#version") || line.trim().is_empty() {
                continue;
            }
            let mut it = line.split(' ');
            match (it.next(), it.next(), it.next()) {
                (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                    pairs.push((a.to_string(), b.to_string()))
                }
                _ => {
                    return Err(Error::checkpoint(
                        merges_path,
                        format!(
                            "line {}: expected two symbols separated by one space, got {line:?}",
                            n + 1
                        ),
                    ))
                }
            }
        }
        Self::from_parts(vocab, &pairs, config).map_err(|e| match e {
            Error::InvalidParameter { reason, .. } => Error::checkpoint(vocab_path, reason),
            other => other,
        })
    }

    /// Build from a vocabulary, the merges in rank order, and a configuration.
    pub fn from_parts(
        vocab: HashMap<String, u32>,
        merges: &[(String, String)],
        config: &TokenizerConfig,
    ) -> Result<Self> {
        let bad = |reason: String| Error::param("tokenizer", reason);
        fn id_of(vocab: &HashMap<String, u32>, s: &str, what: &str) -> Result<u32> {
            vocab
                .get(s)
                .copied()
                .ok_or_else(|| Error::param("tokenizer", format!("{what} `{s}` is not in the vocabulary")))
        }
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, (a, b)) in merges.iter().enumerate() {
            let ia = id_of(&vocab, a, "merge symbol")?;
            let ib = id_of(&vocab, b, "merge symbol")?;
            let merged = id_of(&vocab, &format!("{a}{b}"), "merge result")?;
            merge_map.entry((ia, ib)).or_insert((rank as u32, merged));
        }
        let pattern = Regex::new(CLIP_PATTERN).map_err(|e| bad(e.to_string()))?;
        let whitespace = Regex::new(r"\s+").map_err(|e| bad(e.to_string()))?;
        let byte_level = Regex::new(GPT2_PATTERN).map_err(|e| bad(e.to_string()))?;
        let decoder = vocab.iter().map(|(k, v)| (*v, k.clone())).collect();
        let mut tok = Self {
            vocab,
            decoder,
            merges: merge_map,
            byte_chars: bytes_to_unicode(),
            pattern,
            byte_level,
            whitespace,
            added: Vec::new(),
            bos: 0,
            eos: 0,
            pad: 0,
            unk: None,
            max_length: 77,
        };

        let spec = |t: &Option<TokenSpec>, default: &str| t.clone().unwrap_or_else(|| TokenSpec::Plain(default.into()));
        let bos = spec(&config.bos_token, "<|startoftext|>");
        let eos = spec(&config.eos_token, "<|endoftext|>");
        let unk = spec(&config.unk_token, "<|endoftext|>");
        let pad = spec(&config.pad_token, "<|endoftext|>");
        // Registration order as transformers: the added-tokens table, then the special
        // tokens; a later registration of the same text replaces the flags.
        fn register(list: &mut Vec<(String, u32, bool)>, content: &str, id: u32, normalized: bool) {
            list.retain(|(c, _, _)| c != content);
            list.push((content.to_string(), id, normalized));
        }
        let mut registered: Vec<(String, u32, bool)> = Vec::new();
        if let Some(table) = &config.added_tokens_decoder {
            for (id, entry) in table {
                let id: u32 = id
                    .parse()
                    .map_err(|_| bad(format!("added_tokens_decoder key `{id}` is not an id")))?;
                register(&mut registered, &entry.content, id, entry.normalized);
            }
        }
        let mut ids = Vec::new();
        for t in [&bos, &eos, &unk, &pad] {
            let known = registered
                .iter()
                .find(|(c, _, _)| c == t.content())
                .map(|(_, id, _)| *id);
            let id = match known {
                Some(id) => id,
                None => id_of(&tok.vocab, t.content(), "special token")?,
            };
            register(&mut registered, t.content(), id, t.normalized());
            ids.push(id);
        }
        tok.bos = ids[0];
        tok.eos = ids[1];
        tok.unk = Some(ids[2]);
        tok.pad = ids[3];
        for (content, id, normalized) in registered {
            let pattern = if normalized { tok.normalize(&content) } else { content };
            if !pattern.is_empty() {
                tok.added.push(AddedToken {
                    pattern,
                    id,
                    normalized,
                });
            }
        }
        if let Some(m) = config.model_max_length {
            if !(2.0..=1e6).contains(&m) {
                return Err(bad(format!("model_max_length {m} is out of range")));
            }
            tok.max_length = m as usize;
        }
        Ok(tok)
    }

    /// The sequence length of [`encode`](Self::encode) (77 for Stable Diffusion).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The start token's id (49406 in CLIP's vocabulary).
    pub fn bos_id(&self) -> u32 {
        self.bos
    }

    /// The end token's id (49407).
    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// The padding token's id (SD1: the end token; SD2: `!`, id 0).
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// Number of entries of the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The vocabulary entry of `id` (byte-level characters, `</w>` marking word ends).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.decoder.get(&id).map(String::as_str)
    }

    /// The normalizer: NFC, whitespace runs to one space, per-character lower-casing.
    fn normalize(&self, text: &str) -> String {
        let nfc: String = text.nfc().collect();
        let spaced = self.whitespace.replace_all(&nfc, " ");
        spaced.chars().flat_map(char::to_lowercase).collect()
    }

    /// The token ids of `text` without start, end or padding tokens and without truncation.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for raw in split_added(text, &self.added, false) {
            match raw {
                Segment::Token(id) => ids.push(id),
                Segment::Text(t) => {
                    let normalized = self.normalize(t);
                    for seg in split_added(&normalized, &self.added, true) {
                        match seg {
                            Segment::Token(id) => ids.push(id),
                            Segment::Text(s) => {
                                for piece in self.pattern.find_iter(s) {
                                    for word in self.byte_level.find_iter(piece.as_str()) {
                                        self.bpe(word.as_str(), &mut ids)?;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(ids)
    }

    /// `[BOS] + tokens (truncated) + [EOS]`, padded to [`max_length`](Self::max_length):
    /// what Stable Diffusion pipelines feed the text encoder.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let ids = self.tokenize(text)?;
        let keep = ids.len().min(self.max_length - 2);
        let mut out = Vec::with_capacity(self.max_length);
        out.push(self.bos as i64);
        out.extend(ids[..keep].iter().map(|&i| i as i64));
        out.push(self.eos as i64);
        out.resize(self.max_length, self.pad as i64);
        Ok(out)
    }

    /// [`encode`](Self::encode) for each text: `(texts.len(), max_length)`.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Array2<i64>> {
        let mut out = Array2::zeros((texts.len(), self.max_length));
        for (row, t) in out.rows_mut().into_iter().zip(texts) {
            let ids = self.encode(t)?;
            row.into_iter().zip(ids).for_each(|(o, i)| *o = i);
        }
        Ok(out)
    }

    /// BPE of one pre-tokenized piece, appending its ids.
    fn bpe(&self, piece: &str, out: &mut Vec<u32>) -> Result<()> {
        let chars: Vec<char> = piece.bytes().map(|b| self.byte_chars[b as usize]).collect();
        let mut word: Vec<u32> = Vec::with_capacity(chars.len());
        let mut buf = [0u8; 4];
        for (i, c) in chars.iter().enumerate() {
            let s = c.encode_utf8(&mut buf);
            let id = if i + 1 == chars.len() {
                self.vocab.get(&format!("{s}{END_OF_WORD}"))
            } else {
                self.vocab.get(&*s)
            };
            match (id, self.unk) {
                (Some(&id), _) => word.push(id),
                (None, Some(unk)) => word.push(unk),
                (None, None) => {
                    return Err(Error::InvalidInput(format!(
                        "the tokenizer has no symbol for `{s}` and no unknown token"
                    )))
                }
            }
        }
        loop {
            let best = word
                .windows(2)
                .enumerate()
                .filter_map(|(pos, w)| self.merges.get(&(w[0], w[1])).map(|&(rank, id)| (rank, pos, id)))
                .min();
            match best {
                Some((_, pos, id)) => {
                    word[pos] = id;
                    word.remove(pos + 1);
                }
                None => break,
            }
        }
        out.extend(word);
        Ok(())
    }
}

enum Segment<'a> {
    Text(&'a str),
    Token(u32),
}

/// Cut the added tokens with the given `normalized` flag out of `text` (leftmost match,
/// longest among those starting there).
fn split_added<'a>(text: &'a str, added: &[AddedToken], normalized: bool) -> Vec<Segment<'a>> {
    let tokens: Vec<&AddedToken> = added.iter().filter(|t| t.normalized == normalized).collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let hit = tokens
            .iter()
            .filter(|t| rest.starts_with(t.pattern.as_str()))
            .max_by_key(|t| t.pattern.len());
        match hit {
            Some(t) => {
                if start < i {
                    out.push(Segment::Text(&text[start..i]));
                }
                out.push(Segment::Token(t.id));
                i += t.pattern.len();
                start = i;
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    if start < text.len() {
        out.push(Segment::Text(&text[start..]));
    }
    out
}

/// GPT-2's reversible map from bytes to printable characters: the printable Latin-1 bytes
/// map to themselves, the others to `U+0100` onwards in byte order.
fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).unwrap_or('\0')
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap_or('\0')
        };
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ClipTokenizer {
        let table = bytes_to_unicode();
        let mut vocab = HashMap::new();
        for c in table {
            let n = vocab.len() as u32;
            vocab.insert(c.to_string(), n);
        }
        for c in table {
            let n = vocab.len() as u32;
            vocab.insert(format!("{c}</w>"), n);
        }
        let merges = vec![
            ("c".to_string(), "a".to_string()),
            ("ca".to_string(), "t</w>".to_string()),
        ];
        for m in ["ca", "cat</w>", "<|startoftext|>", "<|endoftext|>"] {
            let n = vocab.len() as u32;
            vocab.insert(m.to_string(), n);
        }
        ClipTokenizer::from_parts(vocab, &merges, &TokenizerConfig::default()).unwrap()
    }

    #[test]
    fn byte_table_is_gpt2() {
        let t = bytes_to_unicode();
        assert_eq!(t[b'!' as usize], '!');
        assert_eq!(t[0], '\u{100}');
        assert_eq!(t[b' ' as usize], 'Ġ');
        let mut sorted: Vec<char> = t.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }

    #[test]
    fn merges_words_and_pads() {
        let tok = tiny();
        let cat = tok.vocab["cat</w>"];
        assert_eq!(tok.tokenize("  CAT ").unwrap(), vec![cat]);
        let ids = tok.encode("cat cat").unwrap();
        assert_eq!(ids.len(), 77);
        assert_eq!(&ids[..4], &[tok.bos as i64, cat as i64, cat as i64, tok.eos as i64]);
        assert!(ids[4..].iter().all(|&i| i == tok.pad as i64));
        let long = "cat ".repeat(200);
        let ids = tok.encode(&long).unwrap();
        assert_eq!(ids[76], tok.eos as i64);
        assert_eq!(ids[75], cat as i64);
        // special tokens in the text
        assert_eq!(tok.tokenize("cat<|endoftext|>").unwrap(), vec![cat, tok.eos]);
    }
}
