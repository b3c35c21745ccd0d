//! The model registry: families told apart from config files and key names alone.

use boomerang::models::registry::{self, ModelSource};
use boomerang::models::{Family, ModelOptions};

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("boomerang-registry-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn detect_reads_only_the_header_of_a_large_checkpoint() {
    // A safetensors file whose tensor data region is cut short is still detected: detection
    // reads the header, never the data. Loading it is a clean error.
    let bytes = std::fs::read(fixture("ddpm/tiny3.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let dir = scratch("truncated");
    let cut = dir.join("model.safetensors");
    std::fs::write(&cut, &bytes[..8 + header_len + 16]).unwrap();
    let found = registry::detect(&cut).unwrap();
    assert_eq!(found.family, Family::Ddpm);
    assert!(found.probe.keys.iter().any(|k| k == "temb.dense.0.weight"));
    assert!(boomerang::checkpoint::load_state_dict(&cut).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn families_come_from_their_own_rules() {
    for (path, family) in [
        ("ddpm/tiny3.ckpt", Family::Ddpm),
        ("ddpm/tiny3_diffusers", Family::Ddpm),
        ("ddpm/tiny3_module.pth", Family::Ddpm),
        ("sd/sd1", Family::StableDiffusion),
        ("sd/sd1/vae/diffusion_pytorch_model.safetensors", Family::Vae),
        ("sd/sd1/text_encoder/model.safetensors", Family::ClipText),
    ] {
        let found = registry::detect(&fixture(path)).unwrap();
        assert_eq!(found.family, family, "{path}");
    }
}

#[test]
fn sources_parse_and_misuse_is_refused() {
    assert_eq!(
        ModelSource::parse("gaussian:0,0.5").unwrap(),
        ModelSource::Gaussian { mean: 0.0, std: 0.5 }
    );
    assert!(ModelSource::parse("gaussian:0").is_err());
    assert!(ModelSource::parse("builtin:other").is_err());
    assert!(ModelSource::parse("/nowhere/at/all.ckpt").is_err());
    let g = ModelSource::parse("gaussian:0,0.5").unwrap();
    let with = |f: &dyn Fn(&mut ModelOptions)| {
        let mut o = ModelOptions::default();
        f(&mut o);
        registry::load(&g, &o)
    };
    let e = with(&|o| o.prompt = Some("a cat".into())).unwrap_err().to_string();
    assert!(e.contains("text-conditioned"), "{e}");
    let e = with(&|o| o.device = "tpu".into()).unwrap_err().to_string();
    assert!(e.contains("not a device"), "{e}");
    let e = with(&|o| o.classes = boomerang::models::ClassLabels::Fixed(vec![1]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("class"), "{e}");
    let m = with(&|_| ()).unwrap();
    assert_eq!(m.description.family, Some(Family::Analytic));
    assert_eq!(m.description.settings["sampler"], "ddpm");
    assert!(m.description.defaults.iter().any(|d| d.contains("schedule")));
}
