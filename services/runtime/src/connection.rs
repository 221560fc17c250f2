//! Accepted connections and what bounds them: a cap per source address and
//! in total (checked on accept, before TLS), the HTTP/2 preface deadline
//! after the handshake, the idle timeout for connections with no call in
//! flight, and read pauses for connections whose calls are being refused.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface (RFC 9113 §3.4) is 24 bytes.
const PREFACE_LEN: u64 = 24;

/// Counts open connections per source address and in total.
#[derive(Debug)]
pub struct ConnectionTracker {
    per_address: usize,
    total: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    open_total: AtomicUsize,
}

impl ConnectionTracker {
    pub fn new(per_address: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            per_address,
            total,
            open: Mutex::new(HashMap::new()),
            open_total: AtomicUsize::new(0),
        })
    }

    /// A slot for a new connection from `peer`, or `None` when that address
    /// or the server is at its cap. The slot is given back on drop.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if self.open_total.load(Ordering::Relaxed) >= self.total {
            return None;
        }
        let count = open.entry(peer).or_insert(0);
        if *count >= self.per_address {
            return None;
        }
        *count += 1;
        self.open_total.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionSlot {
            tracker: self.clone(),
            peer,
        })
    }

    /// Connections open now (for tests and logs).
    pub fn open(&self) -> usize {
        self.open_total.load(Ordering::Relaxed)
    }
}

/// One admitted connection's place in the [`ConnectionTracker`].
#[derive(Debug)]
pub struct ConnectionSlot {
    tracker: Arc<ConnectionTracker>,
    peer: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self
            .tracker
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
        self.tracker.open_total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the call layer and the connection share: calls in flight on this
/// connection, since when it has had none, and until when its reads are
/// paused.
#[derive(Debug)]
pub struct ConnectionState {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
    reads_paused_until: Mutex<Option<Instant>>,
}

impl ConnectionState {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            reads_paused_until: Mutex::new(None),
        }
    }

    /// Reads nothing more from this connection for `pause` (calls already
    /// read go on; replies are still written). For a client that keeps
    /// sending calls it was told to retry later: each refusal costs the
    /// server TLS, HTTP/2 and token work, and a client that ignores the
    /// retry delay would otherwise make the server spend its CPU on
    /// refusing it rather than on serving others.
    pub fn pause_reads(&self, pause: Duration) {
        if pause.is_zero() {
            return;
        }
        let until = Instant::now() + pause;
        let mut paused = self
            .reads_paused_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    /// When reads may go on, if they are paused now.
    fn reads_paused_until(&self) -> Option<Instant> {
        let mut paused = self
            .reads_paused_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *paused {
            Some(until) if until > Instant::now() => Some(until),
            Some(_) => {
                *paused = None;
                None
            }
            None => None,
        }
    }

    /// Starts a call unless `cap` calls are already in flight here.
    pub fn begin_call(self: &Arc<Self>, cap: usize) -> Option<CallSlot> {
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current >= cap {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(CallSlot(self.clone())),
                Err(now) => current = now,
            }
        }
    }

    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(since + timeout)
    }
}

/// A call in flight on a connection; ends (and may start the idle clock)
/// on drop.
#[derive(Debug)]
pub struct CallSlot(Arc<ConnectionState>);

impl Drop for CallSlot {
    fn drop(&mut self) {
        let mut since = self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *since = Instant::now();
        }
    }
}

/// Per-connection information tonic puts into every request's extensions.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: SocketAddr,
    pub state: Arc<ConnectionState>,
}

/// An accepted, TLS-established connection with its deadlines: it must
/// deliver the HTTP/2 preface before `preface_deadline`, and it is closed
/// once it has had no call in flight for `idle_timeout`.
pub struct Connection<S> {
    inner: S,
    info: ConnectionInfo,
    bytes_read: u64,
    preface_timer: Option<Pin<Box<Sleep>>>,
    idle_timeout: Duration,
    idle_timer: Pin<Box<Sleep>>,
    /// Armed while reads are paused (`ConnectionState::pause_reads`).
    pause_timer: Option<Pin<Box<Sleep>>>,
    _slot: ConnectionSlot,
}

