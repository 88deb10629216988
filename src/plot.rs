//! Score histograms as SVG, for `pampa eval --plot` and `pampa replay --plot`.
//!
//! Hand-written: a few histograms and vertical lines do not justify a plotting crate and
//! its font and image dependencies.

use std::fmt::Write;

/// One distribution of scores.
pub struct Series<'a> {
    /// The legend: `ham`, `spam` …
    pub label: &'a str,
    /// An SVG colour.
    pub colour: &'a str,
    /// The scores.
    pub scores: Vec<f64>,
}

/// How a threshold line is drawn.
#[derive(Clone, Copy)]
pub enum LineKind {
    /// A level's cut: dashed.
    Cut,
    /// A level's discard score: dotted.
    Discard,
}

/// A vertical line at a score.
pub struct Line {
    /// What it is: `normal cut`, `normal (new)` …
    pub label: String,
    /// Where.
    pub score: f64,
    /// Dashed or dotted.
    pub kind: LineKind,
    /// An SVG colour.
    pub colour: &'static str,
}

/// The colour of ham everywhere.
pub const HAM_COLOUR: &str = "#2b7bba";
/// The colour of spam everywhere.
pub const SPAM_COLOUR: &str = "#d7301f";

/// The score range drawn; scores outside it are counted in the end bins.
const LOW: f64 = -10.0;
const HIGH: f64 = 30.0;
const BINS: usize = 80;

/// A histogram per series on one axis, with the lines on top. `title` heads the plot.
pub fn histogram_svg(title: &str, series: &[Series<'_>], lines: &[Line]) -> String {
    let bin_width = (HIGH - LOW) / BINS as f64;
    let counts: Vec<Vec<usize>> = series
        .iter()
        .map(|s| {
            let mut bins = vec![0usize; BINS];
            for score in &s.scores {
                let bin = ((score.clamp(LOW, HIGH - 1e-9) - LOW) / bin_width) as usize;
                bins[bin.min(BINS - 1)] += 1;
            }
            bins
        })
        .collect();
    let peak = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let (w, h, left, bottom, top) = (900.0, 420.0, 50.0, 40.0, 40.0);
    let x = |score: f64| left + (score - LOW) / (HIGH - LOW) * (w - left - 10.0);
    let y = |count: usize| (h - bottom) - (count as f64 / peak) * (h - bottom - top);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"16\" font-size=\"13\">{}</text>\n",
        escape(title)
    );
    for (s, bins) in series.iter().zip(&counts) {
        let mut points = String::new();
        for (i, count) in bins.iter().enumerate() {
            let x0 = x(LOW + i as f64 * bin_width);
            let x1 = x(LOW + (i + 1) as f64 * bin_width);
            let yy = y(*count);
            let _ = write!(points, "{x0:.1},{yy:.1} {x1:.1},{yy:.1} ");
        }
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{points}\"/>",
            s.colour
        );
    }
    for (i, line) in lines.iter().enumerate() {
        if line.score <= LOW || line.score >= HIGH {
            continue;
        }
        let dash = match line.kind {
            LineKind::Cut => "5,3",
            LineKind::Discard => "1,3",
        };
        let xx = x(line.score);
        let _ = writeln!(
            svg,
            "<line x1=\"{xx:.1}\" y1=\"{top}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"{}\" \
             stroke-dasharray=\"{dash}\"/>\n<text x=\"{:.1}\" y=\"{}\" fill=\"{}\">{}</text>",
            h - bottom,
            line.colour,
            xx + 2.0,
            top + 12.0 * (i % 8) as f64,
            line.colour,
            escape(&line.label)
        );
    }
    for tick in (LOW as i64..=HIGH as i64).step_by(5) {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\">{tick}</text>",
            x(tick as f64) - 4.0,
            h - bottom + 15.0
        );
    }
    let mut legend_x = left;
    for s in series {
        let _ = write!(
            svg,
            "<text x=\"{legend_x}\" y=\"{}\" fill=\"{}\">{} ({})</text>",
            h - 5.0,
            s.colour,
            escape(s.label),
            s.scores.len()
        );
        legend_x += 110.0;
    }
    let _ = writeln!(
        svg,
        "\n<text x=\"{}\" y=\"{}\">score (dashed: cut, dotted: discard)</text>\n</svg>",
        w / 2.0 - 40.0,
        h - 5.0
    );
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_each_series_and_line_in_range() {
        let svg = histogram_svg(
            "t <1>",
            &[
                Series {
                    label: "ham",
                    colour: "blue",
                    scores: vec![-1.0, 0.5, 100.0],
                },
                Series {
                    label: "spam",
                    colour: "red",
                    scores: vec![9.0],
                },
            ],
            &[
                Line {
                    label: "normal cut".into(),
                    score: 5.0,
                    kind: LineKind::Cut,
                    colour: "#555",
                },
                Line {
                    label: "off".into(),
                    score: 99.0,
                    kind: LineKind::Discard,
                    colour: "#555",
                },
            ],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<line ").count(), 1);
        assert!(svg.contains("t &lt;1&gt;"));
        assert!(svg.contains("ham (3)") && svg.contains("spam (1)"));
    }
}
