//! Side-by-side benchmark, Rust half: the crate's DDPM UNet and Boomerang runner on the same
//! random-weight model folder that `tools/bench_side_by_side.py make DIR` writes with
//! diffusers (the Python half times the same workloads in PyTorch).
//!
//! ```text
//! cargo build --release --example bench_side_by_side
//! target/release/examples/bench_side_by_side check DIR
//! target/release/examples/bench_side_by_side time DIR --threads 1 --what forward1 [--iters 5]
//! ```
//!
//! `check DIR` loads the folder through the crate (`DdpmUNet::load`, the scheduler from
//! `scheduler_config.json`) and compares with diffusers' outputs in `DIR/reference/`: the
//! UNet on the 16-item reference batch, and a DDIM (η = 0) Boomerang run from t = 0.3 with
//! the reference forward noise. It prints the relative differences (max |a − b| / max |b|)
//! as JSON and exits with status 1 when the UNet's exceeds 1e-4.
//!
//! `time DIR --threads T --what W` sets `tch::set_num_threads(T)` and a global rayon pool of
//! T threads, runs workload W `--iters` times (default 5) after one warm-up and prints the
//! median seconds per iteration as JSON:
//! - `forward1`, `forward16`: one UNet forward (on tensors, under `no_grad`) on the first
//!   1 / all 16 reference items;
//! - `boomerang:F`: `Boomerang::run_with_noise` on the reference image (batch 1) from
//!   t = F with DDIM (η = 0) on `Spacing::Uniform(100)`, `x̂0` clipped as the scheduler
//!   config says; `calls` in the output is `Boomerang::plan(t).len()`.

#[cfg(feature = "tch")]
fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

#[cfg(not(feature = "tch"))]
fn main() {
    eprintln!("this example needs the `tch` feature");
}

#[cfg(feature = "tch")]
mod side {
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use boomerang::models::{DdpmUNet, Device, Kind, TchDenoiser};
    use boomerang::schedule::SchedulerConfig;
    use boomerang::{Boomerang, Clip, NoiseStreams, Sampler, Spacing, TimeSpec};
    use ndarray::{Array1, Array4, ArrayView4};
    use tch::Tensor;

    pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

    /// Tolerance of the UNet agreement check (max |a − b| / max |b|).
    pub const TOL: f64 = 1e-4;
    /// Items in the reference batch.
    pub const BATCH: usize = 16;
    /// The `t` of the reference Boomerang run.
    pub const CHECK_T: f64 = 0.3;

