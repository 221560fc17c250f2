//! Logs through `tracing`: to the journal as structured fields under systemd
//! (detected through `JOURNAL_STREAM`), else to stderr as text or JSON lines
//! (`log_format`). Every line of a call carries its span's fields: service
//! and trace id.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// `RUST_LOG` wins over the configured `level`; a bad filter falls back to `info`.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let under_journal = stderr_is_journal();
    let journal = if under_journal {
        // Fields become journal fields, uppercased: SERVICE, TRACE_ID (from
        // the call's span), METHOD, STATUS, LATENCY_US. If the
        // journal socket cannot be opened, stderr still reaches the journal.
        tracing_journald::layer().ok().map(|layer| {
            layer
                .with_syslog_identifier(program_name())
                .with_field_prefix(None)
        })
    } else {
        None
    };
    let stderr = match (&journal, format) {
        (Some(_), _) => None,
        (None, LogFormat::Json) => Some(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .with_target(false)
                .boxed(),
        ),
        (None, LogFormat::Text) => {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
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
        .with(journal)
        .with(stderr)
        .try_init();
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
