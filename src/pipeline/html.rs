//! `summary.html`: the summary of a pipeline run as one self-contained page (no scripts, no
//! network): the table and, when models were validated, each model's metric against its MACs
//! and against its inference time, dense to pruned, as inline SVG.

use super::run::{Outcome, PipelineRun, Validation};
use crate::job::JobReport;
use crate::plot::{LineChart, Series};

/// The page. `header` and `rows` are the summary table's cells.
pub fn page(run: &PipelineRun, header: &[String], rows: &[Vec<String>]) -> String {
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>shears pipeline {title}</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 2em; }}\n\
         table {{ border-collapse: collapse; font-size: 0.9em; }}\n\
         th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}\n\
         th {{ background: #f2f2f2; }}\n\
         figure {{ margin: 2em 0; }}\n\
         </style>\n</head>\n<body>\n<h1>shears pipeline {title}</h1>\n<table>\n<tr>",
        title = escape(&run.pipeline.display().to_string())
    );
    for cell in header {
        html += &format!("<th>{}</th>", escape(cell));
    }
    html += "</tr>\n";
    for row in rows {
        html += "<tr>";
        for cell in row {
            html += &format!("<td>{}</td>", escape(cell));
        }
        html += "</tr>\n";
    }
    html += "</table>\n";
    for chart in charts(run) {
        match chart.render() {
            Ok(rendered) => {
                html += &format!("<figure>\n{}\n</figure>\n", inline_svg(&rendered.svg))
            }
            Err(err) => {
                html += &format!(
                    "<p>{} not drawn: {}</p>\n",
                    escape(&chart.title),
                    escape(&format!("{err:#}"))
                )
            }
        }
    }
    html += "</body>\n</html>\n";
    html
}

/// The validated models' reports.
fn validated(run: &PipelineRun) -> Vec<(String, &JobReport, &Validation)> {
    run.models
        .iter()
        .filter_map(|m| {
            let (report, validation) = match &m.result {
                Outcome::Ok {
                    report,
                    validation: Some(v),
                } => (report, v),
                Outcome::GateFailed {
                    report, validation, ..
                } => (report, validation),
                _ => return None,
            };
            let name = m.output.file_stem().map_or_else(
                || m.output.display().to_string(),
                |s| s.to_string_lossy().into_owned(),
            );
            Some((name, report, validation))
        })
        .collect()
}

/// Metric against GMACs and against inference ms per image, one dense-to-pruned line per
/// validated model; none when no model was validated.
fn charts(run: &PipelineRun) -> Vec<LineChart> {
    let models = validated(run);
    let Some((_, _, first)) = models.first() else {
        return Vec::new();
    };
    let metric = first.metric;
    let y_label = format!("{} (validation)", metric.name());
    let series = |x: &dyn Fn(&JobReport, &Validation) -> (f64, f64)| -> Vec<Series> {
        models
            .iter()
            .map(|(name, report, v)| {
                let (dense_x, pruned_x) = x(report, v);
                Series {
                    name: name.clone(),
                    points: vec![
                        (dense_x, metric.value(&v.dense)),
                        (pruned_x, metric.value(&v.pruned)),
                    ],
                    line: true,
                }
            })
            .collect()
    };
    vec![
        LineChart {
            title: format!("{}: dense to pruned, against MACs", metric.name()),
            x_label: "MACs per inference (G)".to_string(),
            y_label: y_label.clone(),
            series: series(&|r, _| (r.before.macs as f64 / 1e9, r.after.macs as f64 / 1e9)),
        },
        LineChart {
            title: format!("{}: dense to pruned, against inference time", metric.name()),
            x_label: "inference time (ms per image, mean over validation)".to_string(),
            y_label,
            series: series(&|_, v| (v.dense.speed_ms.inference, v.pruned.speed_ms.inference)),
        },
    ]
}

/// Text as HTML: `&`, `<`, `>` and quotes escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG document as an element inlined in HTML, which needs neither an XML declaration nor
/// the SVG namespace (an HTML parser puts `<svg>` in it).
fn inline_svg(svg: &str) -> String {
    let body = match svg.strip_prefix("<?xml") {
        Some(rest) => rest
            .split_once("?>")
            .map_or(svg, |(_, body)| body.trim_start()),
        None => svg,
    };
    body.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup() {
        assert_eq!(escape("a<b>&\"c\""), "a&lt;b&gt;&amp;&quot;c&quot;");
        assert_eq!(inline_svg("<?xml version=\"1.0\"?>\n<svg/>"), "<svg/>");
        assert_eq!(
            inline_svg("<svg width=\"2\" xmlns=\"http://www.w3.org/2000/svg\">"),
            "<svg width=\"2\">"
        );
    }
}
