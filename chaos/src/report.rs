//! The table and the JSON of a run.
//!
//! ```text
//! Row per scenario: rounds, kills landed (random | at a point), kills per failpoint, hangs,
//! lost, torn, duplicated, leaks, errors (a round the runner itself could not run), notes
//! ```

use std::time::Duration;

use ipc_core::process::StartMethod;
use serde_json::json;

use crate::PerPoint;
use crate::harness::{Counts, Kill};

/// The definitions printed under the table.
const DEFINITIONS: &str = "\
hang: a survivor's operation still pending 10 s after the kill
lost: committed and never taken by anyone (a record a dead consumer had taken counts as
      delivered to it: queues are at-most-once for a consumer that dies)
torn: a record or a protected state that fails its check while the library said nothing
dup:  taken twice, or two live holders of one lock at once
leaks: memfd and /dev/shm segments, fds, zombies and stray processes after the round";

/// One scenario's results.
pub(crate) struct Row {
    pub(crate) name: &'static str,
    points: &'static [&'static str],
    rounds: u32,
    random_landed: u64,
    point_landed: u64,
    per_point: PerPoint,
    hangs: u64,
    lost: u64,
    torn: u64,
    duplicated: u64,
    leaks: u64,
    pub(crate) errors: u64,
    pub(crate) notes: Vec<String>,
}

impl Row {
    pub(crate) fn new(name: &'static str, points: &'static [&'static str]) -> Row {
        Row {
            name,
            points,
            rounds: 0,
            random_landed: 0,
            point_landed: 0,
            per_point: points.iter().map(|p| ((*p).to_owned(), 0)).collect(),
            hangs: 0,
            lost: 0,
            torn: 0,
            duplicated: 0,
            leaks: 0,
            errors: 0,
            notes: Vec::new(),
        }
    }

    pub(crate) fn add(
        &mut self,
        round: u32,
        kill: &Kill,
        method: StartMethod,
        c: &Counts,
        leaks: &[String],
        fired: &[String],
    ) {
        self.rounds += 1;
        match kill {
            Kill::Random { .. } if c.killed => self.random_landed += 1,
            Kill::Random { .. } => {}
            Kill::Point { name, .. } => {
                if fired.iter().any(|f| f == name) {
                    self.point_landed += 1;
                    *self.per_point.entry(name.clone()).or_default() += 1;
                }
            }
        }
        self.hangs += c.hangs;
        self.lost += c.lost;
        self.torn += c.torn;
        self.duplicated += c.duplicated;
        self.leaks += c.leaks + leaks.len() as u64;
        let faulty = c.hangs + c.lost + c.torn + c.duplicated + c.leaks > 0 || !leaks.is_empty();
        if faulty {
            let mut what = c.notes.clone();
            what.extend(leaks.iter().cloned());
            self.notes.push(format!(
                "round {round} ({kill:?}, {method:?}): {}",
                what.join("; ")
            ));
        }
    }

    fn faults(&self) -> u64 {
        self.hangs + self.lost + self.torn + self.duplicated + self.leaks + self.errors
    }

    /// The failpoints never hit.
    fn missed(&self) -> Vec<&str> {
        self.points
            .iter()
            .filter(|p| self.per_point.get(**p).copied().unwrap_or(0) == 0)
            .copied()
            .collect()
    }

    /// All zeros, and from 200 rounds on every failpoint hit.
    pub(crate) fn clean(&self, rounds: u32) -> bool {
        self.faults() == 0 && (rounds < 200 || self.missed().is_empty())
    }
}

fn per_point(r: &Row) -> String {
    if r.per_point.is_empty() {
        return "-".into();
    }
    r.per_point
        .iter()
        .map(|(p, n)| format!("{p}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A row as it finishes.
pub(crate) fn line(r: &Row) -> String {
    let mut s = format!(
        "{:<18} rounds {:>4}  killed {:>3} random + {:>3} at points  hangs {} lost {} torn {} dup {} leaks {} errors {}",
        r.name,
        r.rounds,
        r.random_landed,
        r.point_landed,
        r.hangs,
        r.lost,
        r.torn,
        r.duplicated,
        r.leaks,
        r.errors
    );
    for n in r.notes.iter().take(5) {
        s.push_str("\n    ");
        s.push_str(n);
    }
    if r.notes.len() > 5 {
        s.push_str(&format!("\n    ... {} more", r.notes.len() - 5));
    }
    s
}

/// The table.
pub(crate) fn print(rows: &[Row], rounds: u32) {
    println!();
    println!(
        "| scenario | rounds | kills (random + at points) | kills per failpoint | hangs | lost | torn | dup | leaks | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} + {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.rounds,
            r.random_landed,
            r.point_landed,
            per_point(r),
            r.hangs,
            r.lost,
            r.torn,
            r.duplicated,
            r.leaks,
            r.errors
        );
    }
    println!();
    println!("{DEFINITIONS}");
    let missed: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            r.missed()
                .into_iter()
                .map(move |p| format!("{}:{p}", r.name))
        })
        .collect();
    if !missed.is_empty() {
        println!(
            "failpoints not hit in {rounds} rounds{}: {}",
            if rounds < 200 {
                " (required from 200)"
            } else {
                ""
            },
            missed.join(", ")
        );
    }
}

pub(crate) fn json(rows: &[Row], seed: u64, rounds: u32, took: Duration) -> serde_json::Value {
    json!({
        "seed": seed,
        "rounds": rounds,
        "seconds": took.as_secs_f64(),
        "scenarios": rows.iter().map(|r| json!({
            "name": r.name,
            "rounds": r.rounds,
            "kills_random": r.random_landed,
            "kills_at_points": r.point_landed,
            "kills_per_point": r.per_point,
            "missed_points": r.missed(),
            "hangs": r.hangs,
            "lost": r.lost,
            "torn": r.torn,
            "duplicated": r.duplicated,
            "leaks": r.leaks,
            "errors": r.errors,
            "notes": r.notes,
        })).collect::<Vec<_>>(),
    })
}
