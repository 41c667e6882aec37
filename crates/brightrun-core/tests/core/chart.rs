//! Chart rendering and decimation.

use brightrun_core::MetricsPoint;
use brightrun_core::chart::{
    Chart, ChartError, ChartKind, ChartSize, ChartStyle, ChartTheme, Series, decimate,
};
use chrono::{TimeZone, Utc};
use uuid::Uuid;

fn metrics(count: i64) -> Vec<MetricsPoint> {
    (0..count)
        .map(|step| MetricsPoint {
            id: Uuid::nil(),
            job_id: Uuid::nil(),
            attempt: 1,
            timestamp: Utc
                .timestamp_opt(1_800_000_000 + step, 0)
                .single()
                .unwrap_or_default(),
            epoch: step / 1000,
            step,
            training_loss: 2.0 / (1.0 + step as f64 / 100.0),
            validation_loss: (step % 500 == 0).then_some(2.1 / (1.0 + step as f64 / 100.0)),
            learning_rate: 2e-4,
            gradient_norm: None,
            throughput: Some(3000.0),
            gpu_utilization: None,
        })
        .collect()
}

#[test]
fn decimation_bounds_the_points_and_keeps_a_spike() {
    let mut points: Vec<(f64, f64)> = (0..100_000).map(|i| (i as f64, 1.0)).collect();
    points[54_321].1 = 50.0;
    points[77_777].1 = -3.0;
    let reduced = decimate(&points, 800);
    assert!(
        reduced.len() <= 800 * 4,
        "at most 4 points per bucket, got {}",
        reduced.len()
    );
    assert!(
        reduced.contains(&(54_321.0, 50.0)),
        "the one-step spike survives"
    );
    assert!(reduced.contains(&(77_777.0, -3.0)), "the dip survives");
    assert_eq!(reduced.first(), points.first(), "the first point is kept");
    assert_eq!(reduced.last(), points.last(), "the last point is kept");
    assert!(
        reduced.windows(2).all(|w| w[0].0 <= w[1].0),
        "output stays in x order"
    );
    let few = decimate(&points[..100], 800);
    assert_eq!(few.len(), 100, "short series are not touched");
    let dirty = [
        (0.0, 1.0),
        (1.0, f64::NAN),
        (2.0, f64::INFINITY),
        (3.0, 2.0),
    ];
    assert_eq!(
        decimate(&dirty, 10),
        vec![(0.0, 1.0), (3.0, 2.0)],
        "non-finite points are dropped"
    );
}

#[test]
fn a_loss_chart_renders_to_svg_with_both_series() {
    let chart = Chart::from_metrics(ChartKind::Loss, &metrics(100_000));
    assert_eq!(chart.series.len(), 2, "training and validation loss");
    assert_eq!(
        chart.series[1].points.len(),
        200,
        "validation loss only where measured"
    );
    let svg = chart
        .to_svg(ChartSize {
            width: 800,
            height: 400,
        })
        .expect("renders");
    assert!(svg.starts_with("<svg"), "an SVG document");
    assert!(svg.contains("Loss"), "the title is drawn");
    assert!(
        svg.contains("validation loss"),
        "the legend names the series"
    );
    assert!(
        svg.len() < 400_000,
        "100k points are decimated before drawing, SVG is {} bytes",
        svg.len()
    );
}

#[test]
fn a_chart_renders_to_png_without_system_fonts() {
    let chart = Chart::from_metrics(ChartKind::LearningRate, &metrics(500));
    let png = chart
        .to_png(ChartSize {
            width: 320,
            height: 200,
        })
        .expect("renders");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    let height = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
    assert_eq!(
        (width, height),
        (320, 200),
        "IHDR carries the requested size"
    );
}

#[test]
fn empty_series_and_bad_sizes_are_handled() {
    let chart = Chart {
        title: "Throughput".to_owned(),
        x_label: "step".to_owned(),
        y_label: "tokens/s".to_owned(),
        series: vec![Series {
            label: "throughput".to_owned(),
            points: Vec::new(),
        }],
    };
    let svg = chart
        .to_svg(ChartSize {
            width: 400,
            height: 300,
        })
        .expect("an empty chart renders");
    assert!(svg.contains("Throughput"), "axes and title are still drawn");
    let error = chart
        .to_svg(ChartSize {
            width: 0,
            height: 300,
        })
        .expect_err("zero width is refused");
    assert!(
        matches!(error, ChartError::Size { .. }),
        "a size error, got {error:?}"
    );
}

