//! Configuration that cannot be silently wrong, checked on the real
//! binaries: `--check-config` rejects unknown keys (file and environment)
//! and bad log levels with the full key path and a non-zero exit, and
//! `--print-config` prints the effective settings with secrets redacted.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{bin, free_addr, Workspace};

fn run(binary: &str, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin(binary));
    cmd.arg("--config").arg(config).args(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().expect("run the service binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails with one stderr line containing every part of `expected`, prints
/// nothing on stdout (no "configuration OK").
fn assert_rejected(out: &Output, expected: &[&str]) {
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "must fail; stdout: {} stderr: {stderr}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(text(&out.stdout), "", "nothing on stdout");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    for part in expected {
        assert!(stderr.contains(part), "`{part}` missing in: {stderr}");
    }
}

fn user_config(ws: &Workspace, extra_top: &str, extra_tables: &str) -> std::path::PathBuf {
    let db = format!("sqlite://{}", ws.path().join("user.db").display());
    let path = ws.user_config(free_addr(), &db, extra_top, "memory_kib = 8192");
    let mut contents = std::fs::read_to_string(&path).expect("read config");
    contents.push_str(extra_tables);
    std::fs::write(&path, contents).expect("write config");
    path
}

/// The configs the tests write are serialised, not pasted together: a
/// directory name with a quote, a backslash and spaces still gives configs
/// every service accepts, its files found.
#[test]
fn configs_under_a_path_with_quotes_and_backslashes_are_accepted() {
    let ws = Workspace::with_prefix("it's a \"dir\" \\ ");
    assert!(ws.path().display().to_string().contains("\" \\ "));
    let db = |name: &str| format!("sqlite://{}", ws.path().join(name).display());
    let configs = [
        ("todoapp-user", user_config(&ws, "", "")),
        (
            "todoapp-todo",
            ws.todo_config(free_addr(), &db("todo.db"), ""),
        ),
        (
            "todoapp-gateway",
            ws.gateway_config(free_addr(), free_addr(), free_addr(), ""),
        ),
    ];
    for (binary, config) in configs {
        let out = run(binary, &config, &["--check-config"], &[]);
        assert!(
            out.status.success(),
            "{binary}: {}\n{}",
            text(&out.stderr),
            std::fs::read_to_string(&config).unwrap_or_default()
        );
    }
}

#[test]
fn check_config_accepts_a_valid_configuration() {
    let ws = Workspace::new();
    let config = user_config(&ws, "log_level = \"warn,todoapp_user=debug\"", "");
    let out = run("todoapp-user", &config, &["--check-config"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("configuration OK"));
}

#[test]
fn check_config_rejects_a_misspelt_table_naming_the_full_key() {
    let ws = Workspace::new();
    // The operator meant [database]: SQLite would silently stay in use.
    let config = user_config(
        &ws,
        "",
        "[databse]\nurl = \"mysql://todoapp@127.0.0.1/todoapp_user\"\n",
    );
    let out = run("todoapp-user", &config, &["--check-config"], &[]);
    assert_rejected(
        &out,
        &[
            "todoapp-user: error:",
            "unknown key `databse.url`",
            &config.display().to_string(),
        ],
    );
    // The same check guards the service's start.
    let out = run("todoapp-user", &config, &["serve"], &[]);
    assert_rejected(&out, &["unknown key `databse.url`"]);
    assert!(
        !ws.path().join("user.db").exists(),
        "nothing may start with a bad key"
    );
}

#[test]
fn check_config_rejects_unknown_keys_at_every_level() {
    let ws = Workspace::new();
    let config = user_config(&ws, "listn = \"127.0.0.1:1\"", "");
    let out = run("todoapp-user", &config, &["--check-config"], &[]);
    assert_rejected(&out, &["`listn`"]);

    let ws = Workspace::new();
    let config = user_config(&ws, "", "");
    let contents = std::fs::read_to_string(&config)
        .expect("read")
        .replace("[argon2]\n", "[argon2]\nmemory_kb = 1\n");
    std::fs::write(&config, contents).expect("write");
    let out = run("todoapp-user", &config, &["--check-config"], &[]);
    assert_rejected(&out, &["argon2.memory_kb"]);

    let ws = Workspace::new();
    let listen = free_addr();
    let upstream = free_addr();
    let config = ws.gateway_config(listen, upstream, upstream, "");
    let contents = std::fs::read_to_string(&config).expect("read") + "[upstream.extra]\nkey = 1\n";
    std::fs::write(&config, contents).expect("write");
    let out = run("todoapp-gateway", &config, &["--check-config"], &[]);
    assert!(!out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("upstream.extra"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_config_rejects_an_environment_variable_that_maps_to_no_key() {
    let ws = Workspace::new();
    let config = user_config(&ws, "", "");
    let out = run(
        "todoapp-user",
        &config,
        &["--check-config"],
        &[("TODOAPP_USER_DATABSE__URL", "mysql://todoapp@127.0.0.1/x")],
    );
    assert_rejected(
        &out,
        &[
            "unknown key `databse.url`",
            "environment variable TODOAPP_USER_DATABSE__URL",
        ],
    );
    // A variable that does name a key is taken.
    let out = run(
        "todoapp-user",
        &config,
        &["--check-config"],
        &[("TODOAPP_USER_DATABASE__MAX_CONNECTIONS", "4")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn check_config_rejects_a_log_level_that_would_silence_everything() {
    let ws = Workspace::new();
    let config = user_config(&ws, "log_level = \"infp\"", "");
    let out = run("todoapp-user", &config, &["--check-config"], &[]);
    assert_rejected(&out, &["`log_level`", "`infp`"]);
}

#[test]
fn print_config_prints_the_effective_settings_with_secrets_redacted() {
    let ws = Workspace::new();
    let listen = free_addr();
    let config = ws.todo_config(
        listen,
        "mysql://todoapp:hunter2@127.0.0.1:3306/todoapp_todo",
        "log_level = \"debug\"",
    );
    let out = run(
        "todoapp-todo",
        &config,
        &["--print-config"],
        &[("TODOAPP_TODO_MAX_MESSAGE_BYTES", "131072")],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stdout.contains("hunter2") && !stderr.contains("hunter2"),
        "the password leaked: {stdout}{stderr}"
    );
    let printed: toml::Table = stdout.parse().expect("--print-config prints TOML");
    // file
    assert_eq!(
        printed["listen"].as_str(),
        Some(listen.to_string().as_str())
    );
    assert_eq!(printed["log_level"].as_str(), Some("debug"));
    // environment over file
    assert_eq!(printed["max_message_bytes"].as_integer(), Some(131_072));
    // defaults
    assert_eq!(printed["shutdown_timeout_secs"].as_integer(), Some(10));
    assert_eq!(
        printed["database"]["max_connections"].as_integer(),
        Some(16)
    );
    assert_eq!(
        printed["database"]["url"].as_str(),
        Some("mysql://todoapp:<redacted>@127.0.0.1:3306/todoapp_todo")
    );
    assert_eq!(
        printed["tls"]["client_ca"].as_str(),
        Some(
            ws.pki(todoapp_devkit::pki::files::INTERNAL_CA_CERT)
                .as_str()
        )
    );

    // A bad key fails printing too, and nothing is printed.
    let out = run(
        "todoapp-todo",
        &config,
        &["--print-config"],
        &[("TODOAPP_TODO_MAX_MESAGE_BYTES", "1")],
    );
    assert_rejected(&out, &["max_mesage_bytes"]);
}

/// Log lines go through a writer thread; a service that stops on an error
/// still writes every line it logged, the fatal one included, before its
/// last word on stderr.
#[test]
fn a_service_that_fails_to_serve_writes_out_its_log_before_its_error() {
    let ws = Workspace::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("addr");
    let db = format!("sqlite://{}", ws.path().join("user.db").display());
    let config = ws.user_config(listen, &db, "", "memory_kib = 8192");
    let out = run("todoapp-user", &config, &[], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let fatal = lines
        .iter()
        .position(|line| line.contains("ERROR") && line.contains("fatal"))
        .unwrap_or_else(|| panic!("no fatal log line in: {stderr}"));
    let last = lines.last().copied().unwrap_or_default();
    assert!(
        last.starts_with("todoapp-user: error:") && fatal + 1 == lines.len() - 1,
        "the fatal log line must come right before the final error line: {stderr}"
    );
    drop(taken);
}
