//! The self-contained `index.html`: inline CSS, no scripts, figures referenced by relative path
//! (`<stem>.svg` beside the page, with the PNG linked). A pure function of the [`Page`].

use std::fmt::Write as _;

use super::findings::{num, Finding};
use super::summary::{RunSummary, GROK_THRESHOLD};

/// One entry of a section.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A drawn figure.
    Figure {
        /// File stem (beside the page).
        stem: String,
        /// The figure's title (the image's alternative text).
        alt: String,
        /// Caption.
        caption: String,
        /// Pixel size.
        width: u32,
        /// Pixel size.
        height: u32,
    },
    /// A figure that was not drawn, and why.
    Skipped {
        /// What would have been drawn.
        what: String,
        /// Why not.
        reason: String,
    },
    /// A remark (e.g. a checkpoint that could not be read).
    Note(String),
    /// A table of numbers (cells are prose: backticks become code).
    Table {
        /// Caption, above the table.
        caption: String,
        /// Column headings.
        head: Vec<String>,
        /// The first `left` columns are text, aligned left; the rest are numbers.
        left: usize,
        /// Rows of cells, each as long as `head`.
        rows: Vec<Vec<String>>,
    },
}

/// One numbered section of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Anchor.
    pub id: String,
    /// Heading.
    pub title: String,
    /// One paragraph saying what the section shows.
    pub intro: String,
    /// Figures, skips and notes.
    pub items: Vec<Item>,
}

/// One input line: a file and what happened to it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputLine {
    /// Table kind (file name).
    pub kind: String,
    /// Path as given or found.
    pub path: String,
    /// `N rows read`, or the error.
    pub status: String,
}

