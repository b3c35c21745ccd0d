//! The CLIP tokenizer against transformers' `CLIPTokenizer` (transformers 5.24, the
//! `tokenizers`-backed implementation SD pipelines load): exact token ids, padded and
//! truncated to 77, for tricky strings (case, whitespace of every kind, punctuation runs,
//! contractions, NFC/NFD accents, emoji, CJK, control characters, special tokens inside the
//! text, a 200-character word, prompts longer than 77 tokens, the empty prompt), with SD1's
//! padding (EOS) and SD2's (`!`, registered as a non-normalized special token).
//!
//! Fixtures: `tests/fixtures/sd/{sd1,sd2}/tokenizer/` and `reference/tokenizer.json`, written
//! by `tools/make_sd_fixtures.py`.

use std::path::{Path, PathBuf};

use boomerang::models::stable_diffusion::ClipTokenizer;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd")
}

struct Reference {
    cases: Vec<String>,
    ids: Vec<Vec<i64>>,
}

fn reference(which: &str) -> Reference {
    let text = std::fs::read_to_string(fixtures().join("reference/tokenizer.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let ids = v[which]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|i| i.as_i64().unwrap()).collect())
        .collect();
    Reference { cases, ids }
}

fn check(which: &str) {
    let tok = ClipTokenizer::from_folder(fixtures().join(which).join("tokenizer")).unwrap();
    let r = reference(which);
    assert_eq!(r.cases.len(), r.ids.len());
    let mut failures = Vec::new();
    for (case, want) in r.cases.iter().zip(&r.ids) {
        let got = tok.encode(case).unwrap();
        if &got != want {
            failures.push(format!("{case:?}:\n  rust   {got:?}\n  python {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{which}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The batch form gives the same rows.
    let texts: Vec<&str> = r.cases.iter().map(String::as_str).collect();
    let batch = tok.encode_batch(&texts).unwrap();
    for (row, want) in batch.rows().into_iter().zip(&r.ids) {
        assert_eq!(row.to_vec(), *want);
    }
}

#[test]
fn sd1_tokenizer_matches_transformers() {
    check("sd1");
}

#[test]
fn sd2_tokenizer_matches_transformers() {
    check("sd2");
}

#[test]
fn special_ids_padding_and_truncation() {
    let sd1 = ClipTokenizer::from_folder(fixtures().join("sd1/tokenizer")).unwrap();
    let sd2 = ClipTokenizer::from_folder(fixtures().join("sd2/tokenizer")).unwrap();
    // Same vocabulary; SD2 pads with "!" (id 0 in CLIP's layout), SD1 with EOS.
    assert_eq!(sd1.bos_id(), sd2.bos_id());
    assert_eq!(sd1.pad_id(), sd1.eos_id());
    assert_eq!(sd2.pad_id(), 0);
    assert_eq!(sd2.token(0), Some("!"));
    assert_eq!(sd1.max_length(), 77);
    let long = "photo ".repeat(300);
    let ids = sd1.encode(&long).unwrap();
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], sd1.bos_id() as i64);
    assert_eq!(ids[76], sd1.eos_id() as i64);
    assert_eq!(sd1.tokenize(&long).unwrap().len(), 300);
    let empty = sd2.encode("").unwrap();
    assert_eq!(&empty[..3], &[sd2.bos_id() as i64, sd2.eos_id() as i64, 0]);
}

#[test]
fn missing_files_are_named() {
    let dir = std::env::temp_dir().join(format!("boomerang-sd-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixtures().join("sd1/tokenizer/vocab.json"), dir.join("vocab.json")).unwrap();
    let err = ClipTokenizer::from_folder(&dir).unwrap_err().to_string();
    assert!(err.contains("merges.txt"), "{err}");
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\nq zz\n").unwrap();
    let err = ClipTokenizer::from_folder(&dir).unwrap_err().to_string();
    assert!(err.contains("zz"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
