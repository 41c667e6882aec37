//! Training curves (loss, validation loss, learning rate, throughput) drawn with `plotters` to an
//! SVG string for the window, or to PNG bytes for reports. Long series are decimated to the pixel
//! width first (min/max per pixel column, keeping each column's first and last point), so 100k
//! points draw as fast as a few thousand and a one-step loss spike still shows.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::model::MetricsPoint;

/// Pixel size of a chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ChartSize {
    pub width: u32,
    pub height: u32,
}

impl ChartSize {
    const MIN: u32 = 64;
    const MAX: u32 = 4096;
}

/// Which curve of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum ChartKind {
    /// Training loss, with validation loss where it was measured.
    Loss,
    LearningRate,
    Throughput,
}

/// The window's theme: a chart follows it, so a dark window never shows a white box.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum ChartTheme {
    #[default]
    Light,
    Dark,
}

/// How to draw: the theme, and a logarithmic y axis (loss curves spanning decades).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ChartStyle {
    #[serde(default)]
    pub theme: ChartTheme,
    #[serde(default)]
    pub log_y: bool,
}

/// The colours of a theme: the window's panel, text and lines (app.css), and the series.
struct Palette {
    background: RGBColor,
    text: RGBColor,
    axis: RGBColor,
    grid: RGBColor,
    series: [RGBColor; 4],
}

impl ChartTheme {
    fn palette(self) -> Palette {
        match self {
            Self::Light => Palette {
                background: RGBColor(0xff, 0xff, 0xff),
                text: RGBColor(0x6b, 0x6b, 0x7b),
                axis: RGBColor(0xc8, 0xc8, 0xd4),
                grid: RGBColor(0xf0, 0xf0, 0xf4),
                series: [
                    RGBColor(0x25, 0x63, 0xeb),
                    RGBColor(0xea, 0x58, 0x0c),
                    RGBColor(0x16, 0xa3, 0x4a),
                    RGBColor(0x93, 0x33, 0xea),
                ],
            },
            Self::Dark => Palette {
                background: RGBColor(0x1a, 0x1a, 0x22),
                text: RGBColor(0x9a, 0x9a, 0xae),
                axis: RGBColor(0x3a, 0x3a, 0x48),
                grid: RGBColor(0x22, 0x22, 0x2c),
                series: [
                    RGBColor(0x60, 0xa5, 0xfa),
                    RGBColor(0xfb, 0x92, 0x3c),
                    RGBColor(0x4a, 0xde, 0x80),
                    RGBColor(0xc0, 0x84, 0xfc),
                ],
            },
        }
    }
}

/// One named line: `(x, y)` points in increasing x (step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// What to draw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("chart size {width}×{height} is outside {min}..={max} pixels")]
    Size {
        width: u32,
        height: u32,
        min: u32,
        max: u32,
    },
    #[error("the embedded chart font could not be loaded")]
    Font,
    #[error("drawing the chart failed")]
    Draw(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("encoding the PNG failed")]
    Png(#[source] png::EncodingError),
}

impl Chart {
    /// The chart of one kind from a job's metrics (in any order; sorted by step here).
    pub fn from_metrics(kind: ChartKind, metrics: &[MetricsPoint]) -> Self {
        let mut sorted: Vec<&MetricsPoint> = metrics.iter().collect();
        sorted.sort_by_key(|point| point.step);
        let series = |label: &str, value: fn(&MetricsPoint) -> Option<f64>| Series {
            label: label.to_owned(),
            points: sorted
                .iter()
                .filter_map(|point| value(point).map(|y| (point.step as f64, y)))
                .collect(),
        };
        let (title, y_label, series) = match kind {
            ChartKind::Loss => (
                "Loss",
                "loss",
                vec![
                    series("training loss", |p| Some(p.training_loss)),
                    series("validation loss", |p| p.validation_loss),
                ],
            ),
            ChartKind::LearningRate => (
                "Learning rate",
                "learning rate",
                vec![series("learning rate", |p| Some(p.learning_rate))],
            ),
            ChartKind::Throughput => (
                "Throughput",
                "tokens/s",
                vec![series("throughput", |p| p.throughput)],
            ),
        };
        Self {
            title: title.to_owned(),
            x_label: "step".to_owned(),
            y_label: y_label.to_owned(),
            series,
        }
    }

