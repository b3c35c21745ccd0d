//! DLSM's time-conditional classifier (`models/resnet_cond.py`, wrapped by
//! `models/classifier.py`), on tch.
//!
//! `logits(x, σ)`:
//!
//! - `temb = Linear(4nf, 4nf)(act(Linear(2nf, 4nf)([sin, cos](2π·W·log σ))))` with the fixed
//!   Fourier frequencies `W` (`classifier.condition_modules.{0,1,2}`);
//! - a CIFAR ResNet on the RAW input `x` (no `2x − 1`): 3×3 stem conv (no bias),
//!   BatchNorm, ReLU, four stages of `BasicBlock`s (strides 1, 2, 2, 2), after stage `k`
//!   `+ dense_k(SiLU(temb))` per channel, `avg_pool2d(4)`, flatten, `linear`.
//!
//! BatchNorm runs in eval mode (running statistics, eps 1e-5). Key names are the
//! original's without `module.`: `classifier.condition_modules.0.W`,
//! `classifier.classifier.layer2.0.shortcut.1.running_var`, ...; the
//! `num_batches_tracked` counters are not needed at inference and are dropped on load.

use std::f64::consts::PI;
use std::path::Path;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use serde::Deserialize;

use super::config::{Nonlinearity, ResNetCondConfig, MAX_PARAMETERS};
use super::layers::{act, count, random_entries, Conv, Decl, Linear, ParamInfo, Role};
use crate::checkpoint::StateDict;
use crate::models::config_json;
use crate::models::loading::{self, LoadOptions};
use crate::models::{check_device, check_kind, guard_panics};
use crate::{Error, Result};

/// The prefix of every key.
const ROOT: &str = "classifier";

/// The layout of `cfg` (no allocation; fields not validated).
pub(crate) fn layout(cfg: &ResNetCondConfig) -> Result<Vec<ParamInfo>> {
    let mut d = Decl::record();
    Parts::declare(cfg, &mut d)?;
    Ok(d.into_entries())
}

