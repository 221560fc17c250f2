//! Login and registration throttling, in bounded memory.
//!
//! Three tables of counters, each an LRU of at most `max_tracked` entries
//! (the least recently touched is forgotten first):
//! - per (username, source address): after `login_failures` failed logins
//!   the pair is locked out for `login_backoff_initial_ms`, doubling with each
//!   further failure up to `login_backoff_max_secs`; a success clears it, and
//!   so does `login_window_secs` without a failure. Another address is not
//!   affected, so a stranger cannot lock the owner out;
//! - per source address, across usernames (credential stuffing):
//!   `address_failures` failed logins per `address_window_secs`;
//! - registrations per source address: `registrations` per
//!   `registration_window_secs`.
//!
//! An attempt counts as failed from the moment it is let through until it
//! succeeds, so concurrent guesses cannot all slip in before the first
//! failure is recorded. A refused attempt is decided here, before any
//! database lookup or hash. IPv6 addresses are counted per /64, the block a
//! single host usually has.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hashlink::LruCache;

use crate::config::ThrottleSettings;

/// The `reason` labels of `todoapp_calls_shed_total`.
const SHED_LOGIN: &str = "login_throttled";
const SHED_REGISTRATION: &str = "registration_throttled";

/// The caller must wait this long before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

pub struct Throttle {
    settings: ThrottleSettings,
    tables: Mutex<Tables>,
}

struct Tables {
    pairs: LruCache<(String, IpAddr), PairCounter>,
    addresses: LruCache<IpAddr, WindowCounter>,
    registrations: LruCache<IpAddr, WindowCounter>,
}

struct PairCounter {
    failures: u32,
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

/// A count within a fixed window that starts at its first event.
struct WindowCounter {
    count: u32,
    window_start: Instant,
}

impl WindowCounter {
    fn current(&mut self, now: Instant, window: Duration) -> &mut Self {
        if now.duration_since(self.window_start) >= window {
            self.count = 0;
            self.window_start = now;
        }
        self
    }

    /// Whether the limit is reached; if so, how long until the window ends.
    fn exhausted(&self, now: Instant, window: Duration, limit: u32) -> Option<Throttled> {
        (self.count >= limit).then(|| Throttled {
            retry_after: (self.window_start + window).saturating_duration_since(now),
        })
    }
}

/// Sizes of the three tables, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    pub pairs: usize,
    pub addresses: usize,
    pub registrations: usize,
}

