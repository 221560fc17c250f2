//! argon2id hashing, off the async runtime and bounded in concurrency.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use todoapp_runtime::ConfigError;
use tokio::sync::Semaphore;

use crate::config::Argon2Settings;
use crate::error::UserError;

pub fn params(settings: &Argon2Settings) -> Result<Params, ConfigError> {
    Params::new(
        settings.memory_kib,
        settings.iterations,
        settings.parallelism,
        None,
    )
    .map_err(|e| ConfigError::invalid("argon2", e.to_string()))
}

#[derive(Clone)]
pub struct Hasher {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// Verified against when the user does not exist, so both login
    /// failures cost one verification.
    dummy_hash: Arc<str>,
    stats: Arc<HashStats>,
}

/// Counters that make the hashing policy observable (and testable).
#[derive(Debug, Default)]
pub struct HashStats {
    pub verifications: AtomicUsize,
    in_flight: AtomicUsize,
    pub peak_in_flight: AtomicUsize,
}

impl Hasher {
    pub fn new(settings: &Argon2Settings) -> Result<Self, ConfigError> {
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params(settings)?);
        let permits = match settings.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let salt = SaltString::generate(&mut OsRng);
        let dummy_hash = argon2
            .hash_password(b"timing-equaliser", &salt)
            .map_err(|e| ConfigError::invalid("argon2", e.to_string()))?
            .to_string();
        Ok(Self {
            argon2,
            permits: Arc::new(Semaphore::new(permits)),
            dummy_hash: dummy_hash.into(),
            stats: Arc::default(),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=...`) for `password`.
    pub async fn hash(&self, password: String) -> Result<String, UserError> {
        let argon2 = self.argon2.clone();
        self.run_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| UserError::Internal(format!("hashing failed: {e}")))
        })
        .await
    }

    /// Verifies `password` against `stored`, or against a dummy hash when
    /// there is no stored hash; false in that case whatever the password.
    pub async fn verify(
        &self,
        stored: Option<String>,
        password: String,
    ) -> Result<bool, UserError> {
        let argon2 = self.argon2.clone();
        let exists = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        self.stats.verifications.fetch_add(1, Ordering::Relaxed);
        self.run_blocking(move || {
            let parsed = PasswordHash::new(&phc)
                .map_err(|e| UserError::Internal(format!("stored hash unreadable: {e}")))?;
            let matches = argon2.verify_password(password.as_bytes(), &parsed).is_ok();
            Ok(exists && matches)
        })
        .await
    }

    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, UserError> + Send + 'static,
    ) -> Result<T, UserError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| UserError::Internal("hasher closed".into()))?;
        let stats = self.stats.clone();
        tokio::task::spawn_blocking(move || {
            let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            stats.peak_in_flight.fetch_max(now, Ordering::SeqCst);
            let result = work();
            stats.in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        })
        .await
        .map_err(|e| UserError::Internal(format!("hashing task failed: {e}")))?
    }

    pub fn stats(&self) -> &HashStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Settings {
        Argon2Settings {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
            max_concurrent_hashes: 1,
        }
    }

    #[tokio::test]
    async fn hashes_are_argon2id_phc_and_verify() {
        let hasher = Hasher::new(&cheap()).expect("hasher");
        let phc = hasher.hash("correct horse".into()).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        assert!(hasher
            .verify(Some(phc.clone()), "correct horse".into())
            .await
            .expect("verify"));
        assert!(!hasher
            .verify(Some(phc), "correct horsf".into())
            .await
            .expect("verify"));
        assert!(!hasher
            .verify(None, "timing-equaliser".into())
            .await
            .expect("verify"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_hashes_are_bounded() {
        let settings = Argon2Settings {
            max_concurrent_hashes: 2,
            ..cheap()
        };
        let hasher = Hasher::new(&settings).expect("hasher");
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash(format!("password{i}")).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("join").expect("hash");
        }
        let peak = hasher.stats().peak_in_flight.load(Ordering::SeqCst);
        assert!((1..=2).contains(&peak), "peak {peak}");
    }

    #[test]
    fn owasp_defaults() {
        let settings = crate::config::UserConfig::default().argon2;
        let p = params(&settings).expect("params");
        assert_eq!((p.m_cost(), p.t_cost(), p.p_cost()), (19456, 2, 1));
    }
}
