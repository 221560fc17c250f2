//! argon2id hashing on a fixed set of dedicated threads.
//!
//! Hashing is CPU- and memory-heavy (19 MiB per hash by default), so it
//! never runs on the async runtime: `max_concurrent_hashes` worker threads
//! take jobs from a queue, which bounds both the CPU a login burst can take
//! and the memory, because each worker allocates its argon2 memory once and
//! reuses it (allocating it per hash let the allocator keep hundreds of MiB).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use todoapp_runtime::ConfigError;
use tokio::sync::{mpsc, oneshot};

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

/// Hash length stored in the PHC string.
const OUTPUT_LEN: usize = 32;

enum Job {
    Hash {
        password: SecretString,
        reply: oneshot::Sender<Result<String, UserError>>,
    },
    Verify {
        phc: String,
        password: SecretString,
        reply: oneshot::Sender<Result<bool, UserError>>,
    },
}

#[derive(Clone)]
pub struct Hasher {
    jobs: mpsc::Sender<(Instant, Job)>,
    /// Verified against when the user does not exist, so both login
    /// failures cost one verification.
    dummy_hash: Arc<str>,
    stats: Arc<HashStats>,
}

/// Counters that make the hashing policy observable (and testable). The
/// workers count argon2 computations as they finish them, so a path that
/// skipped the computation (say, the dummy hash for an unknown user) shows.
#[derive(Debug, Default)]
pub struct HashStats {
    /// Stored (or dummy) hashes recomputed to check a password.
    pub verifications: AtomicUsize,
    /// New hashes computed (registrations).
    pub hashes: AtomicUsize,
    in_flight: AtomicUsize,
    pub peak_in_flight: AtomicUsize,
    /// Jobs submitted that no worker has started yet.
    pub queued: AtomicUsize,
}

/// One worker's reusable argon2 state.
struct Worker {
    params: Params,
    memory: Vec<Block>,
    stats: Arc<HashStats>,
}

impl Worker {
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.memory.len() < count {
            self.memory.resize(count, Block::new());
        }
        &mut self.memory[..count]
    }

    fn hash(&mut self, password: &str) -> Result<String, UserError> {
        let failed =
            |e: &dyn std::fmt::Display| UserError::Internal(format!("hashing failed: {e}"));
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt
            .as_salt()
            .decode_b64(&mut salt_bytes)
            .map_err(|e| failed(&e))?;
        let params = self.params.clone();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut out = [0u8; OUTPUT_LEN];
        argon2
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt_bytes,
                &mut out,
                self.blocks(params.block_count()),
            )
            .map_err(|e| failed(&e))?;
        self.stats.hashes.fetch_add(1, Ordering::SeqCst);
        let phc = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
        };
        Ok(phc.to_string())
    }

    /// Recomputes the hash with the stored parameters and salt and compares
    /// in constant time (`Output`'s equality).
    fn verify(&mut self, phc: &str, password: &str) -> Result<bool, UserError> {
        let unreadable =
            |e: &dyn std::fmt::Display| UserError::Internal(format!("stored hash unreadable: {e}"));
        let parsed = PasswordHash::new(phc).map_err(|e| unreadable(&e))?;
        let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|e| unreadable(&e))?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).map_err(|e| unreadable(&e))?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).map_err(|e| unreadable(&e))?;
        let expected = parsed.hash.ok_or_else(|| unreadable(&"no hash"))?;
        let salt = parsed.salt.ok_or_else(|| unreadable(&"no salt"))?;
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt
            .decode_b64(&mut salt_bytes)
            .map_err(|e| unreadable(&e))?;
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let mut out = vec![0u8; expected.len()];
        argon2
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt_bytes,
                &mut out,
                self.blocks(params.block_count()),
            )
            .map_err(|e| unreadable(&e))?;
        self.stats.verifications.fetch_add(1, Ordering::SeqCst);
        let computed = Output::new(&out).map_err(|e| unreadable(&e))?;
        Ok(computed == expected)
    }

    fn run(&mut self, job: Job) {
        let now = self.stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.stats.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        match job {
            Job::Hash { password, reply } => {
                let _ = reply.send(self.hash(password.expose_secret()));
            }
            Job::Verify {
                phc,
                password,
                reply,
            } => {
                let _ = reply.send(self.verify(&phc, password.expose_secret()));
            }
        }
        self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Hashing yields the CPU to every other thread on the machine (nice 10),
/// so a login burst slows logins, not the other calls. Where a sandbox
/// forbids it (`SystemCallFilter=~@resources`), hashing runs at normal
/// priority, still bounded in concurrency.
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10)
    };
    if rc != 0 {
        tracing::debug!("could not lower the hashing threads' priority");
    }
}

