//! `todoapp-abuse` against real stacks (real processes, TLS, SQLite and
//! MariaDB). The gateway gets short handshake and idle timeouts so the
//! timing scenarios take seconds; everything else runs at the defaults,
//! whose bounds the suite checks through the state dir (`/proc`).

use std::path::Path;
use std::process::Command;

use todoapp_devkit::stack::Stack;

const HANDSHAKE_TIMEOUT_SECS: &str = "2";
const IDLE_TIMEOUT_SECS: &str = "3";

const UNLIMITED_FAIR_SHARE: [(&str, &str); 5] = [
    ("TODOAPP_GATEWAY_FAIR_SHARE__READS_PER_SEC", "1000000"),
    ("TODOAPP_GATEWAY_FAIR_SHARE__READ_BURST", "1000000"),
    ("TODOAPP_GATEWAY_FAIR_SHARE__WRITES_PER_SEC", "1000000"),
    ("TODOAPP_GATEWAY_FAIR_SHARE__WRITE_BURST", "1000000"),
    (
        "TODOAPP_GATEWAY_FAIR_SHARE__MAX_IN_FLIGHT_PER_USER",
        "100000",
    ),
];

fn start_stack(state: &Path, database: &str, env: &[(&str, &str)]) -> Stack {
    // The suite's single attacker opens 100 streams and seeds 1000 entries
    // as one user: the per-user fair share (tested on its own in
    // fair_share.rs) would refuse most of them before the bounds under test
    // are reached.
    let settings = [
        (
            "TODOAPP_GATEWAY_TLS_HANDSHAKE_TIMEOUT_SECS",
            HANDSHAKE_TIMEOUT_SECS,
        ),
        (
            "TODOAPP_GATEWAY_LIMITS__IDLE_TIMEOUT_SECS",
            IDLE_TIMEOUT_SECS,
        ),
    ];
    let mut launch = Stack::launch(state, database).unwrap_or_else(|e| panic!("{e}"));
    for (key, value) in settings.iter().chain(&UNLIMITED_FAIR_SHARE).chain(env) {
        launch = launch.env(key, value);
    }
    launch.start().unwrap_or_else(|e| panic!("{e}"))
}

fn stop_stack(stack: Stack) {
    let log = stack.log();
    let status = stack.stop().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "stack exit {status}; log:\n{log}");
}

/// Runs the suite; every scenario not in `skipped` must run and pass.
fn run_abuse(state: &Path, extra: &[&str], only: Option<&str>, skipped: &[&str]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_todoapp-abuse"));
    cmd.arg("--state-dir")
        .arg(state)
        .args(["--handshake-timeout-secs", HANDSHAKE_TIMEOUT_SECS])
        .args(["--idle-timeout-secs", IDLE_TIMEOUT_SECS])
        .args(extra);
    if let Some(only) = only {
        cmd.args(["--only", only]);
    }
    let out = cmd.output().expect("run todoapp-abuse");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "todoapp-abuse failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: Vec<&str> = todoapp_e2e::abuse::scenario_names()
        .into_iter()
        .filter(|name| only.is_none_or(|o| name.contains(o)))
        .filter(|name| !skipped.iter().any(|s| name.contains(s)))
        .collect();
    for name in &expected {
        assert!(
            stdout.contains(&format!("PASS  {name}")),
            "scenario `{name}` did not pass:\n{stdout}"
        );
    }
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(last, format!("{} passed, 0 failed", expected.len()));
}

#[test]
fn sqlite_stack_withstands_the_abuse_suite() {
    let state = tempfile::tempdir().expect("tempdir");
    let stack = start_stack(state.path(), "sqlite", &[]);
    // The caps scenario needs low caps; it runs in its own stack below.
    run_abuse(state.path(), &[], None, &["caps"]);
    stop_stack(stack);
}

#[test]
fn mariadb_stack_withstands_the_abuse_suite() {
    let state = tempfile::tempdir().expect("tempdir");
    let stack = start_stack(state.path(), "mariadb", &[]);
    run_abuse(state.path(), &[], None, &["caps"]);
    stop_stack(stack);
}

#[test]
fn calls_over_the_caps_fail_fast() {
    let state = tempfile::tempdir().expect("tempdir");
    let stack = start_stack(
        state.path(),
        "sqlite",
        &[
            ("TODOAPP_GATEWAY_LIMITS__MAX_CALLS_PER_CONNECTION", "4"),
            ("TODOAPP_GATEWAY_LIMITS__MAX_CALLS", "10"),
        ],
    );
    run_abuse(
        state.path(),
        &["--max-calls-per-connection", "4", "--max-calls", "10"],
        Some("caps"),
        &[],
    );
    stop_stack(stack);
}
