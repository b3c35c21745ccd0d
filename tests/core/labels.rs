//! Text on pictures: the built-in font, labelled grids, and the labels of `sample --grid`.

use boomerang::analytic::GaussianDenoiser;
use boomerang::apps::sample::SampleJob;
use boomerang::image_io::{self, grid, ColorMode};
use boomerang::labels::{
    draw_text, has_glyph, labelled_grid, render_text, text_size, Caption, GridLabels, GLYPH_ADVANCE, GLYPH_HEIGHT,
    MAX_LABEL_CHARS, MAX_SCALE,
};
use boomerang::schedule::DiscreteSchedule;
use boomerang::{Boomerang, DataRange, Spacing, TimeSpec};
use ndarray::{s, Array3, Array4, ArrayView3};

const INK: f32 = 1.0;
const PAPER: f32 = -1.0;

fn inked(x: ArrayView3<'_, f32>) -> usize {
    x.iter().filter(|&&v| v == INK).count()
}

fn batch(n: usize, h: usize, w: usize) -> Array4<f32> {
    // Values never equal to INK, so ink in the picture can only come from text.
    Array4::from_shape_fn((n, 3, h, w), |(i, c, y, x)| {
        ((0.37 * x as f32 + 0.23 * y as f32 + c as f32 + 1.7 * i as f32).sin() * 0.9).clamp(-0.9, 0.9)
    })
}

#[test]
fn text_has_ink_where_the_glyphs_are_and_nowhere_else() {
    let empty = render_text("", 1, 3, INK, PAPER).unwrap();
    assert_eq!(empty.dim(), (3, GLYPH_HEIGHT, 0));
    let one = render_text("1", 1, 3, INK, PAPER).unwrap();
    assert_eq!(one.dim(), (3, GLYPH_HEIGHT, 5));
    assert!(inked(one.view()) > 0);
    assert!(one.iter().all(|&v| v == INK || v == PAPER));
    // Every channel carries the same ink.
    assert_eq!(one.slice(s![0, .., ..]), one.slice(s![2, .., ..]));
    // A space is blank; a wider text is wider; scale enlarges every pixel.
    assert_eq!(inked(render_text("   ", 1, 1, INK, PAPER).unwrap().view()), 0);
    let t = render_text("t=0.3", 1, 1, INK, PAPER).unwrap();
    assert_eq!(t.dim(), (1, GLYPH_HEIGHT, 5 * GLYPH_ADVANCE - 1));
    let t3 = render_text("t=0.3", 3, 1, INK, PAPER).unwrap();
    assert_eq!(t3.dim(), (1, 3 * GLYPH_HEIGHT, 3 * (5 * GLYPH_ADVANCE - 1)));
    assert_eq!(inked(t3.view()), 9 * inked(t.view()));
    // The blank column between glyphs stays blank.
    for k in 1..5 {
        let gap = k * GLYPH_ADVANCE - 1;
        assert_eq!(inked(t.slice(s![.., .., gap..gap + 1])), 0, "column {gap}");
    }
    // Drawn into a canvas at an offset: ink only inside the text's box, the rest untouched.
    let mut canvas = Array3::from_elem((3, 30, 60), PAPER);
    let w = draw_text(canvas.view_mut(), "x_t", 10, 20, 2, INK).unwrap();
    assert_eq!(w, text_size("x_t", 2).unwrap().1);
    let total = inked(canvas.view());
    assert!(total > 0);
    assert_eq!(
        inked(canvas.slice(s![.., 10..10 + 2 * GLYPH_HEIGHT, 20..20 + w])),
        total
    );
}

#[test]
fn every_letter_and_digit_has_its_own_glyph_and_unknown_characters_a_box() {
    let chars: Vec<char> = ('0'..='9').chain('A'..='Z').chain('a'..='z').collect();
    let pictures: Vec<Array3<f32>> = chars
        .iter()
        .map(|c| render_text(&c.to_string(), 1, 1, INK, PAPER).unwrap())
        .collect();
    for (i, a) in pictures.iter().enumerate() {
        assert!(has_glyph(chars[i]));
        assert!(inked(a.view()) > 0, "{:?} is blank", chars[i]);
        for (j, b) in pictures.iter().enumerate().skip(i + 1) {
            assert_ne!(a, b, "{:?} and {:?} look the same", chars[i], chars[j]);
        }
    }
    for c in ".=-:/_ ".chars() {
        assert!(has_glyph(c), "{c:?}");
    }
    // Unknown characters: a box each, the same for all, never a panic.
    let boxes: Vec<Array3<f32>> = ["é", "×", "\n", "\u{0}", "🦀", "\u{202e}", "~"]
        .iter()
        .map(|c| render_text(c, 2, 3, INK, PAPER).unwrap())
        .collect();
    assert!(boxes.windows(2).all(|w| w[0] == w[1]));
    assert!(inked(boxes[0].view()) > 0);
    assert!(!has_glyph('é'));
    // A mixed string is as wide as its characters, unknown ones included.
    assert_eq!(text_size("a×b", 1).unwrap().1, 3 * GLYPH_ADVANCE - 1);
}