    /// Raw little-endian f32 values.
    pub fn read_f32(path: &Path) -> Res<Vec<f32>> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if bytes.len() % 4 != 0 {
            return Err(format!("{}: {} bytes is not a whole number of f32", path.display(), bytes.len()).into());
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    pub fn read4(path: &Path, n: usize) -> Res<Array4<f32>> {
        Ok(Array4::from_shape_vec((n, 3, 32, 32), read_f32(path)?)?)
    }

    /// max |a − b| / max |b|.
    pub fn rel_diff(a: ArrayView4<'_, f32>, b: ArrayView4<'_, f32>) -> f64 {
        let num = a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .fold(0.0, f64::max);
        let den = b.iter().map(|y| (*y as f64).abs()).fold(0.0, f64::max);
        num / den
    }

    pub fn tensor(a: ArrayView4<'_, f32>) -> Tensor {
        let (n, c, h, w) = a.dim();
        let data: Vec<f32> = a.iter().copied().collect();
        Tensor::from_slice(&data).view([n as i64, c as i64, h as i64, w as i64])
    }

    pub fn array(t: &Tensor) -> Res<Array4<f32>> {
        let (n, c, h, w) = t.size4()?;
        let flat = t.contiguous().view([-1]);
        let v: Vec<f32> = Vec::<f32>::try_from(&flat)?;
        Ok(Array4::from_shape_vec(
            (n as usize, c as usize, h as usize, w as usize),
            v,
        )?)
    }

    pub struct Inputs {
        pub dir: PathBuf,
        pub x: Array4<f32>,
        pub t: Array1<f32>,
        pub x0: Array4<f32>,
        pub z: Array4<f32>,
    }

    impl Inputs {
        pub fn read(dir: &Path) -> Res<Self> {
            let r = dir.join("reference");
            let t = read_f32(&r.join("t.f32"))?;
            if t.len() != BATCH {
                return Err(format!("t.f32 holds {} values, expected {BATCH}", t.len()).into());
            }
            Ok(Self {
                dir: dir.to_path_buf(),
                x: read4(&r.join("x.f32"), BATCH)?,
                t: Array1::from(t),
                x0: read4(&r.join("x0.f32"), 1)?,
                z: read4(&r.join("z.f32"), 1)?,
            })
        }
    }

    pub fn unet(dir: &Path) -> Res<DdpmUNet> {
        Ok(DdpmUNet::load(dir, Device::Cpu, Kind::Float)?)
    }

    /// The runner the Python side mirrors: DDIM η = 0 on `Uniform(100)`, the folder's
    /// schedule and clipping.
    pub fn runner(dir: &Path) -> Res<Boomerang<TchDenoiser<DdpmUNet>>> {
        let file = SchedulerConfig::find(dir).ok_or("no scheduler_config.json")?;
        let cfg = SchedulerConfig::read(&file)?;
        let clip = if cfg.clip_sample { Clip::Range } else { Clip::Off };
        Ok(Boomerang::builder(unet(dir)?.into_denoiser(), cfg.schedule()?)
            .sampler(Sampler::ddim(0.0))
            .spacing(Spacing::Uniform(100))
            .clip(clip)
            .build()?)
    }

    pub fn forward(net: &DdpmUNet, x: &Tensor, t: &Tensor) -> Res<Tensor> {
        Ok(tch::no_grad(|| net.forward(x, t))?)
    }

    pub fn boomerang(runner: &Boomerang<TchDenoiser<DdpmUNet>>, inp: &Inputs, f: f64) -> Res<Array4<f32>> {
        let mut noise = NoiseStreams::keyed(0, &[0]);
        let out = runner.run_with_noise(inp.x0.view(), TimeSpec::fraction(f), inp.z.view(), &mut noise, None)?;
        Ok(out.sample)
    }

    pub fn check(inp: &Inputs) -> Res<bool> {
        let r = inp.dir.join("reference");
        let net = unet(&inp.dir)?;
        let eps = forward(
            &net,
            &tensor(inp.x.view()),
            &Tensor::from_slice(inp.t.as_slice().unwrap()),
        )?;
        let want = read4(&r.join("eps.f32"), BATCH)?;
        let unet_rel = rel_diff(array(&eps)?.view(), want.view());
        let runner = runner(&inp.dir)?;
        let got = boomerang(&runner, inp, CHECK_T)?;
        let want_b = read4(&r.join(format!("boomerang_{CHECK_T}.f32")), 1)?;
        let boom_rel = rel_diff(got.view(), want_b.view());
        let calls = runner.plan(TimeSpec::fraction(CHECK_T))?.len();
        let ok = unet_rel <= TOL;
        println!(
            "{{\"side\": \"rust\", \"check\": \"agreement\", \"unet_rel_diff\": {unet_rel:e}, \
             \"unet_tol\": {TOL:e}, \"boomerang_t\": {CHECK_T}, \"boomerang_calls\": {calls}, \
             \"boomerang_rel_diff\": {boom_rel:e}, \"ok\": {ok}}}"
        );
        Ok(ok)
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    fn timed(iters: usize, mut f: impl FnMut() -> Res<()>) -> Res<Vec<f64>> {
        f()?; // warm-up
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            let start = Instant::now();
            f()?;
            times.push(start.elapsed().as_secs_f64());
        }
        Ok(times)
    }

    pub fn time(inp: &Inputs, threads: usize, what: &str, iters: usize) -> Res<()> {
        let (times, calls) = if let Some(n) = match what {
            "forward1" => Some(1),
            "forward16" => Some(BATCH),
            _ => None,
        } {
            let net = unet(&inp.dir)?;
            let x = tensor(inp.x.slice(ndarray::s![..n, .., .., ..]));
            let t = Tensor::from_slice(&inp.t.as_slice().unwrap()[..n]);
            let times = timed(iters, || {
                let _eps = forward(&net, &x, &t)?;
                Ok(())
            })?;
            (times, 1)
        } else if let Some(f) = what.strip_prefix("boomerang:") {
            let f: f64 = f.parse()?;
            let runner = runner(&inp.dir)?;
            let calls = runner.plan(TimeSpec::fraction(f))?.len();
            let times = timed(iters, || {
                boomerang(&runner, inp, f)?;
                Ok(())
            })?;
            (times, calls)
        } else {
            return Err(format!("unknown workload `{what}` (forward1, forward16, boomerang:F)").into());
        };
        let list: Vec<String> = times.iter().map(|t| format!("{t:.6}")).collect();
        println!(
            "{{\"side\": \"rust\", \"what\": \"{what}\", \"threads\": {threads}, \"iters\": {iters}, \
             \"calls\": {calls}, \"median_s\": {:.6}, \"times_s\": [{}]}}",
            median(times),
            list.join(", ")
        );
        Ok(())
    }
}

#[cfg(feature = "tch")]
fn run() -> side::Res<bool> {
    use std::path::PathBuf;

    let usage = "usage: bench_side_by_side check DIR | time DIR [--threads T] [--what W] [--iters N]";
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or(usage)?;
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let (mut threads, mut what, mut iters) = (1usize, String::from("forward1"), 5usize);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--threads" => threads = value()?.parse()?,
            "--what" => what = value()?,
            "--iters" => iters = value()?.parse()?,
            _ => return Err(format!("unknown argument `{a}`; {usage}").into()),
        }
    }
    tch::set_num_threads(threads as i32);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    let inputs = side::Inputs::read(&dir)?;
    match mode.as_str() {
        "check" => side::check(&inputs),
        "time" => side::time(&inputs, threads, &what, iters).map(|()| true),
        _ => Err(usage.into()),
    }
}
