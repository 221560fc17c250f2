//! A `todoapp-stack` started for a test: launched in a process group of
//! its own, waited for until its `stack.json` is written (all services
//! ready), stopped with SIGTERM. Whatever happens to the test, nothing
//! outlives it: the stack gets SIGTERM when the test process dies (the
//! parent-death signal), and dropping a [`Stack`] ends its whole process
//! group, services and private database servers included.

use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::DevError;

/// How long a stack may take to become ready (a private Galera cluster on
/// a busy machine is the slowest).
const READY_WITHIN: Duration = Duration::from_secs(180);
/// How long a SIGTERMed stack may take to stop its services and exit.
const STOP_WITHIN: Duration = Duration::from_secs(60);

/// How to start a stack: `--state-dir`, `--listen 127.0.0.1:0` and
/// `--database` are always given; add more with [`Launch::arg`] and
/// [`Launch::env`].
pub struct Launch {
    state: PathBuf,
    cmd: Command,
}

impl Launch {
    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(
        mut self,
        key: impl AsRef<std::ffi::OsStr>,
        value: impl AsRef<std::ffi::OsStr>,
    ) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Starts the stack and waits until it is ready (or exits, or
    /// [`READY_WITHIN`] passes: then it is stopped and its log is in the
    /// error).
    pub fn start(self) -> Result<Stack, DevError> {
        let Launch { state, mut cmd } = self;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&state)
            .map_err(DevError::io(format!("creating {}", state.display())))?;
        let json = state.join("stack.json");
        let _ = std::fs::remove_file(&json);
        let log = state.join("stack.log");
        let out = std::fs::File::create(&log)
            .map_err(DevError::io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(DevError::io("duplicating the log file"))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // Its own process group, so that a test can end the stack and all
        // it started at once.
        cmd.process_group(0);
        crate::process::die_with_parent(&mut cmd, libc::SIGTERM);

        // The parent-death signal follows the spawning thread: spawn from a
        // thread that lives as long as the stack, waiting for it.
        let (started_tx, started) = mpsc::channel();
        let (exited_tx, exited) = mpsc::channel();
        std::thread::spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = started_tx.send(Ok(child.id()));
                let _ = exited_tx.send(child.wait());
            }
            Err(e) => {
                let _ = started_tx.send(Err(e));
            }
        });
        let pid = started
            .recv()
            .map_err(|_| DevError::Missing("the stack's spawning thread ended".into()))?
            .map_err(DevError::io("starting todoapp-stack"))?;
        let mut stack = Stack {
            pid,
            exited: Mutex::new(exited),
            status: None,
            state,
            log,
            info: serde_json::Value::Null,
        };

        let deadline = Instant::now() + READY_WITHIN;
        while !json.exists() {
            if let Some(status) = stack.wait_exit(Duration::from_millis(50)) {
                return Err(DevError::Missing(format!(
                    "todoapp-stack exited early ({status}); log:\n{}",
                    stack.log()
                )));
            }
            if Instant::now() > deadline {
                return Err(DevError::Missing(format!(
                    "todoapp-stack wrote no stack.json within {READY_WITHIN:?}; log:\n{}",
                    stack.log()
                )));
            }
        }
        // Written atomically (renamed into place), so complete once there.
        let text =
            std::fs::read(&json).map_err(DevError::io(format!("reading {}", json.display())))?;
        stack.info = serde_json::from_slice(&text)
            .map_err(|e| DevError::Missing(format!("{}: not JSON: {e}", json.display())))?;
        Ok(stack)
    }
}

/// A running `todoapp-stack`.
pub struct Stack {
    pid: u32,
    /// In a mutex only to make a `Stack` shareable (`Sync`) for a test
    /// binary's shared stack.
    exited: Mutex<Receiver<std::io::Result<ExitStatus>>>,
    status: Option<ExitStatus>,
    state: PathBuf,
    log: PathBuf,
    info: serde_json::Value,
}

impl Stack {
    /// `todoapp-stack --state-dir STATE --listen 127.0.0.1:0 --database
    /// DATABASE`, with the binary built from the current sources.
    pub fn launch(state: &Path, database: &str) -> Result<Launch, DevError> {
        let mut cmd = Command::new(crate::bins::current("todoapp-stack")?);
        cmd.arg("--state-dir")
            .arg(state)
            .args(["--listen", "127.0.0.1:0", "--database", database]);
        Ok(Launch {
            state: state.to_path_buf(),
            cmd,
        })
    }

    /// The parsed `stack.json`.
    pub fn info(&self) -> &serde_json::Value {
        &self.info
    }

    /// The first gateway's `HOST:PORT`.
    pub fn gateway(&self) -> &str {
        self.info["gateway"].as_str().unwrap_or_default()
    }

    /// Every gateway's `HOST:PORT`, the first one first.
    pub fn gateways(&self) -> Vec<String> {
        self.info["gateways"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The CA certificate of the gateways' TLS.
    pub fn ca_cert(&self) -> PathBuf {
        self.info["ca_cert"].as_str().unwrap_or_default().into()
    }

    pub fn state(&self) -> &Path {
        &self.state
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What the stack has printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The stack's exit status once it has exited, waiting up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            let exited = self
                .exited
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            match exited.recv_timeout(limit) {
                Ok(Ok(status)) => self.status = Some(status),
                // Not waitable (cannot happen for our own child): treat as
                // gone, so nothing waits forever.
                Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => {
                    self.status = Some(std::os::unix::process::ExitStatusExt::from_raw(-1))
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        self.status
    }

    /// Stops the stack as Ctrl-C does (SIGTERM) and returns its exit
    /// status; an error (with the log) if it does not exit in time.
    pub fn stop(mut self) -> Result<ExitStatus, DevError> {
        self.signal(libc::SIGTERM);
        match self.wait_exit(STOP_WITHIN) {
            Some(status) => Ok(status),
            None => Err(DevError::Missing(format!(
                "todoapp-stack did not stop within {STOP_WITHIN:?} of SIGTERM; log:\n{}",
                self.log()
            ))),
        }
    }

    /// Sends `signal` to the stack process alone (not its services).
    pub fn signal(&self, signal: libc::c_int) {
        if self.status.is_none() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        }
    }

    fn signal_group(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the process group this stack leads.
        unsafe { libc::kill(-(self.pid as libc::pid_t), signal) };
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.wait_exit(Duration::ZERO).is_none() {
            self.signal_group(libc::SIGTERM);
            self.wait_exit(Duration::from_secs(20));
        }
        // Whatever is left of the group (a stack killed outright, a server
        // that ignored SIGTERM) ends now.
        self.signal_group(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(5));
    }
}
