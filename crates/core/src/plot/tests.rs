use super::ticks::{axis_range, axis_ticks, log_ticks};
use super::*;

#[test]
fn nice_ticks_and_labels() {
    assert_eq!(nice_ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    assert_eq!(nice_ticks(-0.03, 0.27, 3), vec![0.0, 0.1, 0.2]);
    assert!(nice_ticks(1.0, 1.0, 5).is_empty());
    assert_eq!(tick_label(0.2, 0.2, false), "0.2");
    assert_eq!(tick_label(1500.0, 500.0, false), "1500");
    assert_eq!(tick_label(2.0, 1.0, true), "100");
    assert_eq!(tick_label(-2.0, 1.0, true), "0.01");
    assert_eq!(tick_label(-6.0, 1.0, true), "1e-6");
    assert_eq!(tick_label(2f64.log10(), 0.3, true), "2");
}

#[test]
fn log_axis_ticks_are_decades() {
    assert_eq!(log_ticks(-0.1, 3.2), vec![0.0, 1.0, 2.0, 3.0]);
    // Inside one decade: 1, 2, 5 steps.
    let t: Vec<String> = log_ticks(0.1, 0.9).iter().map(|v| tick_label(*v, 0.3, true)).collect();
    assert_eq!(t, vec!["2", "5"]);
    // Narrower still: nice steps of the values (2.2 to 3.0).
    let t: Vec<String> = log_ticks(2.2f64.log10(), 3.05f64.log10()).iter().map(|v| tick_label(*v, 0.1, true)).collect();
    assert_eq!(t, vec!["2.2", "2.4", "2.6", "2.8", "3"]);
    let many = log_ticks(-20.0, 1.0);
    assert!(many.len() <= 8 && many.len() >= 3, "{many:?}");
}

#[test]
fn ranges_pad_and_respect_fixed_ends() {
    let a = Axis::linear("x");
    let (lo, hi) = axis_range(&a, [0.0, 10.0].into_iter());
    assert!(lo < 0.0 && hi > 10.0);
    let fixed = Axis::linear("acc").range(0.0, 1.0);
    assert_eq!(axis_range(&fixed, [0.3, 0.5].into_iter()), (0.0, 1.0));
    // A single value still gives a range; no values give a default one.
    let (lo, hi) = axis_range(&Axis::log("loss"), [2.0].into_iter());
    assert!(hi > lo);
    let (lo, hi) = axis_range(&a, std::iter::empty());
    assert!(hi > lo);
    // Integer axes tick at whole numbers only.
    assert_eq!(axis_ticks(&Axis::linear("k").integer(), 0.9, 2.1).0, vec![1.0, 2.0]);
    assert_eq!(axis_ticks(&Axis::linear("k").integer(), 0.0, 30.0).0, vec![0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]);
}

fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()))
}

