//! `boomerang sample`: k local samples of each image at one or several t.

use std::path::PathBuf;

use boomerang::apps::augment::{local_samples, TimeChoice};
use boomerang::apps::dataset::{format_time, load_for_model, stack, LoadedImage, SizePolicy};
use boomerang::apps::keys::{derive_key, hash_bytes, path_key};
use boomerang::apps::metrics::distances;
use boomerang::core::local::LocalSampler;
use boomerang::image_io::{grid, save_image};
use boomerang::TimeSpec;
use clap::Args;
use ndarray::ArrayView3;

use crate::error::CliError;
use crate::inputs::{check_inputs_not_in_output, collect_inputs, prepare_outputs, stem_of};
use crate::model::{load_runner, ModelArgs};
use crate::{parse_t_arg, progress};

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Images or folders of images (PNG, JPEG).
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Output folder.
    #[arg(short, long)]
    output: PathBuf,
    /// t as a fraction (0.3) or a step (300); several: --t 0.2,0.5 or --t 0.2 --t 0.5.
    #[arg(long = "t", required = true, value_delimiter = ',', value_parser = parse_t_arg, value_name = "T")]
    t: Vec<TimeSpec>,
    /// Samples per image and t.
    #[arg(short = 'k', long, default_value_t = 4)]
    samples: usize,
    /// Also write one picture per input: a row per t, the input first.
    #[arg(long)]
    grid: bool,
    /// Resize images whose size is not the model's (default: refuse them).
    #[arg(long)]
    resize: bool,
    /// Replace existing output files.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn sample(a: SampleArgs, quiet: bool) -> Result<(), CliError> {
    if a.samples == 0 {
        return Err(CliError::usage("-k/--samples must be at least 1"));
    }
    let inputs = collect_inputs(&a.inputs)?;
    check_inputs_not_in_output(&inputs, &a.output)?;
    let runner = load_runner(&a.model)?.runner;
    for &t in &a.t {
        runner.start_time(t)?;
    }
    let mut names = Vec::new();
    for i in &inputs {
        let stem = stem_of(&i.rel);
        for &t in &a.t {
            for j in 0..a.samples {
                names.push(format!("{stem}_t{}_s{j}.png", format_time(t)));
            }
        }
        if a.grid {
            names.push(format!("{stem}_grid.png"));
        }
    }
    prepare_outputs(&a.output, &names, a.overwrite)?;
    let model = runner.input();
    let policy = if a.resize { SizePolicy::Resize } else { SizePolicy::Skip };
    let bar = progress::images_bar(inputs.len() * a.t.len() * a.samples, "sampling", quiet);
    let per_chunk = (a.model.batch_size / a.samples).max(1);
    // Mean distance of the samples to their input, per t: (Σ RMSE, Σ SSIM, SSIM count, n).
    let mut table = vec![(0f64, 0f64, 0usize, 0usize); a.t.len()];
    for chunk in inputs.chunks(per_chunk) {
        let loaded = chunk
            .iter()
            .map(|i| load_for_model(&i.path, &model, policy))
            .collect::<Result<Vec<LoadedImage>, _>>()?;
        for (i, img) in chunk.iter().zip(&loaded) {
            let stem = stem_of(&i.rel);
            let key = path_key(&i.rel);
            let x = stack(&[img.data.view()])?;
            let mut rows = Vec::new();
            for (ti, &t) in a.t.iter().enumerate() {
                let tkey = derive_key(key, &[hash_bytes(format_time(t).as_bytes())]);
                let samples = local_samples(
                    &runner,
                    x.view(),
                    &[tkey],
                    a.samples,
                    &TimeChoice::Fixed(t),
                    a.model.seed,
                    a.model.batch_size,
                )?;
                let mut row = vec![img.data.clone()];
                for s in samples {
                    let d = distances(s.sample.view(), img.data.view(), model.range)?;
                    let entry = &mut table[ti];
                    entry.0 += d.mse.sqrt();
                    if let Some(v) = d.ssim {
                        entry.1 += v;
                        entry.2 += 1;
                    }
                    entry.3 += 1;
                    let name = format!("{stem}_t{}_s{}.png", format_time(t), s.copy);
                    save_image(a.output.join(&name), s.sample.view(), model.range)?;
                    if a.grid {
                        row.push(s.sample);
                    }
                    bar.inc(1);
                }
                if a.grid {
                    rows.extend(row);
                }
            }
            if a.grid {
                let views: Vec<ArrayView3<'_, f32>> = rows.iter().map(|r| r.view()).collect();
                let batch = stack(&views)?;
                let (lo, _) = model.range.bounds();
                let picture = grid(batch.view(), a.samples + 1, 2, lo)?;
                save_image(a.output.join(format!("{stem}_grid.png")), picture.view(), model.range)?;
            }
        }
    }
    bar.finish_and_clear();
    if !quiet {
        say!(
            "wrote {} samples of {} image(s) at t = {} to {}",
            inputs.len() * a.t.len() * a.samples,
            inputs.len(),
            a.t.iter().map(|&t| format_time(t)).collect::<Vec<_>>().join(", "),
            a.output.display()
        );
        say!("distance to the input ([0, 1] scale, mean over samples):");
        say!("{:>8} {:>8} {:>8}", "t", "RMSE", "SSIM");
        for (&t, &(rmse, ssim, n_ssim, n)) in a.t.iter().zip(&table) {
            let ssim = if n_ssim > 0 {
                format!("{:.3}", ssim / n_ssim as f64)
            } else {
                "-".into()
            };
            say!("{:>8} {:>8.4} {:>8}", format_time(t), rmse / n.max(1) as f64, ssim);
        }
    }
    Ok(())
}
