//! The systemd notification protocol: READY, STOPPING, STATUS and the watchdog.
//! Every call is a no-op when `NOTIFY_SOCKET` is unset.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

/// A check that the service can still do its work (e.g. its database pool
/// hands out a connection). The watchdog is only fed while it passes.
pub type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// A probe for a service with no dependency to check: it passes whenever
/// the async runtime gets to run it, so a wedged runtime still starves the
/// watchdog and systemd restarts the process.
pub fn runtime_responsive() -> Probe {
    Arc::new(|| Box::pin(async { true }))
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// When the service manager asked for a watchdog (`WATCHDOG_USEC`), feeds it
/// at half the interval for as long as `probe` succeeds within that time.
pub fn spawn_watchdog(probe: Probe) -> Option<tokio::task::JoinHandle<()>> {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let period = Duration::from_micros(usec / 2);
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            match tokio::time::timeout(period, probe()).await {
                Ok(true) => send(&[NotifyState::Watchdog]),
                _ => tracing::warn!("health probe failed; not feeding the watchdog"),
            }
        }
    }))
}