#[test]
fn overlong_texts_and_bad_scales_are_bounded() {
    let huge = "t=0.5 ".repeat(200_000);
    let (h, w) = text_size(&huge, MAX_SCALE).unwrap();
    assert_eq!(h, GLYPH_HEIGHT * MAX_SCALE);
    assert_eq!(w, (MAX_LABEL_CHARS * GLYPH_ADVANCE - 1) * MAX_SCALE);
    // The cut is the first MAX_LABEL_CHARS characters.
    let cut: String = huge.chars().take(MAX_LABEL_CHARS).collect();
    assert_eq!(
        render_text(&huge, 1, 1, INK, PAPER).unwrap(),
        render_text(&cut, 1, 1, INK, PAPER).unwrap()
    );
    // Into a small canvas, or far outside it: clipped, no panic.
    let mut canvas = Array3::from_elem((1, 8, 8), PAPER);
    draw_text(canvas.view_mut(), &huge, 0, 0, MAX_SCALE, INK).unwrap();
    draw_text(canvas.view_mut(), "abc", usize::MAX - 3, usize::MAX - 3, MAX_SCALE, INK).unwrap();
    draw_text(canvas.view_mut(), "abc", 7, 7, 1, INK).unwrap();
    for scale in [0, MAX_SCALE + 1, usize::MAX] {
        assert!(text_size("a", scale).is_err());
        assert!(render_text("a", scale, 1, INK, PAPER).is_err());
    }
    assert!(render_text("a", 1, 0, INK, PAPER).is_err());
    // An overlong row label gives a bounded margin.
    let labels = GridLabels::rows([huge.as_str()], INK);
    let b = batch(2, 8, 8);
    let pic = labelled_grid(b.view(), 2, 1, PAPER, &labels).unwrap();
    assert_eq!(
        pic.dim().2,
        grid(b.view(), 2, 1, PAPER).unwrap().dim().2 + MAX_LABEL_CHARS * GLYPH_ADVANCE
    );
}

#[test]
fn labelled_grid_keeps_the_grid_and_labels_every_row() {
    let (n, h, w, cols, pad) = (6, 16, 12, 3, 2);
    let b = batch(n, h, w);
    let plain = grid(b.view(), cols, pad, PAPER).unwrap();
    assert_eq!(inked(plain.view()), 0);

    // No labels at all: exactly the grid.
    let none = labelled_grid(b.view(), cols, pad, PAPER, &GridLabels::rows(Vec::<String>::new(), INK)).unwrap();
    assert_eq!(none, plain);

    // Row labels: a margin as wide as the widest, ink in each row's band of it.
    let labels = GridLabels::rows(["input", "t=0.3"], INK);
    let margin = labels.margin_width(pad).unwrap();
    assert_eq!(margin, text_size("input", 1).unwrap().1 + pad);
    let pic = labelled_grid(b.view(), cols, pad, PAPER, &labels).unwrap();
    assert_eq!(pic.dim(), (3, plain.dim().1, plain.dim().2 + margin));
    assert_eq!(
        labels.picture_size(n, h, w, cols, pad).unwrap(),
        (pic.dim().1, pic.dim().2)
    );
    assert_eq!(pic.slice(s![.., .., margin..]), plain);
    for r in 0..2 {
        let y0 = pad + r * (h + pad);
        assert!(inked(pic.slice(s![.., y0..y0 + h, ..margin])) > 0, "row {r}");
    }
    assert_eq!(inked(pic.view()), inked(pic.slice(s![.., .., ..margin])));
    // Different labels, different margins; one label missing: that row is blank.
    let other = labelled_grid(b.view(), cols, pad, PAPER, &GridLabels::rows(["input", "t=0.7"], INK)).unwrap();
    assert_ne!(other, pic);
    let only_first = labelled_grid(b.view(), cols, pad, PAPER, &GridLabels::rows(["input"], INK)).unwrap();
    assert_eq!(inked(only_first.slice(s![.., pad + h.., ..])), 0);

    // A header strip above row 1: the grid's rows move down by the strip, captions in it.
    let labels = GridLabels::rows(["a", "b"], INK)
        .with_header(1, vec![Caption::new("x_t", 1), Caption::new("samples", 2)])
        .with_scale(1);
    let (margin, strip) = (labels.margin_width(pad).unwrap(), labels.strip_height(pad).unwrap());
    let pic = labelled_grid(b.view(), cols, pad, PAPER, &labels).unwrap();
    assert_eq!(pic.dim(), (3, plain.dim().1 + strip, plain.dim().2 + margin));
    let row1 = pad + h + pad;
    assert_eq!(pic.slice(s![.., ..row1, margin..]), plain.slice(s![.., ..row1, ..]));
    assert_eq!(
        pic.slice(s![.., row1 + strip.., margin..]),
        plain.slice(s![.., row1.., ..])
    );
    let header = pic.slice(s![.., row1..row1 + strip, ..]);
    assert!(
        inked(header.slice(s![.., .., margin + pad..margin + pad + w])) > 0,
        "x_t"
    );
    assert!(inked(header.slice(s![.., .., margin + 2 * pad + w..])) > 0, "samples");
    assert_eq!(inked(header.slice(s![.., .., ..margin + pad])), 0);

    // Captions wider than their columns are cut to whole glyphs, never spill over.
    let long = GridLabels::rows(Vec::<String>::new(), INK).with_header(0, vec![Caption::new("a".repeat(500), 1)]);
    let pic = labelled_grid(b.view(), cols, pad, PAPER, &long).unwrap();
    let strip = long.strip_height(pad).unwrap();
    assert!(inked(pic.slice(s![.., pad..pad + strip, pad..pad + w])) > 0);
    assert_eq!(
        inked(pic.view()),
        inked(pic.slice(s![.., pad..pad + strip, pad..pad + w]))
    );
}

