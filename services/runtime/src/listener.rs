//! The listening socket: passed by systemd (socket activation) or bound.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};

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
    if let Some(fd) = passed_fd(name)? {
        // SAFETY: the service manager handed this descriptor to this process
        // (LISTEN_PID matched); nothing else in the process owns it.
        let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        return Ok((listener, Origin::SocketActivated));
    }
    Ok((TcpListener::bind(addr).await?, Origin::Bound))
}

fn passed_fd(name: &str) -> std::io::Result<Option<RawFd>> {
    // Also sets FD_CLOEXEC on every passed descriptor and unsets the
    // variables, so children we start never see them.
    let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names(true)?.collect();
    let chosen = match fds.as_slice() {
        [] => None,
        [(fd, _)] => Some(*fd),
        several => several
            .iter()
            .find(|(_, fd_name)| fd_name == name)
            .map(|(fd, _)| *fd)
            .or_else(|| several.first().map(|(fd, _)| *fd)),
    };
    Ok(chosen)
}
