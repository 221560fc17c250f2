//! Retrying a transaction the database refused because of another one.
//!
//! On one MariaDB that is a deadlock victim; on Galera also every
//! transaction that loses certification against a concurrent write to the
//! same rows through another node (both MariaDB error 1213). Nothing of the
//! refused transaction was written, so running it again is safe.

use std::future::Future;
use std::time::Duration;

use crate::StoreError;

/// Attempts per transaction, the first included.
pub const RETRY_ATTEMPTS: u32 = 5;

/// The first backoff; it doubles per attempt (2, 4, 8, 16 ms), plus jitter
/// up to as much again so that the contenders do not meet again.
const FIRST_BACKOFF: Duration = Duration::from_millis(2);

/// An error that may say "refused because of a concurrent transaction".
pub trait Contended {
    fn is_contention(&self) -> bool;
}

impl Contended for StoreError {
    fn is_contention(&self) -> bool {
        StoreError::is_contention(self)
    }
}

/// Runs `transaction` until it is not refused for contention, at most
/// [`RETRY_ATTEMPTS`] times, backing off between attempts. Every attempt must
/// be a whole transaction (a dropped sqlx transaction rolls back).
pub async fn retry_contended<T, E, F, Fut>(mut transaction: F) -> Result<T, E>
where
    E: Contended,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match transaction().await {
            Err(e) if e.is_contention() && attempt < RETRY_ATTEMPTS => {
                tracing::debug!(attempt, "transaction refused for contention; retrying");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = FIRST_BACKOFF * 2u32.pow(attempt - 1);
    // Jitter from the clock's low bits: good enough to desynchronise.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, PartialEq)]
    enum Fake {
        Contended,
        Other,
    }

    impl Contended for Fake {
        fn is_contention(&self) -> bool {
            *self == Fake::Contended
        }
    }

    #[tokio::test]
    async fn retries_contention_a_bounded_number_of_times_and_nothing_else() {
        let calls = AtomicU32::new(0);
        let always: Result<(), Fake> = retry_contended(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(Fake::Contended)
        })
        .await;
        assert_eq!(always, Err(Fake::Contended));
        assert_eq!(calls.load(Ordering::Relaxed), RETRY_ATTEMPTS);

        calls.store(0, Ordering::Relaxed);
        let other: Result<(), Fake> = retry_contended(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(Fake::Other)
        })
        .await;
        assert_eq!(other, Err(Fake::Other));
        assert_eq!(
            calls.load(Ordering::Relaxed),
            1,
            "other errors are not retried"
        );

        calls.store(0, Ordering::Relaxed);
        let third = retry_contended(|| async {
            match calls.fetch_add(1, Ordering::Relaxed) {
                0 | 1 => Err(Fake::Contended),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(third, Ok(2), "succeeds on the third attempt");
    }

    #[test]
    fn backoff_doubles_with_jitter_below_twice_the_base() {
        for attempt in 1..RETRY_ATTEMPTS {
            let base = FIRST_BACKOFF * 2u32.pow(attempt - 1);
            let waited = backoff(attempt);
            assert!(waited >= base && waited < base * 2, "{attempt}: {waited:?}");
        }
    }
}
