//! The comparison report: rows joined from both sides, printed as a text table, written as
//! Markdown and JSON, and drawn as an SVG bar chart of the ratios on a log scale.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// One side of a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Side {
    /// Measured: median, min, max in the row's unit.
    Figure { median: f64, min: f64, max: f64 },
    /// The Rust side is not written yet; what it waits for.
    NotYet(String),
    /// The run failed; the error.
    Error(String),
    /// Not run (no result was produced).
    Missing,
}

impl Side {
    /// Reads a side from a result entry of either script's JSON.
    pub(crate) fn from_json(entry: Option<&Value>) -> Side {
        let Some(e) = entry else {
            return Side::Missing;
        };
        if e["available"] == Value::Bool(false) {
            return Side::NotYet(e["missing"].as_str().unwrap_or("not written").to_string());
        }
        if let Some(err) = e["error"].as_str() {
            return Side::Error(err.to_string());
        }
        match (e["median"].as_f64(), e["min"].as_f64(), e["max"].as_f64()) {
            (Some(median), Some(min), Some(max)) => Side::Figure { median, min, max },
            _ => Side::Missing,
        }
    }

    fn median(&self) -> Option<f64> {
        match self {
            Side::Figure { median, .. } => Some(*median),
            _ => None,
        }
    }

    fn text(&self) -> String {
        match self {
            Side::Figure { median, min, max } => {
                format!("{} ({}-{})", fmt(*median), fmt(*min), fmt(*max))
            }
            Side::NotYet(_) => "not yet".into(),
            // A run the harness declined (too long for its limit), not a failure.
            Side::Error(e) if e.starts_with("not run") => "not run".into(),
            Side::Error(_) => "ERROR".into(),
            Side::Missing => "-".into(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Side::Figure { median, min, max } => json!({"median": median, "min": min, "max": max}),
            Side::NotYet(what) => json!({"not_yet": what}),
            Side::Error(e) => json!({"error": e}),
            Side::Missing => Value::Null,
        }
    }
}

/// One case of the comparison.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) unit: String,
    /// True when lower figures are better.
    pub(crate) lower_is_better: bool,
    pub(crate) target: Option<f64>,
    pub(crate) ours: Side,
    pub(crate) cpython: Side,
    /// The machine's floor for the case (`Missing` when it has none).
    pub(crate) floor: Side,
    /// Why the case shows no floor (it beats the naive one).
    pub(crate) floor_note: Option<String>,
    /// Rust peers (crate name, figure).
    pub(crate) peers: Vec<(String, Side)>,
}

impl Row {
    /// How many times better this project is than CPython (above 1: better).
    pub(crate) fn ratio(&self) -> Option<f64> {
        let (ours, cp) = (self.ours.median()?, self.cpython.median()?);
        if ours <= 0.0 || cp <= 0.0 {
            return None;
        }
        Some(if self.lower_is_better {
            cp / ours
        } else {
            ours / cp
        })
    }

    /// How many times the floor's cost this project's figure is (1: at the floor; below 1:
    /// better than the naive floor): ours / floor for times, floor / ours for rates.
    pub(crate) fn floor_ratio(&self) -> Option<f64> {
        let (ours, floor) = (self.ours.median()?, self.floor.median()?);
        if ours <= 0.0 || floor <= 0.0 {
            return None;
        }
        Some(if self.lower_is_better {
            ours / floor
        } else {
            floor / ours
        })
    }

    fn floor_cell(&self) -> String {
        match (self.floor_ratio(), &self.floor_note) {
            (Some(r), _) => format!("{}x", fmt(r)),
            (None, Some(_)) => "beats naive".into(),
            (None, None) if matches!(self.floor, Side::Error(_)) => "ERROR".into(),
            _ => "-".into(),
        }
    }

    /// Whether the target is met (`None` when there is no target or no ratio).
    pub(crate) fn met(&self) -> Option<bool> {
        Some(self.ratio()? >= self.target?)
    }

