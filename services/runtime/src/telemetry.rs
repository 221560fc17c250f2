//! Logs through `tracing`: to the journal as structured fields under systemd
//! (detected through `JOURNAL_STREAM`), else to stderr as text or JSON lines
//! (`log_format`). Every line of a call carries its span's fields: service
//! and trace id.

use std::io::IsTerminal;
use std::sync::OnceLock;

use prometheus_client::metrics::histogram::Histogram;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{filter_fn, FilterFn};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// sqlx's target for its per-acquire events; `todoapp-db` turns them on at
/// TRACE so that [`PoolAcquireWait`] can measure the pool's wait.
const POOL_ACQUIRE_TARGET: &str = "sqlx::pool::acquire";

/// Bytes of log lines the writer thread gathers into one write at most.
const LOG_WRITE_BUFFER: usize = 64 * 1024;
/// Lines queued for the writer thread before a logging thread waits. The
/// queue's slots are allocated and touched up front (tracing-appender's
/// default of 128 000 added 4 MiB to every idle service); this many is
/// a quarter of a second of lines at the fastest call rates measured.
const LOG_QUEUE_LINES: usize = 8192;

/// Keeps the log writer thread; dropping it writes out every line logged
/// before (waiting a second at most). Hold it until the process exits.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// `RUST_LOG` wins over the configured `level`; a bad filter falls back to `info`.
///
/// Lines for stderr are handed to a writer thread rather than written by
/// the thread that logs: every call logs a line, and a write to stderr per
/// line cost the services a fifth of their CPU per call (BENCHMARKS, issue
/// 16). The thread writes whatever has queued up in one write, so under
/// load many lines share a system call, and with nothing queued a line is
/// written at once. It never drops a line: when its queue is full, the
/// logging thread waits, as it did on the write before.
pub fn init(level: &str, format: LogFormat) -> LogGuard {
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Let sqlx's per-acquire events through to the metric whatever the log
    // level; the outputs below drop them again.
    if let Ok(directive) = format!("{POOL_ACQUIRE_TARGET}=trace").parse() {
        filter = filter.add_directive(directive);
    }
    let under_journal = stderr_is_journal();
    let journal = if under_journal {
        // Fields become journal fields, uppercased: SERVICE, TRACE_ID (from
        // the call's span), METHOD, STATUS, LATENCY_US. If the
        // journal socket cannot be opened, stderr still reaches the journal.
        tracing_journald::layer().ok().map(|layer| {
            layer
                .with_syslog_identifier(program_name())
                .with_field_prefix(None)
                .with_filter(not_acquire_timings())
        })
    } else {
        None
    };
    let (writer, guard) = if journal.is_some() {
        (None, None)
    } else {
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .buffered_lines_limit(LOG_QUEUE_LINES)
            .thread_name("log-writer")
            .finish(std::io::BufWriter::with_capacity(
                LOG_WRITE_BUFFER,
                std::io::stderr(),
            ));
        (Some(writer), Some(guard))
    };
    let stderr = match (writer, format) {
        (None, _) => None,
        (Some(writer), LogFormat::Json) => Some(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(writer)
                .with_target(false)
                .boxed(),
        ),
        (Some(writer), LogFormat::Text) => {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false);
            // The journal stamps every line itself.
            Some(if under_journal {
                layer.without_time().boxed()
            } else {
                layer.boxed()
            })
        }
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(PoolAcquireWait::default())
        .with(journal)
        .with(stderr.map(|layer| layer.with_filter(not_acquire_timings())))
        .try_init();
    LogGuard { _writer: guard }
}

/// Drops sqlx's routine acquire timings from the log outputs; its warning
/// about a slow acquire still gets through.
fn not_acquire_timings() -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    filter_fn(|meta| !(meta.target() == POOL_ACQUIRE_TARGET && *meta.level() == Level::TRACE))
}

/// The histogram of how long database calls waited for a pool connection,
/// registered by each service that has a pool (so the gateway shows none).
pub fn register_pool_acquire_wait() -> Histogram {
    crate::metrics::seconds_histogram(
        "todoapp_db_pool_acquire_wait_seconds",
        "Time a database call waited to get a connection from the pool",
    )
}

/// Records sqlx's per-acquire event (the time `Pool::acquire` took, which
/// sqlx exposes no other way) into `todoapp_db_pool_acquire_wait_seconds`.
#[derive(Default)]
struct PoolAcquireWait {
    histogram: OnceLock<Histogram>,
}

