//! Fair share between users: a token bucket per verified user id (separate
//! budgets for reads and writes) and a cap on each user's calls in flight,
//! so one busy or hostile account cannot take the backends from the rest.
//!
//! Memory is bounded: a user's state is dropped once it is indistinguishable
//! from a fresh one (buckets refilled, nothing in flight), and at most
//! `max_tracked_users` users are tracked at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use todoapp_runtime::ConfigError;

/// The `[fair_share]` section of the gateway's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FairShareSettings {
    /// GetToDo and ListToDo calls per second and user, sustained.
    pub reads_per_sec: u32,
    /// Reads a user may make at once after being idle.
    pub read_burst: u32,
    /// CreateToDo, UpdateToDo and DeleteToDo calls per second and user.
    pub writes_per_sec: u32,
    pub write_burst: u32,
    /// A user's calls being forwarded at once; more fail fast.
    pub max_in_flight_per_user: u32,
    /// Users whose state is kept at once (about 100 bytes each).
    pub max_tracked_users: u32,
    /// After refusing a call for its user's rate or in-flight cap, read
    /// nothing more from that connection for the retry delay, at most this
    /// long (0: never pause). A client that retries at once instead of
    /// waiting then costs the gateway one refusal per pause rather than
    /// all the CPU it can make the gateway spend on refusals.
    pub refused_read_pause_ms: u32,
}

impl Default for FairShareSettings {
    fn default() -> Self {
        Self {
            reads_per_sec: 50,
            read_burst: 100,
            writes_per_sec: 50,
            write_burst: 100,
            max_in_flight_per_user: 16,
            max_tracked_users: 100_000,
            refused_read_pause_ms: 100,
        }
    }
}

impl FairShareSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("fair_share.reads_per_sec", self.reads_per_sec),
            ("fair_share.read_burst", self.read_burst),
            ("fair_share.writes_per_sec", self.writes_per_sec),
            ("fair_share.write_burst", self.write_burst),
            (
                "fair_share.max_in_flight_per_user",
                self.max_in_flight_per_user,
            ),
            ("fair_share.max_tracked_users", self.max_tracked_users),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.refused_read_pause_ms > MAX_REFUSED_READ_PAUSE_MS {
            return Err(ConfigError::invalid(
                "fair_share.refused_read_pause_ms",
                format!("must be at most {MAX_REFUSED_READ_PAUSE_MS} (0 turns pauses off)"),
            ));
        }
        Ok(())
    }
}

/// Longer pauses would hold up a connection's keepalive answers and other
/// users' calls sharing it (a proxy's, say) for too long.
const MAX_REFUSED_READ_PAUSE_MS: u32 = 1000;

/// When to retry a call refused for the in-flight cap: about one call's time.
pub const IN_FLIGHT_RETRY: Duration = Duration::from_millis(50);

/// Which budget a call draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Read,
    Write,
}

/// Why a call was refused before reaching a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The user's bucket is empty; a token is back after `retry_after`.
    RateLimited {
        budget: Budget,
        retry_after: Duration,
    },
    /// The user already has `limit` calls in flight.
    TooManyInFlight { limit: u32 },
    /// `max_tracked_users` users are active at once; a slot frees up once
    /// one of them has been idle for `retry_after`.
    TooManyUsers { retry_after: Duration },
}

impl Refusal {
    const LABELS: [&'static str; 3] = [
        "fair_share_rate",
        "fair_share_in_flight",
        "fair_share_users",
    ];

    /// The `reason` label of `todoapp_calls_shed_total`.
    fn label(&self) -> &'static str {
        match self {
            Refusal::RateLimited { .. } => Self::LABELS[0],
            Refusal::TooManyInFlight { .. } => Self::LABELS[1],
            Refusal::TooManyUsers { .. } => Self::LABELS[2],
        }
    }
}

/// Held for the length of one forwarded call: counts it as in flight.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    per_sec: f64,
    burst: f64,
}

impl Bucket {
    fn full(per_sec: u32, burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            per_sec: f64::from(per_sec),
            burst: f64::from(burst),
        }
    }

    fn refill(&mut self, elapsed: Duration) {
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_sec).min(self.burst);
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self) -> Result<(), Duration> {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }
}

#[derive(Debug)]
struct UserState {
    reads: Bucket,
    writes: Bucket,
    in_flight: Arc<AtomicU32>,
    last_seen: Instant,
}

impl UserState {
    /// Nothing in flight and both buckets refilled by now: dropping this
    /// state loses nothing, a fresh one would be the same.
    fn is_idle(&self, now: Instant, refill_time: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && now.saturating_duration_since(self.last_seen) >= refill_time
    }
}

#[derive(Debug)]
struct Users {
    map: HashMap<String, UserState>,
    last_sweep: Instant,
}

#[derive(Debug)]
pub struct FairShare {
    settings: FairShareSettings,
    /// Time for an emptied bucket to refill: idle users older than this go.
    refill_time: Duration,
    users: Mutex<Users>,
}

