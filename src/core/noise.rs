//! Per-item random streams and Gaussian draws.
//!
//! Every batch item draws from its own ChaCha8 stream, so an item's noise never depends on
//! the batch size, the order of items, the thread count or the device. Noise is drawn on the
//! host in `f32` with the Ziggurat method (`rand_distr::StandardNormal`).

use ndarray::{Array4, ArrayViewMut4, Axis};
use ndarray_rand::rand_distr::StandardNormal;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::{Error, Result};

/// One independent random stream per batch item.
///
/// ```
/// use boomerang::NoiseStreams;
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
/// let mut a = NoiseStreams::from_rng(&mut rng, 4);
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
/// let mut b = NoiseStreams::from_rng(&mut rng, 2);
/// // Item 1 draws the same noise whether the batch has 4 items or 2.
/// let za = a.normal((3, 8, 8))?;
/// let zb = b.normal((3, 8, 8))?;
/// assert_eq!(za.index_axis(ndarray::Axis(0), 1), zb.index_axis(ndarray::Axis(0), 1));
/// # Ok::<(), boomerang::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct NoiseStreams {
    rngs: Vec<ChaCha8Rng>,
}

impl NoiseStreams {
    /// `n` streams from one 256-bit seed drawn from the caller's RNG: item `i` uses ChaCha8
    /// stream `i` of that seed.
    pub fn from_rng<R: Rng + ?Sized>(rng: &mut R, n: usize) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Self::indexed(seed, 0..n as u64)
    }

    /// One stream per item key (e.g. a hash of a file's relative path): the result for an
    /// item depends only on `(seed, key)`, whatever batch or shard it lands in.
    pub fn keyed(seed: u64, keys: &[u64]) -> Self {
        let base = ChaCha8Rng::seed_from_u64(seed).get_seed();
        Self::indexed(base, keys.iter().copied())
    }

    fn indexed(seed: [u8; 32], streams: impl Iterator<Item = u64>) -> Self {
        let rngs = streams
            .map(|k| {
                let mut r = ChaCha8Rng::from_seed(seed);
                r.set_stream(k);
                r
            })
            .collect();
        Self { rngs }
    }

    /// One single-item `NoiseStreams` per stream (for item-wise work), in order; [`join`]
    /// puts them back together.
    ///
    /// [`join`]: NoiseStreams::join
    pub(crate) fn split_items(self) -> Vec<NoiseStreams> {
        self.rngs.into_iter().map(|r| NoiseStreams { rngs: vec![r] }).collect()
    }

    /// The inverse of [`split_items`](NoiseStreams::split_items).
    pub(crate) fn join(parts: Vec<NoiseStreams>) -> NoiseStreams {
        NoiseStreams {
            rngs: parts.into_iter().flat_map(|p| p.rngs).collect(),
        }
    }

    /// Number of streams (= batch items).
    pub fn len(&self) -> usize {
        self.rngs.len()
    }

    /// Whether there are no streams.
    pub fn is_empty(&self) -> bool {
        self.rngs.is_empty()
    }

    /// Draw a standard normal batch of shape `(len, c, h, w)`.
    pub fn normal(&mut self, item_shape: (usize, usize, usize)) -> Result<Array4<f32>> {
        let (c, h, w) = item_shape;
        let mut out = Array4::zeros((self.rngs.len(), c, h, w));
        self.fill_normal(out.view_mut())?;
        Ok(out)
    }

    /// Fill `out` (one item per stream along axis 0) with standard normal draws, items in
    /// parallel.
    pub fn fill_normal(&mut self, mut out: ArrayViewMut4<'_, f32>) -> Result<()> {
        let n = out.dim().0;
        self.check_items(n)?;
        out.axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(self.rngs.par_iter_mut())
            .for_each(|(mut item, rng)| {
                let mut z = Normals(rng);
                match item.as_slice_mut() {
                    Some(sl) => sl.iter_mut().for_each(|v| *v = z.next()),
                    None => item.iter_mut().for_each(|v| *v = z.next()),
                }
            });
        Ok(())
    }

    /// Run `f(i, item_i, normals_i)` for every item `i` of `items` (one per stream), items in
    /// parallel. Item `i` draws from stream `i` only, so whatever `f` does with its draws is
    /// the same for every thread count and batch. A fused step pass draws its noise here,
    /// element by element in the item's logical order: exactly the numbers
    /// [`fill_normal`](NoiseStreams::fill_normal) would have written, without the buffer.
    pub(crate) fn par_items<I, F>(&mut self, items: I, f: F) -> Result<()>
    where
        I: IndexedParallelIterator,
        F: Fn(usize, I::Item, &mut Normals<'_>) + Sync + Send,
    {
        self.check_items(items.len())?;
        items
            .zip(self.rngs.par_iter_mut())
            .enumerate()
            .for_each(|(i, (item, rng))| f(i, item, &mut Normals(rng)));
        Ok(())
    }

    fn check_items(&self, n: usize) -> Result<()> {
        if n != self.rngs.len() {
            return Err(Error::Shape(format!(
                "noise for {n} items requested from {} streams",
                self.rngs.len()
            )));
        }
        Ok(())
    }
}

/// One item's source of standard normal `f32` draws (ChaCha8 + Ziggurat).
pub(crate) struct Normals<'a>(&'a mut ChaCha8Rng);

impl Normals<'_> {
    /// The next draw of the item's stream.
    #[inline(always)]
    pub(crate) fn next(&mut self) -> f32 {
        self.0.sample(StandardNormal)
    }
}
