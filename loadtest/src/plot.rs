//! SVG line plots of the scenarios' series (plotters, SVG backend only: text is written
//! as SVG `<text>`, so no font files are needed).
//!
//! Axes are labelled by hand: log axes at every decade (1, 10, 100, …), latency
//! percentiles by name (p50, p90, p99, p99.9), linear axes at round steps. Lines differ
//! in dash pattern and marker as well as colour, so that they stay apart in grey print;
//! lines named `<group> p50` / `<group> p99` share their group's colour and differ in dash.

use std::path::Path;

use anyhow::anyhow;
use plotters::element::{DashedPathElement, Drawable, DynElement, PointCollection};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Scenario, Series, format_number};
use crate::scenario::controller;

/// How values map onto an axis and where its ticks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scale {
    Linear,
    /// Values are plotted as log10(value).
    Log,
    /// Values are log10 already (the scenario stored them so).
    LogOfData,
    /// x = −log10(1 − q) of quantile q: p50, p90, p99, p99.9 equally spaced.
    Percentile,
}

/// How one plot file looks.
struct Spec {
    title: &'static str,
    x_desc: &'static str,
    y_desc: &'static str,
    x: Scale,
    y: Scale,
}

fn spec(plot: &str) -> Spec {
    match plot {
        "throughput" => Spec {
            title: "Aggregate throughput by concurrent sessions",
            x_desc: "concurrent sessions",
            y_desc: "MiB/s",
            x: Scale::LogOfData,
            y: Scale::Linear,
        },
        "latency" => Spec {
            title: "64-byte round trips: latency by percentile",
            x_desc: "percentile",
            y_desc: "µs (log)",
            x: Scale::Percentile,
            y: Scale::Log,
        },
        "impairment" => Spec {
            title: "Throughput under loss, 50 ms RTT per hop",
            x_desc: "loss %",
            y_desc: "MiB/s (log)",
            x: Scale::Linear,
            y: Scale::Log,
        },
        "congestion" => Spec {
            title: "QUIC congestion controllers under loss",
            x_desc: "loss %",
            y_desc: "MiB/s (log)",
            x: Scale::Linear,
            y: Scale::Log,
        },
        "ready" => Spec {
            title: "Lease create → Ready latency against online exporters",
            x_desc: "online exporters (log)",
            y_desc: "ms (log)",
            x: Scale::Log,
            y: Scale::Log,
        },
        _ => Spec {
            title: "",
            x_desc: "",
            y_desc: "",
            x: Scale::Linear,
            y: Scale::Linear,
        },
    }
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Dash and gap lengths in pixels; (0, 0) is a solid line.
const DASHES: [(u32, u32); 4] = [(0, 0), (10, 5), (3, 4), (18, 6)];

/// Size of a plot in pixels.
const WIDTH: u32 = 900;
const HEIGHT: u32 = 560;
/// Pixels of a line sample in the legend, and of one legend line.
const LEGEND_SAMPLE: u32 = 40;
const LEGEND_LINE: u32 = 19;

/// Percentile suffixes of line names that group lines (`standalone p50`, `standalone p99`).
const PERCENTILES: [&str; 4] = [" p50", " p90", " p99", " p99.9"];

/// Writes `<plot>.svg` into `dir` for every plot named by `series`; returns the files.
pub(crate) fn write_all(dir: &Path, series: &[Series]) -> anyhow::Result<Vec<String>> {
    let mut plots: Vec<&str> = series.iter().map(|s| s.plot).collect();
    plots.sort_unstable();
    plots.dedup();
    let mut written = Vec::new();
    for plot in plots {
        let lines: Vec<&Series> = series.iter().filter(|s| s.plot == plot).collect();
        let file = format!("{plot}.svg");
        draw(&dir.join(&file), &spec(plot), &lines).map_err(|e| anyhow!("plot {file}: {e}"))?;
        written.push(file);
    }
    Ok(written)
}

/// Lines made from a scenario's merged rows rather than from its runs: the controller's
/// Ready latency, p50 and p99 (where the rows keep it) against exporters, one colour per
/// mode (standalone, Kubernetes with N replicas).
pub(crate) fn lines_from_rows(s: &mut Scenario) {
    if s.key != controller::KEY {
        return;
    }
    s.series.retain(|line| line.plot != "ready");
    let rows = s.rows.clone();
    for row in &rows {
        let Some(n) = row.figure("exporters") else {
            continue;
        };
        let mode = ready_mode(&row.name, n);
        for (column, quantile) in [("Ready p50 ms", "p50"), ("Ready p99 ms", "p99")] {
            if let Some(ms) = row.figure(column) {
                s.point("ready", &format!("{mode} {quantile}"), (n, ms));
            }
        }
    }
}

/// The mode part of a controller row's name: `kube-apiserver, 2 replicas: 10 exporters`
/// → `kube-apiserver, 2 replicas`; `10 exporters` → `standalone`.
fn ready_mode(row: &str, exporters: f64) -> String {
    let suffix = format!("{} exporters", format_number(exporters).replace(',', ""));
    match row.strip_suffix(&suffix) {
        Some("") | None => "standalone".to_owned(),
        Some(mode) => mode.trim_end_matches([' ', ':']).to_owned(),
    }
}

/// A value in plot coordinates (NaN when a log axis gets no positive value).
fn to_plot(scale: Scale, v: f64) -> f64 {
    match scale {
        Scale::Log if v > 0.0 => v.log10(),
        Scale::Log => f64::NAN,
        Scale::Linear | Scale::LogOfData | Scale::Percentile => v,
    }
}

/// Ticks (position in plot coordinates, label) within `lo..=hi`.
fn ticks(scale: Scale, lo: f64, hi: f64) -> Vec<(f64, String)> {
    let inside = |p: f64| p >= lo - 1e-9 && p <= hi + 1e-9;
    match scale {
        Scale::Linear => {
            let step = nice_step((hi - lo) / 5.0);
            let first = (lo / step).ceil() as i64;
            let last = (hi / step).floor() as i64;
            (first..=last)
                .map(|k| {
                    let v = k as f64 * step;
                    (v, format_number(v))
                })
                .collect()
        }
        Scale::Log | Scale::LogOfData => {
            let decades: Vec<i32> = (lo.floor() as i32..=hi.ceil() as i32).collect();
            // Within one or two decades, 2× and 5× ticks too, so there are enough labels.
            let factors: &[f64] = if hi - lo <= 2.0 {
                &[1.0, 2.0, 5.0]
            } else {
                &[1.0]
            };
            decades
                .iter()
                .flat_map(|&d| factors.iter().map(move |f| f * 10f64.powi(d)))
                .map(|v| (v.log10(), format_number(v)))
                .filter(|&(p, _)| inside(p))
                .collect()
        }
        Scale::Percentile => [
            (0.5, "p50"),
            (0.9, "p90"),
            (0.99, "p99"),
            (0.999, "p99.9"),
            (0.9999, "p99.99"),
        ]
        .into_iter()
        .map(|(q, name)| (-(1.0f64 - q).log10(), name.to_owned()))
        .filter(|&(p, _)| inside(p))
        .collect(),
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&step| step >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// Colour and dash of each line: by group (the name without its percentile suffix) and
/// percentile when lines are named so, otherwise by position.
fn styles(lines: &[&Series]) -> Vec<(RGBColor, (u32, u32), usize)> {
    let group = |name: &str| {
        PERCENTILES
            .iter()
            .enumerate()
            .find_map(|(i, p)| name.strip_suffix(p).map(|g| (g.to_owned(), i)))
    };
    let grouped = lines.iter().all(|l| group(&l.name).is_some());
    let mut groups: Vec<String> = Vec::new();
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| match group(&line.name).filter(|_| grouped) {
            Some((g, percentile)) => {
                let index = groups.iter().position(|x| *x == g).unwrap_or_else(|| {
                    groups.push(g);
                    groups.len() - 1
                });
                (
                    COLORS[index % COLORS.len()],
                    DASHES[percentile % DASHES.len()],
                    index,
                )
            }
            None => (COLORS[i % COLORS.len()], DASHES[i % DASHES.len()], i),
        })
        .collect()
}

fn draw(path: &Path, spec: &Spec, lines: &[&Series]) -> Result<(), Box<dyn std::error::Error>> {
    let data: Vec<Vec<(f64, f64)>> = lines
        .iter()
        .map(|s| {
            s.points
                .iter()
                .map(|&(px, py)| (to_plot(spec.x, px), to_plot(spec.y, py)))
                .filter(|(px, py)| px.is_finite() && py.is_finite())
                .collect()
        })
        .collect();
    let (mut x_min, mut x_max) = bounds(data.iter().flatten().map(|p| p.0));
    let (mut y_min, mut y_max) = bounds(data.iter().flatten().map(|p| p.1));
    if spec.y == Scale::Linear {
        y_min = y_min.min(0.0);
    }
    // Log axes from decade to decade, so that the outer ticks are labelled.
    if matches!(spec.y, Scale::Log | Scale::LogOfData) {
        (y_min, y_max) = (y_min.floor(), y_max.ceil().max(y_min.floor() + 1.0));
    } else {
        let pad = (y_max - y_min).abs().max(1e-9) * 0.08;
        y_max += pad;
    }
    if matches!(spec.x, Scale::Log | Scale::LogOfData) {
        (x_min, x_max) = (x_min.floor(), x_max.ceil().max(x_min.floor() + 1.0));
    }
    let x_pad = (x_max - x_min).abs().max(1e-9) * 0.03;
    // Room above the data for the legend, so that it covers no line.
    let legend = f64::from(LEGEND_LINE) * lines.len() as f64 + 24.0;
    let plot_height = f64::from(HEIGHT) - 140.0;
    y_max += (y_max - y_min) * legend / (plot_height - legend).max(plot_height / 4.0);

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(spec.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(76)
        .build_cartesian_2d((x_min - x_pad)..(x_max + x_pad), y_min..y_max)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(0)
        .x_desc(spec.x_desc)
        .y_desc(spec.y_desc)
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    let grid = RGBColor(220, 220, 220);
    let label = TextStyle::from(("sans-serif", 14).into_font());
    for (x, text) in ticks(spec.x, x_min - x_pad, x_max + x_pad) {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, y_min), (x, y_max)],
            grid,
        )))?;
        let (px, py) = chart.backend_coord(&(x, y_min));
        root.draw(&Text::new(
            text,
            (px, py + 6),
            label.pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    for (y, text) in ticks(spec.y, y_min, y_max) {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x_min - x_pad, y), (x_max + x_pad, y)],
            grid,
        )))?;
        let (px, py) = chart.backend_coord(&(x_min - x_pad, y));
        root.draw(&Text::new(
            text,
            (px - 6, py),
            label.pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
    }
    for ((series, points), (color, (dash, gap), marker)) in
        lines.iter().zip(&data).zip(styles(lines))
    {
        let style = color.stroke_width(2);
        if dash == 0 {
            chart.draw_series(LineSeries::new(points.clone(), style))?;
        } else {
            chart.draw_series(DashedLineSeries::new(points.clone(), dash, gap, style))?;
        }
        chart
            .draw_series(points.iter().map(|&p| marker_at(p, marker, color)))?
            .label(series.name.clone())
            .legend(move |(lx, ly)| {
                let sample: Vec<(i32, i32)> = vec![(lx, ly), (lx + LEGEND_SAMPLE as i32, ly)];
                // A solid line is one dash longer than the sample.
                let (dash, gap) = if dash == 0 {
                    (LEGEND_SAMPLE, 1)
                } else {
                    (dash, gap)
                };
                EmptyElement::at((0, 0))
                    + DashedPathElement::new(sample, dash, gap, style)
                    + marker_at((lx + LEGEND_SAMPLE as i32 / 2, ly), marker, color)
            });
    }
    chart
        .configure_series_labels()
        .legend_area_size(LEGEND_SAMPLE + 6)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The marker of line `index` at `at`: circle, triangle, cross, or open circle.
fn marker_at<'a, DB, C>(at: C, index: usize, color: RGBColor) -> DynElement<'a, DB, C>
where
    DB: DrawingBackend,
    C: Clone + 'a,
    Circle<C, i32>: Drawable<DB>,
    TriangleMarker<C, i32>: Drawable<DB>,
    Cross<C, i32>: Drawable<DB>,
    for<'b> &'b Circle<C, i32>: PointCollection<'b, C>,
    for<'b> &'b TriangleMarker<C, i32>: PointCollection<'b, C>,
    for<'b> &'b Cross<C, i32>: PointCollection<'b, C>,
{
    match index % 4 {
        0 => Circle::new(at, 4, color.filled()).into_dyn(),
        1 => TriangleMarker::new(at, 5, color.filled()).into_dyn(),
        2 => Cross::new(at, 4, color.stroke_width(2)).into_dyn(),
        _ => Circle::new(at, 4, color.stroke_width(2)).into_dyn(),
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if (hi - lo).abs() < 1e-9 {
        return (lo - 0.5, hi + 0.5);
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Row;

    fn labels(scale: Scale, lo: f64, hi: f64) -> Vec<String> {
        ticks(scale, lo, hi).into_iter().map(|t| t.1).collect()
    }

    #[test]
    fn log_axes_tick_every_decade() {
        assert_eq!(
            labels(Scale::Log, 1.0, 5.0),
            ["10", "100", "1000", "10,000", "100,000"]
        );
        assert_eq!(
            labels(Scale::LogOfData, 0.0, 2.0),
            ["1", "2", "5", "10", "20", "50", "100"]
        );
    }

    #[test]
    fn percentiles_are_named() {
        assert_eq!(
            labels(Scale::Percentile, 0.0, 3.0),
            ["p50", "p90", "p99", "p99.9"]
        );
    }

    #[test]
    fn linear_ticks_are_round() {
        assert_eq!(
            labels(Scale::Linear, 0.0, 5.0),
            ["0", "1", "2", "3", "4", "5"]
        );
        assert_eq!(
            labels(Scale::Linear, 0.0, 430.0),
            ["0", "100", "200", "300", "400"]
        );
    }

    #[test]
    fn percentile_lines_share_a_colour_per_group_and_differ_in_dash() {
        let line = |name: &str| Series {
            plot: "ready",
            name: name.to_owned(),
            points: vec![(1.0, 1.0)],
        };
        let lines = [
            line("standalone p50"),
            line("standalone p99"),
            line("kube p50"),
        ];
        let refs: Vec<&Series> = lines.iter().collect();
        let s = styles(&refs);
        assert_eq!(s[0].0, s[1].0);
        assert_ne!(s[0].1, s[1].1);
        assert_ne!(s[0].0, s[2].0);
        assert_eq!(s[0].1, s[2].1);
    }

    #[test]
    fn ready_lines_come_from_the_rows() {
        let mut s = Scenario::new(7, controller::KEY, "Controller");
        s.row(
            Row::new("1000 exporters")
                .num("exporters", 1000.0)
                .num("Ready p50 ms", 11.0)
                .num("Ready p99 ms", 24.0),
        );
        s.row(
            Row::new("kube-apiserver, 3 replicas: 10000 exporters")
                .num("exporters", 10_000.0)
                .num("Ready p50 ms", 51.0),
        );
        lines_from_rows(&mut s);
        let names: Vec<&str> = s.series.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "standalone p50",
                "standalone p99",
                "kube-apiserver, 3 replicas p50"
            ]
        );
        assert_eq!(s.series[2].points, [(10_000.0, 51.0)]);
    }

    #[test]
    fn plots_are_svg_with_labelled_ticks_and_dashed_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let curve = |name: &str, scale: f64| Series {
            plot: "latency",
            name: name.to_owned(),
            points: [std::f64::consts::LOG10_2, 1.0, 2.0, 3.0]
                .into_iter()
                .map(|x| (x, scale * (1.0 + x)))
                .collect(),
        };
        let lines = [
            curve("QUIC via router", 100.0),
            curve("h2 via router", 150.0),
        ];
        let written = write_all(dir.path(), &lines).expect("plot");
        assert_eq!(written, ["latency.svg"]);
        let svg = std::fs::read_to_string(dir.path().join("latency.svg")).expect("svg");
        for text in ["p50", "p90", "p99", "p99.9", "100", "1000"] {
            assert!(
                svg.contains(&format!(">\n{text}\n<")) || svg.contains(&format!(">{text}\n<")),
                "{text} missing"
            );
        }
        assert!(svg.contains("<polyline"));
        assert!(
            svg.matches("<polyline").count() > 10,
            "the second line is dashed"
        );
    }
}