    /// The training loss of several jobs on one chart (compare runs), one line per
    /// `(label, metrics)`.
    pub fn compare(jobs: &[(String, &[MetricsPoint])]) -> Self {
        let series = jobs
            .iter()
            .map(|(label, metrics)| {
                let mut points: Vec<(f64, f64)> = metrics
                    .iter()
                    .map(|p| (p.step as f64, p.training_loss))
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series {
                    label: label.clone(),
                    points,
                }
            })
            .collect();
        Self {
            title: "Training loss".to_owned(),
            x_label: "step".to_owned(),
            y_label: "loss".to_owned(),
            series,
        }
    }

    /// Renders to an SVG document, light.
    pub fn to_svg(&self, size: ChartSize) -> Result<String, ChartError> {
        self.to_svg_styled(size, ChartStyle::default())
    }

    /// Renders to an SVG document in `style`.
    pub fn to_svg_styled(&self, size: ChartSize, style: ChartStyle) -> Result<String, ChartError> {
        check_size(size)?;
        register_font()?;
        let mut svg = String::new();
        {
            let root =
                SVGBackend::with_string(&mut svg, (size.width, size.height)).into_drawing_area();
            draw(&root, self, size, style).map_err(|error| ChartError::Draw(Box::new(error)))?;
            root.present()
                .map_err(|error| ChartError::Draw(Box::new(error)))?;
        }
        Ok(svg)
    }

    /// Renders to a PNG image (RGB, 8 bits), light.
    pub fn to_png(&self, size: ChartSize) -> Result<Vec<u8>, ChartError> {
        self.to_png_styled(size, ChartStyle::default())
    }

    /// Renders to a PNG image (RGB, 8 bits) in `style`.
    pub fn to_png_styled(&self, size: ChartSize, style: ChartStyle) -> Result<Vec<u8>, ChartError> {
        check_size(size)?;
        register_font()?;
        let (width, height) = (size.width, size.height);
        let mut rgb = vec![0u8; width as usize * height as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
            draw(&root, self, size, style).map_err(|error| ChartError::Draw(Box::new(error)))?;
            root.present()
                .map_err(|error| ChartError::Draw(Box::new(error)))?;
        }
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(ChartError::Png)?;
        writer.write_image_data(&rgb).map_err(ChartError::Png)?;
        writer.finish().map_err(ChartError::Png)?;
        Ok(out)
    }
}

fn check_size(size: ChartSize) -> Result<(), ChartError> {
    let range = ChartSize::MIN..=ChartSize::MAX;
    if range.contains(&size.width) && range.contains(&size.height) {
        Ok(())
    } else {
        Err(ChartError::Size {
            width: size.width,
            height: size.height,
            min: ChartSize::MIN,
            max: ChartSize::MAX,
        })
    }
}

/// Text needs a font; plotters' `ab_glyph` backend takes it from memory, registered once per
/// process, so charts render the same with or without system fonts.
fn register_font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
    });
    if ok { Ok(()) } else { Err(ChartError::Font) }
}

/// Plotters' tick layout loops for ages on ranges near f64::MAX; no real metric comes near this,
/// so values beyond it are drawn at the edge instead.
const AXIS_LIMIT: f64 = 1e15;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart,
    size: ChartSize,
    style: ChartStyle,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let palette = style.theme.palette();
    root.fill(&palette.background)?;
    let buckets = size.width as usize;
    // A log axis draws log10(y) on a linear axis, with ticks labelled as the values; points at
    // or below zero have no logarithm and are left out.
    let scale = |y: f64| if style.log_y { y.log10() } else { y };
    let series: Vec<(&str, Vec<(f64, f64)>)> = chart
        .series
        .iter()
        .map(|series| {
            let points = decimate(&series.points, buckets)
                .into_iter()
                .filter(|&(_, y)| !style.log_y || y > 0.0)
                .map(|(x, y)| {
                    (
                        x.clamp(-AXIS_LIMIT, AXIS_LIMIT),
                        scale(y).clamp(-AXIS_LIMIT, AXIS_LIMIT),
                    )
                })
                .collect();
            (series.label.as_str(), points)
        })
        .collect();
    let (x_range, y_range) = ranges(series.iter().flat_map(|(_, points)| points.iter()));
    let text = |px: u32| ("sans-serif", px).into_font().color(&palette.text);
    let mut builder = ChartBuilder::on(root);
    // An empty title draws no caption (the window titles its charts itself).
    if !chart.title.is_empty() {
        builder.caption(&chart.title, text(16));
    }
    let mut context = builder
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range, y_range)?;
    let y_desc = if style.log_y {
        format!("{} (log)", chart.y_label)
    } else {
        chart.y_label.clone()
    };
    let y_tick = |y: &f64| {
        if style.log_y {
            format_tick(10f64.powf(*y))
        } else {
            format_tick(*y)
        }
    };
    context
        .configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(y_desc)
        // Steps are whole numbers: a short run gets no "1.5" between its steps.
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 {
                format_tick(*x)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&y_tick)
        .label_style(text(12))
        .axis_desc_style(text(12))
        .axis_style(palette.axis)
        .bold_line_style(palette.grid)
        .max_light_lines(0)
        .draw()?;
    let mut labelled = 0;
    for (index, (label, points)) in series.iter().enumerate() {
        if points.is_empty() {
            continue;
        }
        let color = palette.series[index % palette.series.len()];
        // Sparse series (validation loss) get dots so single measurements are visible.
        let dots = if points.len() < 64 { 3 } else { 0 };
        context
            .draw_series(
                LineSeries::new(points.iter().copied(), color.stroke_width(2)).point_size(dots),
            )?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        labelled += 1;
    }
    if labelled > 1 {
        context
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(text(12))
            .background_style(palette.background.mix(0.85))
            .border_style(palette.axis)
            .draw()?;
    }
    Ok(())
}

