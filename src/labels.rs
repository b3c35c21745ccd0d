//! Text on pictures: a small built-in bitmap font, and [`labelled_grid`], a [`grid`] with a
//! label per row in a left margin and optional header strips of column captions.
//!
//! The font is this crate's own design: each glyph is [`GLYPH_WIDTH`]` × `[`GLYPH_HEIGHT`]
//! pixels (capitals and digits 7 rows tall, lower-case descenders 2 rows below them), with a
//! blank column between glyphs, enlarged by a whole `scale` (`1..=`[`MAX_SCALE`]). It covers
//! the ASCII letters and digits, space and `. , : ; = - + _ / \ ( ) [ ] < > ? ! % ' " # * |`;
//! any other character (non-ASCII, control characters, the remaining ASCII signs) is drawn as
//! a hollow box, never a panic.
//!
//! Bounds: a text is cut to its first [`MAX_LABEL_CHARS`] characters (the rest is never
//! read), so one label is at most `64 × 6 × 16` pixels wide whatever string it is given. Ink
//! outside the canvas or region a text is drawn into is clipped; a header caption wider than
//! the columns it spans is cut to the whole glyphs that fit.
//!
//! ```
//! use boomerang::image_io::grid;
//! use boomerang::labels::{labelled_grid, Caption, GridLabels};
//! use boomerang::{ndarray::Array4, rand::Rng, rand::SeedableRng, rand_chacha::ChaCha8Rng};
//!
//! // Two rows of three 32×32 images in [-1, 1], on a black (-1) background, white (1) text.
//! let mut rng = ChaCha8Rng::seed_from_u64(5);
//! let batch = Array4::from_shape_fn((6, 3, 32, 32), |_| rng.gen_range(-1.0f32..=1.0));
//! let labels = GridLabels::rows(["t=0.1", "t=0.5"], 1.0)
//!     .with_header(0, vec![Caption::new("input", 1), Caption::new("samples", 2)]);
//! let picture = labelled_grid(batch.view(), 3, 2, -1.0, &labels)?;
//! let plain = grid(batch.view(), 3, 2, -1.0)?;
//! let (margin, strip) = (labels.margin_width(2)?, labels.strip_height(2)?);
//! assert_eq!(picture.dim(), (3, plain.dim().1 + strip, plain.dim().2 + margin));
//! // Below the header strip and right of the margin: the plain grid's second row.
//! let row = 2 + 32 + 2;
//! assert_eq!(
//!     picture.slice(boomerang::ndarray::s![.., row + strip.., margin..]),
//!     plain.slice(boomerang::ndarray::s![.., row.., ..])
//! );
//! # Ok::<(), boomerang::Error>(())
//! ```
//!
//! [`grid`]: crate::image_io::grid

use ndarray::{s, Array3, ArrayView4, ArrayViewMut3, Axis};

use crate::image_io::grid;
use crate::{Error, Result};

/// Width of a glyph in font pixels.
pub const GLYPH_WIDTH: usize = 5;
/// Height of a glyph in font pixels: 7 rows for capitals and digits, 2 below for descenders.
pub const GLYPH_HEIGHT: usize = 9;
/// Horizontal distance from one glyph to the next in font pixels (one blank column).
pub const GLYPH_ADVANCE: usize = GLYPH_WIDTH + 1;
/// The most characters of a text that are drawn; longer texts are cut to their first
/// `MAX_LABEL_CHARS` characters.
pub const MAX_LABEL_CHARS: usize = 64;
/// The largest scale (screen pixels per font pixel).
pub const MAX_SCALE: usize = 16;

/// The hollow box drawn for characters the font lacks.
const MISSING: [u8; GLYPH_HEIGHT] = [0b11111, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b11111, 0, 0];

