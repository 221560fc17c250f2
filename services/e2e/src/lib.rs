//! `todoapp-e2e`: the end-to-end suite, as a library (so tests and the
//! benchmark can reuse its client) and a binary.

pub mod abuse;
pub mod client;
pub mod harness;
pub mod scenarios;

use std::time::Instant;

pub use client::Target;
pub use harness::Tally;

/// Runs every scenario (or those whose name contains `filter`), printing
/// one line each and a final `N passed, N failed`. Returns the failures.
pub async fn run(target: &Target, filter: Option<&str>) -> Result<usize, String> {
    let channel = client::connect(target).await?;
    let ctx = scenarios::Ctx::new(channel);
    let mut tally = Tally::default();
    for scenario in scenarios::all() {
        if !harness::selected(scenario.name, filter) {
            continue;
        }
        let start = Instant::now();
        let outcome = scenario.run(&ctx).await;
        tally.record(scenario.name, start, outcome);
    }
    Ok(tally.finish())
}
