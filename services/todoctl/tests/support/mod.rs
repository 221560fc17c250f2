//! A real `todoapp-stack` (one per test binary) and `todoctl` run as a
//! person would, each test with its own config home.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Stack {
    /// Its `stack.json` is at `STATE_HOME/todoapp/stack.json`, where
    /// todoctl looks by default.
    pub state_home: PathBuf,
    pub gateway: String,
    pub ca: PathBuf,
    /// The running stack; a static is never dropped, so it stops (SIGTERM,
    /// via the parent-death signal) when the test binary exits.
    pub running: todoapp_devkit::stack::Stack,
}

/// The test binary's stack, started on first use with `env`.
pub fn stack(env: &'static [(&'static str, &'static str)]) -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| start(env))
}

fn start(env: &[(&str, &str)]) -> Stack {
    remove_stopped_stacks();
    let root = tempfile::Builder::new()
        .prefix("todoctl-stack-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir")
        .keep();
    let state_home = root.join("state");
    let mut launch = todoapp_devkit::stack::Stack::launch(&state_home.join("todoapp"), "sqlite")
        .unwrap_or_else(|e| panic!("{e}"));
    for (key, value) in env {
        launch = launch.env(key, value);
    }
    let running = launch.start().unwrap_or_else(|e| panic!("{e}"));
    Stack {
        state_home,
        gateway: running.gateway().to_owned(),
        ca: running.ca_cert(),
        running,
    }
}

/// The stacks of earlier runs stop when their test binary exits but leave
/// their directory: remove those whose stack no longer holds its lock.
fn remove_stopped_stacks() {
    use std::os::fd::AsRawFd;
    let Ok(dirs) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else {
        return;
    };
    for dir in dirs.flatten() {
        if !dir
            .file_name()
            .to_string_lossy()
            .starts_with("todoctl-stack-")
        {
            continue;
        }
        let Ok(lock) = std::fs::File::open(dir.path().join("state/todoapp/stack.lock")) else {
            continue;
        };
        // SAFETY: flock(2) on a descriptor we own.
        let free = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if free {
            let _ = std::fs::remove_dir_all(dir.path());
        }
    }
}

/// One person's machine: its own `$HOME` and `$XDG_CONFIG_HOME`, the
/// stack's state home (so `stack.json` is found) unless told otherwise.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub state_home: PathBuf,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails(self, code: i32, message: &str) -> Self {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(message),
            "expected `{message}` in: {}",
            self.stderr
        );
        let errors = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("todoctl: "))
            .count();
        assert_eq!(errors, 1, "one error line: {}", self.stderr);
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

impl Home {
    pub fn new(stack: &Stack) -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            state_home: stack.state_home.clone(),
        }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config/todoctl")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_todoctl"));
        cmd.args(args);
        self.environment(&mut cmd);
        cmd
    }

    /// This home's environment for `cmd` (todoctl or a wrapper of it).
    pub fn environment(&self, cmd: &mut Command) {
        cmd.env_remove("TODOCTL_GATEWAY")
            .env_remove("TODOCTL_CA")
            .env_remove("TODOCTL_PROFILE")
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("XDG_STATE_HOME", &self.state_home);
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(self.command(args), None)
    }

    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Run {
        self.run_with(self.command(args), Some(stdin))
    }

    pub fn run_with(&self, mut cmd: Command, stdin: Option<&str>) -> Run {
        let started = Instant::now();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run todoctl");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
        drop(input);
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output().expect("todoctl output");
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            took: started.elapsed(),
        }
    }

    /// Registers (and so logs in) a new user with password `pw`.
    pub fn register(&self, username: &str, pw: &str) {
        self.run_stdin(
            &[
                "register",
                username,
                "--email",
                &format!("{username}@example.org"),
                "--password-stdin",
            ],
            &format!("{pw}\n"),
        )
        .ok();
    }
}

/// A username no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{}x{nanos}", std::process::id())
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}
