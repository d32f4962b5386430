//! `cargo xtask test`: every test of the workspace, doc tests included, then a summary.
//!
//! Runs `cargo nextest run` when cargo-nextest is installed (faster, one process per test) and
//! plain `cargo test` otherwise or with `--cargo-test` (a fresh machine has only the toolchain);
//! doc tests always go through `cargo test --doc`, which nextest cannot run. Bench targets are
//! left out: `cargo xtask ci` runs them separately in their smoke mode. Both runs enable
//! [`TEST_FEATURES`]: ipc-sync's `failpoints` feature, which turns on ipc-core's (tests that
//! kill a process at a named step), and ipc-pool's `async` and `progress`.

use std::process::Command;
use std::time::Instant;

use anyhow::bail;

use crate::util;

/// The features of the test build: the failpoints (ipc-sync's, and through it ipc-core's) and
/// every opt-in API (ipc-pool's `async` and `progress`), so that all of it is tested and
/// linted.
pub(crate) const TEST_FEATURES: &str = "ipc-sync/failpoints,ipc-pool/async,ipc-pool/progress";

/// Counts parsed from the runners' output.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
    pub(crate) ignored: u64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.ignored += o.ignored;
    }
}

/// The number before `word` in `text` (`"3 passed"` -> 3 for `passed`).
fn count_before(text: &str, word: &str) -> u64 {
    let Some(i) = text.find(word) else {
        return 0;
    };
    text[..i]
        .trim_end()
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// Sums libtest's `test result:` lines and nextest's `Summary` line.
pub(crate) fn parse_counts(lines: &[String]) -> Counts {
    let mut total = Counts::default();
    for line in lines {
        let l = line.trim();
        if l.starts_with("test result:") {
            total.add(Counts {
                passed: count_before(l, " passed"),
                failed: count_before(l, " failed"),
                ignored: count_before(l, " ignored"),
            });
        } else if l.starts_with("Summary") && l.contains("tests run") {
            total.add(Counts {
                passed: count_before(l, " passed"),
                failed: count_before(l, " failed"),
                ignored: count_before(l, " skipped"),
            });
        }
    }
    total
}

/// Runs the test steps; fails if any step fails.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut force_cargo_test = false;
    for a in args {
        match a.as_str() {
            "--cargo-test" => force_cargo_test = true,
            other => bail!("unknown option {other:?} for `cargo xtask test` (see --help)"),
        }
    }
    let nextest = !force_cargo_test && util::installed("cargo-nextest", &["nextest", "--version"]);
    // ipc-sync's failpoints (named kill points, never in a release build) are compiled into
    // the test build, so the tests that reproduce a death at a precise step run.
    let targets = [
        "--workspace",
        "--lib",
        "--bins",
        "--tests",
        "--examples",
        "--features",
        TEST_FEATURES,
    ];
    let mut steps: Vec<(&str, Command)> = Vec::new();
    let mut unit = util::cargo();
    if nextest {
        unit.args(["nextest", "run", "--no-tests=pass"])
            .args(targets);
        steps.push(("tests (nextest)", unit));
    } else {
        unit.arg("test").args(targets);
        steps.push(("tests (cargo test)", unit));
    }
    let mut doc = util::cargo();
    doc.args(["test", "--workspace", "--doc", "--features", TEST_FEATURES]);
    steps.push(("doc tests", doc));

    let mut total = Counts::default();
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for (name, mut cmd) in steps {
        println!("==> {name}: {}", util::show(&cmd));
        let t = Instant::now();
        let (status, lines) = util::run_tee(&mut cmd)?;
        let counts = parse_counts(&lines);
        total.add(counts);
        let verdict = if status.success() { "ok" } else { "FAILED" };
        report.push(format!(
            "  {name:20} {verdict:6} {:>5} passed {:>3} failed {:>3} ignored/skipped  {:>6.1} s",
            counts.passed,
            counts.failed,
            counts.ignored,
            t.elapsed().as_secs_f64()
        ));
        if !status.success() {
            failures.push(format!("{name} (`{}`: {status})", util::show(&cmd)));
        }
    }
    println!("\ntest summary:");
    for r in &report {
        println!("{r}");
    }
    println!(
        "  {:20} {:6} {:>5} passed {:>3} failed {:>3} ignored/skipped",
        "total", "", total.passed, total.failed, total.ignored
    );
    if !failures.is_empty() {
        bail!("failed: {}", failures.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_and_nextest_summaries_are_summed() {
        let lines: Vec<String> = [
            "test result: ok. 7 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out",
            "noise 99 passed",
            "test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out",
            "     Summary [   1.234s] 15 tests run: 14 passed, 1 failed, 2 skipped",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            parse_counts(&lines),
            Counts {
                passed: 23,
                failed: 4,
                ignored: 3
            }
        );
        assert_eq!(parse_counts(&[]), Counts::default());
    }
}