impl<S> Connection<S> {
    pub fn new(
        inner: S,
        peer: SocketAddr,
        slot: ConnectionSlot,
        preface_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            info: ConnectionInfo {
                peer,
                state: Arc::new(ConnectionState::new()),
            },
            bytes_read: 0,
            preface_timer: Some(Box::pin(tokio::time::sleep(preface_timeout))),
            idle_timeout,
            idle_timer: Box::pin(tokio::time::sleep(idle_timeout)),
            pause_timer: None,
            _slot: slot,
        }
    }

    /// Whether a deadline has passed; otherwise the timers are armed to
    /// wake this task when one might.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        if let Some(timer) = self.preface_timer.as_mut() {
            if self.bytes_read >= PREFACE_LEN {
                self.preface_timer = None;
            } else if timer.as_mut().poll(cx).is_ready() {
                return Some("no HTTP/2 preface within the handshake timeout");
            }
        }
        loop {
            let deadline = self
                .info
                .state
                .idle_deadline(self.idle_timeout)
                // Busy: look again one timeout from now.
                .unwrap_or_else(|| Instant::now() + self.idle_timeout);
            if deadline <= Instant::now() {
                return Some("idle timeout");
            }
            self.idle_timer.as_mut().reset(deadline);
            if self.idle_timer.as_mut().poll(cx).is_pending() {
                return None;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Connection<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(until) = this.info.state.reads_paused_until() {
            let timer = this
                .pause_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
            timer.as_mut().reset(until);
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.bytes_read += (buf.filled().len() - before) as u64;
                Poll::Ready(result)
            }
            Poll::Pending => match this.expired(cx) {
                Some(reason) => {
                    tracing::debug!(peer = %this.info.peer, reason, "closing connection");
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, reason)))
                }
                None => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Connection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S> Connected for Connection<S> {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

/// Logs accept failures (EMFILE and friends) at most once per second, with
/// how many there were since the last line.
#[derive(Debug, Default)]
pub struct AcceptErrorLog {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl AcceptErrorLog {
    /// Records one failure; returns the count to log now, if a line is due.
    pub fn record(&mut self, now: std::time::Instant) -> Option<u64> {
        self.suppressed += 1;
        let due = self
            .last
            .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(1));
        if !due {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_caps_per_address_and_in_total() {
        let tracker = ConnectionTracker::new(2, 3);
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 1].into();
        let a1 = tracker.admit(a).expect("first");
        let _a2 = tracker.admit(a).expect("second");
        assert!(tracker.admit(a).is_none(), "third from one address");
        let _b1 = tracker.admit(b).expect("other address");
        assert!(tracker.admit(b).is_none(), "total cap");
        drop(a1);
        assert_eq!(tracker.open(), 2);
        assert!(tracker.admit(a).is_some(), "slot given back");
    }

    #[test]
    fn call_slots_cap_and_start_the_idle_clock() {
        let state = Arc::new(ConnectionState::new());
        let one = state.begin_call(2).expect("one");
        let two = state.begin_call(2).expect("two");
        assert!(state.begin_call(2).is_none());
        assert!(state.idle_deadline(Duration::from_secs(1)).is_none());
        drop(one);
        assert!(state.idle_deadline(Duration::from_secs(1)).is_none());
        drop(two);
        assert!(state.idle_deadline(Duration::from_secs(1)).is_some());
    }

    #[tokio::test]
    async fn paused_reads_wait_until_the_pause_ends() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tracker = ConnectionTracker::new(1, 1);
        let slot = tracker.admit(IpAddr::from([127, 0, 0, 1])).expect("slot");
        let (client, server) = tokio::io::duplex(64);
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let long = Duration::from_secs(60);
        let mut conn = Connection::new(server, peer, slot, long, long);
        let state = conn.connect_info().state;
        let mut client = client;
        let mut byte = [0u8; 1];

        client.write_all(b"a").await.expect("write");
        conn.read_exact(&mut byte).await.expect("read");

        let pause = Duration::from_millis(200);
        let started = Instant::now();
        state.pause_reads(pause);
        // A shorter pause does not cut a longer one short.
        state.pause_reads(Duration::from_millis(1));
        client.write_all(b"b").await.expect("write");
        conn.read_exact(&mut byte)
            .await
            .expect("read after the pause");
        assert_eq!(&byte, b"b");
        assert!(started.elapsed() >= pause, "{:?}", started.elapsed());

        // Unpaused, data is read at once.
        let started = Instant::now();
        client.write_all(b"c").await.expect("write");
        conn.read_exact(&mut byte).await.expect("read");
        assert!(started.elapsed() < pause, "{:?}", started.elapsed());
    }

    #[test]
    fn accept_errors_are_logged_once_a_second_with_a_count() {
        let mut log = AcceptErrorLog::default();
        let start = std::time::Instant::now();
        assert_eq!(log.record(start), Some(1));
        for i in 1..20 {
            assert_eq!(log.record(start + Duration::from_millis(50 * i)), None);
        }
        assert_eq!(log.record(start + Duration::from_millis(1000)), Some(20));
    }
}
