//! The run's results: a JSON document and the human tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::run::ScenarioResult;
use crate::target::Via;

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub gateway: Option<String>,
    pub state_dir: Option<String>,
    pub via: Vec<Via>,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub connections: usize,
    pub users: usize,
    pub entries_per_user: usize,
    pub list_limit: u32,
    pub burst_logins: usize,
    /// Calls/s of each fair-share user (0: back to back).
    pub fair_share_rate: u32,
    pub client_threads: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeededAccount {
    pub username: String,
    pub user_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Seed {
    pub accounts: Vec<SeededAccount>,
    pub entries: u64,
    pub seconds: f64,
}

/// Whether the seeded users hold exactly the entries the bench created and
/// did not delete.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Verification {
    pub expected_entries: u64,
    pub found_entries: u64,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub what: String,
    pub numerator: String,
    pub denominator: String,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub settings: Settings,
    pub seed: Seed,
    /// VmRSS of each process before seeding: the idle footprint.
    pub memory_idle_kib: BTreeMap<String, u64>,
    /// Highest VmRSS sampled during any scenario.
    pub memory_peak_kib: BTreeMap<String, u64>,
    /// VmRSS after the last scenario.
    pub memory_end_kib: BTreeMap<String, u64>,
    pub scenarios: Vec<ScenarioResult>,
    pub ratios: Vec<Ratio>,
    pub verification: Option<Verification>,
    /// Unexpected failures over every scenario.
    pub errors: u64,
    /// No unexpected failure and the entry count verified.
    pub ok: bool,
}

/// Cores of other work above which a scenario's numbers are flagged.
pub const OTHER_LOAD_WARNING: f64 = 0.25;

fn key(r: &ScenarioResult) -> String {
    format!("{}:{} {}", r.scenario, r.concurrency, r.via)
}