    fn cells(&self, with_peers: bool) -> Vec<String> {
        let mut c = vec![
            self.name.clone(),
            self.ours.text(),
            self.cpython.text(),
            self.unit.clone(),
            self.ratio().map_or("-".into(), |r| format!("{}x", fmt(r))),
            self.target.map_or("-".into(), |t| format!("{}x", fmt(t))),
            match self.met() {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "-".into(),
            },
            self.floor.text(),
            self.floor_cell(),
        ];
        if with_peers {
            c.push(
                self.peers
                    .iter()
                    .map(|(n, s)| format!("{n}: {}", s.text()))
                    .collect::<Vec<_>>()
                    .join("; "),
            );
        }
        c
    }
}

/// A row in one line, printed as each case ends.
pub(crate) fn one_line(r: &Row) -> String {
    let mut line = format!(
        "ours {}  CPython {}  {}",
        r.ours.text(),
        r.cpython.text(),
        r.unit
    );
    if let Some(x) = r.ratio() {
        let _ = write!(line, "  ratio {}x", fmt(x));
    }
    if !matches!(r.floor, Side::Missing) || r.floor_note.is_some() {
        let _ = write!(line, "  floor {} ({})", r.floor.text(), r.floor_cell());
    }
    for (n, s) in &r.peers {
        let _ = write!(line, "  {n} {}", s.text());
    }
    line
}