/// Axis ranges covering the points with a little headroom; a unit range when there are none.
fn ranges<'p>(
    points: impl Iterator<Item = &'p (f64, f64)>,
) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let mut bounds: Option<(f64, f64, f64, f64)> = None;
    for &(x, y) in points {
        bounds = Some(match bounds {
            None => (x, x, y, y),
            Some((x0, x1, y0, y1)) => (x0.min(x), x1.max(x), y0.min(y), y1.max(y)),
        });
    }
    let Some((x0, x1, y0, y1)) = bounds else {
        return (0.0..1.0, 0.0..1.0);
    };
    // Written so that no finite input overflows to infinity (plotters cannot lay out ticks on an
    // infinite range): each term stays within a tenth of f64::MAX before the clamp.
    let widen = |low: f64, high: f64| {
        let pad = if high > low {
            high * 0.05 - low * 0.05
        } else if low == 0.0 {
            1.0
        } else {
            low.abs() * 0.1
        };
        ((low - pad).max(f64::MIN), (high + pad).min(f64::MAX))
    };
    let (y0, y1) = widen(y0, y1);
    let (x0, x1) = if x1 > x0 { (x0, x1) } else { widen(x0, x1) };
    (x0..x1, y0..y1)
}

fn format_tick(value: f64) -> String {
    let magnitude = value.abs();
    if value == 0.0 {
        "0".to_owned()
    } else if !(1e-3..1e6).contains(&magnitude) {
        format!("{value:.1e}")
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Reduces `points` to at most four per bucket (first, min, max, last of each of `buckets` equal
/// x-intervals), in x order. Drawn at one bucket per pixel column, the line looks the same as
/// with every point: extremes (spikes) and the joins between columns are kept. Non-finite points
/// are dropped; unsorted input is sorted by x first.
pub fn decimate(points: &[(f64, f64)], buckets: usize) -> Vec<(f64, f64)> {
    let mut finite: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if !finite.windows(2).all(|pair| pair[0].0 <= pair[1].0) {
        finite.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let buckets = buckets.max(1);
    if finite.len() <= buckets.saturating_mul(4) {
        return finite;
    }
    let (Some(first), Some(last)) = (finite.first(), finite.last()) else {
        return finite;
    };
    let (x0, span) = (first.0, last.0 - first.0);
    if span <= 0.0 {
        // All points share one x: the extremes are all a line can show.
        let min = finite.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1));
        let max = finite.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1));
        return min.into_iter().chain(max).collect();
    }
    let bucket_of = |x: f64| (((x - x0) / span * buckets as f64) as usize).min(buckets - 1);
    let mut out = Vec::with_capacity(buckets * 4);
    let mut start = 0;
    while start < finite.len() {
        let bucket = bucket_of(finite[start].0);
        let mut end = start + 1;
        while end < finite.len() && bucket_of(finite[end].0) == bucket {
            end += 1;
        }
        let column = &finite[start..end];
        let (mut min, mut max) = (0, 0);
        for (index, point) in column.iter().enumerate() {
            if point.1 < column[min].1 {
                min = index;
            }
            if point.1 > column[max].1 {
                max = index;
            }
        }
        let mut picks = [0, min, max, column.len() - 1];
        picks.sort_unstable();
        let mut previous = None;
        for pick in picks {
            if previous != Some(pick) {
                out.push(column[pick]);
                previous = Some(pick);
            }
        }
        start = end;
    }
    out
}
