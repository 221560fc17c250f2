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
    let (mut passed, mut failed) = (0, 0);
    for scenario in scenarios::all() {
        if filter.is_some_and(|f| !scenario.name.contains(f)) {
            continue;
        }
        let start = Instant::now();
        let outcome = scenario.run(&ctx).await;
        let ms = start.elapsed().as_millis();
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("PASS  {} ({ms} ms)", scenario.name);
            }
            Err(reason) => {
                failed += 1;
                println!("FAIL  {} ({ms} ms)\n      {reason}", scenario.name);
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed)
}
