//! A procedural image family whose variation a person sees at a glance: one coloured shape
//! (disc, square or triangle) of some size and position on a plain background.
//!
//! It is the data of the crate's embedded default model and of the demos, and it comes with
//! its own test of membership: [`Shapes::fit`] recovers the parameters that best explain
//! an image, so "how well is this image explained by the generator?" is a number
//! ([`FitReport::rmse`]) that a sample of a model can pass or fail.

use ndarray::{Array3, Array4, ArrayView3, ArrayView4, Axis};
use rand::Rng;

use crate::{Error, Result};

/// The kind of shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeKind {
    /// A disc of radius `size`.
    Disc,
    /// An axis-aligned square of half-side `size`.
    Square,
    /// An upward triangle with half-base and half-height `size`.
    Triangle,
}

impl ShapeKind {
    /// All kinds.
    pub const ALL: [ShapeKind; 3] = [ShapeKind::Disc, ShapeKind::Square, ShapeKind::Triangle];

    fn contains(self, dy: f32, dx: f32, size: f32) -> bool {
        match self {
            ShapeKind::Disc => dy * dy + dx * dx <= size * size,
            ShapeKind::Square => dy.abs() <= size && dx.abs() <= size,
            // Apex at (−size, 0), base at +size: |dx| grows linearly from 0 to size.
            ShapeKind::Triangle => dy.abs() <= size && dx.abs() <= (dy + size) / 2.0,
        }
    }
}

/// Everything that defines one image of the family.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapeParams {
    /// Shape kind.
    pub kind: ShapeKind,
    /// Centre row, in pixels.
    pub cy: f32,
    /// Centre column, in pixels.
    pub cx: f32,
    /// Radius / half-side, in pixels.
    pub size: f32,
    /// Shape colour, RGB in `[-1, 1]`.
    pub color: [f32; 3],
    /// Background colour, RGB in `[-1, 1]`.
    pub background: [f32; 3],
}

/// The family at one image size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shapes {
    size: usize,
}

impl Shapes {
    /// The family at `size × size` pixels (`size ≥ 8`).
    pub fn new(size: usize) -> Result<Self> {
        if size < 8 {
            return Err(Error::param(
                "size",
                format!("images need at least 8×8 pixels, got {size}"),
            ));
        }
        Ok(Self { size })
    }

    /// Image side in pixels.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Draw random parameters: dark background, bright shape (contrast at least 0.6 per
    /// image), size between 1/8 and 1/4 of the side, fully inside the image.
    pub fn sample_params<R: Rng + ?Sized>(&self, rng: &mut R) -> ShapeParams {
        let n = self.size as f32;
        let size = rng.gen_range(n / 8.0..n / 4.0);
        let margin = size + 1.0;
        ShapeParams {
            kind: ShapeKind::ALL[rng.gen_range(0..3)],
            cy: rng.gen_range(margin..n - margin),
            cx: rng.gen_range(margin..n - margin),
            size,
            color: [
                rng.gen_range(0.0..1.0),
                rng.gen_range(0.0..1.0),
                rng.gen_range(0.0..1.0),
            ],
            background: [
                rng.gen_range(-1.0..-0.4),
                rng.gen_range(-1.0..-0.4),
                rng.gen_range(-1.0..-0.4),
            ],
        }
    }

    /// Render parameters as a `3×size×size` image in `[-1, 1]`.
    pub fn render(&self, p: &ShapeParams) -> Array3<f32> {
        Array3::from_shape_fn((3, self.size, self.size), |(c, y, x)| {
            let (dy, dx) = (y as f32 + 0.5 - p.cy, x as f32 + 0.5 - p.cx);
            if p.kind.contains(dy, dx, p.size) {
                p.color[c]
            } else {
                p.background[c]
            }
        })
    }

    /// A batch of `n` random members (`n×3×size×size`).
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Array4<f32> {
        let mut out = Array4::zeros((n, 3, self.size, self.size));
        for mut item in out.axis_iter_mut(Axis(0)) {
            let p = self.sample_params(rng);
            item.assign(&self.render(&p));
        }
        out
    }