/// The parts of [`ResNetCondConfig`] that need the architecture live with the network
/// that defines it, so that the configuration module depends on nothing else of the family.
impl ResNetCondConfig {
    /// Read the `classifier` section (`model`: `resnet18_cond` / `resnet34_cond`, `nf`,
    /// `fourier_scale`, `classes`; optional extensions `width`, `num_blocks`, `avg_pool`),
    /// `data.num_channels` and `model.nonlinearity` of an original config dumped as JSON.
    pub fn from_json(text: &str) -> Result<Self> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Section {
            model: Option<String>,
            nf: Option<usize>,
            fourier_scale: Option<f64>,
            classes: Option<usize>,
            width: Option<usize>,
            num_blocks: Option<Vec<usize>>,
            avg_pool: Option<usize>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Data {
            num_channels: Option<usize>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Model {
            nonlinearity: Option<Nonlinearity>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct File {
            classifier: Option<Section>,
            data: Data,
            model: Model,
        }
        let f: File =
            config_json::parse(text).map_err(|f| Error::InvalidInput(f.describe("classifier config.json")))?;
        let c = f
            .classifier
            .ok_or_else(|| Error::InvalidInput("classifier config.json: no `classifier` section".into()))?;
        let mut cfg = Self::dlsm_cifar10();
        if let Some(name) = c.model {
            cfg.num_blocks = match name.to_ascii_lowercase().as_str() {
                "resnet18_cond" => vec![2, 2, 2, 2],
                "resnet34_cond" => vec![3, 4, 6, 3],
                other => {
                    return Err(Error::param(
                        "ResNetCondConfig",
                        format!("classifier.model: `{other}` is not resnet18_cond or resnet34_cond"),
                    ))
                }
            };
        }
        cfg.nf = c.nf.unwrap_or(cfg.nf);
        cfg.fourier_scale = c.fourier_scale.unwrap_or(cfg.fourier_scale);
        cfg.num_classes = c.classes.unwrap_or(cfg.num_classes);
        cfg.width = c.width.unwrap_or(cfg.width);
        cfg.num_blocks = c.num_blocks.unwrap_or(cfg.num_blocks);
        cfg.avg_pool = c.avg_pool.unwrap_or(cfg.avg_pool);
        cfg.in_channels = f.data.num_channels.unwrap_or(cfg.in_channels);
        cfg.nonlinearity = f.model.nonlinearity.unwrap_or(cfg.nonlinearity);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check sizes (bounded before anything is allocated) and the parameter count.
    pub fn validate(&self) -> Result<()> {
        self.check_fields()?;
        let n = count(&layout(self)?);
        if n > MAX_PARAMETERS {
            return Err(Error::param(
                "ResNetCondConfig",
                format!("width: the network would have {n} parameters, more than the limit {MAX_PARAMETERS}"),
            ));
        }
        Ok(())
    }

    /// The state-dict entries in registration order (without the BatchNorm
    /// `num_batches_tracked` counters), with shapes and roles.
    pub fn layout(&self) -> Result<Vec<ParamInfo>> {
        self.validate()?;
        layout(self)
    }

    /// Number of parameters and buffers (BatchNorm running statistics included,
    /// `num_batches_tracked` not).
    pub fn num_parameters(&self) -> Result<u64> {
        self.validate()?;
        Ok(count(&layout(self)?))
    }
}

/// `nn.BatchNorm2d` in eval mode.
#[derive(Debug)]
struct BatchNorm {
    w: Tensor,
    b: Tensor,
    mean: Tensor,
    var: Tensor,
}

impl BatchNorm {
    fn new(d: &mut Decl<'_>, prefix: &str, c: usize) -> Result<Self> {
        Ok(Self {
            w: d.tensor(&format!("{prefix}.weight"), &[c], Role::Trainable, 1.0, None)?,
            b: d.tensor(&format!("{prefix}.bias"), &[c], Role::Trainable, 0.0, None)?,
            mean: d.tensor(&format!("{prefix}.running_mean"), &[c], Role::Buffer, 0.0, None)?,
            var: d.tensor(&format!("{prefix}.running_var"), &[c], Role::Buffer, 1.0, None)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_batch_norm(
            Some(&self.w),
            Some(&self.b),
            Some(&self.mean),
            Some(&self.var),
            false,
            0.1,
            1e-5,
            true,
        )?)
    }
}

/// `BasicBlock`: conv-BN-ReLU-conv-BN plus the (1×1 conv + BN) shortcut, ReLU.
#[derive(Debug)]
struct BasicBlock {
    conv1: Conv,
    bn1: BatchNorm,
    conv2: Conv,
    bn2: BatchNorm,
    shortcut: Option<(Conv, BatchNorm)>,
}

impl BasicBlock {
    fn new(d: &mut Decl<'_>, p: &str, cin: usize, planes: usize, stride: i64) -> Result<Self> {
        Ok(Self {
            conv1: Conv::new(d, &format!("{p}.conv1"), cin, planes, 3, stride, 1, false)?,
            bn1: BatchNorm::new(d, &format!("{p}.bn1"), planes)?,
            conv2: Conv::new(d, &format!("{p}.conv2"), planes, planes, 3, 1, 1, false)?,
            bn2: BatchNorm::new(d, &format!("{p}.bn2"), planes)?,
            shortcut: if stride != 1 || cin != planes {
                Some((
                    Conv::new(d, &format!("{p}.shortcut.0"), cin, planes, 1, stride, 0, false)?,
                    BatchNorm::new(d, &format!("{p}.shortcut.1"), planes)?,
                ))
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.bn1.forward(&self.conv1.forward(x)?)?.f_relu()?;
        let out = self.bn2.forward(&self.conv2.forward(&out)?)?;
        let short = match &self.shortcut {
            Some((c, bn)) => bn.forward(&c.forward(x)?)?,
            None => x.shallow_clone(),
        };
        Ok(out.f_add(&short)?.f_relu()?)
    }
}

#[derive(Debug)]
struct Parts {
    fourier_w: Tensor,
    cond1: Linear,
    cond2: Linear,
    conv1: Conv,
    bn1: BatchNorm,
    dense: Vec<Linear>,
    stages: Vec<Vec<BasicBlock>>,
    linear: Linear,
}

impl Parts {
    fn declare(cfg: &ResNetCondConfig, d: &mut Decl<'_>) -> Result<Self> {
        let nf = cfg.nf;
        let cm = format!("{ROOT}.condition_modules");
        let fourier_w = d.tensor(&format!("{cm}.0.W"), &[nf], Role::Frozen, 0.0, Some(Kind::Float))?;
        let cond1 = Linear::new(d, &format!("{cm}.1"), 2 * nf, 4 * nf)?;
        let cond2 = Linear::new(d, &format!("{cm}.2"), 4 * nf, 4 * nf)?;
        let net = format!("{ROOT}.classifier");
        let widths = cfg.stage_widths();
        let conv1 = Conv::new(d, &format!("{net}.conv1"), cfg.in_channels, widths[0], 3, 1, 1, false)?;
        let bn1 = BatchNorm::new(d, &format!("{net}.bn1"), widths[0])?;
        let mut dense = Vec::with_capacity(4);
        for (k, &w) in widths.iter().enumerate() {
            dense.push(Linear::new(d, &format!("{net}.dense_{}", k + 1), 4 * nf, w)?);
        }
        let mut stages = Vec::with_capacity(4);
        let mut in_planes = widths[0];
        for (k, (&planes, &blocks)) in widths.iter().zip(&cfg.num_blocks).enumerate() {
            let mut stage = Vec::with_capacity(blocks);
            for i in 0..blocks {
                let stride = if i == 0 && k > 0 { 2 } else { 1 };
                stage.push(BasicBlock::new(
                    d,
                    &format!("{net}.layer{}.{i}", k + 1),
                    in_planes,
                    planes,
                    stride,
                )?);
                in_planes = planes;
            }
            stages.push(stage);
        }
        let linear = Linear::new(d, &format!("{net}.linear"), widths[3], cfg.num_classes)?;
        Ok(Self {
            fourier_w,
            cond1,
            cond2,
            conv1,
            bn1,
            dense,
            stages,
            linear,
        })
    }
}

/// The time-conditional ResNet classifier on tch, weights under the original names.
#[derive(Debug)]
pub struct TimeCondResNet {
    config: ResNetCondConfig,
    vs: VarStore,
    kind: Kind,
    layout: Vec<ParamInfo>,
    parts: Parts,
}

impl TimeCondResNet {
    fn declare(config: ResNetCondConfig, device: Device, kind: Kind) -> Result<Self> {
        config.validate()?;
        check_kind(kind)?;
        check_device(device)?;
        guard_panics(|| {
            let vs = VarStore::new(device);
            let mut d = Decl::build(&vs, kind);
            let parts = Parts::declare(&config, &mut d)?;
            let layout = d.into_entries();
            Ok(Self {
                config,
                vs,
                kind,
                layout,
                parts,
            })
        })
    }

    /// A classifier with zero weights (normalization scales and running variances 1).
    pub fn zeros(config: ResNetCondConfig, device: Device, kind: Kind) -> Result<Self> {
        Self::declare(config, device, kind)
    }

    /// Reproducible random weights from `seed` (see
    /// [`NcsnppNet::random`](super::NcsnppNet::random)); running statistics are random too.
    pub fn random(config: ResNetCondConfig, device: Device, kind: Kind, seed: u64) -> Result<Self> {
        let mut net = Self::declare(config, device, kind)?;
        let sd = random_entries(&net.layout, net.config.fourier_scale, seed);
        net.load(&sd, Path::new("<random init>"))?;
        Ok(net)
    }

    /// A classifier with the weights of the flat state dict `sd` (original names without
    /// `module.`; `*.num_batches_tracked` entries are ignored).
    pub fn from_state_dict(
        config: ResNetCondConfig,
        mut sd: StateDict,
        device: Device,
        kind: Kind,
        source: &Path,
    ) -> Result<Self> {
        let counters: Vec<String> = sd
            .keys()
            .filter(|k| k.ends_with(".num_batches_tracked"))
            .map(str::to_string)
            .collect();
        for k in counters {
            sd.remove(&k);
        }
        let mut net = Self::declare(config, device, kind)?;
        net.load(&sd, source)?;
        Ok(net)
    }

    fn load(&mut self, sd: &StateDict, source: &Path) -> Result<()> {
        loading::load_state_dict_into(&mut self.vs, sd, source, &LoadOptions::default())
    }

    /// The configuration.
    pub fn config(&self) -> &ResNetCondConfig {
        &self.config
    }

    /// The state-dict entries in registration order.
    pub fn layout(&self) -> &[ParamInfo] {
        &self.layout
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The compute kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Number of parameters and buffers.
    pub fn num_parameters(&self) -> u64 {
        count(&self.layout)
    }

    /// The logits (`f32`, `[N, classes]`) for `x` (NCHW, raw data range) at noise levels
    /// `sigma` (1-D, one per item, positive). Differentiable in `x`.
    pub fn forward(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        let cfg = &self.config;
        let p = &self.parts;
        let (n, c, _, _) = x.size4()?;
        if c as usize != cfg.in_channels {
            return Err(Error::Shape(format!(
                "the classifier takes {} channels, got {c}",
                cfg.in_channels
            )));
        }
        if sigma.size() != [n] {
            return Err(Error::Shape(format!(
                "expected {n} noise levels, got a tensor of shape {:?}",
                sigma.size()
            )));
        }
        let sigma = sigma.f_to_kind(Kind::Float)?.f_to_device(x.device())?;
        let proj = sigma
            .f_log()?
            .f_unsqueeze(1)?
            .f_mul(&p.fourier_w.f_unsqueeze(0)?)?
            .f_mul_scalar(2.0 * PI)?;
        let emb = Tensor::f_cat(&[proj.f_sin()?, proj.f_cos()?], 1)?.f_to_kind(self.kind)?;
        let temb = p.cond2.forward(&act(cfg.nonlinearity, &p.cond1.forward(&emb)?)?)?;
        let temb_act = temb.f_silu()?;

        let mut out = p.bn1.forward(&p.conv1.forward(&x.f_to_kind(self.kind)?)?)?.f_relu()?;
        for (stage, dense) in p.stages.iter().zip(&p.dense) {
            for b in stage {
                out = b.forward(&out)?;
            }
            out = out.f_add(&dense.forward(&temb_act)?.f_unsqueeze(-1)?.f_unsqueeze(-1)?)?;
        }
        let k = cfg.avg_pool as i64;
        let (_, oc, oh, ow) = out.size4()?;
        if oh < k || ow < k {
            return Err(Error::Shape(format!(
                "the classifier's last stage is {oh}×{ow}, smaller than its {k}×{k} average pooling: the input \
                 is too small for this classifier (DLSM's take 32×32 images)"
            )));
        }
        let out = out.f_avg_pool2d([k, k], [k, k], [0, 0], false, true, None::<i64>)?;
        let feats = out.f_reshape([n, -1])?;
        let (_, nfeat) = feats.size2()?;
        if nfeat != oc || nfeat != cfg.stage_widths()[3] as i64 {
            return Err(Error::Shape(format!(
                "the classifier's linear layer takes {} features, but this input gives {nfeat} after pooling \
                 ({oh}×{ow} maps pooled by {k}): it needs images whose last stage pools to 1×1 (DLSM: 32×32)",
                cfg.stage_widths()[3]
            )));
        }
        Ok(p.linear.forward(&feats)?.f_to_kind(Kind::Float)?)
    }
}