fn sample_figure() -> Figure {
    let xs: Vec<f64> = (1..50).map(|i| i as f64 * 10.0).collect();
    let line: Vec<(f64, f64)> = xs.iter().map(|&x| (x, 1.0 / x)).collect();
    let mut c = Chart::new("lines", Axis::log("step"), Axis::log("loss"));
    c.series.push(Series::new(
        "band",
        palette(0),
        Mark::Band { lower: line.iter().map(|p| p.1 * 0.5).collect(), upper: line.iter().map(|p| p.1 * 2.0).collect() },
        line.clone(),
    ));
    c.series.push(Series::new("train α=0", palette(0), Mark::Line { width: 2 }, line.clone()));
    c.series.push(Series::new("val", palette(1), Mark::Dashed { width: 2 }, line.iter().map(|&(x, y)| (x, y * 3.0)).collect()));
    c.series.push(Series::unlabelled(palette(2), Mark::Stems { width: 3 }, vec![(20.0, 0.01), (40.0, 0.02)]));
    c.rules.push(Rule { vertical: true, at: 100.0, color: Color::GREY, label: Some("grokking".into()) });
    let mut s = Chart::new("scatter", Axis::linear("DI"), Axis::linear("GS").range(0.0, 1.0));
    for (i, shape) in [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Diamond, Shape::Cross].into_iter().enumerate() {
        s.series.push(Series::new(format!("shape {i}"), alpha_color(i as f64 / 4.0), Mark::Points { shape, size: 5 }, vec![(i as f64 * 0.2, 0.5)]));
    }
    s.series.push(Series::new(
        "errors",
        Color::BLACK,
        Mark::ErrorBars { lower: vec![0.1, 0.2], upper: vec![0.3, 0.6], shape: Shape::Circle, size: 3 },
        vec![(0.1, 0.2), (0.5, 0.4)],
    ));
    let empty = Chart::new("nothing", Axis::linear("x"), Axis::log("y"));
    let h = Heatmap {
        title: "grid".into(),
        x: Axis::linear("(a − b) mod p"),
        y: Axis::linear("(a + b) mod p"),
        x_centres: vec![0.0, 1.0, 2.0],
        y_centres: vec![0.0, 1.0],
        values: vec![1.0, 2.0, f64::NAN, 4.0, 5.0, 6.0],
        colorbar_label: "logit".into(),
        annotate: true,
    };
    Figure::new("test figure", vec![Panel::Chart(c), Panel::Chart(s), Panel::Chart(empty), Panel::Heatmap(h)], 2)
}

#[test]
fn renders_svg_and_png_deterministically() {
    let fig = sample_figure();
    let r = render(&fig).unwrap();
    assert_eq!((r.width, r.height), (2 * PANEL_SIZE.0, TITLE_HEIGHT + 2 * PANEL_SIZE.1));
    assert_eq!(png_size(&r.png), (r.width, r.height));
    assert!(r.svg.starts_with("<svg"), "{}", &r.svg[..50]);
    assert!(r.svg.trim_end().ends_with("</svg>"));
    assert!(r.svg.contains("grokking") && r.svg.contains("train α=0") && r.svg.contains("no data"));
    if let Ok(dir) = std::env::var("PLOT_TEST_OUT") {
        std::fs::write(format!("{dir}/plot-test.png"), &r.png).unwrap();
        std::fs::write(format!("{dir}/plot-test.svg"), &r.svg).unwrap();
    }
    let again = render(&fig).unwrap();
    assert_eq!(again.svg, r.svg);
    assert_eq!(again.png, r.png);
}

#[test]
fn categorical_axis_and_boxes() {
    let a = Axis::categorical("label", vec!["pizza".into(), "clock".into(), "unclear".into()]);
    assert_eq!(axis_range(&a, [0.1, 1.9].into_iter()), (-0.5, 2.5));
    assert_eq!(axis_ticks(&a, -0.5, 2.5).0, vec![0.0, 1.0, 2.0]);
    let mut c = Chart::new("boxes", a, Axis::linear("LLC"));
    c.series.push(Series::unlabelled(
        palette(0),
        Mark::Boxes { lower: vec![2.0, 4.0], upper: vec![3.0, 6.0], low: vec![1.0, 3.5], high: vec![3.5, 9.0], half_width: 0.3 },
        vec![(0.0, 2.5), (1.0, 5.0)],
    ));
    c.series.push(Series::new("runs", palette(1), Mark::Points { shape: Shape::Circle, size: 3 }, vec![(0.1, 1.0), (1.9, 9.0)]));
    let r = render(&Figure::new("categories", vec![Panel::Chart(c)], 1)).unwrap();
    // The tick labels are the category names, not numbers.
    for name in ["pizza", "clock", "unclear"] {
        assert!(r.svg.contains(&format!(">\n{name}\n</text>")), "{name} missing");
    }
    assert!(!r.svg.contains(">\n0.5\n</text>") && r.svg.contains(">\n4\n</text>"));
    assert_eq!(png_size(&r.png), (r.width, r.height));
}
