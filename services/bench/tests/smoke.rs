//! A real `todoapp-stack` on SQLite, `todoapp-bench` against it for about a
//! second per scenario both ways: it runs, reports no error, and what it
//! says it created is what the database holds. No timing is asserted.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use todoapp_devkit::stack::Stack;

fn start_stack(state: &Path) -> Stack {
    Stack::launch(state, "sqlite")
        // Three users at full speed: far past the per-user fair share,
        // which is not what this test measures.
        .map(|launch| {
            launch
                .env("TODOAPP_GATEWAY_FAIR_SHARE__READS_PER_SEC", "1000000")
                .env("TODOAPP_GATEWAY_FAIR_SHARE__READ_BURST", "1000000")
                .env("TODOAPP_GATEWAY_FAIR_SHARE__WRITES_PER_SEC", "1000000")
                .env("TODOAPP_GATEWAY_FAIR_SHARE__WRITE_BURST", "1000000")
        })
        .and_then(|launch| launch.start())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn bench(state: &Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_todoapp-bench"))
        .arg("--state-dir")
        .arg(state)
        .args([
            "--warmup",
            "200ms",
            "--duration",
            "1s",
            "--users",
            "3",
            "--entries",
            "5",
            "-k",
            "2",
            "--json",
        ])
        .args(args)
        .output()
        .expect("run todoapp-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "todoapp-bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("bench output is not JSON ({e}):\n{stdout}\n{stderr}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Successful calls of `op` over every scenario of a report.
fn total_ok(report: &Value, op: &str) -> u64 {
    report["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .map(|s| s["ops"][op]["total_ok"].as_u64().unwrap_or(0))
        .sum()
}

async fn rows_in_todo_db(state: &Path, table: &str) -> u64 {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::ConnectOptions;
    let mut conn = SqliteConnectOptions::new()
        .filename(state.join("todo.db"))
        .read_only(true)
        .connect()
        .await
        .expect("open todo.db");
    let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&mut conn)
        .await
        .expect("count");
    u64::try_from(count).expect("non-negative count")
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_runs_against_a_real_stack_and_counts_correctly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let stack = start_stack(&state);

    let report = bench(
        &state,
        &[
            "--via",
            "both",
            "--scenarios",
            "health:4,get:8,get-missing:4,create:8,create-once:4,mixed:8",
        ],
    );
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(u(&report["errors"]), 0);
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    assert_eq!(
        scenarios.len(),
        12,
        "each scenario through the gateway and direct"
    );
    for s in scenarios {
        let name = format!("{} via {}", s["scenario"], s["via"]);
        assert!(
            u(&s["requests"]) > 0 && s["rps"].as_f64().is_some_and(|r| r > 0.0),
            "{name} measured nothing: {s:#}"
        );
        assert!(
            s["errors"].as_object().is_some_and(|e| e.is_empty()),
            "{name}: {s:#}"
        );
        for key in ["p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms"] {
            assert!(
                s["latency"][key].as_f64().is_some_and(|v| v > 0.0),
                "{name}: no {key}"
            );
        }
        assert!(s["latency"]["p50_ms"].as_f64() <= s["latency"]["max_ms"].as_f64());
        assert!(
            s["client_cpu"]["cores"].as_f64().is_some_and(|c| c > 0.0),
            "{name}: client CPU not measured"
        );
        for service in ["gateway", "user", "todo"] {
            assert!(
                u(&s["memory"][service]["peak_kib"]) > 0,
                "{name}: {service} memory not sampled"
            );
        }
    }
    let missing = scenarios
        .iter()
        .find(|s| s["scenario"] == "get-missing")
        .expect("get-missing ran");
    assert!(
        u(&missing["expected_errors"]["NotFound"]) > 0,
        "get-missing must see NOT_FOUND: {missing:#}"
    );
    for service in ["gateway", "user", "todo"] {
        assert!(
            u(&report["memory_idle_kib"][service]) > 0,
            "idle memory of {service} not measured"
        );
    }

    // What the bench says it did is what the server holds.
    let seeded = u(&report["seed"]["entries"]);
    assert_eq!(seeded, 15);
    let created_once = total_ok(&report, "create-once");
    let created = total_ok(&report, "create") + created_once;
    let deleted = total_ok(&report, "delete");
    assert!(created_once > 0, "nothing created with a request id");
    let expected = seeded + created - deleted;
    assert_eq!(u(&report["verification"]["expected_entries"]), expected);
    assert_eq!(u(&report["verification"]["found_entries"]), expected);
    assert_eq!(
        rows_in_todo_db(&state, "todos").await,
        expected,
        "rows in todo.db"
    );
    // Each create-once call carried a request id of its own, and only they.
    assert_eq!(
        rows_in_todo_db(&state, "create_requests").await,
        created_once,
        "request ids stored"
    );

    // The login-burst scenario: GetToDo is the headline, the logins are reported beside it.
    let burst = bench(
        &state,
        &["--scenarios", "login-burst:2", "--burst-logins", "2"],
    );
    let s = &burst["scenarios"][0];
    assert_eq!(s["scenario"], "login-burst");
    assert_eq!(u(&s["background_concurrency"]), 2);
    assert_eq!(u(&s["requests"]), u(&s["ops"]["get"]["requests"]));
    assert!(
        u(&s["ops"]["login"]["total_ok"]) > 0,
        "no login completed: {s:#}"
    );

    let log = stack.log();
    let status = stack.stop().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "todoapp-stack exit {status}; log:\n{log}");
}
