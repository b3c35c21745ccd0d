//! The cost of the ndarray <-> tch boundary: one DDPM UNet forward pass through the
//! `Denoiser` seam (host array in, host array out: finite check, one copy in, chunking,
//! one copy out) against the same network called directly on prepared tensors, and the
//! boundary alone (the same seam around an identity network), whose time divided by the
//! network's is the overhead; it is less sensitive to machine load than the difference of
//! two long timings.
//!
//! `cargo bench --bench ddpm_step -- --warm-up-time 1 --measurement-time 5`
//!
//! Random weights (seeded, drawn on the host); the tiny config and the CIFAR-10 preset
//! (35.7M parameters), batch 1 and 16, f32 on the CPU (or the first CUDA device when
//! `BOOMERANG_BENCH_DEVICE=cuda`).
//!
//! libtorch's CPU kernels run on `BOOMERANG_BENCH_THREADS` intra-op threads (default 1):
//! on a shared or small machine, OpenMP threads that spin-wait for busy cores make
//! multi-threaded timings vary by an order of magnitude, which would hide the boundary.

use boomerang::models::{parse_device, DdpmConfig, DdpmUNet, Device, Kind, TchDenoiser, TchModule};
use boomerang::{Condition, Denoiser, DenoiserSpec};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::Array4;
use tch::Tensor;

/// The seam around no network at all: the output is the input.
struct Identity {
    spec: DenoiserSpec,
    device: Device,
}

impl TchModule for Identity {
    fn spec(&self) -> DenoiserSpec {
        self.spec.clone()
    }
    fn device(&self) -> Device {
        self.device
    }
    fn kind(&self) -> Kind {
        Kind::Float
    }
    fn forward_t(&self, x: &Tensor, _t: &Tensor, _c: &Condition) -> boomerang::Result<Tensor> {
        Ok(x.shallow_clone())
    }
}

fn bench(c: &mut Criterion) {
    let device = parse_device(&std::env::var("BOOMERANG_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into()))
        .expect("BOOMERANG_BENCH_DEVICE");
    let threads = std::env::var("BOOMERANG_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    tch::set_num_threads(threads);
    for (name, config) in [("tiny", DdpmConfig::tiny()), ("cifar10", DdpmConfig::cifar10())] {
        let res = config.resolution;
        let identity = TchDenoiser::new(Identity {
            spec: config.spec(),
            device,
        });
        let d = TchDenoiser::new(DdpmUNet::random(config, device, Kind::Float, 0).expect("network"));
        let mut group = c.benchmark_group(format!("ddpm_{name}"));
        if name == "cifar10" {
            group.sample_size(10);
        }
        for batch in [1usize, 16] {
            let x = Array4::from_shape_fn((batch, 3, res, res), |(n, c, h, w)| {
                ((n * 7 + c * 3 + h * 5 + w) % 17) as f32 / 8.5 - 1.0
            });
            let xt = Tensor::from_slice(x.as_slice().expect("contiguous"))
                .view([batch as i64, 3, res as i64, res as i64])
                .to_device(device);
            let t = Tensor::full([batch as i64], 500.0, (Kind::Float, device));
            group.bench_with_input(BenchmarkId::new("denoiser", batch), &batch, |b, _| {
                b.iter(|| d.predict(x.view(), &[500.0], &Condition::None).expect("predict"))
            });
            group.bench_with_input(BenchmarkId::new("boundary", batch), &batch, |b, _| {
                b.iter(|| {
                    identity
                        .predict(x.view(), &[500.0], &Condition::None)
                        .expect("identity")
                })
            });
            group.bench_with_input(BenchmarkId::new("tensor", batch), &batch, |b, _| {
                b.iter(|| {
                    let _guard = tch::no_grad_guard();
                    let y = d.model().forward(&xt, &t).expect("forward");
                    // Wait for the device, as the boundary's copy back does.
                    if device.is_cuda() {
                        tch::Cuda::synchronize(0);
                    }
                    y
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
