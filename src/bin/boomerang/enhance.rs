//! `boomerang enhance`: perceptual resolution enhancement, vanilla or cascaded.

use std::path::PathBuf;

use boomerang::apps::dataset::{format_time, load_for_model, stack, ModelInput, SizePolicy};
use boomerang::apps::enhance::{enhance_with_progress, target_size, EnhanceOptions};
use boomerang::apps::keys::path_key;
use boomerang::core::local::LocalSampler;
use boomerang::image_io::{save_image, ResizeFilter};
use boomerang::TimeSpec;
use clap::{Args, ValueEnum};
use ndarray::Axis;

use crate::error::CliError;
use crate::inputs::{check_inputs_not_in_output, collect_inputs, prepare_outputs, stem_of};
use crate::model::{load_runner, ModelArgs};
use crate::{parse_t_arg, progress};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FilterArg {
    Nearest,
    Bilinear,
    Bicubic,
}

impl From<FilterArg> for ResizeFilter {
    fn from(f: FilterArg) -> Self {
        match f {
            FilterArg::Nearest => ResizeFilter::Nearest,
            FilterArg::Bilinear => ResizeFilter::Bilinear,
            FilterArg::Bicubic => ResizeFilter::Bicubic,
        }
    }
}

#[derive(Debug, Args)]
pub struct EnhanceArgs {
    /// Low-resolution images or folders of them.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Output folder.
    #[arg(short, long)]
    output: PathBuf,
    /// t of each pass: a fraction (0.2) or a step (200).
    #[arg(long = "t", value_parser = parse_t_arg, value_name = "T")]
    t: TimeSpec,
    /// Passes (1: vanilla; more: cascaded, each from the previous result).
    #[arg(long, default_value_t = 1)]
    passes: usize,
    /// Candidates per input.
    #[arg(short = 'k', long, default_value_t = 1)]
    candidates: usize,
    /// Upsampling interpolation.
    #[arg(long, value_enum, default_value_t = FilterArg::Bicubic)]
    filter: FilterArg,
    /// Scale factor (any positive number); models with a fixed size use theirs.
    #[arg(long)]
    scale: Option<f64>,
    /// Replace existing output files.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn enhance(a: EnhanceArgs, quiet: bool) -> Result<(), CliError> {
    if a.candidates == 0 || a.passes == 0 {
        return Err(CliError::usage("-k/--candidates and --passes must be at least 1"));
    }
    let inputs = collect_inputs(&a.inputs)?;
    check_inputs_not_in_output(&inputs, &a.output)?;
    let runner = load_runner(&a.model)?.runner;
    runner.start_time(a.t)?;
    let spec = runner.input();
    // Inputs are low-resolution: any size is taken, then upsampled to the model's.
    let model = ModelInput {
        size: None,
        multiple: 1,
        ..spec
    };
    let mut names = Vec::new();
    for i in &inputs {
        let stem = stem_of(&i.rel);
        names.push(format!("{stem}_up.png"));
        for j in 0..a.candidates {
            for p in 1..=a.passes {
                names.push(format!("{stem}_c{j}_p{p}.png"));
            }
        }
    }
    prepare_outputs(&a.output, &names, a.overwrite)?;
    let opts = EnhanceOptions {
        t: a.t,
        passes: a.passes,
        candidates: a.candidates,
        filter: a.filter.into(),
        seed: a.model.seed,
        batch_size: a.model.batch_size,
    };
    let total = inputs.len() * a.candidates * a.passes;
    let bar = progress::images_bar(total, "enhancing", quiet);
    let mut done_before = 0;
    for i in &inputs {
        let img = load_for_model(&i.path, &model, SizePolicy::Skip)?;
        let (_, h, w) = img.data.dim();
        let size = round_to_multiple(target_size(spec.size, (h, w), a.scale)?, spec.multiple);
        let x = stack(&[img.data.view()])?;
        let key = path_key(&i.rel);
        let out = enhance_with_progress(&runner, x.view(), &[key], size, &opts, &mut |d, _| {
            bar.set_position((done_before + d) as u64)
        })?;
        done_before += a.candidates * a.passes;
        let stem = stem_of(&i.rel);
        save_image(
            a.output.join(format!("{stem}_up.png")),
            out.upsampled.index_axis(Axis(0), 0),
            spec.range,
        )?;
        for p in 0..a.passes {
            for j in 0..a.candidates {
                if let Some(c) = out.candidate(p, 0, j) {
                    save_image(a.output.join(format!("{stem}_c{j}_p{}.png", p + 1)), c, spec.range)?;
                }
            }
        }
    }
    bar.finish_and_clear();
    if !quiet {
        say!(
            "enhanced {} image(s): {} candidate(s), {} pass(es) at t = {}, written to {}",
            inputs.len(),
            a.candidates,
            a.passes,
            format_time(a.t),
            a.output.display()
        );
    }
    Ok(())
}

/// A size rounded to the nearest multiple of `m` on each side (at least `m`).
fn round_to_multiple(size: (usize, usize), m: usize) -> (usize, usize) {
    let m = m.max(1);
    let r = |v: usize| (((v + m / 2) / m).max(1)) * m;
    (r(size.0), r(size.1))
}