/// The rows of `c`'s glyph, top first; bit 4 is the leftmost pixel.
fn glyph(c: char) -> [u8; GLYPH_HEIGHT] {
    match c {
        ' ' => [0; GLYPH_HEIGHT],
        '0' => [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110, 0, 0],
        '1' => [0b00100, 0b01100, 0b10100, 0b00100, 0b00100, 0b00100, 0b11111, 0, 0],
        '2' => [0b01110, 0b10001, 0b00001, 0b00110, 0b01000, 0b10000, 0b11111, 0, 0],
        '3' => [0b11110, 0b00001, 0b00001, 0b01110, 0b00001, 0b00001, 0b11110, 0, 0],
        '4' => [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010, 0, 0],
        '5' => [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110, 0, 0],
        '6' => [0b00111, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110, 0, 0],
        '7' => [0b11111, 0b00001, 0b00010, 0b00100, 0b00100, 0b01000, 0b01000, 0, 0],
        '8' => [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110, 0, 0],
        '9' => [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b11100, 0, 0],
        'A' => [0b00100, 0b01010, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0, 0],
        'B' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110, 0, 0],
        'C' => [0b01111, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b01111, 0, 0],
        'D' => [0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100, 0, 0],
        'E' => [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111, 0, 0],
        'F' => [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000, 0, 0],
        'G' => [0b01111, 0b10000, 0b10000, 0b10011, 0b10001, 0b10001, 0b01111, 0, 0],
        'H' => [0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001, 0, 0],
        'I' => [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b11111, 0, 0],
        'J' => [0b00111, 0b00001, 0b00001, 0b00001, 0b00001, 0b10001, 0b01110, 0, 0],
        'K' => [0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001, 0, 0],
        'L' => [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111, 0, 0],
        'M' => [0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001, 0, 0],
        'N' => [0b10001, 0b11001, 0b11001, 0b10101, 0b10011, 0b10011, 0b10001, 0, 0],
        'O' => [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110, 0, 0],
        'P' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000, 0, 0],
        'Q' => [0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101, 0, 0],
        'R' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001, 0, 0],
        'S' => [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110, 0, 0],
        'T' => [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0, 0],
        'U' => [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110, 0, 0],
        'V' => [0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b01010, 0b00100, 0, 0],
        'W' => [0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b11011, 0b10001, 0, 0],
        'X' => [0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001, 0, 0],
        'Y' => [0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100, 0b00100, 0, 0],
        'Z' => [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111, 0, 0],
        'a' => [0, 0, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111, 0, 0],
        'b' => [0b10000, 0b10000, 0b11110, 0b10001, 0b10001, 0b10001, 0b11110, 0, 0],
        'c' => [0, 0, 0b01111, 0b10000, 0b10000, 0b10000, 0b01111, 0, 0],
        'd' => [0b00001, 0b00001, 0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0, 0],
        'e' => [0, 0, 0b01110, 0b10001, 0b11111, 0b10000, 0b01111, 0, 0],
        'f' => [0b00110, 0b01000, 0b11110, 0b01000, 0b01000, 0b01000, 0b01000, 0, 0],
        'g' => [0, 0, 0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110],
        'h' => [0b10000, 0b10000, 0b11110, 0b10001, 0b10001, 0b10001, 0b10001, 0, 0],
        'i' => [0b00100, 0, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110, 0, 0],
        'j' => [
            0b00010, 0, 0b00110, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100,
        ],
        'k' => [0b10000, 0b10000, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0, 0],
        'l' => [0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00011, 0, 0],
        'm' => [0, 0, 0b11010, 0b10101, 0b10101, 0b10101, 0b10101, 0, 0],
        'n' => [0, 0, 0b11110, 0b10001, 0b10001, 0b10001, 0b10001, 0, 0],
        'o' => [0, 0, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110, 0, 0],
        'p' => [0, 0, 0b11110, 0b10001, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000],
        'q' => [0, 0, 0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b00001],
        'r' => [0, 0, 0b10111, 0b11000, 0b10000, 0b10000, 0b10000, 0, 0],
        's' => [0, 0, 0b01111, 0b10000, 0b01110, 0b00001, 0b11110, 0, 0],
        't' => [0b01000, 0b01000, 0b11110, 0b01000, 0b01000, 0b01000, 0b00111, 0, 0],
        'u' => [0, 0, 0b10001, 0b10001, 0b10001, 0b10001, 0b01111, 0, 0],
        'v' => [0, 0, 0b10001, 0b10001, 0b01010, 0b01010, 0b00100, 0, 0],
        'w' => [0, 0, 0b10001, 0b10001, 0b10101, 0b10101, 0b01010, 0, 0],
        'x' => [0, 0, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0, 0],
        'y' => [0, 0, 0b10001, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110],
        'z' => [0, 0, 0b11111, 0b00010, 0b00100, 0b01000, 0b11111, 0, 0],
        '.' => [0, 0, 0, 0, 0, 0b01100, 0b01100, 0, 0],
        ',' => [0, 0, 0, 0, 0, 0b01100, 0b01100, 0b00100, 0b01000],
        ':' => [0, 0, 0b01100, 0b01100, 0, 0b01100, 0b01100, 0, 0],
        ';' => [0, 0, 0b01100, 0b01100, 0, 0b01100, 0b01100, 0b00100, 0b01000],
        '=' => [0, 0, 0b11111, 0, 0b11111, 0, 0, 0, 0],
        '-' => [0, 0, 0, 0b01110, 0, 0, 0, 0, 0],
        '+' => [0, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0, 0b11111, 0],
        '/' => [0b00001, 0b00010, 0b00010, 0b00100, 0b01000, 0b01000, 0b10000, 0, 0],
        '\\' => [0b10000, 0b01000, 0b01000, 0b00100, 0b00010, 0b00010, 0b00001, 0, 0],
        '(' => [0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010, 0, 0],
        ')' => [0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000, 0, 0],
        '[' => [0b01110, 0b01000, 0b01000, 0b01000, 0b01000, 0b01000, 0b01110, 0, 0],
        ']' => [0b01110, 0b00010, 0b00010, 0b00010, 0b00010, 0b00010, 0b01110, 0, 0],
        '<' => [0b00010, 0b00100, 0b01000, 0b10000, 0b01000, 0b00100, 0b00010, 0, 0],
        '>' => [0b01000, 0b00100, 0b00010, 0b00001, 0b00010, 0b00100, 0b01000, 0, 0],
        '?' => [0b01110, 0b10001, 0b00010, 0b00100, 0b00100, 0, 0b00100, 0, 0],
        '!' => [0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0, 0b00100, 0, 0],
        '%' => [0b11001, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b10011, 0, 0],
        '\'' => [0b00100, 0b00100, 0b01000, 0, 0, 0, 0, 0, 0],
        '"' => [0b01010, 0b01010, 0b01010, 0, 0, 0, 0, 0, 0],
        '#' => [0b01010, 0b01010, 0b11111, 0b01010, 0b11111, 0b01010, 0b01010, 0, 0],
        '*' => [0, 0b10101, 0b01110, 0b11111, 0b01110, 0b10101, 0, 0, 0],
        '|' => [
            0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100,
        ],
        _ => MISSING,
    }
}