/// The address counters are kept under: IPv4 as is (also when mapped into
/// IPv6), IPv6 by its /64 prefix.
fn bucket(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

impl Throttle {
    pub fn new(settings: ThrottleSettings) -> Self {
        todoapp_runtime::metrics::declare_shed_reasons(&[SHED_LOGIN, SHED_REGISTRATION]);
        let capacity = settings.max_tracked;
        Self {
            settings,
            tables: Mutex::new(Tables {
                pairs: LruCache::new(capacity),
                addresses: LruCache::new(capacity),
                registrations: LruCache::new(capacity),
            }),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // The counters stay usable even if a thread panicked while holding
        // the lock: each update leaves them consistent.
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn backoff(&self, failures: u32) -> Duration {
        let s = &self.settings;
        let doublings = failures.saturating_sub(s.login_failures).min(32);
        let initial = Duration::from_millis(s.login_backoff_initial_ms);
        let cap = Duration::from_secs(s.login_backoff_max_secs);
        initial.saturating_mul(1u32 << doublings.min(31)).min(cap)
    }

    /// Lets a login attempt for `username` from `address` through, counted
    /// as a failure until [`Throttle::login_succeeded`], or refuses it.
    pub fn login_attempt(&self, username: &str, address: IpAddr) -> Result<(), Throttled> {
        let attempt = self.login_attempt_at(username, address, Instant::now());
        if attempt.is_err() {
            todoapp_runtime::metrics::count_shed(SHED_LOGIN);
        }
        attempt
    }

    fn login_attempt_at(
        &self,
        username: &str,
        address: IpAddr,
        now: Instant,
    ) -> Result<(), Throttled> {
        let s = &self.settings;
        let address = bucket(address);
        let address_window = Duration::from_secs(s.address_window_secs);
        let pair_window = Duration::from_secs(s.login_window_secs);
        let mut tables = self.tables();

        if let Some(counter) = tables.addresses.get_mut(&address) {
            let counter = counter.current(now, address_window);
            if let Some(throttled) = counter.exhausted(now, address_window, s.address_failures) {
                return Err(throttled);
            }
        }
        let key = (username.to_owned(), address);
        if let Some(pair) = tables.pairs.get_mut(&key) {
            if let Some(until) = pair.blocked_until.filter(|until| *until > now) {
                return Err(Throttled {
                    retry_after: until - now,
                });
            }
        }

        // Let it through, counted as failed until it succeeds.
        let counter = tables
            .addresses
            .entry(address)
            .or_insert(WindowCounter {
                count: 0,
                window_start: now,
            })
            .current(now, address_window);
        counter.count += 1;
        let pair = tables.pairs.entry(key).or_insert(PairCounter {
            failures: 0,
            last_failure: now,
            blocked_until: None,
        });
        if now.duration_since(pair.last_failure) >= pair_window {
            pair.failures = 0;
        }
        pair.failures += 1;
        pair.last_failure = now;
        if pair.failures >= s.login_failures {
            pair.blocked_until = Some(now + self.backoff(pair.failures));
        }
        Ok(())
    }

    /// The attempt let through by [`Throttle::login_attempt`] succeeded: the
    /// pair starts afresh and the address gets its failure back.
    pub fn login_succeeded(&self, username: &str, address: IpAddr) {
        let address = bucket(address);
        let mut tables = self.tables();
        tables.pairs.remove(&(username.to_owned(), address));
        if let Some(counter) = tables.addresses.get_mut(&address) {
            counter.count = counter.count.saturating_sub(1);
        }
    }

    /// Counts a registration attempt from `address`, or refuses it.
    pub fn registration(&self, address: IpAddr) -> Result<(), Throttled> {
        let attempt = self.registration_at(address, Instant::now());
        if attempt.is_err() {
            todoapp_runtime::metrics::count_shed(SHED_REGISTRATION);
        }
        attempt
    }

    fn registration_at(&self, address: IpAddr, now: Instant) -> Result<(), Throttled> {
        let s = &self.settings;
        let window = Duration::from_secs(s.registration_window_secs);
        let mut tables = self.tables();
        let counter = tables
            .registrations
            .entry(bucket(address))
            .or_insert(WindowCounter {
                count: 0,
                window_start: now,
            })
            .current(now, window);
        if let Some(throttled) = counter.exhausted(now, window, s.registrations) {
            return Err(throttled);
        }
        counter.count += 1;
        Ok(())
    }

    pub fn tracked(&self) -> Tracked {
        let tables = self.tables();
        Tracked {
            pairs: tables.pairs.len(),
            addresses: tables.addresses.len(),
            registrations: tables.registrations.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ThrottleSettings {
        ThrottleSettings {
            login_failures: 3,
            login_window_secs: 900,
            login_backoff_initial_ms: 1000,
            login_backoff_max_secs: 10,
            address_failures: 8,
            address_window_secs: 600,
            registrations: 2,
            registration_window_secs: 3600,
            max_tracked: 1000,
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    fn wait(result: Result<(), Throttled>) -> Duration {
        result.expect_err("expected throttling").retry_after
    }

    #[test]
    fn pair_backoff_grows_exponentially_to_the_cap_and_success_resets() {
        let throttle = Throttle::new(ThrottleSettings {
            address_failures: 100,
            ..settings()
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            throttle.login_attempt_at("ann", A, t0).expect("allowed");
        }
        assert_eq!(
            wait(throttle.login_attempt_at("ann", A, t0)),
            Duration::from_secs(1)
        );
        // Each failure after the lockout doubles it: 2, 4, 8, then the 10 s cap.
        let mut now = t0;
        for expected in [2, 4, 8, 10, 10] {
            now += Duration::from_secs(11);
            throttle
                .login_attempt_at("ann", A, now)
                .expect("after the wait");
            assert_eq!(
                wait(throttle.login_attempt_at("ann", A, now)),
                Duration::from_secs(expected)
            );
        }
        // Another address, another username: unaffected.
        throttle
            .login_attempt_at("ann", B, now)
            .expect("B is not locked out");
        throttle
            .login_attempt_at("bob", A, now)
            .expect("bob is not locked out");
        now += Duration::from_secs(11);
        throttle
            .login_attempt_at("ann", A, now)
            .expect("after the wait");
        throttle.login_succeeded("ann", A);
        for _ in 0..3 {
            throttle
                .login_attempt_at("ann", A, now)
                .expect("reset by success");
        }
    }

    #[test]
    fn pair_failures_expire_after_the_window() {
        let throttle = Throttle::new(settings());
        let t0 = Instant::now();
        throttle.login_attempt_at("ann", A, t0).expect("allowed");
        throttle.login_attempt_at("ann", A, t0).expect("allowed");
        let later = t0 + Duration::from_secs(901);
        for _ in 0..3 {
            throttle
                .login_attempt_at("ann", A, later)
                .expect("window restarted");
        }
        assert!(throttle.login_attempt_at("ann", A, later).is_err());
    }

    #[test]
    fn an_address_is_limited_across_usernames() {
        let throttle = Throttle::new(settings());
        let t0 = Instant::now();
        for n in 0..8 {
            throttle
                .login_attempt_at(&format!("user{n}"), A, t0)
                .expect("allowed");
        }
        let now = t0 + Duration::from_secs(100);
        assert_eq!(
            wait(throttle.login_attempt_at("fresh", A, now)),
            Duration::from_secs(500)
        );
        throttle
            .login_attempt_at("fresh", B, now)
            .expect("B unaffected");
        let next_window = t0 + Duration::from_secs(600);
        throttle
            .login_attempt_at("fresh", A, next_window)
            .expect("next window");
    }

    #[test]
    fn successes_do_not_use_up_the_address_budget() {
        let throttle = Throttle::new(settings());
        let t0 = Instant::now();
        for _ in 0..20 {
            throttle.login_attempt_at("ann", A, t0).expect("allowed");
            throttle.login_succeeded("ann", A);
        }
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        let throttle = Throttle::new(settings());
        let t0 = Instant::now();
        for n in 0..8u16 {
            let address = IpAddr::V6([0x2001, 0xdb8, 0, 1, n, n, n, n].into());
            throttle
                .login_attempt_at(&format!("user{n}"), address, t0)
                .expect("allowed");
        }
        let same_64 = IpAddr::V6([0x2001, 0xdb8, 0, 1, 9, 9, 9, 9].into());
        assert!(throttle.login_attempt_at("x", same_64, t0).is_err());
        let other_64 = IpAddr::V6([0x2001, 0xdb8, 0, 2, 9, 9, 9, 9].into());
        throttle
            .login_attempt_at("x", other_64, t0)
            .expect("other /64");
    }

    #[test]
    fn registrations_are_limited_per_address() {
        let throttle = Throttle::new(settings());
        let t0 = Instant::now();
        throttle.registration_at(A, t0).expect("first");
        throttle.registration_at(A, t0).expect("second");
        assert_eq!(
            wait(throttle.registration_at(A, t0 + Duration::from_secs(60))),
            Duration::from_secs(3540)
        );
        throttle.registration_at(B, t0).expect("B unaffected");
        throttle
            .registration_at(A, t0 + Duration::from_secs(3600))
            .expect("next window");
    }

    #[test]
    fn memory_is_bounded_by_max_tracked() {
        let throttle = Throttle::new(ThrottleSettings {
            max_tracked: 16,
            address_failures: u32::MAX,
            ..settings()
        });
        let t0 = Instant::now();
        for n in 0..1000u32 {
            let address = IpAddr::V4(n.into());
            throttle
                .login_attempt_at(&format!("user{n}"), address, t0)
                .expect("allowed");
            let _ = throttle.registration_at(address, t0);
        }
        let tracked = throttle.tracked();
        assert!(tracked.pairs <= 17, "{tracked:?}");
        assert!(tracked.addresses <= 17, "{tracked:?}");
        assert!(tracked.registrations <= 17, "{tracked:?}");
        assert!(tracked.pairs >= 16, "the table is used: {tracked:?}");
    }
}
