//! The listening socket: passed by systemd (socket activation) or bound.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Mutex;

use tokio::net::TcpListener;

/// Where the listener came from, for the readiness status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    SocketActivated,
    Bound,
}

/// Returns the socket passed through `LISTEN_FDS` for this process (the one
/// named `name` in `LISTEN_FDNAMES` when several are passed), or binds `addr`.
pub async fn acquire(name: &str, addr: SocketAddr) -> std::io::Result<(TcpListener, Origin)> {
    listen(passed_fd(name, Match::NameOrOnly)?, addr).await
}

/// As [`acquire`], but only a socket passed under exactly `name` is taken
/// (a service's second listener, e.g. `gateway-metrics`).
pub async fn acquire_named(name: &str, addr: SocketAddr) -> std::io::Result<(TcpListener, Origin)> {
    listen(passed_fd(name, Match::Name)?, addr).await
}

async fn listen(fd: Option<RawFd>, addr: SocketAddr) -> std::io::Result<(TcpListener, Origin)> {
    if let Some(fd) = fd {
        // SAFETY: the service manager handed this descriptor to this process
        // (LISTEN_PID matched); it is taken from PASSED once, so nothing else
        // in the process owns it.
        let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        return Ok((listener, Origin::SocketActivated));
    }
    Ok((TcpListener::bind(addr).await?, Origin::Bound))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Match {
    /// The socket named so, else the only or first one passed.
    NameOrOnly,
    Name,
}

/// The sockets passed by the service manager that are not yet taken.
static PASSED: Mutex<Option<Vec<(RawFd, String)>>> = Mutex::new(None);

fn passed_fd(name: &str, matching: Match) -> std::io::Result<Option<RawFd>> {
    let mut passed = PASSED.lock().unwrap_or_else(|e| e.into_inner());
    if passed.is_none() {
        // Also sets FD_CLOEXEC on every passed descriptor and unsets the
        // variables, so children we start never see them.
        *passed = Some(sd_notify::listen_fds_with_names(true)?.collect());
    }
    let Some(fds) = passed.as_mut() else {
        return Ok(None);
    };
    let position = fds
        .iter()
        .position(|(_, fd_name)| fd_name == name)
        .or_else(|| (matching == Match::NameOrOnly && !fds.is_empty()).then_some(0));
    Ok(position.map(|index| fds.remove(index).0))
}