impl Hasher {
    pub fn new(settings: &Argon2Settings) -> Result<Self, ConfigError> {
        let params = params(settings)?;
        let workers = match settings.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let stats = Arc::<HashStats>::default();
        // The dummy hash is set-up, not a registration: not counted.
        let mut dummy = Worker {
            params: params.clone(),
            memory: Vec::new(),
            stats: Arc::default(),
        };
        let dummy_hash = dummy
            .hash("timing-equaliser")
            .map_err(|e| ConfigError::invalid("argon2", format!("{e:?}")))?;

        let queue_wait = todoapp_runtime::metrics::seconds_histogram(
            "todoapp_argon2_queue_wait_seconds",
            "Time a password hash or verification waited for a hashing worker",
        );
        for (name, help, read) in [
            (
                "todoapp_argon2_queue_depth",
                "Password hashes and verifications waiting for a hashing worker",
                (|stats: &HashStats| &stats.queued) as fn(&HashStats) -> &AtomicUsize,
            ),
            (
                "todoapp_argon2_in_flight",
                "Password hashes and verifications being computed",
                |stats: &HashStats| &stats.in_flight,
            ),
        ] {
            let stats = Arc::downgrade(&stats);
            todoapp_runtime::metrics::sampled_gauge(name, help, move || {
                stats
                    .upgrade()
                    .map_or(0, |stats| read(&stats).load(Ordering::Relaxed) as i64)
            });
        }
        // Bounded: callers wait for room instead of queueing without limit.
        let (jobs, queue) = mpsc::channel::<(Instant, Job)>(1024);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..workers {
            let queue = queue.clone();
            let mut worker = Worker {
                params: params.clone(),
                memory: Vec::new(),
                stats: stats.clone(),
            };
            let queue_wait = queue_wait.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // Only the waiting worker holds the lock; it is released
                        // as soon as a job arrives. All senders gone: exit.
                        let job = match queue.lock() {
                            Ok(mut queue) => queue.blocking_recv(),
                            Err(_) => None,
                        };
                        match job {
                            Some((queued_at, job)) => {
                                worker.stats.queued.fetch_sub(1, Ordering::Relaxed);
                                queue_wait.observe(queued_at.elapsed().as_secs_f64());
                                worker.run(job)
                            }
                            None => break,
                        }
                    }
                })
                .map_err(|e| ConfigError::invalid("argon2.max_concurrent_hashes", e.to_string()))?;
        }
        Ok(Self {
            jobs,
            dummy_hash: dummy_hash.into(),
            stats,
        })
    }

    /// A PHC string (`$argon2id$v=19$m=...`) for `password`.
    pub async fn hash(&self, password: &SecretString) -> Result<String, UserError> {
        let (reply, answer) = oneshot::channel();
        self.submit(
            Job::Hash {
                // The worker thread needs its own copy; it is zeroed on drop too.
                password: password.clone(),
                reply,
            },
            answer,
        )
        .await
    }

    /// Verifies `password` against `stored`, or against a dummy hash when
    /// there is no stored hash; false in that case whatever the password.
    pub async fn verify(
        &self,
        stored: Option<String>,
        password: &SecretString,
    ) -> Result<bool, UserError> {
        let exists = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let (reply, answer) = oneshot::channel();
        let matches = self
            .submit(
                Job::Verify {
                    phc,
                    password: password.clone(),
                    reply,
                },
                answer,
            )
            .await?;
        Ok(exists && matches)
    }

    async fn submit<T>(
        &self,
        job: Job,
        answer: oneshot::Receiver<Result<T, UserError>>,
    ) -> Result<T, UserError> {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send((Instant::now(), job)).await.is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(UserError::Internal("hashing workers gone".into()));
        }
        answer
            .await
            .map_err(|_| UserError::Internal("hashing worker dropped a job".into()))?
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
        let phc = hasher.hash(&"correct horse".into()).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        assert!(hasher
            .verify(Some(phc.clone()), &"correct horse".into())
            .await
            .expect("verify"));
        assert!(!hasher
            .verify(Some(phc), &"correct horsf".into())
            .await
            .expect("verify"));
        assert!(!hasher
            .verify(None, &"timing-equaliser".into())
            .await
            .expect("verify"));
    }

    /// Peak argon2 computations in flight when 12 hashes are asked for at
    /// once from 4 runtime threads.
    async fn peak_in_flight(max_concurrent_hashes: usize) -> usize {
        // Slow enough (several ms each) that any two workers overlap.
        let settings = Argon2Settings {
            memory_kib: 8 * 1024,
            iterations: 2,
            max_concurrent_hashes,
            ..cheap()
        };
        let hasher = Hasher::new(&settings).expect("hasher");
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash(&format!("password{i}").into()).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("join").expect("hash");
        }
        assert_eq!(hasher.stats().hashes.load(Ordering::SeqCst), 12);
        hasher.stats().peak_in_flight.load(Ordering::SeqCst)
    }

    // The bound is set below the machine's parallelism (the default
    // worker count) and below the callers' 4 threads, so ignoring the
    // setting, or hashing on the callers' threads, would show as a peak
    // above it; a bound of 3 shows the workers really run side by side.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_hashes_are_bounded() {
        assert_eq!(peak_in_flight(1).await, 1);
        assert_eq!(peak_in_flight(3).await, 3);
    }

    #[tokio::test]
    async fn reads_hashes_made_by_the_reference_implementation() {
        use argon2::password_hash::PasswordHasher as _;
        let settings = cheap();
        let reference = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            params(&settings).expect("params"),
        );
        let salt = SaltString::generate(&mut OsRng);
        let phc = reference
            .hash_password(b"interop password", &salt)
            .expect("hash")
            .to_string();
        let hasher = Hasher::new(&settings).expect("hasher");
        assert!(hasher
            .verify(Some(phc.clone()), &"interop password".into())
            .await
            .expect("verify"));
        assert!(!hasher
            .verify(Some(phc), &"interop passworD".into())
            .await
            .expect("verify"));
        // And the reference implementation reads ours.
        use argon2::password_hash::PasswordVerifier as _;
        let ours = hasher.hash(&"made here".into()).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(reference.verify_password(b"made here", &parsed).is_ok());
    }

    #[test]
    fn owasp_defaults() {
        let settings = crate::config::UserConfig::default().argon2;
        let p = params(&settings).expect("params");
        assert_eq!((p.m_cost(), p.t_cost(), p.p_cost()), (19456, 2, 1));
    }
}
