//! W3C trace context (`traceparent`): one trace id for a call across the
//! gateway and the backend it calls. The gRPC edge layer takes the trace id
//! from the incoming `traceparent` or starts a trace, and keeps the call's
//! context in a task-local while the call runs, so that the upstream client
//! layer can pass it on.

use std::fmt;

pub const TRACEPARENT: &str = "traceparent";

/// A `traceparent`: version 00, trace id, parent (span) id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub flags: u8,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

impl TraceContext {
    /// A new trace with a new root span.
    pub fn start() -> Self {
        Self {
            trace_id: nonzero_random_u128(),
            span_id: nonzero_random_u128() as u64 | 1,
            flags: 0,
        }
    }

    /// This hop's context in the trace `parent` belongs to: same trace id
    /// and flags, a new span id.
    pub fn child_of(parent: &TraceContext) -> Self {
        Self {
            trace_id: parent.trace_id,
            span_id: nonzero_random_u128() as u64 | 1,
            flags: parent.flags,
        }
    }

    /// Parses a `traceparent` value. Anything that is not a valid version 00
    /// value (or a later version's first four fields) yields `None`, and the
    /// caller starts a new trace instead.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let value = std::str::from_utf8(value).ok()?;
        let mut fields = value.split('-');
        let version = fields.next()?;
        let trace_id = fields.next()?;
        let span_id = fields.next()?;
        let flags = fields.next()?;
        let rest = fields.next();
        let lower_hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !lower_hex(version, 2) || version == "ff" {
            return None;
        }
        // Version 00 has exactly four fields; later versions may add more.
        if version == "00" && rest.is_some() {
            return None;
        }
        if !lower_hex(trace_id, 32) || !lower_hex(span_id, 16) || !lower_hex(flags, 2) {
            return None;
        }
        let context = Self {
            trace_id: u128::from_str_radix(trace_id, 16).ok()?,
            span_id: u64::from_str_radix(span_id, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        // All-zero ids are invalid per the spec.
        (context.trace_id != 0 && context.span_id != 0).then_some(context)
    }

    /// The trace id as 32 lowercase hex digits, as logged.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The context of the call running on this task, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|context| *context).ok()
    }

    /// Runs `future` with `self` as the current context.
    pub fn scope<F: std::future::Future>(
        self,
        future: F,
    ) -> tokio::task::futures::TaskLocalFuture<Self, F> {
        CURRENT.scope(self, future)
    }

    /// Runs `f` synchronously with `self` as the current context.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, f)
    }
}

/// The `traceparent` header value.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// Random ids from a per-thread generator seeded from the OS: ids must be
/// unique, not secret, and a system call per call would cost throughput.
fn nonzero_random_u128() -> u128 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    fn seed() -> u64 {
        let mut bytes = [0u8; 8];
        // SAFETY: getrandom writes at most `len` bytes into the buffer.
        let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        let seed = u64::from_ne_bytes(bytes);
        if filled == 8 && seed != 0 {
            seed
        } else {
            // No entropy source: time and thread make ids unique enough.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            nanos ^ (&bytes as *const _ as u64) | 1
        }
    }
    // splitmix64: full period, well-distributed output.
    let next = || {
        STATE.with(|state| {
            let mut z = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            state.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    };
    let value = (u128::from(next()) << 64) | u128::from(next());
    value.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_children_keep_the_trace_id() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceContext::parse(value.as_bytes()).expect("valid");
        assert_eq!(parsed.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parsed.span_id, 0x00f067aa0ba902b7);
        assert_eq!(parsed.flags, 1);
        assert_eq!(parsed.to_string(), value);
        let child = TraceContext::child_of(&parsed);
        assert_eq!(child.trace_id, parsed.trace_id);
        assert_eq!(child.flags, 1);
        assert_ne!(child.span_id, parsed.span_id);
        assert_eq!(child.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert_eq!(TraceContext::parse(bad.as_bytes()), None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(TraceContext::parse(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more"
        )
        .is_some());
    }

    #[test]
    fn new_traces_are_valid_and_distinct() {
        let a = TraceContext::start();
        let b = TraceContext::start();
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(TraceContext::parse(a.to_string().as_bytes()), Some(a));
    }

    #[tokio::test]
    async fn the_current_context_is_scoped_to_the_call() {
        assert_eq!(TraceContext::current(), None);
        let context = TraceContext::start();
        let seen = context.scope(async { TraceContext::current() }).await;
        assert_eq!(seen, Some(context));
        assert_eq!(TraceContext::current(), None);
    }
}
