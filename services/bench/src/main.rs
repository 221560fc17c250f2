//! `todoapp-bench`: a closed-loop load generator for a running todoapp stack.
//!
//! C calls in flight over K HTTP/2 connections, a warm-up, then a measured
//! window, per scenario; through the gateway, or straight to the backends
//! over mutual TLS (`--direct`) to show what the gateway costs. Seeds its
//! own users and entries first, samples its own CPU use and the services'
//! CPU and resident memory, and fails (exit 1) on any unexpected error.

mod mix;
mod procs;
mod report;
mod run;
mod scenario;
mod stats;
mod target;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use todoapp_e2e::Target;

use crate::mix::Op;
use crate::report::{Report, SeededAccount, Verification};
use crate::run::{RunSettings, Shared};
use crate::target::{Conns, Via};

/// Load-tests a running todoapp stack. Scenarios: health
/// (grpc.health.v1.Health/Check: the ceiling for any call), get, get-missing
/// (NOT_FOUND expected), list, create, create-once (CreateToDo with a fresh
/// request id each, the retry-safe path), update, login, register, mixed (a
/// read-heavy blend: list 35%, get 30%, update 15%, create 12%, delete
/// 7.9%, login 0.1%), login-burst (GetToDo at C while --burst-logins
/// logins are in flight; the headline is GetToDo), fair-share (8 users
/// run GetToDo at C=1 each while one more user hammers GetToDo at C; the
/// headline is the 8; the hammer's RESOURCE_EXHAUSTED is expected) and
/// fair-share-idle (the 8 alone, to compare with; both need --users 9+).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// State dir of a running todoapp-stack: the gateway and CA from
    /// stack.json, backend addresses from run/*.toml, certificates from
    /// pki/, and the service processes to measure.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The gateway, HOST:PORT (instead of stack.json).
    #[arg(long, requires = "ca")]
    gateway: Option<String>,
    /// CA certificate (PEM) of the gateway.
    #[arg(long, requires = "gateway")]
    ca: Option<PathBuf>,
    /// Name to verify in the gateway's certificate, when not HOST.
    #[arg(long)]
    server_name: Option<String>,
    /// Call the backends directly over mTLS (needs --state-dir); same as `--via direct`.
    #[arg(long, conflicts_with = "via")]
    direct: bool,
    /// Which path(s): gateway, direct, or both (each scenario both ways, gateway first).
    #[arg(long, value_parser = ["gateway", "direct", "both"])]
    via: Option<String>,
    /// Scenarios as NAME[:CONCURRENCY], comma separated.
    #[arg(long, default_value = scenario::DEFAULT_SCENARIOS)]
    scenarios: String,
    /// Calls in flight (C) for scenarios given without :CONCURRENCY.
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections (K) per service called; calls spread over them.
    #[arg(short = 'k', long, default_value_t = 4)]
    connections: usize,
    /// Warm-up before measuring, e.g. 2s or 500ms.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Measured time per scenario (and path).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Users to seed.
    #[arg(long, default_value_t = 16)]
    users: usize,
    /// Entries to seed per user.
    #[arg(long, default_value_t = 50)]
    entries: usize,
    /// Page size of `list`.
    #[arg(long, default_value_t = 10)]
    list_limit: u32,
    /// Logins in flight during `login-burst`.
    #[arg(long, default_value_t = 64)]
    burst_logins: usize,
    /// Calls per second each of the 8 fair-share users makes (one at a
    /// time, on a connection of its own): people using the service, below
    /// the gateway's default 50 reads/s per user, so their idle p99 is not
    /// itself throttled. 0: back to back.
    #[arg(long, default_value_t = 40)]
    fair_share_rate: u32,
    /// Client runtime worker threads (default: one per CPU).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Seed of the workers' random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "PATH")]
    json_out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = cli
        .client_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
        .max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("todoapp-bench: error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let (json, json_out) = (cli.json, cli.json_out.clone());
    match runtime.block_on(bench(cli, threads)) {
        Ok(report) => {
            let text = match serde_json::to_string_pretty(&report) {
                Ok(text) => text,
                Err(e) => {
                    eprintln!("todoapp-bench: error: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(path) = json_out {
                if let Err(e) = std::fs::write(&path, format!("{text}\n")) {
                    eprintln!("todoapp-bench: error: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            if json {
                println!("{text}");
            } else {
                print!("{}", report::table(&report));
            }
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("todoapp-bench: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn vias(cli: &Cli) -> Vec<Via> {
    match (cli.direct, cli.via.as_deref()) {
        (true, _) | (_, Some("direct")) => vec![Via::Direct],
        (_, Some("both")) => vec![Via::Gateway, Via::Direct],
        _ => vec![Via::Gateway],
    }
}

fn kib_map(pids: &procs::Pids) -> BTreeMap<String, u64> {
    pids.0
        .iter()
        .filter_map(|(n, p)| procs::rss_kib(*p).map(|k| (n.to_string(), k)))
        .collect()
}

async fn bench(cli: Cli, threads: usize) -> Result<Report, String> {
    let specs = scenario::parse_list(&cli.scenarios, cli.concurrency)?;
    let vias = vias(&cli);
    if cli.users == 0 || cli.entries == 0 {
        return Err("--users and --entries must be at least 1".into());
    }
    if cli.duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    let connections = cli.connections.clamp(1, 256);
    let state_dir = match &cli.state_dir {
        Some(dir) => Some(
            std::fs::canonicalize(dir)
                .map_err(|e| format!("--state-dir {}: {e}", dir.display()))?,
        ),
        None => None,
    };
    let gateway_target = match (&cli.gateway, &cli.ca, &state_dir) {
        (Some(gateway), Some(ca), _) => Some(Target {
            gateway: gateway.clone(),
            ca: ca.clone(),
            server_name: None,
        }),
        (_, _, Some(dir)) if vias.contains(&Via::Gateway) => {
            Some(Target::from_stack_json(&dir.join("stack.json"))?)
        }
        _ => None,
    }
    .map(|t| Target {
        server_name: cli.server_name.clone().or(t.server_name),
        ..t
    });
    if vias.contains(&Via::Gateway) && gateway_target.is_none() {
        return Err("give --state-dir (of a running todoapp-stack) or --gateway and --ca".into());
    }
    if vias.contains(&Via::Direct) && state_dir.is_none() {
        return Err(
            "--direct needs --state-dir: backend addresses and client certificates come from it"
                .into(),
        );
    }

    let pids = state_dir.as_deref().map(procs::find).unwrap_or_default();
    if state_dir.is_some() && pids.0.len() < procs::SERVICES.len() {
        eprintln!("todoapp-bench: warning: found only {:?} of the stack's service processes; memory and CPU of the others are not reported", pids.0.keys().collect::<Vec<_>>());
    }
    let memory_idle_kib = kib_map(&pids);

    // The fair-share users are separate clients: a connection each.
    let own = if specs.iter().any(|s| s.kind.is_fair_share()) {
        run::FAIR_SHARE_OTHERS
    } else {
        0
    };
    let mut conns: Vec<Conns> = Vec::new();
    for via in &vias {
        conns.push(match via {
            Via::Gateway => match &gateway_target {
                Some(t) => target::gateway(t, connections, own).await?,
                None => return Err("no gateway to connect to".into()),
            },
            Via::Direct => match &state_dir {
                Some(dir) => target::direct(dir, connections, own).await?,
                None => return Err("no state dir".into()),
            },
        });
    }
    let Some(seed_conns) = conns.first().cloned() else {
        return Err("nothing to benchmark".into());
    };

    eprintln!(
        "todoapp-bench: seeding {} users x {} entries via {}",
        cli.users, cli.entries, seed_conns.via
    );
    let seed_start = Instant::now();
    let accounts = run::seed(&seed_conns, cli.users, cli.entries).await?;
    let seed = report::Seed {
        accounts: accounts
            .iter()
            .map(|a| SeededAccount {
                username: a.username.clone(),
                user_id: a.user_id.clone(),
            })
            .collect(),
        entries: accounts.iter().map(|a| a.entries.len() as u64).sum(),
        seconds: seed_start.elapsed().as_secs_f64(),
    };
    let shared = Arc::new(Shared {
        accounts,
        list_limit: cli.list_limit,
        run_id: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
    });
    let settings = RunSettings {
        warmup: cli.warmup,
        duration: cli.duration,
        burst_logins: cli.burst_logins,
        fair_share_pace: (cli.fair_share_rate > 0)
            .then(|| Duration::from_secs(1) / cli.fair_share_rate),
        seed: cli.seed,
    };

    let mut results = Vec::new();
    let mut index = 0;
    for spec in &specs {
        for c in &conns {
            // A restarted service has a new pid: look again each time.
            let pids = state_dir.as_deref().map(procs::find).unwrap_or_default();
            eprintln!("todoapp-bench: {} via {} ...", spec.label(), c.via);
            let result = run::run_scenario(&shared, c, spec, &settings, &pids, index).await?;
            eprintln!(
                "todoapp-bench: {} via {}: {:.1} req/s, p99 {:.2} ms, {} errors",
                spec.label(),
                c.via,
                result.rps,
                result.latency.p99_ms,
                result.error_count()
            );
            results.push(result);
            index += 1;
        }
    }

    let created: u64 = results
        .iter()
        .map(|r| r.total_ok(Op::Create) + r.total_ok(Op::CreateOnce))
        .sum();
    let deleted: u64 = results.iter().map(|r| r.total_ok(Op::Delete)).sum();
    let expected_entries = (seed.entries + created).saturating_sub(deleted);
    let found_entries = run::count_entries(&shared, &seed_conns).await?;
    let verification = Verification {
        expected_entries,
        found_entries,
        ok: expected_entries == found_entries,
    };

    let final_pids = state_dir.as_deref().map(procs::find).unwrap_or_default();
    let memory_end_kib = kib_map(&final_pids);
    let mut memory_peak_kib: BTreeMap<String, u64> = BTreeMap::new();
    for r in &results {
        for (name, m) in &r.memory {
            let peak = memory_peak_kib.entry(name.clone()).or_default();
            *peak = (*peak).max(m.peak_kib);
        }
    }
    let errors: u64 = results.iter().map(|r| r.error_count()).sum();
    let ratios = report::ratios(&results);
    let report = Report {
        settings: report::Settings {
            gateway: gateway_target.as_ref().map(|t| t.gateway.clone()),
            state_dir: state_dir.as_ref().map(|d| d.display().to_string()),
            via: vias,
            warmup_s: cli.warmup.as_secs_f64(),
            duration_s: cli.duration.as_secs_f64(),
            connections,
            users: cli.users,
            entries_per_user: cli.entries,
            list_limit: cli.list_limit,
            burst_logins: cli.burst_logins,
            fair_share_rate: cli.fair_share_rate,
            client_threads: threads,
        },
        seed,
        memory_idle_kib,
        memory_peak_kib,
        memory_end_kib,
        scenarios: results,
        ratios,
        ok: errors == 0 && verification.ok,
        verification: Some(verification),
        errors,
    };
    Ok(report)
}