impl<S: Subscriber> Layer<S> for PoolAcquireWait {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != POOL_ACQUIRE_TARGET {
            return;
        }
        let mut waited = AcquiredAfter(None);
        event.record(&mut waited);
        if let Some(seconds) = waited.0 {
            self.histogram
                .get_or_init(register_pool_acquire_wait)
                .observe(seconds);
        }
    }
}

struct AcquiredAfter(Option<f64>);

impl Visit for AcquiredAfter {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // sqlx 0.8 spells the field so.
        if field.name() == "aquired_after_secs" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

/// Whether stderr is the journal's stream: `JOURNAL_STREAM` names its
/// device and inode (`DEV:INO`); a child whose stderr was redirected
/// elsewhere inherits the variable but not the stream.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes into the buffer we own; fd 2 is not retained.
    if unsafe { libc::fstat(2, stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat succeeded, so the struct is initialised.
    let stat = unsafe { stat.assume_init() };
    // st_dev and st_ino are not u64 on every platform.
    #[allow(clippy::unnecessary_cast)]
    let (st_dev, st_ino) = (stat.st_dev as u64, stat.st_ino as u64);
    dev.parse::<u64>().is_ok_and(|dev| dev == st_dev)
        && ino.parse::<u64>().is_ok_and(|ino| ino == st_ino)
}

fn program_name() -> String {
    std::env::args()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "todoapp".to_owned())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    fn acquire_wait_count() -> f64 {
        crate::metrics::encode()
            .lines()
            .find_map(|line| line.strip_prefix("todoapp_db_pool_acquire_wait_seconds_count "))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }

    #[test]
    fn sqlx_acquire_events_feed_the_wait_histogram_only() {
        let subscriber = tracing_subscriber::registry().with(PoolAcquireWait::default());
        let before = acquire_wait_count();
        tracing::subscriber::with_default(subscriber, || {
            tracing::event!(target: "sqlx::pool::acquire", Level::TRACE, aquired_after_secs = 0.25, "acquired connection");
            tracing::event!(target: "sqlx::pool::acquire", Level::WARN, aquired_after_secs = 2.5, slow_acquire_threshold_secs = 2.0, "slow");
            tracing::event!(target: "sqlx::query", Level::TRACE, elapsed_secs = 1.0, "query");
        });
        assert_eq!(acquire_wait_count() - before, 2.0);
        assert!(crate::metrics::encode().contains("todoapp_db_pool_acquire_wait_seconds_bucket"));
    }

    #[test]
    fn the_log_outputs_drop_routine_acquire_timings_only() {
        #[derive(Clone, Default)]
        struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let output = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_filter(not_acquire_timings());
        let subscriber = tracing_subscriber::registry().with(output);
        tracing::subscriber::with_default(subscriber, || {
            tracing::event!(target: "sqlx::pool::acquire", Level::TRACE, aquired_after_secs = 0.25, "routine acquire");
            tracing::event!(target: "sqlx::pool::acquire", Level::WARN, aquired_after_secs = 2.5, "slow acquire");
            tracing::event!(target: "todoapp", Level::TRACE, "other trace line");
        });
        let text = String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|e| e.into_inner()))
            .into_owned();
        assert!(!text.contains("routine acquire"), "{text}");
        assert!(text.contains("slow acquire"), "{text}");
        assert!(text.contains("other trace line"), "{text}");
    }

    #[test]
    fn the_journal_is_detected_only_when_stderr_is_its_stream() {
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes into the buffer we own.
        assert_eq!(
            unsafe { libc::fstat(std::io::stderr().as_raw_fd(), stat.as_mut_ptr()) },
            0
        );
        // SAFETY: fstat succeeded.
        let stat = unsafe { stat.assume_init() };
        // Only this test reads or writes JOURNAL_STREAM in this process.
        std::env::set_var("JOURNAL_STREAM", format!("{}:{}", stat.st_dev, stat.st_ino));
        assert!(stderr_is_journal());
        std::env::set_var(
            "JOURNAL_STREAM",
            format!("{}:{}", stat.st_dev, stat.st_ino + 1),
        );
        assert!(
            !stderr_is_journal(),
            "another stream: a child whose stderr was redirected"
        );
        std::env::set_var("JOURNAL_STREAM", "garbage");
        assert!(!stderr_is_journal());
        std::env::remove_var("JOURNAL_STREAM");
        assert!(!stderr_is_journal());
    }
}