#[test]
fn extreme_values_render_without_panicking() {
    for points in [
        vec![(0.0, f64::MAX), (1.0, f64::MIN)],
        vec![(0.0, 1e-300), (1.0, 2e-300)],
        vec![(5.0, 3.0)],
        vec![(f64::MIN, 0.0), (f64::MAX, 1.0)],
    ] {
        let chart = Chart {
            title: "edge".to_owned(),
            x_label: "step".to_owned(),
            y_label: "y".to_owned(),
            series: vec![Series {
                label: "s".to_owned(),
                points: points.clone(),
            }],
        };
        let svg = chart.to_svg(ChartSize {
            width: 200,
            height: 120,
        });
        assert!(svg.is_ok(), "{points:?} must render: {svg:?}");
    }
}

const SIZE: ChartSize = ChartSize {
    width: 480,
    height: 240,
};

#[test]
fn a_dark_chart_paints_the_dark_panel_and_no_white_box() {
    let chart = Chart::from_metrics(ChartKind::Loss, &metrics(300));
    let dark = chart
        .to_svg_styled(
            SIZE,
            ChartStyle {
                theme: ChartTheme::Dark,
                log_y: false,
            },
        )
        .expect("renders");
    assert!(dark.contains("#1A1A22"), "the dark panel colour fills it");
    assert!(!dark.contains("#FFFFFF"), "no white anywhere in dark");
    let light = chart.to_svg(SIZE).expect("renders");
    assert!(light.contains("#FFFFFF"), "light is white");
}

#[test]
fn a_log_axis_labels_ticks_as_values_and_drops_non_positive_points() {
    let mut points: Vec<(f64, f64)> = (1..=100)
        .map(|i| (i as f64, 10f64.powi(-(i % 4))))
        .collect();
    points.push((101.0, 0.0));
    let chart = Chart {
        title: "Loss".to_owned(),
        x_label: "step".to_owned(),
        y_label: "loss".to_owned(),
        series: vec![Series {
            label: "training loss".to_owned(),
            points,
        }],
    };
    let style = ChartStyle {
        theme: ChartTheme::Light,
        log_y: true,
    };
    let svg = chart.to_svg_styled(SIZE, style).expect("renders");
    assert!(
        svg.contains("loss (log)"),
        "the axis says it is logarithmic"
    );
    assert!(
        svg.contains("\n0.01\n") && svg.contains("\n0.1\n"),
        "ticks read as loss values, not exponents"
    );
    let linear = chart.to_svg(SIZE).expect("renders");
    assert!(!linear.contains("(log)"));
}

#[test]
fn compare_draws_one_training_loss_line_per_job() {
    let a = metrics(200);
    let b: Vec<MetricsPoint> = metrics(120)
        .into_iter()
        .map(|mut p| {
            p.training_loss *= 1.5;
            p
        })
        .collect();
    let chart = Chart::compare(&[("run a".to_owned(), &a[..]), ("run b".to_owned(), &b[..])]);
    assert_eq!(chart.series.len(), 2);
    assert_eq!(chart.series[0].points.len(), 200);
    assert_eq!(chart.series[1].points[0], (0.0, 3.0));
    let svg = chart.to_svg(SIZE).expect("renders");
    assert!(
        svg.contains("run a") && svg.contains("run b"),
        "the legend names both"
    );
}

#[test]
fn labels_are_escaped_text_never_markup() {
    let a = metrics(10);
    let chart = Chart::compare(&[
        ("<img src=x onerror=alert(1)>".to_owned(), &a[..]),
        ("b & c".to_owned(), &a[..]),
    ]);
    let svg = chart.to_svg(SIZE).expect("renders");
    assert!(!svg.contains("<img"), "a dataset name cannot inject markup");
    assert!(svg.contains("&lt;img"), "it is drawn as text");
}
