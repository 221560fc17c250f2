//! What both suites (`todoapp-e2e`, `todoapp-abuse`) share: a scenario is
//! a name and a plain async fn over the suite's context, listed once in
//! the suite's table; a filter selects scenarios by name; a tally prints
//! and counts their outcomes.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

pub type Outcome = Result<(), String>;
pub type BoxFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One scenario of a suite whose scenarios share a context `C`.
pub struct Scenario<C: 'static> {
    pub name: &'static str,
    run: for<'a> fn(&'a C) -> BoxFuture<'a>,
    /// Why the scenario cannot run in this context, if it cannot.
    skip: fn(&C) -> Option<String>,
}

impl<C> Scenario<C> {
    /// `run` is the scenario's async fn, boxed: `|ctx| Box::pin(f(ctx))`.
    pub fn new(name: &'static str, run: for<'a> fn(&'a C) -> BoxFuture<'a>) -> Self {
        Self {
            name,
            run,
            skip: |_| None,
        }
    }

    /// Skips the scenario (saying why) where `unless` gives a reason.
    pub fn skip_when(self, unless: fn(&C) -> Option<String>) -> Self {
        Self {
            skip: unless,
            ..self
        }
    }

    pub async fn run(&self, ctx: &C) -> Outcome {
        (self.run)(ctx).await
    }

    pub fn skip_reason(&self, ctx: &C) -> Option<String> {
        (self.skip)(ctx)
    }
}

/// Whether the scenario `name` runs under `filter` (a substring; none: all).
pub fn selected(name: &str, filter: Option<&str>) -> bool {
    filter.is_none_or(|f| name.contains(f))
}

/// Prints the names of the scenarios `filter` selects, one per line.
pub fn list<'a>(names: impl IntoIterator<Item = &'a str>, filter: Option<&str>) {
    for name in names.into_iter().filter(|name| selected(name, filter)) {
        println!("{name}");
    }
}

/// Scenario outcomes as they come: one line each (`PASS`/`FAIL`, name,
/// time, and why it failed), then `N passed, N failed`.
#[derive(Debug, Default)]
pub struct Tally {
    passed: usize,
    failed: usize,
}

impl Tally {
    pub fn record(&mut self, name: &str, start: Instant, outcome: Outcome) {
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
