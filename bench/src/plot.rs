//! The latency distributions as an SVG plot (`--svg FILE`): one panel per workload, the
//! cumulative distribution of the per-operation samples of every implementation on a log
//! time axis, one colour per implementation throughout. Drawn with `plotters`' SVG backend
//! (text goes into the SVG as `<text>`; no font files or system libraries needed).

use plotters::prelude::*;
use std::collections::BTreeMap;

/// Points kept per distribution (evenly spaced quantiles).
const POINTS: usize = 200;

/// Per (workload, implementation): the sample quantiles at 0, 1/POINTS, ..., 1.
pub type Distributions = BTreeMap<(&'static str, &'static str), Vec<f64>>;

/// The quantiles of every sample set (each set is sorted here; its contents stay).
pub fn distributions(
    samples: &mut BTreeMap<(&'static str, &'static str), Vec<f64>>,
) -> Distributions {
    samples
        .iter_mut()
        .filter(|(_, s)| !s.is_empty())
        .map(|(k, s)| {
            s.sort_by(f64::total_cmp);
            let at = |i: usize| s[(s.len() - 1) * i / POINTS];
            (*k, (0..=POINTS).map(at).collect())
        })
        .collect()
}

/// Implementations in legend order; each keeps its colour in every panel.
const IMPLS: [&str; 6] = [
    "levitate",
    "reference",
    "buddy_system_allocator",
    "linked_list_allocator",
    "talc",
    "rlsf",
];

fn colour(imp: &str) -> RGBColor {
    const COLOURS: [RGBColor; 8] = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(127, 127, 127),
        RGBColor(23, 190, 207),
        RGBColor(140, 86, 75),
    ];
    let i = IMPLS.iter().position(|&i| i == imp).unwrap_or_else(|| {
        // Implementations added later: a stable colour from the name.
        IMPLS.len() + imp.bytes().map(usize::from).sum::<usize>() % 2
    });
    COLOURS[i % COLOURS.len()]
}

/// An axis label in nanoseconds: `0.5`, `20`, `1000`, `1e5`.
fn ns_label(ns: f64) -> String {
    if ns < 1.0 {
        format!("{ns:.1}")
    } else if ns < 1e5 {
        format!("{ns:.0}")
    } else {
        format!("{ns:.0e}")
    }
}

/// Writes the plot of `dists` for `workloads` (in that order) to `path`.
pub fn write_svg(
    path: &str,
    dists: &Distributions,
    workloads: &[&str],
    title: &str,
) -> Result<(), String> {
    let shown: Vec<&str> = workloads
        .iter()
        .copied()
        .filter(|w| dists.keys().any(|(dw, _)| dw == w))
        .collect();
    if shown.is_empty() {
        return Err("no samples to plot".into());
    }
    let cols = 3;
    let rows = shown.len().div_ceil(cols);
    let (width, height) = (1200u32, 60 + 330 * rows as u32);
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| format!("cannot draw {path}: {e:?}");
    root.fill(&WHITE).map_err(e)?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|x| format!("cannot draw {path}: {x:?}"))?;
    let panels = root.split_evenly((rows, cols));
    for (panel, workload) in panels.iter().zip(&shown) {
        let series: Vec<(&str, &Vec<f64>)> = dists
            .iter()
            .filter(|((w, _), _)| w == workload)
            .map(|((_, imp), q)| (*imp, q))
            .collect();
        // Log axis: at least a tenth of a nanosecond (a sample may be ~0 after the clock
        // cost is subtracted), with a little room on both sides.
        let lo = series
            .iter()
            .map(|(_, q)| q[0])
            .fold(f64::INFINITY, f64::min)
            .max(0.1);
        let hi = series
            .iter()
            .map(|(_, q)| q[q.len() - 1])
            .fold(0.0, f64::max)
            .max(lo * 10.0);
        let mut chart = ChartBuilder::on(panel)
            .caption(*workload, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(40)
            .build_cartesian_2d((lo / 1.5..hi * 1.5).log_scale(), 0.0..1.0)
            .map_err(|x| format!("cannot draw {path}: {x:?}"))?;
        chart
            .configure_mesh()
            .x_desc("ns per operation (log)")
            .y_desc("fraction of operations")
            .x_labels(6)
            .x_label_formatter(&|ns| ns_label(*ns))
            .y_labels(5)
            .draw()
            .map_err(|x| format!("cannot draw {path}: {x:?}"))?;
        for (imp, q) in series {
            let c = colour(imp);
            let points = q
                .iter()
                .enumerate()
                .map(|(i, &v)| (v.max(lo), i as f64 / POINTS as f64));
            chart
                .draw_series(LineSeries::new(points, c.stroke_width(2)))
                .map_err(|x| format!("cannot draw {path}: {x:?}"))?
                .label(imp)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(|x| format!("cannot draw {path}: {x:?}"))?;
    }
    root.present()
        .map_err(|x| format!("cannot write {path}: {x:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_then_an_svg_with_one_line_per_implementation() {
        let mut samples = BTreeMap::new();
        samples.insert(
            ("mixed", "levitate"),
            (1..=1000).map(f64::from).collect::<Vec<_>>(),
        );
        samples.insert(("mixed", "reference"), vec![5.0; 10]);
        samples.insert(("runs", "levitate"), vec![0.0, 100.0]);
        let d = distributions(&mut samples);
        let q = &d[&("mixed", "levitate")];
        assert_eq!(q.len(), POINTS + 1);
        assert_eq!((q[0], q[POINTS]), (1.0, 1000.0));
        assert!(q.windows(2).all(|w| w[0] <= w[1]));
        let path = std::env::temp_dir().join(format!("levitate-plot-{}.svg", std::process::id()));
        let path = path.to_str().unwrap();
        write_svg(path, &d, &["mixed", "runs", "absent"], "test").unwrap();
        let svg = std::fs::read_to_string(path).unwrap();
        std::fs::remove_file(path).unwrap();
        assert!(svg.starts_with("<svg"));
        for text in ["mixed", "runs", "levitate", "reference"] {
            assert!(svg.contains(text), "no {text} in the plot");
        }
        // Levitate's colour in both panels (line and legend entry each), the reference's in
        // one.
        assert_eq!(svg.matches("stroke=\"#D62728\"").count(), 4);
        assert_eq!(svg.matches("stroke=\"#1F77B4\"").count(), 2);
        assert!(write_svg(path, &d, &["absent"], "test").is_err());
    }
}