    /// Fit the family to an image: the parameters whose rendering is closest to it, found by
    /// estimating the two colours and searching kind, position (half-pixel grid) and size.
    pub fn fit(&self, image: ArrayView3<'_, f32>) -> Result<FitReport> {
        let (c, h, w) = image.dim();
        if (c, h, w) != (3, self.size, self.size) {
            return Err(Error::Shape(format!(
                "expected a 3×{0}×{0} image, got {c}×{h}×{w}",
                self.size
            )));
        }
        let n = self.size;
        // Background: median of the border pixels per channel.
        let mut background = [0f32; 3];
        for (ch, bg) in background.iter_mut().enumerate() {
            let mut border: Vec<f32> = (0..n)
                .flat_map(|i| {
                    [
                        image[[ch, 0, i]],
                        image[[ch, n - 1, i]],
                        image[[ch, i, 0]],
                        image[[ch, i, n - 1]],
                    ]
                })
                .collect();
            border.sort_by(f32::total_cmp);
            *bg = border[border.len() / 2];
        }
        // Foreground mask: pixels far from the background colour.
        let dist = |y: usize, x: usize| -> f32 { (0..3).map(|ch| (image[[ch, y, x]] - background[ch]).powi(2)).sum() };
        let mask: Vec<bool> = (0..n * n).map(|i| dist(i / n, i % n) > 0.09).collect();
        let count = mask.iter().filter(|m| **m).count().max(1);
        let mut color = [0f32; 3];
        for (ch, col) in color.iter_mut().enumerate() {
            *col = (0..n * n)
                .filter(|&i| mask[i])
                .map(|i| image[[ch, i / n, i % n]])
                .sum::<f32>()
                / count as f32;
        }
        // Search the geometry against the mask.
        let (ys, xs): (Vec<f32>, Vec<f32>) = (0..n * n)
            .filter(|&i| mask[i])
            .map(|i| ((i / n) as f32 + 0.5, (i % n) as f32 + 0.5))
            .unzip();
        let (my, mx) = (
            ys.iter().sum::<f32>() / count as f32,
            xs.iter().sum::<f32>() / count as f32,
        );
        let mut best = (
            usize::MAX,
            ShapeParams {
                kind: ShapeKind::Disc,
                cy: my,
                cx: mx,
                size: 1.0,
                color,
                background,
            },
        );
        let nf = n as f32;
        for kind in ShapeKind::ALL {
            for si in 0..=(n * 2) {
                let size = 1.0 + si as f32 * 0.25 * nf / 16.0;
                if size > nf / 2.0 {
                    break;
                }
                for oy in -6..=6 {
                    for ox in -6..=6 {
                        let (cy, cx) = (my + oy as f32 * 0.5, mx + ox as f32 * 0.5);
                        let mut wrong = 0;
                        for (i, &m) in mask.iter().enumerate() {
                            let inside = kind.contains((i / n) as f32 + 0.5 - cy, (i % n) as f32 + 0.5 - cx, size);
                            wrong += (inside != m) as usize;
                            if wrong >= best.0 {
                                break;
                            }
                        }
                        if wrong < best.0 {
                            best = (
                                wrong,
                                ShapeParams {
                                    kind,
                                    cy,
                                    cx,
                                    size,
                                    color,
                                    background,
                                },
                            );
                        }
                    }
                }
            }
        }
        let params = best.1;
        let rendered = self.render(&params);
        let rmse = ((&rendered - &image).mapv(|v| v * v).mean().unwrap_or(f32::INFINITY)).sqrt();
        Ok(FitReport { params, rmse })
    }
}

impl Shapes {
    /// The largest fit error of a member: renderings of the family fit to ≤ 0.14 (the search
    /// runs on a half-pixel grid, so edges can be off by a pixel); other images fit far worse
    /// (pure noise about 0.58, two shapes in one image about 0.5).
    pub const MEMBER_RMSE: f32 = 0.2;

    /// Whether a fitted image is a member of the family: it is explained by its best
    /// parameters ([`FitReport::rmse`] below [`MEMBER_RMSE`](Shapes::MEMBER_RMSE)) and those
    /// parameters are ones the family draws ([`sample_params`](Shapes::sample_params): a dark
    /// background, a colour in `[0, 1]`, a size between 1/8 and 1/4 of the side, the shape
    /// inside the image), up to the fit's resolution (0.1 in colour, one pixel in place and
    /// size).
    pub fn is_member(&self, fit: &FitReport) -> bool {
        let p = &fit.params;
        let n = self.size as f32;
        let (tol_c, tol_px) = (0.1, 1.0);
        fit.rmse < Self::MEMBER_RMSE
            && p.background.iter().all(|&b| (-1.0 - tol_c..=-0.4 + tol_c).contains(&b))
            && p.color.iter().all(|&c| (-tol_c..=1.0 + tol_c).contains(&c))
            && (n / 8.0 - tol_px..=n / 4.0 + tol_px).contains(&p.size)
            && [p.cy, p.cx]
                .iter()
                .all(|&c| c - p.size >= -tol_px && c + p.size <= n + tol_px)
    }

    /// [`fit`](Shapes::fit) every image of an `N×3×size×size` batch (in parallel).
    pub fn fit_batch(&self, images: ArrayView4<'_, f32>) -> Result<Vec<FitReport>> {
        use rayon::prelude::*;
        let items: Vec<ArrayView3<'_, f32>> = images.axis_iter(Axis(0)).collect();
        items.into_par_iter().map(|x| self.fit(x)).collect()
    }
}

/// The result of [`Shapes::fit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitReport {
    /// The best-fitting parameters.
    pub params: ShapeParams,
    /// Root-mean-square difference between the image and the rendering of `params`: near 0
    /// for members of the family, large for anything else.
    pub rmse: f32,
}
