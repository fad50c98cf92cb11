//! The latency distributions of the cache and its baselines on one chart
//! (one panel per thread count), as SVG: latency (log scale) against
//! percentile on a "nines" scale (90, 99, 99.9, ...), from the latency
//! curve of each case's median round. Text is left to the SVG viewer's
//! fonts, so drawing needs no font library.

use crate::report::{quantile, WorkloadReport, NINES};
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// The percentile at `x` as a label: 0, 90, 99, 99.9, ...
pub fn nines_label(x: f64) -> String {
    let p = quantile(x) * 100.0;
    let decimals = (x.round() as i32 - 2).max(0) as usize;
    format!("{p:.decimals$}")
}

/// Draw `report` to `path` (SVG).
pub fn draw(report: &WorkloadReport, path: &Path) -> Result<()> {
    let panels = report.sections.len().max(1);
    let root = SVGBackend::new(path, (1000, 460 * panels as u32)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("--plot {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    for (area, section) in root.split_evenly((panels, 1)).iter().zip(&report.sections) {
        let curves: Vec<_> = section.rows.iter().map(|r| (r, r.curve.clone())).collect();
        let ys = curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.1));
        let (lo, hi) = ys.fold((f64::MAX, 0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
        let (lo, hi) = if hi > 0.0 {
            (lo / 1.5, hi * 1.5)
        } else {
            (0.1, 10.0)
        };
        let mut chart = ChartBuilder::on(area)
            .caption(&section.title, ("sans-serif", 20))
            .margin(12)
            .margin_right(36)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..NINES, (lo..hi).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_labels(NINES as usize + 1)
            .x_label_formatter(&|x| nines_label(*x))
            .y_label_formatter(&|y| format!("{y}"))
            .x_desc("percentile")
            .y_desc("latency (µs)")
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (row, points)) in curves.into_iter().enumerate() {
            let style = ShapeStyle {
                color: Palette99::pick(i).to_rgba(),
                filled: false,
                stroke_width: if row.is_cache { 3 } else { 1 },
            };
            chart
                .draw_series(LineSeries::new(points, style))
                .map_err(|e| err(&e))?
                .label(row.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_labels() {
        let l: Vec<_> = (0..=5).map(|x| nines_label(x as f64)).collect();
        assert_eq!(l, ["0", "90", "99", "99.9", "99.99", "99.999"]);
    }
}