/// Whether the font has a glyph of its own for `c` (others are drawn as a hollow box).
pub fn has_glyph(c: char) -> bool {
    glyph(c) != MISSING
}

fn check_scale(scale: usize) -> Result<()> {
    if (1..=MAX_SCALE).contains(&scale) {
        Ok(())
    } else {
        Err(Error::param(
            "scale",
            format!("text scale {scale}: expected 1..={MAX_SCALE} screen pixels per font pixel"),
        ))
    }
}

/// The characters of `text` that are drawn: its first [`MAX_LABEL_CHARS`].
fn drawn(text: &str) -> impl Iterator<Item = char> + '_ {
    text.chars().take(MAX_LABEL_CHARS)
}

/// The width in pixels of `n` glyphs at `scale` (0 for none).
fn width_of(n: usize, scale: usize) -> usize {
    (n * GLYPH_ADVANCE * scale).saturating_sub(scale)
}

/// The `(height, width)` in pixels of `text` drawn at `scale`, after the cut to
/// [`MAX_LABEL_CHARS`] characters: `GLYPH_HEIGHT·scale` tall, `(6n − 1)·scale` wide for `n`
/// characters, 0 wide when empty.
pub fn text_size(text: &str, scale: usize) -> Result<(usize, usize)> {
    check_scale(scale)?;
    Ok((GLYPH_HEIGHT * scale, width_of(drawn(text).count(), scale)))
}

/// Draw `text` into a `C×H×W` canvas with its top left corner at `(top, left)`, every channel
/// set to `ink` where a glyph has a pixel (the background is left as it is). Whatever falls
/// outside the canvas is clipped. Returns the text's width in pixels (as [`text_size`]).
pub fn draw_text(
    mut canvas: ArrayViewMut3<'_, f32>,
    text: &str,
    top: usize,
    left: usize,
    scale: usize,
    ink: f32,
) -> Result<usize> {
    check_scale(scale)?;
    let (_, h, w) = canvas.dim();
    let mut n = 0;
    for (i, c) in drawn(text).enumerate() {
        n = i + 1;
        let x0 = left.saturating_add(i * GLYPH_ADVANCE * scale);
        if x0 >= w || top >= h {
            continue;
        }
        for (gy, bits) in glyph(c).iter().enumerate() {
            for gx in 0..GLYPH_WIDTH {
                if bits >> (GLYPH_WIDTH - 1 - gx) & 1 == 0 {
                    continue;
                }
                let y = top.saturating_add(gy * scale);
                let x = x0.saturating_add(gx * scale);
                let (y1, x1) = (y.saturating_add(scale).min(h), x.saturating_add(scale).min(w));
                if y < y1 && x < x1 {
                    canvas.slice_mut(s![.., y..y1, x..x1]).fill(ink);
                }
            }
        }
    }
    Ok(width_of(n, scale))
}