/// Sweeps for idle users at most this often, however many new users come:
/// a sweep walks the whole map.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl FairShare {
    pub fn new(settings: FairShareSettings) -> Self {
        todoapp_runtime::metrics::declare_shed_reasons(&Refusal::LABELS);
        let refill = |burst: u32, per_sec: u32| f64::from(burst) / f64::from(per_sec.max(1));
        let refill_time = Duration::from_secs_f64(
            refill(settings.read_burst, settings.reads_per_sec)
                .max(refill(settings.write_burst, settings.writes_per_sec)),
        );
        Self {
            settings,
            refill_time,
            users: Mutex::new(Users {
                map: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// How long to stop reading from the connection a refused call came on.
    /// Too many active users is nobody's own doing: no pause for that.
    pub fn read_pause(&self, refusal: &Refusal) -> Duration {
        let cap = Duration::from_millis(u64::from(self.settings.refused_read_pause_ms));
        match refusal {
            Refusal::RateLimited { retry_after, .. } => (*retry_after).min(cap),
            Refusal::TooManyInFlight { .. } => IN_FLIGHT_RETRY.min(cap),
            Refusal::TooManyUsers { .. } => Duration::ZERO,
        }
    }

    /// Admits one call of `user` now, or says why not. The call counts as in
    /// flight until the returned guard is dropped.
    pub fn admit(&self, user: &str, budget: Budget) -> Result<InFlight, Refusal> {
        let admitted = self.admit_at(user, budget, Instant::now());
        if let Err(refusal) = &admitted {
            todoapp_runtime::metrics::count_shed(refusal.label());
        }
        admitted
    }

    fn admit_at(&self, user: &str, budget: Budget, now: Instant) -> Result<InFlight, Refusal> {
        // The map only holds plain counters, so a panic elsewhere while it
        // was locked cannot leave it inconsistent.
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if !users.map.contains_key(user) {
            self.make_room(&mut users, now)?;
        }
        let settings = &self.settings;
        let state = users
            .map
            .entry(user.to_owned())
            .or_insert_with(|| UserState {
                reads: Bucket::full(settings.reads_per_sec, settings.read_burst),
                writes: Bucket::full(settings.writes_per_sec, settings.write_burst),
                in_flight: Arc::default(),
                last_seen: now,
            });
        let elapsed = now.saturating_duration_since(state.last_seen);
        state.last_seen = now;
        state.reads.refill(elapsed);
        state.writes.refill(elapsed);
        // The in-flight cap first: a call refused for it costs no token, so
        // a client that retries it shortly is not also rate limited for it.
        let limit = settings.max_in_flight_per_user;
        if state.in_flight.load(Ordering::Acquire) >= limit {
            return Err(Refusal::TooManyInFlight { limit });
        }
        let bucket = match budget {
            Budget::Read => &mut state.reads,
            Budget::Write => &mut state.writes,
        };
        bucket.take().map_err(|retry_after| Refusal::RateLimited {
            budget,
            retry_after,
        })?;
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(InFlight(state.in_flight.clone()))
    }

    /// Makes room for one more user: drops idle users when the map is full
    /// (and now and then anyway, to give memory back), refuses when it is
    /// full of active ones.
    fn make_room(&self, users: &mut Users, now: Instant) -> Result<(), Refusal> {
        let full = users.map.len() >= self.settings.max_tracked_users as usize;
        let due = now.saturating_duration_since(users.last_sweep) >= SWEEP_INTERVAL;
        if due && (full || now.saturating_duration_since(users.last_sweep) >= self.refill_time) {
            let refill_time = self.refill_time;
            users
                .map
                .retain(|_, state| !state.is_idle(now, refill_time));
            users.last_sweep = now;
        }
        if users.map.len() >= self.settings.max_tracked_users as usize {
            return Err(Refusal::TooManyUsers {
                retry_after: self.refill_time.max(SWEEP_INTERVAL),
            });
        }
        Ok(())
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.users.lock().map(|u| u.map.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(per_sec: u32, burst: u32, in_flight: u32, users: u32) -> FairShareSettings {
        FairShareSettings {
            reads_per_sec: per_sec,
            read_burst: burst,
            writes_per_sec: per_sec,
            write_burst: burst,
            max_in_flight_per_user: in_flight,
            max_tracked_users: users,
            refused_read_pause_ms: 100,
        }
    }

    #[test]
    fn refused_connections_pause_for_the_retry_delay_capped() {
        let limits = FairShare::new(settings(10, 5, 3, 10));
        let rate = |ms| Refusal::RateLimited {
            budget: Budget::Read,
            retry_after: Duration::from_millis(ms),
        };
        assert_eq!(limits.read_pause(&rate(20)), Duration::from_millis(20));
        assert_eq!(limits.read_pause(&rate(5000)), Duration::from_millis(100));
        assert_eq!(
            limits.read_pause(&Refusal::TooManyInFlight { limit: 3 }),
            IN_FLIGHT_RETRY
        );
        // Others being active is not this client's doing.
        let busy = Refusal::TooManyUsers {
            retry_after: Duration::from_secs(1),
        };
        assert_eq!(limits.read_pause(&busy), Duration::ZERO);
        // 0 turns pauses off; over a second is refused.
        let off = FairShare::new(FairShareSettings {
            refused_read_pause_ms: 0,
            ..settings(10, 5, 3, 10)
        });
        assert_eq!(off.read_pause(&rate(20)), Duration::ZERO);
        let too_long = FairShareSettings {
            refused_read_pause_ms: 1001,
            ..settings(10, 5, 3, 10)
        };
        assert!(too_long.validate().is_err());
    }

    #[test]
    fn burst_then_sustained_rate_with_retry_delay() {
        let limits = FairShare::new(settings(10, 5, 100, 10));
        let start = Instant::now();
        for _ in 0..5 {
            drop(
                limits
                    .admit_at("ann", Budget::Read, start)
                    .expect("within burst"),
            );
        }
        match limits.admit_at("ann", Budget::Read, start) {
            Err(Refusal::RateLimited {
                budget: Budget::Read,
                retry_after,
            }) => assert_eq!(retry_after, Duration::from_millis(100)),
            other => panic!("expected a rate limit, got {other:?}"),
        }
        // 10 per second: one token back after 100 ms, not before.
        let later = start + Duration::from_millis(99);
        assert!(limits.admit_at("ann", Budget::Read, later).is_err());
        let later = start + Duration::from_millis(101);
        assert!(limits.admit_at("ann", Budget::Read, later).is_ok());
        assert!(limits.admit_at("ann", Budget::Read, later).is_err());
        // Writes and other users have budgets of their own.
        assert!(limits.admit_at("ann", Budget::Write, later).is_ok());
        assert!(limits.admit_at("bob", Budget::Read, later).is_ok());
        // Never more than the burst, however long the pause.
        let much_later = later + Duration::from_secs(3600);
        for _ in 0..5 {
            assert!(limits.admit_at("ann", Budget::Read, much_later).is_ok());
        }
        assert!(limits.admit_at("ann", Budget::Read, much_later).is_err());
    }

    #[test]
    fn in_flight_cap_fails_fast_and_frees_on_drop() {
        let limits = FairShare::new(settings(1000, 1000, 3, 10));
        let now = Instant::now();
        let held: Vec<InFlight> = (0..3)
            .map(|_| {
                limits
                    .admit_at("ann", Budget::Read, now)
                    .expect("under cap")
            })
            .collect();
        assert_eq!(
            limits
                .admit_at("ann", Budget::Write, now)
                .expect_err("at cap"),
            Refusal::TooManyInFlight { limit: 3 }
        );
        // Another user is not affected.
        assert!(limits.admit_at("bob", Budget::Read, now).is_ok());
        drop(held);
        let again: Vec<InFlight> = (0..3)
            .map(|_| limits.admit_at("ann", Budget::Read, now).expect("freed"))
            .collect();
        assert_eq!(again.len(), 3);
    }

    #[test]
    fn tracked_users_are_bounded_and_idle_ones_evicted() {
        // Refill time 2 s (burst 10 at 5/s).
        let limits = FairShare::new(settings(5, 10, 4, 3));
        let start = Instant::now();
        let _held = limits.admit_at("u0", Budget::Read, start).expect("u0");
        for user in ["u1", "u2"] {
            drop(limits.admit_at(user, Budget::Read, start).expect("room"));
        }
        assert_eq!(limits.tracked(), 3);
        // Full of users active just now: a fourth is refused, nothing grows.
        assert!(matches!(
            limits.admit_at("u3", Budget::Read, start + Duration::from_millis(1500)),
            Err(Refusal::TooManyUsers { .. })
        ));
        assert_eq!(limits.tracked(), 3);
        // Once u1 and u2 have refilled they are dropped; u0 still has a call
        // in flight and stays, so its count survives.
        let later = start + Duration::from_secs(3);
        for user in ["u3", "u4"] {
            drop(
                limits
                    .admit_at(user, Budget::Read, later)
                    .expect("room after idle"),
            );
        }
        assert_eq!(limits.tracked(), 3);
        for _ in 0..3 {
            std::mem::forget(limits.admit_at("u0", Budget::Read, later).expect("u0"));
        }
        assert_eq!(
            limits
                .admit_at("u0", Budget::Read, later)
                .expect_err("cap kept"),
            Refusal::TooManyInFlight { limit: 4 }
        );
        // Many users over time never hold more than the bound.
        for i in 0..1000u64 {
            let now = later + Duration::from_secs(3 * (i + 1));
            drop(
                limits
                    .admit_at(&format!("many{i}"), Budget::Write, now)
                    .expect("room"),
            );
            assert!(limits.tracked() <= 3);
        }
    }

    #[test]
    fn settings_must_be_positive() {
        assert!(FairShareSettings::default().validate().is_ok());
        let zero = FairShareSettings {
            write_burst: 0,
            ..FairShareSettings::default()
        };
        let error = zero.validate().expect_err("zero burst").to_string();
        assert!(error.contains("fair_share.write_burst"), "{error}");
    }
}