/// Throughput ratios within one run: each scenario against the health
/// ceiling of the same path, and gateway against direct for the same
/// scenario and concurrency.
pub fn ratios(results: &[ScenarioResult]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for r in results {
        if r.scenario == "health" {
            continue;
        }
        if let Some(health) = results
            .iter()
            .find(|h| h.scenario == "health" && h.via == r.via && h.rps > 0.0)
        {
            out.push(Ratio {
                what: "of health ceiling".into(),
                numerator: key(r),
                denominator: key(health),
                value: r.rps / health.rps,
            });
        }
    }
    // The other users' GetToDo p99 with one user hammering, against the same
    // users alone: what the fair share is for (target < 3).
    for r in results.iter().filter(|r| r.scenario == "fair-share") {
        let idle = results
            .iter()
            .find(|i| i.scenario == "fair-share-idle" && i.via == r.via && i.latency.p99_ms > 0.0);
        if let Some(idle) = idle {
            out.push(Ratio {
                what: "p99 vs idle".into(),
                numerator: key(r),
                denominator: key(idle),
                value: r.latency.p99_ms / idle.latency.p99_ms,
            });
        }
    }
    for r in results.iter().filter(|r| r.via == Via::Gateway) {
        let direct = results.iter().find(|d| {
            d.via == Via::Direct
                && d.scenario == r.scenario
                && d.concurrency == r.concurrency
                && d.rps > 0.0
        });
        if let Some(d) = direct {
            out.push(Ratio {
                what: "gateway/direct".into(),
                numerator: key(r),
                denominator: key(d),
                value: r.rps / d.rps,
            });
        }
    }
    out
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn errors_text(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "0".into();
    }
    errors
        .iter()
        .map(|(c, n)| format!("{c}={n}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn ratio_of(ratios: &[Ratio], what: &str, r: &ScenarioResult) -> String {
    ratios
        .iter()
        .find(|x| x.what == what && x.numerator == key(r))
        .map_or_else(|| "-".into(), |x| format!("{:.2}", x.value))
}

/// The human report.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.settings;
    let _ = writeln!(
        out,
        "todoapp-bench: {} s warm-up + {} s measured per scenario, {} connection(s), {} seeded users x {} entries, list limit {}",
        s.warmup_s, s.duration_s, s.connections, s.users, s.entries_per_user, s.list_limit
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<14} {:<8} {:>4} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9}  errors",
        "scenario",
        "via",
        "C",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9",
        "max ms",
        "/health",
        "gw/direct"
    );
    for r in &report.scenarios {
        let l = &r.latency;
        let _ = writeln!(
            out,
            "{:<14} {:<8} {:>4} {:>10.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9}  {}",
            r.scenario,
            r.via.to_string(),
            r.concurrency,
            r.rps,
            ms(l.p50_ms),
            ms(l.p90_ms),
            ms(l.p99_ms),
            ms(l.p999_ms),
            ms(l.max_ms),
            ratio_of(&report.ratios, "of health ceiling", r),
            ratio_of(&report.ratios, "gateway/direct", r),
            errors_text(&r.errors),
        );
        for (op, o) in r.ops.iter().filter(|_| r.ops.len() > 1) {
            let _ = writeln!(
                out,
                "  {:<12} {:<8} {:>4} {:>10.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9}  {}",
                op,
                "",
                "",
                o.rps,
                ms(o.latency.p50_ms),
                ms(o.latency.p90_ms),
                ms(o.latency.p99_ms),
                ms(o.latency.p999_ms),
                ms(o.latency.max_ms),
                "",
                "",
                if o.expected_errors.is_empty() {
                    errors_text(&o.errors)
                } else {
                    format!(
                        "{} (expected: {})",
                        errors_text(&o.errors),
                        errors_text(&o.expected_errors)
                    )
                },
            );
        }
    }

    let names: Vec<String> = report.memory_idle_kib.keys().cloned().collect();
    let _ = writeln!(out);
    let _ = write!(out, "{:<14} {:<8} {:>6}", "CPU (cores)", "via", "client");
    for n in &names {
        let _ = write!(out, " {n:>7}");
    }
    let _ = write!(out, " {:>7} {:>7}", "machine", "other");
    let _ = write!(out, "   peak RSS MiB:");
    for n in names.iter().filter(|n| *n != "stack") {
        let _ = write!(out, " {n:>7}");
    }
    let _ = writeln!(out);
    for r in &report.scenarios {
        let _ = write!(
            out,
            "{:<14} {:<8} {:>6.2}",
            format!("{}:{}", r.scenario, r.concurrency),
            r.via.to_string(),
            r.client_cpu.cores
        );
        for n in &names {
            let _ = write!(
                out,
                " {:>7}",
                r.process_cpu
                    .get(n)
                    .map_or_else(|| "-".into(), |c| format!("{c:.2}"))
            );
        }
        let _ = write!(
            out,
            " {:>7.2} {:>7.2}",
            r.machine_cpu.busy_cores, r.machine_cpu.other_cores
        );
        let _ = write!(out, "   {:>14}", "");
        for n in names.iter().filter(|n| *n != "stack") {
            let _ = write!(
                out,
                " {:>7}",
                r.memory
                    .get(n)
                    .map_or_else(|| "-".into(), |m| mib(m.peak_kib))
            );
        }
        let _ = writeln!(out);
    }
    if !names.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<14} {:>8} {:>8} {:>8}",
            "RSS MiB", "idle", "peak", "end"
        );
        for n in names.iter().filter(|n| *n != "stack") {
            let get = |m: &BTreeMap<String, u64>| m.get(n).map_or_else(|| "-".into(), |k| mib(*k));
            let _ = writeln!(
                out,
                "{:<14} {:>8} {:>8} {:>8}",
                n,
                get(&report.memory_idle_kib),
                get(&report.memory_peak_kib),
                get(&report.memory_end_kib)
            );
        }
    } else {
        let _ = writeln!(
            out,
            "(service memory and CPU not measured: pass --state-dir of the running stack)"
        );
    }
    if let Some(v) = &report.verification {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "entries held by the seeded users: {} (expected {}): {}",
            v.found_entries,
            v.expected_entries,
            if v.ok { "ok" } else { "MISMATCH" }
        );
    }
    let busy: Vec<String> = report
        .scenarios
        .iter()
        .filter(|r| r.machine_cpu.other_cores > OTHER_LOAD_WARNING)
        .map(|r| {
            format!(
                "{}:{} {} ({:.2} cores)",
                r.scenario, r.concurrency, r.via, r.machine_cpu.other_cores
            )
        })
        .collect();
    if !busy.is_empty() {
        let _ = writeln!(
            out,
            "warning: other work used the CPU during: {}; those numbers are skewed",
            busy.join(", ")
        );
    }
    for x in report.ratios.iter().filter(|x| x.what == "p99 vs idle") {
        let _ = writeln!(
            out,
            "fair share: others' GetToDo p99 in {} is {:.2}x their p99 in {} (target < 3)",
            x.numerator, x.value, x.denominator
        );
    }
    let _ = writeln!(
        out,
        "unexpected errors: {}{}",
        report.errors,
        if report.ok { "" } else { "  => FAILED" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{CpuUse, ScenarioResult};
    use crate::stats::LatencySummary;

    fn result(scenario: &str, via: Via, concurrency: usize, rps: f64) -> ScenarioResult {
        ScenarioResult {
            scenario: scenario.into(),
            via,
            concurrency,
            background_concurrency: 0,
            connections: 4,
            measured_s: 1.0,
            requests: rps as u64,
            rps,
            latency: LatencySummary::default(),
            errors: BTreeMap::new(),
            expected_errors: BTreeMap::new(),
            ops: BTreeMap::new(),
            client_cpu: CpuUse::default(),
            process_cpu: BTreeMap::new(),
            machine_cpu: Default::default(),
            memory: BTreeMap::new(),
        }
    }

    #[test]
    fn ratios_pair_the_same_scenario_and_path() {
        let results = vec![
            result("health", Via::Gateway, 64, 10_000.0),
            result("health", Via::Direct, 64, 20_000.0),
            result("get", Via::Gateway, 64, 4_000.0),
            result("get", Via::Direct, 64, 8_000.0),
            result("get", Via::Gateway, 1, 1_000.0),
        ];
        let r = ratios(&results);
        let find = |what: &str, num: &str| {
            r.iter()
                .find(|x| x.what == what && x.numerator == num)
                .map(|x| x.value)
        };
        assert_eq!(find("of health ceiling", "get:64 gateway"), Some(0.4));
        assert_eq!(find("of health ceiling", "get:64 direct"), Some(0.4));
        assert_eq!(find("of health ceiling", "get:1 gateway"), Some(0.1));
        assert_eq!(find("gateway/direct", "get:64 gateway"), Some(0.5));
        // No direct run at C=1, and health is not compared with itself.
        assert_eq!(find("gateway/direct", "get:1 gateway"), None);
        assert_eq!(find("of health ceiling", "health:64 gateway"), None);
        assert_eq!(find("gateway/direct", "health:64 gateway"), Some(0.5));
    }

    #[test]
    fn fair_share_p99_is_compared_with_idle() {
        let with_p99 = |scenario: &str, p99_ms: f64| ScenarioResult {
            latency: LatencySummary {
                p99_ms,
                ..LatencySummary::default()
            },
            ..result(scenario, Via::Gateway, 8, 100.0)
        };
        let r = ratios(&[
            with_p99("fair-share-idle", 2.0),
            with_p99("fair-share", 5.0),
        ]);
        let x = r
            .iter()
            .find(|x| x.what == "p99 vs idle")
            .expect("fair-share ratio");
        assert_eq!(
            (x.numerator.as_str(), x.denominator.as_str(), x.value),
            ("fair-share:8 gateway", "fair-share-idle:8 gateway", 2.5)
        );
    }
}
