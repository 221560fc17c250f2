//! Counting calls: an HDR latency histogram per operation, successes and
//! failures by gRPC status code, and the percentiles reported.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, 1 µs to 120 s, 3 significant digits.
const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 120_000_000;
const SIGFIG: u8 = 3;

/// One latency histogram (microseconds).
#[derive(Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        // The bounds are constants that `new_with_bounds` accepts (low ≥ 1,
        // high ≥ 2·low, sigfig ≤ 5): this cannot fail.
        let hist = Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG)
            .expect("constant histogram bounds");
        Self { hist }
    }

    /// Records one call; values beyond the range are clamped into it.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.clamp(LOWEST_US, HIGHEST_US));
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail; saturate anyway.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn summary(&self) -> LatencySummary {
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            mean_ms: self.hist.mean() / 1000.0,
            p50_ms: ms(self.hist.value_at_quantile(0.50)),
            p90_ms: ms(self.hist.value_at_quantile(0.90)),
            p99_ms: ms(self.hist.value_at_quantile(0.99)),
            p999_ms: ms(self.hist.value_at_quantile(0.999)),
            max_ms: ms(self.hist.max()),
        }
    }
}

/// Percentiles in milliseconds (HDR: each within 0.1% of the true value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    #[serde(rename = "p99.9_ms")]
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// What one operation (GetToDo, Login, …) did in one scenario run.
#[derive(Clone, Default)]
pub struct OpStats {
    /// Successful calls that completed inside the measured window.
    pub measured: Latencies,
    /// Successful calls over the whole run (warm-up and tail included):
    /// what the server's state reflects.
    pub total_ok: u64,
    /// Unexpected failures by status code, whole run.
    pub errors: BTreeMap<String, u64>,
    /// Failures the scenario asked for, by status code, whole run.
    pub expected: BTreeMap<String, u64>,
}

impl OpStats {
    pub fn merge(&mut self, other: &OpStats) {
        self.measured.merge(&other.measured);
        self.total_ok += other.total_ok;
        add_counts(&mut self.errors, &other.errors);
        add_counts(&mut self.expected, &other.expected);
    }
}

pub fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (code, n) in from {
        *into.entry(code.clone()).or_default() += n;
    }
}

/// Requests per second over `window`.
pub fn rate(count: u64, window: Duration) -> f64 {
    let secs = window.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: f64, expected: f64, rel: f64) -> bool {
        (actual - expected).abs() <= expected * rel
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut l = Latencies::new();
        for us in 1..=10_000u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary();
        assert_eq!(l.count(), 10_000);
        assert!(within(s.p50_ms, 5.0, 0.002), "{s:?}");
        assert!(within(s.p90_ms, 9.0, 0.002), "{s:?}");
        assert!(within(s.p99_ms, 9.9, 0.002), "{s:?}");
        assert!(within(s.p999_ms, 9.99, 0.002), "{s:?}");
        assert!(within(s.max_ms, 10.0, 0.002), "{s:?}");
        assert!(within(s.mean_ms, 5.0005, 0.002), "{s:?}");
    }

    #[test]
    fn a_rare_slow_call_shows_in_the_tail_only() {
        let mut l = Latencies::new();
        for _ in 0..999 {
            l.record(Duration::from_millis(1));
        }
        l.record(Duration::from_millis(500));
        let s = l.summary();
        assert!(
            within(s.p50_ms, 1.0, 0.002) && within(s.p99_ms, 1.0, 0.002),
            "{s:?}"
        );
        assert!(within(s.max_ms, 500.0, 0.002), "{s:?}");
        // 0.999 quantile of 1000 values is the 999th: still 1 ms.
        assert!(within(s.p999_ms, 1.0, 0.002), "{s:?}");
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut l = Latencies::new();
        l.record(Duration::ZERO);
        l.record(Duration::from_secs(3600));
        assert_eq!(l.count(), 2);
        assert!(l.summary().max_ms >= 119_000.0);
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        assert_eq!(Latencies::new().summary(), LatencySummary::default());
    }

    #[test]
    fn merging_adds_counts_and_histograms() {
        let mut a = OpStats::default();
        let mut b = OpStats::default();
        for _ in 0..10 {
            a.measured.record(Duration::from_millis(1));
        }
        for _ in 0..30 {
            b.measured.record(Duration::from_millis(3));
        }
        a.total_ok = 12;
        b.total_ok = 31;
        a.errors.insert("Unavailable".into(), 2);
        b.errors.insert("Unavailable".into(), 1);
        b.errors.insert("Internal".into(), 4);
        b.expected.insert("NotFound".into(), 5);
        a.merge(&b);
        assert_eq!(a.measured.count(), 40);
        assert_eq!(a.total_ok, 43);
        assert_eq!(a.errors["Unavailable"], 3);
        assert_eq!(a.errors["Internal"], 4);
        assert_eq!(a.errors.values().sum::<u64>(), 7);
        assert_eq!(a.expected["NotFound"], 5);
        // 10 of 40 at 1 ms, the rest at 3 ms.
        let s = a.measured.summary();
        assert!(within(s.p50_ms, 3.0, 0.002), "{s:?}");
        assert!(within(s.mean_ms, 2.5, 0.002), "{s:?}");
    }

    #[test]
    fn rates() {
        assert_eq!(rate(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
    }
}