/// Everything on the page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Title (from the experiment directory's name).
    pub title: String,
    /// The experiment directory as given, if any.
    pub source: Option<String>,
    /// Run table.
    pub runs: Vec<RunSummary>,
    /// Findings.
    pub findings: Vec<Finding>,
    /// Figure sections.
    pub sections: Vec<Section>,
    /// Inputs.
    pub inputs: Vec<InputLine>,
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes prose and turns `backticked` spans into `<code>` elements.
pub fn text(s: &str) -> String {
    let e = esc(s);
    let parts: Vec<&str> = e.split('`').collect();
    if parts.len() & 1 == 0 {
        return e; // unbalanced: leave the backticks alone
    }
    let mut out = String::with_capacity(e.len() + 16);
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 1 {
            out.push_str("<code>");
            out.push_str(part);
            out.push_str("</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

const CSS: &str = "\
body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;margin:0 auto;max-width:1320px;padding:0 20px 40px;color:#1a1a1a;line-height:1.45}
h1{font-size:1.6em;margin:.8em 0 .2em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
nav ol{columns:2;font-size:.95em}code{background:#f3f3f3;padding:0 3px;border-radius:3px}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #d0d0d0;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f0f0f0}td.l,th.l{text-align:left}caption{caption-side:top;text-align:left;font-size:.95em;color:#333;max-width:1000px;padding-bottom:4px}tr:nth-child(even) td{background:#fafafa}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #e4e4e4}
figcaption{font-size:.9em;color:#333;max-width:1000px}figcaption a{color:#555}
.skip{background:#fff6e0;border-left:4px solid #e0a800;padding:6px 10px;font-size:.92em}
.note{background:#eef4fb;border-left:4px solid #5b8fd0;padding:6px 10px;font-size:.92em}
.flags{color:#a00000}.muted{color:#666}";

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_string(), num)
}

fn run_table(runs: &[RunSummary], out: &mut String) {
    if runs.is_empty() {
        out.push_str("<p class=\"skip\">No runs: none of the tables was found or readable.</p>\n");
        return;
    }
    out.push_str("<table>\n<thead><tr><th class=\"l\">run</th><th>p</th><th>α</th><th>seed</th><th>d_model</th><th>weight decay</th><th>train frac</th><th>last step</th><th>train acc</th><th>val acc</th><th>val loss</th><th>grokking step</th><th class=\"l\">solution</th><th>grad. sym.</th><th>dist. irr.</th><th>LLC at end (step)</th><th>LLC peak (step)</th><th class=\"l\">flags</th></tr></thead>\n<tbody>\n");
    for s in runs {
        let id = &s.id;
        let known = id.p != 0;
        let int = |v: i64| if known { v.to_string() } else { "–".to_string() };
        let llc = |x: Option<super::summary::LlcAt>| {
            x.map_or_else(|| "–".to_string(), |e| format!("{} ± {} ({})", num(e.mean), num(e.std), e.step))
        };
        let _ = writeln!(
            out,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l flags\">{}</td></tr>",
            esc(&id.run),
            int(id.p),
            if known { num(id.alpha) } else { "–".into() },
            int(id.seed),
            int(id.d_model),
            if known { num(id.weight_decay) } else { "–".into() },
            if known { num(id.train_frac) } else { "–".into() },
            s.last_step.map_or_else(|| "–".to_string(), |v| v.to_string()),
            opt(s.final_train_acc),
            opt(s.final_val_acc),
            opt(s.final_val_loss),
            s.grok_step.map_or_else(|| "–".to_string(), |v| v.to_string()),
            esc(s.solution.as_deref().unwrap_or("–")),
            opt(s.gradient_symmetry),
            opt(s.distance_irrelevance),
            llc(s.llc_end),
            llc(s.llc_peak),
            esc(&s.flags.join(", ")),
        );
    }
    out.push_str("</tbody>\n</table>\n");
    let _ = writeln!(
        out,
        "<p class=\"muted\">Grokking step: the first evaluated step from which validation accuracy stays ≥ {GROK_THRESHOLD} to the end of training. Accuracies and losses are those of the last step in <code>metrics.parquet</code>; the solution label, gradient symmetry and distance irrelevance are those of the last checkpoint in <code>symmetry.parquet</code>; LLC values are mean ± std over chains. Flags: <code>not grokked</code>, and LLC health flags as <code>flag@step</code>.</p>"
    );
}

fn table(caption: &str, head: &[String], left: usize, rows: &[Vec<String>], out: &mut String) {
    let class = |i: usize| if i < left { " class=\"l\"" } else { "" };
    let _ = write!(out, "<table>\n<caption>{}</caption>\n<thead><tr>", text(caption));
    for (i, h) in head.iter().enumerate() {
        let _ = write!(out, "<th{}>{}</th>", class(i), text(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for r in rows {
        out.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let _ = write!(out, "<td{}>{}</td>", class(i), text(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

/// Renders the page.
pub fn page(p: &Page) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n",
        esc(&p.title)
    );
    let _ = writeln!(out, "<h1>{}</h1>", esc(&p.title));
    let n_fig: usize = p.sections.iter().flat_map(|s| &s.items).filter(|i| matches!(i, Item::Figure { .. })).count();
    let n_skip: usize = p.sections.iter().flat_map(|s| &s.items).filter(|i| matches!(i, Item::Skipped { .. })).count();
    let _ = writeln!(
        out,
        "<p class=\"muted\">Clock and Pizza (Zhong et al. 2023) with the Local Learning Coefficient along training. {}{} runs, {n_fig} figures, {n_skip} skipped. Every number and figure below is computed from the input tables listed at the end.</p>",
        p.source.as_ref().map(|s| format!("Experiment <code>{}</code>: ", esc(s))).unwrap_or_default(),
        p.runs.len()
    );

    out.push_str("<nav><ol>\n<li><a href=\"#runs\">Runs</a></li>\n<li><a href=\"#findings\">Findings</a></li>\n");
    for s in &p.sections {
        let _ = writeln!(out, "<li><a href=\"#{}\">{}</a></li>", esc(&s.id), esc(&s.title));
    }
    out.push_str("<li><a href=\"#inputs\">Inputs</a></li>\n</ol></nav>\n");

    out.push_str("<section id=\"runs\">\n<h2>Runs</h2>\n");
    run_table(&p.runs, &mut out);
    out.push_str("</section>\n");

    out.push_str("<section id=\"findings\">\n<h2>Findings</h2>\n<ul>\n");
    for f in &p.findings {
        let _ = writeln!(out, "<li><b>{}.</b> {}</li>", text(&f.title), text(&f.text));
    }
    out.push_str("</ul>\n</section>\n");

    for s in &p.sections {
        let _ = writeln!(out, "<section id=\"{}\">\n<h2>{}</h2>\n<p>{}</p>", esc(&s.id), esc(&s.title), text(&s.intro));
        for item in &s.items {
            match item {
                Item::Figure { stem, alt, caption, width, height } => {
                    let stem = esc(stem);
                    let _ = writeln!(
                        out,
                        "<figure id=\"fig-{stem}\">\n<img src=\"{stem}.svg\" width=\"{width}\" height=\"{height}\" alt=\"{}\">\n<figcaption>{} <a href=\"{stem}.svg\">SVG</a> · <a href=\"{stem}.png\">PNG</a></figcaption>\n</figure>",
                        esc(alt),
                        text(caption)
                    );
                }
                Item::Skipped { what, reason } => {
                    let _ = writeln!(out, "<p class=\"skip\">Skipped: {}, because {}.</p>", text(what), text(reason));
                }
                Item::Note(n) => {
                    let _ = writeln!(out, "<p class=\"note\">{}</p>", text(n));
                }
                Item::Table { caption, head, left, rows } => table(caption, head, *left, rows, &mut out),
            }
        }
        out.push_str("</section>\n");
    }

    out.push_str("<section id=\"inputs\">\n<h2>Inputs</h2>\n");
    if p.inputs.is_empty() {
        out.push_str("<p class=\"skip\">No input table was found.</p>\n");
    } else {
        out.push_str("<table>\n<thead><tr><th class=\"l\">table</th><th class=\"l\">file</th><th class=\"l\">status</th></tr></thead>\n<tbody>\n");
        for i in &p.inputs {
            let _ = writeln!(
                out,
                "<tr><td class=\"l\">{}</td><td class=\"l\"><code>{}</code></td><td class=\"l\">{}</td></tr>",
                esc(&i.kind),
                esc(&i.path),
                esc(&i.status)
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    out.push_str("</section>\n</body>\n</html>\n");
    out
}