#[test]
fn labels_that_do_not_fit_the_grid_are_refused() {
    let b = batch(4, 8, 8);
    let bad = [
        GridLabels::rows(["a", "b", "c"], INK),
        GridLabels::rows(["a"], INK).with_header(2, vec![]),
        GridLabels::rows(["a"], INK)
            .with_header(0, vec![])
            .with_header(0, vec![]),
        GridLabels::rows(["a"], INK).with_header(0, vec![Caption::new("x", 0)]),
        GridLabels::rows(["a"], INK).with_header(0, vec![Caption::new("x", 2), Caption::new("y", 1)]),
        GridLabels::rows(["a"], INK).with_scale(0),
    ];
    for labels in &bad {
        assert!(labelled_grid(b.view(), 2, 1, PAPER, labels).is_err(), "{labels:?}");
    }
    assert!(labelled_grid(b.view(), 0, 1, PAPER, &GridLabels::rows(["a"], INK)).is_err());
}

#[test]
fn sample_grid_pictures_carry_row_labels_and_column_captions() {
    let dir = std::env::temp_dir().join(format!("boomerang-labels-sample-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let (h, w, k) = (16, 16, 2);
    image_io::save_image(
        dir.join("in/a.png"),
        batch(1, h, w).slice(s![0, .., .., ..]),
        DataRange::MinusOneToOne,
    )
    .unwrap();
    let runner = Boomerang::builder(
        GaussianDenoiser::new(0.0, 0.5).unwrap(),
        DiscreteSchedule::linear(1000, 1e-4, 0.02).unwrap(),
    )
    .spacing(Spacing::Uniform(10))
    .build()
    .unwrap();
    let t = vec![TimeSpec::fraction(0.2), TimeSpec::Step(600)];
    let mut job = SampleJob::new(vec![dir.join("in")], dir.join("out"), t);
    job.samples = k;
    job.grid = true;
    let report = job.run(&runner, &mut |_, _| {}).unwrap();
    assert_eq!(report.grids, 1);
    let pic = image_io::load_image(dir.join("out/a_grid.png"), ColorMode::Rgb, DataRange::MinusOneToOne).unwrap();
    let pic = pic.slice(s![0, .., .., ..]).to_owned();

    let pad = 2;
    let (plain_h, plain_w) = (2 * (h + pad) + pad, (k + 1) * (w + pad) + pad);
    // The margin fits the widest row label, "t=600"; the header strip one line of text.
    let margin = text_size("t=600", 1).unwrap().1 + pad;
    let strip = GLYPH_HEIGHT + pad;
    assert_eq!(pic.dim(), (3usize, plain_h + strip, plain_w + margin));
    // The images sit where the unlabelled grid puts them, shifted by the margin and strip:
    // the input first in each row.
    let input = image_io::load_image(dir.join("in/a.png"), ColorMode::Rgb, DataRange::MinusOneToOne).unwrap();
    for r in 0..2 {
        let y = pad + strip + r * (h + pad);
        let x = margin + pad;
        assert_eq!(
            pic.slice(s![.., y..y + h, x..x + w]),
            input.slice(s![0, .., .., ..]),
            "row {r}"
        );
        assert!(inked(pic.slice(s![.., y..y + h, ..margin])) > 0, "row label {r}");
    }
    assert!(
        inked(pic.slice(s![.., pad..pad + GLYPH_HEIGHT, margin..])) > 0,
        "captions"
    );
    std::fs::remove_dir_all(&dir).ok();
}