/// `text` on its own: a `channels × H × W` image of `background` with the text in `ink`, `H ×
/// W` from [`text_size`] (an empty text gives a 0 pixels wide image).
pub fn render_text(text: &str, scale: usize, channels: usize, ink: f32, background: f32) -> Result<Array3<f32>> {
    let (h, w) = text_size(text, scale)?;
    if channels == 0 {
        return Err(Error::param("channels", "an image needs at least one channel"));
    }
    let mut out = Array3::from_elem((channels, h, w), background);
    draw_text(out.view_mut(), text, 0, 0, scale, ink)?;
    Ok(out)
}

/// A caption of a header strip: `text` centred over `span` adjacent columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caption {
    /// The text.
    pub text: String,
    /// How many columns it spans (at least 1).
    pub span: usize,
}

impl Caption {
    /// `text` over `span` columns.
    pub fn new(text: impl Into<String>, span: usize) -> Self {
        Self {
            text: text.into(),
            span,
        }
    }
}

/// A strip of column captions above one row of a grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderStrip {
    /// The row it sits above (0 for the top of the picture).
    pub above_row: usize,
    /// Captions left to right from the first column; together they span at most the grid's
    /// columns (the remaining columns get none).
    pub captions: Vec<Caption>,
}

/// The labels of a [`labelled_grid`].
#[derive(Debug, Clone, PartialEq)]
pub struct GridLabels {
    /// One label per row, top first, drawn in a left margin as wide as the widest of them;
    /// rows past the end of the list have none. More labels than rows is an error.
    pub rows: Vec<String>,
    /// Header strips, at most one above each row.
    pub headers: Vec<HeaderStrip>,
    /// Screen pixels per font pixel, `1..=`[`MAX_SCALE`].
    pub scale: usize,
    /// The value of the text's pixels (in the picture's data range), in every channel.
    pub ink: f32,
}

impl GridLabels {
    /// Row labels in `ink` at scale 1, no header strip.
    pub fn rows<S: Into<String>>(rows: impl IntoIterator<Item = S>, ink: f32) -> Self {
        Self {
            rows: rows.into_iter().map(Into::into).collect(),
            headers: Vec::new(),
            scale: 1,
            ink,
        }
    }

    /// With a header strip of `captions` above row `above_row`.
    pub fn with_header(mut self, above_row: usize, captions: Vec<Caption>) -> Self {
        self.headers.push(HeaderStrip { above_row, captions });
        self
    }

    /// At `scale` screen pixels per font pixel.
    pub fn with_scale(mut self, scale: usize) -> Self {
        self.scale = scale;
        self
    }

    /// The width of the left margin for a grid padding of `pad`: the widest row label plus
    /// `pad` to its left (the grid's own left padding separates it from the images), 0 when
    /// every row label is empty.
    pub fn margin_width(&self, pad: usize) -> Result<usize> {
        check_scale(self.scale)?;
        let widest = self
            .rows
            .iter()
            .map(|r| width_of(drawn(r).count(), self.scale))
            .max()
            .unwrap_or(0);
        Ok(if widest == 0 { 0 } else { widest + pad })
    }

    /// The height of one header strip for a grid padding of `pad`: the text's height plus
    /// `pad` below it (the grid's own padding is above it).
    pub fn strip_height(&self, pad: usize) -> Result<usize> {
        check_scale(self.scale)?;
        Ok(GLYPH_HEIGHT * self.scale + pad)
    }

    /// The `(height, width)` of the [`labelled_grid`] of `n` images of `h × w` in `cols`
    /// columns with `pad`, without drawing it (to check it against size limits first).
    pub fn picture_size(&self, n: usize, h: usize, w: usize, cols: usize, pad: usize) -> Result<(usize, usize)> {
        if n == 0 || cols == 0 {
            return Err(Error::InvalidInput(
                "grid needs at least one image and one column".into(),
            ));
        }
        let rows = n.div_ceil(cols);
        let cols = cols.min(n);
        self.validate(rows, cols)?;
        let (margin, strip) = (self.margin_width(pad)?, self.strip_height(pad)?);
        let extent = |count: usize, side: usize, extra: usize| {
            count
                .checked_mul(side.checked_add(pad)?)?
                .checked_add(pad)?
                .checked_add(extra)
        };
        let height = self
            .headers
            .len()
            .checked_mul(strip)
            .and_then(|strips| extent(rows, h, strips))
            .ok_or_else(|| Error::Shape("the labelled grid is too tall".into()))?;
        let width = extent(cols, w, margin).ok_or_else(|| Error::Shape("the labelled grid is too wide".into()))?;
        Ok((height, width))
    }

