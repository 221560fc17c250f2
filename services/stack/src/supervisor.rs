//! Running one service as a child process the way systemd would: its
//! listening socket passed as fd 3 (`LISTEN_FDS`), readiness reported on a
//! private `NOTIFY_SOCKET`, restarted when it dies, SIGTERM to stop.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};
use tokio::sync::{watch, Notify};

pub struct ServiceSpec {
    pub name: String,
    pub binary: PathBuf,
    pub config: PathBuf,
    pub listener: OwnedFd,
    pub run_dir: PathBuf,
}

/// A supervised service. `ready` turns true after its first READY=1.
pub struct Supervised {
    pub name: String,
    pub ready: watch::Receiver<bool>,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    /// Stops the child (SIGTERM, SIGKILL after `grace`) and waits for it.
    pub async fn stop(self, grace: Duration) {
        self.stop.notify_one();
        if tokio::time::timeout(grace + Duration::from_secs(2), self.task)
            .await
            .is_err()
        {
            eprintln!("[stack] {} did not stop in time", self.name);
        }
    }
}

pub fn spawn(spec: ServiceSpec, grace: Duration) -> Supervised {
    let (ready_tx, ready_rx) = watch::channel(false);
    let stop = Arc::new(Notify::new());
    let name = spec.name.clone();
    let task = tokio::spawn(supervise(spec, ready_tx, stop.clone(), grace));
    Supervised {
        name,
        ready: ready_rx,
        stop,
        task,
    }
}

async fn supervise(
    spec: ServiceSpec,
    ready: watch::Sender<bool>,
    stop: Arc<Notify>,
    grace: Duration,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let notify_path = spec.run_dir.join(format!("{}.notify", spec.name));
        let _ = std::fs::remove_file(&notify_path);
        let notify = match UnixDatagram::bind(&notify_path) {
            Ok(socket) => socket,
            Err(e) => {
                eprintln!("[stack] {}: cannot create notify socket: {e}", spec.name);
                return;
            }
        };
        let mut child = match start(&spec, &notify_path) {
            Ok(child) => child,
            Err(e) => {
                eprintln!(
                    "[stack] {}: cannot start {}: {e}",
                    spec.name,
                    spec.binary.display()
                );
                return;
            }
        };
        let started = tokio::time::Instant::now();
        let mut buf = vec![0u8; 4096];
        let exit = loop {
            tokio::select! {
                status = child.wait() => break status,
                received = notify.recv(&mut buf) => {
                    if let Ok(n) = received {
                        let message = String::from_utf8_lossy(&buf[..n]);
                        if message.lines().any(|l| l == "READY=1") {
                            ready.send_replace(true);
                        }
                    }
                }
                _ = stop.notified() => {
                    terminate(&mut child, grace).await;
                    let _ = std::fs::remove_file(&notify_path);
                    return;
                }
            }
        };
        let _ = std::fs::remove_file(&notify_path);
        match exit {
            Ok(status) => eprintln!("[stack] {} exited ({status}); restarting", spec.name),
            Err(e) => eprintln!("[stack] {}: wait failed: {e}; restarting", spec.name),
        }
        // Back off on crash loops, reset after a healthy run.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(200);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.notified() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn start(spec: &ServiceSpec, notify_path: &Path) -> std::io::Result<Child> {
    let listener_fd = spec.listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    // The shell learns its own pid ($$) and exec keeps it, so LISTEN_PID
    // names the service process exactly as systemd's would.
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
        .arg(&spec.binary)
        .arg("--config")
        .arg(&spec.config)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", &spec.name)
        .env("NOTIFY_SOCKET", notify_path)
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        // Logs go straight to our stderr (relaying them line by line cost a
        // noticeable share of a core under load); every call line names its service.
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    // A stack killed outright (SIGKILL) must not leave its services
    // running: they get SIGTERM when it dies. This task runs on a runtime
    // worker thread, which lives as long as the stack.
    todoapp_devkit::process::die_with_parent(cmd.as_std_mut(), libc::SIGTERM);
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if listener_fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(listener_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => eprintln!("[stack] child stopped with {status}"),
        _ => {
            let _ = child.kill().await;
        }
    }
}
