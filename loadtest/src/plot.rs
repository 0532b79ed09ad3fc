//! SVG line plots of the scenarios' series (plotters, SVG backend only).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::report::Series;

/// How one plot file looks.
struct Spec {
    title: &'static str,
    x_desc: &'static str,
    y_desc: &'static str,
    /// Labels of the x axis, from the plotted x value.
    x_label: fn(f64) -> String,
    /// Plot log10 of y (labels show y).
    y_log: bool,
}

fn spec(plot: &str) -> Spec {
    match plot {
        "throughput" => Spec {
            title: "Aggregate throughput by concurrent sessions",
            x_desc: "concurrent sessions",
            y_desc: "MiB/s",
            x_label: |x| format!("{:.0}", 10f64.powf(x)),
            y_log: false,
        },
        "latency" => Spec {
            title: "64-byte round trips: latency by percentile",
            x_desc: "percentile",
            y_desc: "µs",
            x_label: |x| format!("p{}", 100.0 * (1.0 - 10f64.powf(-x))),
            y_log: true,
        },
        "impairment" => Spec {
            title: "Throughput under loss, 50 ms RTT per hop",
            x_desc: "loss %",
            y_desc: "MiB/s",
            x_label: |x| format!("{x}"),
            y_log: false,
        },
        "ready" => Spec {
            title: "Lease create → Ready latency by registered exporters",
            x_desc: "online exporters",
            y_desc: "ms",
            x_label: |x| format!("{x:.0}"),
            y_log: true,
        },
        _ => Spec {
            title: "",
            x_desc: "",
            y_desc: "",
            x_label: |x| format!("{x}"),
            y_log: false,
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

fn draw(path: &Path, spec: &Spec, lines: &[&Series]) -> Result<(), Box<dyn std::error::Error>> {
    let y = |v: f64| if spec.y_log { v.max(1e-3).log10() } else { v };
    let points: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|s| s.points.iter().map(|&(px, py)| (px, y(py))))
        .filter(|(px, py)| px.is_finite() && py.is_finite())
        .collect();
    let (x_min, x_max) = bounds(points.iter().map(|p| p.0));
    let (mut y_min, y_max) = bounds(points.iter().map(|p| p.1));
    if !spec.y_log {
        y_min = y_min.min(0.0);
    }
    let y_pad = (y_max - y_min).abs().max(1e-9) * 0.08;

    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(spec.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(x_min..x_max, (y_min - y_pad)..(y_max + y_pad))?;
    let y_log = spec.y_log;
    chart
        .configure_mesh()
        .x_desc(spec.x_desc)
        .y_desc(spec.y_desc)
        .x_label_formatter(&|x| (spec.x_label)(*x))
        .y_label_formatter(&|v| {
            if y_log {
                format!("{:.0}", 10f64.powf(*v))
            } else {
                format!("{v:.0}")
            }
        })
        .draw()?;
    for (i, series) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let data: Vec<(f64, f64)> = series
            .points
            .iter()
            .map(|&(px, py)| (px, y(py)))
            .filter(|(px, py)| px.is_finite() && py.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))?
            .label(series.name.clone())
            .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 20, ly)], color));
        chart.draw_series(data.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
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