    /// Refuse labels that do not fit a grid of `rows × cols`.
    fn validate(&self, rows: usize, cols: usize) -> Result<()> {
        check_scale(self.scale)?;
        if self.rows.len() > rows {
            return Err(Error::InvalidInput(format!(
                "{} row labels for a grid of {rows} rows",
                self.rows.len()
            )));
        }
        let mut seen = vec![false; rows];
        for strip in &self.headers {
            match seen.get_mut(strip.above_row) {
                None => {
                    return Err(Error::InvalidInput(format!(
                        "a header strip above row {} of a grid of {rows} rows",
                        strip.above_row
                    )))
                }
                Some(true) => {
                    return Err(Error::InvalidInput(format!(
                        "two header strips above row {}",
                        strip.above_row
                    )))
                }
                Some(s) => *s = true,
            }
            let mut spanned = 0usize;
            for c in &strip.captions {
                if c.span == 0 {
                    return Err(Error::InvalidInput(format!("the caption {:?} spans no column", c.text)));
                }
                spanned = spanned.saturating_add(c.span);
            }
            if spanned > cols {
                return Err(Error::InvalidInput(format!(
                    "the captions above row {} span {spanned} columns of {cols}",
                    strip.above_row
                )));
            }
        }
        Ok(())
    }
}

/// [`grid`] with labels: a left margin holding each row's label (vertically centred on the
/// row, clipped to it) and a header strip of captions above the rows [`GridLabels::headers`]
/// name (each caption centred over its columns, cut to the whole glyphs that fit them). Right
/// of the margin and outside the strips the picture is exactly `grid(batch, cols, pad,
/// fill)`; with no labels at all it *is* that grid. Its size is
/// [`GridLabels::picture_size`].
pub fn labelled_grid(
    batch: ArrayView4<'_, f32>,
    cols: usize,
    pad: usize,
    fill: f32,
    labels: &GridLabels,
) -> Result<Array3<f32>> {
    let (n, c, h, w) = batch.dim();
    let (height, width) = labels.picture_size(n, h, w, cols, pad)?;
    let plain = grid(batch, cols, pad, fill)?;
    let (rows, cols) = (n.div_ceil(cols), cols.min(n));
    let margin = labels.margin_width(pad)?;
    let strip = labels.strip_height(pad)?;
    let scale = labels.scale;
    let has_strip = |r: usize| labels.headers.iter().find(|s| s.above_row == r);

    let mut out = Array3::from_elem((c, height, width), fill);
    // Copy the plain grid band by band: the top padding, then per row (its strip, if any)
    // the row and the padding below it.
    let mut src = 0;
    let mut dst = 0;
    let copy = |out: &mut Array3<f32>, src: &mut usize, dst: &mut usize, len: usize| {
        out.slice_mut(s![.., *dst..*dst + len, margin..])
            .assign(&plain.slice(s![.., *src..*src + len, ..]));
        *src += len;
        *dst += len;
    };
    copy(&mut out, &mut src, &mut dst, pad);
    for r in 0..rows {
        if let Some(header) = has_strip(r) {
            let mut col = 0;
            for caption in &header.captions {
                let x0 = margin + pad + col * (w + pad);
                let span_w = caption.span * w + (caption.span - 1) * pad;
                let fits = (span_w + scale) / (GLYPH_ADVANCE * scale);
                let text: String = drawn(&caption.text).take(fits).collect();
                let tw = width_of(text.chars().count(), scale);
                let region = out.slice_mut(s![.., dst..dst + strip, x0..x0 + span_w]);
                draw_text(region, &text, 0, (span_w - tw) / 2, scale, labels.ink)?;
                col += caption.span;
            }
            debug_assert!(col <= cols);
            dst += strip;
        }
        if let Some(label) = labels.rows.get(r) {
            let th = GLYPH_HEIGHT * scale;
            let region = out.slice_mut(s![.., dst..dst + h, 0..margin]);
            draw_text(region, label, h.saturating_sub(th) / 2, pad, scale, labels.ink)?;
        }
        copy(&mut out, &mut src, &mut dst, h + pad);
    }
    debug_assert_eq!((src, dst), (plain.len_of(Axis(1)), height));
    Ok(out)
}
