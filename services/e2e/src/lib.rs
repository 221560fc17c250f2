//! `todoapp-e2e`: the end-to-end suite, as a library (so tests and the
//! benchmark can reuse its client) and a binary.

pub mod abuse;
pub mod client;
pub mod scenarios;

use std::time::Instant;

pub use client::Target;

/// Runs every scenario (or those whose name contains `filter`), printing
/// one line each and a final `N passed, N failed`. Returns the failures.
pub async fn run(target: &Target, filter: Option<&str>) -> Result<usize, String> {
    let channel = client::connect(target).await?;
    let ctx = scenarios::Ctx::new(channel);
    let mut tally = Tally::default();
    for scenario in scenarios::all() {
        if filter.is_some_and(|f| !scenario.name.contains(f)) {
            continue;
        }
        let start = Instant::now();
        let outcome = scenario.run(&ctx).await;
        tally.record(scenario.name, start, outcome);
    }
    Ok(tally.finish())
}

/// Scenario outcomes as they come: one line each (`PASS`/`FAIL`, name,
/// time, and why it failed), then `N passed, N failed`.
#[derive(Debug, Default)]
pub struct Tally {
    passed: usize,
    failed: usize,
}

impl Tally {
    pub fn record(&mut self, name: &str, start: Instant, outcome: Result<(), String>) {
        let ms = start.elapsed().as_millis();
        match outcome {
            Ok(()) => {
                self.passed += 1;
                println!("PASS  {name} ({ms} ms)");
            }
            Err(reason) => {
                self.failed += 1;
                println!("FAIL  {name} ({ms} ms)\n      {reason}");
            }
        }
    }

    /// Prints the totals; returns the failures.
    pub fn finish(self) -> usize {
        println!("{} passed, {} failed", self.passed, self.failed);
        self.failed
    }
}