/// Numbers with as many digits as they deserve.
pub(crate) fn fmt(x: f64) -> String {
    let a = x.abs();
    if a >= 10_000.0 {
        let s = format!("{:.0}", x.abs());
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        if x < 0.0 { format!("-{out}") } else { out }
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn headers(with_peers: bool) -> Vec<&'static str> {
    let mut h = vec![
        "case",
        "ours: median (min-max)",
        "CPython: median (min-max)",
        "unit",
        "ratio",
        "target",
        "met",
        "floor: median (min-max)",
        "x floor",
    ];
    if with_peers {
        h.push("peers: median (min-max)");
    }
    h
}

/// The plain-text table.
pub(crate) fn text_table(rows: &[Row], with_peers: bool) -> String {
    let head = headers(with_peers);
    let cells: Vec<Vec<String>> = rows.iter().map(|r| r.cells(with_peers)).collect();
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &cells {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cols: Vec<&str>| {
        cols.iter()
            .zip(&width)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(head.clone()) + "\n";
    out += &"-".repeat(width.iter().sum::<usize>() + 2 * (width.len() - 1));
    out.push('\n');
    for r in &cells {
        out += &line(r.iter().map(String::as_str).collect());
        out.push('\n');
    }
    out
}

/// The Markdown report: a heading line, the table, and notes on unavailable and failed cases.
pub(crate) fn markdown(rows: &[Row], with_peers: bool, heading: &str) -> String {
    let head = headers(with_peers);
    let mut out = format!("{heading}\n\n| {} |\n", head.join(" | "));
    out += &format!(
        "|{}\n",
        head.iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
            .collect::<String>()
    );
    for r in rows {
        let cells = r.cells(with_peers);
        let _ = writeln!(
            out,
            "| {} |",
            cells
                .join(" | ")
                .replace('|', "\\|")
                .replace(" \\| ", " | ")
        );
    }
    let mut notes = String::new();
    for r in rows {
        match (&r.ours, &r.cpython) {
            (Side::NotYet(w), _) => {
                let _ = writeln!(notes, "- `{}`: not yet, needs {w}.", r.name);
            }
            (Side::Error(e), _) => {
                let _ = writeln!(notes, "- `{}`: this project's run failed: {e}", r.name);
            }
            _ => {}
        }
        if let Side::Error(e) = &r.cpython {
            let _ = writeln!(notes, "- `{}`: the CPython run failed: {e}", r.name);
        }
        if let Side::Error(e) = &r.floor {
            let _ = writeln!(notes, "- `{}`: the floor's run failed: {e}", r.name);
        }
        if let Some(why) = &r.floor_note {
            let _ = writeln!(notes, "- `{}`: no floor shown: {why}.", r.name);
        }
    }
    if !notes.is_empty() {
        out += "\n";
        out += &notes;
    }
    out
}

/// The joined JSON.
pub(crate) fn to_json(rows: &[Row], meta: Value) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "case": r.name,
                "unit": r.unit,
                "better": if r.lower_is_better { "lower" } else { "higher" },
                "ours": r.ours.to_json(),
                "cpython": r.cpython.to_json(),
                "ratio": r.ratio(),
                "target": r.target,
                "met": r.met(),
                "floor": r.floor.to_json(),
                "floor_ratio": r.floor_ratio(),
                "floor_note": r.floor_note,
                "peers": r.peers.iter().map(|(n, s)| (n.clone(), s.to_json())).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    json!({"meta": meta, "rows": rows})
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG bar chart of the ratios (log scale), with the 1x line and each case's target.
pub(crate) fn svg(rows: &[Row], title: &str) -> String {
    const LEFT: f64 = 270.0;
    const RIGHT: f64 = 880.0;
    const WIDTH: f64 = 1010.0;
    const TOP: f64 = 50.0;
    const ROW: f64 = 22.0;
    let values: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.ratio().into_iter().chain(r.target))
        .chain([1.0])
        .collect();
    let lo = values
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min)
        .log10()
        .floor()
        .min(-1.0);
    let hi = values
        .iter()
        .cloned()
        .fold(0.0, f64::max)
        .log10()
        .ceil()
        .max(1.0);
    let x = |v: f64| LEFT + (v.log10() - lo) / (hi - lo) * (RIGHT - LEFT);
    let height = TOP + ROW * rows.len() as f64 + 50.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"15\">{}</text>\n\
         <text x=\"10\" y=\"40\" fill=\"#555\">ratio in the better direction (log scale); \
         black tick: target; green: met, red: not met, blue: no target; right: this \
         project's cost in multiples of the machine's floor</text>\n",
        escape(title)
    );
    let bottom = TOP + ROW * rows.len() as f64;
    let mut decade = lo as i32;
    while decade as f64 <= hi {
        let v = 10f64.powi(decade);
        let xv = x(v);
        let label = if decade >= 0 {
            format!("{}x", 10u64.pow(decade as u32))
        } else {
            format!("{v}x")
        };
        let _ = writeln!(
            s,
            "<line x1=\"{xv:.1}\" y1=\"{TOP}\" x2=\"{xv:.1}\" y2=\"{bottom}\" stroke=\"{}\" {}/>\n\
             <text x=\"{xv:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            if decade == 0 { "#000" } else { "#ddd" },
            if decade == 0 {
                "stroke-dasharray=\"4 3\""
            } else {
                ""
            },
            bottom + 16.0
        );
        decade += 1;
    }
    for (i, r) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 8.0,
            y + 15.0,
            escape(&r.name)
        );
        match r.ratio() {
            Some(ratio) => {
                let colour = match r.met() {
                    Some(true) => "#2e9e44",
                    Some(false) => "#d1383d",
                    None => "#3a6fc4",
                };
                let _ = writeln!(
                    s,
                    "<rect x=\"{LEFT}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"/>\n\
                     <text x=\"{:.1}\" y=\"{:.1}\">{}x</text>",
                    y + 3.0,
                    (x(ratio) - LEFT).max(1.0),
                    ROW - 6.0,
                    x(ratio) + 4.0,
                    y + 15.0,
                    fmt(ratio)
                );
            }
            None => {
                let why = match (&r.ours, &r.cpython) {
                    (Side::NotYet(_), _) => "not yet",
                    (Side::Error(_), _) | (_, Side::Error(_)) => "error",
                    _ => "no figure",
                };
                let _ = writeln!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#999\">{why}</text>",
                    LEFT + 4.0,
                    y + 15.0
                );
            }
        }
        let floor = r.floor_cell();
        if floor != "-" {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">floor {}</text>",
                WIDTH - 8.0,
                y + 15.0,
                escape(&floor)
            );
        }
        if let Some(t) = r.target {
            let _ = writeln!(
                s,
                "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"#000\" stroke-width=\"2\"/>",
                x(t),
                y + 1.0,
                y + ROW - 1.0
            );
        }
    }
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(lower: bool, ours: f64, cp: f64, target: Option<f64>) -> Row {
        let fig = |m| Side::Figure {
            median: m,
            min: m,
            max: m,
        };
        Row {
            name: "case<1>".into(),
            unit: "us".into(),
            lower_is_better: lower,
            target,
            ours: fig(ours),
            cpython: fig(cp),
            floor: Side::Missing,
            floor_note: None,
            peers: vec![],
        }
    }

    #[test]
    fn ratios_point_in_the_better_direction() {
        assert_eq!(row(true, 2.0, 100.0, Some(40.0)).ratio(), Some(50.0));
        assert_eq!(row(true, 2.0, 100.0, Some(40.0)).met(), Some(true));
        assert_eq!(row(false, 300.0, 100.0, Some(5.0)).ratio(), Some(3.0));
        assert_eq!(row(false, 300.0, 100.0, Some(5.0)).met(), Some(false));
        assert_eq!(row(false, 300.0, 100.0, None).met(), None);
        let mut r = row(true, 1.0, 1.0, Some(2.0));
        r.ours = Side::NotYet("ipc-sync".into());
        assert_eq!((r.ratio(), r.met()), (None, None));
    }

    #[test]
    fn the_floor_ratio_is_the_cost_in_floors() {
        let fig = |m| Side::Figure {
            median: m,
            min: m,
            max: m,
        };
        let mut r = row(true, 300.0, 1000.0, None);
        assert_eq!((r.floor_ratio(), r.floor_cell().as_str()), (None, "-"));
        r.floor = fig(200.0);
        assert_eq!(r.floor_ratio(), Some(1.5));
        assert_eq!(r.floor_cell(), "1.500x");
        let mut rate = row(false, 3000.0, 1000.0, None);
        rate.floor = fig(6000.0);
        assert_eq!(rate.floor_ratio(), Some(2.0));
        let mut spun = row(true, 1.0, 50.0, None);
        spun.floor_note = Some("spins".into());
        assert_eq!(spun.floor_cell(), "beats naive");
        let md = markdown(&[r, spun], false, "# r");
        assert!(
            md.contains("x floor") && md.contains("no floor shown: spins"),
            "{md}"
        );
    }

    #[test]
    fn sides_are_read_from_either_json() {
        let e = json!({"available": false, "missing": "ipc-pool"});
        assert_eq!(Side::from_json(Some(&e)), Side::NotYet("ipc-pool".into()));
        let e = json!({"error": "boom"});
        assert_eq!(Side::from_json(Some(&e)), Side::Error("boom".into()));
        let e = json!({"median": 2.0, "min": 1.0, "max": 3.0});
        assert_eq!(
            Side::from_json(Some(&e)),
            Side::Figure {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(Side::from_json(None), Side::Missing);
    }

    #[test]
    fn a_declined_run_is_not_shown_as_a_failure() {
        assert_eq!(Side::Error("not run: too long".into()).text(), "not run");
        assert_eq!(Side::Error("Timeout: 120 s".into()).text(), "ERROR");
    }

    #[test]
    fn numbers_are_formatted_by_magnitude() {
        assert_eq!(fmt(1234567.8), "1,234,568");
        assert_eq!(fmt(123.45), "123.5");
        assert_eq!(fmt(12.345), "12.35");
        assert_eq!(fmt(1.2345), "1.234");
    }

    #[test]
    fn reports_contain_every_row_and_escape_markup() {
        let rows = [
            row(true, 2.0, 100.0, Some(40.0)),
            row(false, 1.0, 4.0, None),
        ];
        let t = text_table(&rows, false);
        assert_eq!(t.lines().count(), 4);
        assert!(t.contains("50.00x") && t.contains("yes"), "{t}");
        let md = markdown(&rows, false, "# r");
        assert_eq!(md.lines().filter(|l| l.starts_with("| case<1>")).count(), 2);
        let svg = svg(&rows, "t");
        assert!(svg.contains("case&lt;1&gt;") && !svg.contains("case<1>"));
        assert_eq!(svg.matches("<rect x=").count(), 2);
        assert!(svg.trim_end().ends_with("</svg>"));
        // Decades from 0.1x to 100x label the log axis.
        for label in [">0.1x<", ">1x<", ">10x<", ">100x<"] {
            assert!(svg.contains(label), "{label} missing");
        }
    }
}
