//! Login and registration throttling, with the counters in the user
//! database so that every user-service instance over it counts together:
//! N instances do not give N times the guesses.
//!
//! Three kinds of counters:
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
//! failure is recorded. Each decision is one transaction holding the
//! counters' rows locked (SQLite: the pool's write lock), so concurrent
//! attempts through different instances are counted one after the other
//! (on Galera, two attempts for one account and address through different
//! nodes: one loses certification and is run again, `retry_contended`; the
//! per-address counts are kept per node, see [`ThrottleSql`], so that
//! attempts from one address through several nodes need not). A refused
//! attempt is decided here, before any user lookup or hash. IPv6 addresses
//! are counted per /64, the block a single host usually has. Times are
//! wall-clock Unix microseconds, shared by the instances.
//!
//! Rows whose window has passed are deleted every minute, and beyond
//! `max_tracked` rows per kind the least recently touched are forgotten.
//!
//! Each instance also remembers, in a bounded LRU, the refusals it handed
//! out and until when they hold, so an attacker retrying a refused attempt
//! costs a lookup in memory, not a database transaction. A remembered
//! lockout of a pair is exact (only a success ends one early, and none can
//! happen while it lasts); a remembered full address window may be a little
//! stricter than the database, which gives a failure back for every success
//! through another instance meanwhile.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hashlink::LruCache;

use todoapp_db::{now_micros, on_pool, retry_contended, Kind, Pool, StoreError};

use crate::config::ThrottleSettings;

/// The `reason` labels of `todoapp_calls_shed_total`.
const SHED_LOGIN: &str = "login_throttled";
const SHED_REGISTRATION: &str = "registration_throttled";

/// `throttle_windows.scope` of failed logins per address.
const SCOPE_LOGIN: i16 = 1;
/// `throttle_windows.scope` of registrations per address.
const SCOPE_REGISTRATION: i16 = 2;

/// The caller must wait this long before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

/// Whether an attempt may go ahead.
pub type Verdict = Result<(), Throttled>;

#[derive(Clone)]
pub struct Throttle {
    settings: ThrottleSettings,
    pool: Pool,
    sql: ThrottleSql,
    /// Refusals handed out by this instance, until when they hold.
    refused: Arc<Mutex<LruCache<Counter, i64>>>,
}

/// A counter that can refuse an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Counter {
    Pair { name: Vec<u8>, address: String },
    Window { scope: i16, address: String },
}

/// A refusal as the database decided it: which counter, until when.
struct Refusal {
    counter: Counter,
    until: i64,
}

/// Rows per kind of counter, for tests and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    pub pairs: usize,
    pub addresses: usize,
    pub registrations: usize,
}

/// The statements that differ between the engines: a counter's row is
/// created if missing and then read locked. On MariaDB the insert comes
/// first (`ON DUPLICATE KEY UPDATE` locks an existing row exclusively):
/// a locking read of a missing row would lock the gap, and concurrent first
/// attempts inserting into it would deadlock.
///
/// The per-address windows are kept in slots, one row per database node
/// (on MariaDB the node's `auto_increment_offset`, distinct per Galera
/// node; SQLite has one), as the todo service keeps quota usage: an attempt
/// locks and counts in its own node's slot and reads the others without
/// locking them. So attempts from one address (many users behind one NAT,
/// or every client of a local stack) through different Galera nodes share
/// no row and do not fail certification against each other; measured from
/// one address through 3 nodes with one row for all, 12 % to 35 % of the
/// attempts failed so after the retries. The price: through each other
/// node, one attempt in flight may be missed, so an address can get up to
/// (nodes - 1) attempts over its limit.
#[derive(Debug, Clone, Copy)]
struct ThrottleSql {
    ensure_window: &'static str,
    read_window: &'static str,
    give_back: &'static str,
    ensure_pair: &'static str,
    read_pair: &'static str,
}

impl ThrottleSql {
    fn for_kind(kind: Kind) -> Self {
        match kind {
            Kind::Sqlite => Self {
                ensure_window: "INSERT INTO throttle_windows (scope, address, slot, events, window_start, touched) VALUES (?, ?, 0, 0, ?, ?) ON CONFLICT DO NOTHING",
                read_window: "SELECT slot, events, window_start FROM throttle_windows WHERE scope = ? AND address = ? AND slot = 0",
                give_back: "UPDATE throttle_windows SET events = MAX(events - 1, 0) WHERE scope = ? AND address = ? AND slot = 0",
                ensure_pair: "INSERT INTO login_throttle_pairs (name_hash, address, failures, last_failure) VALUES (?, ?, 0, ?) ON CONFLICT DO NOTHING",
                read_pair: "SELECT failures, last_failure, blocked_until FROM login_throttle_pairs WHERE name_hash = ? AND address = ?",
            },
            Kind::MySql => Self {
                ensure_window: "INSERT INTO throttle_windows (scope, address, slot, events, window_start, touched) VALUES (?, ?, @@auto_increment_offset, 0, ?, ?) ON DUPLICATE KEY UPDATE events = events",
                read_window: "SELECT slot, events, window_start FROM throttle_windows WHERE scope = ? AND address = ? AND slot = @@auto_increment_offset FOR UPDATE",
                give_back: "UPDATE throttle_windows SET events = GREATEST(events - 1, 0) WHERE scope = ? AND address = ? AND slot = @@auto_increment_offset",
                ensure_pair: "INSERT INTO login_throttle_pairs (name_hash, address, failures, last_failure) VALUES (?, ?, 0, ?) ON DUPLICATE KEY UPDATE failures = failures",
                read_pair: "SELECT failures, last_failure, blocked_until FROM login_throttle_pairs WHERE name_hash = ? AND address = ? FOR UPDATE",
            },
        }
    }
}

const OTHER_WINDOWS: &str = "SELECT events, window_start FROM throttle_windows WHERE scope = ? AND address = ? AND slot <> ?";
const SAVE_WINDOW: &str = "UPDATE throttle_windows SET events = ?, window_start = ?, touched = ? WHERE scope = ? AND address = ? AND slot = ?";
const SAVE_PAIR: &str = "UPDATE login_throttle_pairs SET failures = ?, last_failure = ?, blocked_until = ? WHERE name_hash = ? AND address = ?";
const FORGET_PAIR: &str = "DELETE FROM login_throttle_pairs WHERE name_hash = ? AND address = ?";

/// Inside a transaction: the window counter of (`scope`, `address`), this
/// node's slot created if missing and locked until the transaction ends, the
/// other slots as last committed. A macro so the same code runs on either
/// engine's transaction.
macro_rules! locked_window {
    ($tx:expr, $sql:expr, $scope:expr, $address:expr, $now:expr) => {
        async {
            sqlx::query($sql.ensure_window)
                .bind($scope)
                .bind($address)
                .bind($now)
                .bind($now)
                .execute(&mut *$tx)
                .await?;
            let (slot, events, start): (i32, i64, i64) = sqlx::query_as($sql.read_window)
                .bind($scope)
                .bind($address)
                .fetch_one(&mut *$tx)
                .await?;
            let others: Vec<(i64, i64)> = sqlx::query_as(OTHER_WINDOWS)
                .bind($scope)
                .bind($address)
                .bind(slot)
                .fetch_all(&mut *$tx)
                .await?;
            Ok::<SlottedWindow, sqlx::Error>(SlottedWindow {
                slot,
                own: Window { events, start },
                others: others
                    .into_iter()
                    .map(|(events, start)| Window { events, start })
                    .collect(),
            })
        }
    };
}

/// Inside a transaction holding it (`locked_window!`): stores this node's
/// slot of a window counter as touched at `now`.
macro_rules! save_window {
    ($tx:expr, $scope:expr, $address:expr, $window:expr, $now:expr) => {
        sqlx::query(SAVE_WINDOW)
            .bind($window.own.events)
            .bind($window.own.start)
            .bind($now)
            .bind($scope)
            .bind($address)
            .bind($window.slot)
            .execute(&mut *$tx)
    };
}

/// A count within a fixed window that starts at its first event.
#[derive(Debug, Clone, Copy)]
struct Window {
    events: i64,
    start: i64,
}

impl Window {
    fn current(self, now: i64, window: i64) -> Self {
        if now - self.start >= window {
            Window {
                events: 0,
                start: now,
            }
        } else {
            self
        }
    }
}

/// A per-address window counter over its slots (see [`ThrottleSql`]).
#[derive(Debug, Clone)]
struct SlottedWindow {
    slot: i32,
    own: Window,
    others: Vec<Window>,
}

impl SlottedWindow {
    /// This node's slot starts afresh once its window has passed.
    fn current(mut self, now: i64, window: i64) -> Self {
        self.own = self.own.current(now, window);
        self
    }

    /// Whether the events of the slots still within their window reach the
    /// limit; if so, when the earliest of those windows ends.
    fn exhausted(&self, now: i64, window: i64, limit: u32) -> Option<i64> {
        let live = || {
            std::iter::once(&self.own)
                .chain(&self.others)
                .filter(move |w| w.events > 0 && now - w.start < window)
        };
        let events: i64 = live().map(|w| w.events).sum();
        (events >= i64::from(limit)).then(|| live().map(|w| w.start + window).min().unwrap_or(now))
    }

    fn count(&mut self) {
        self.own.events += 1;
    }
}

fn until_then(then: i64, now: i64) -> Duration {
    Duration::from_micros(u64::try_from(then - now).unwrap_or(0))
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// The address counters are kept under: IPv4 as is (also when mapped into
/// IPv6), IPv6 by its /64 prefix.
fn bucket(address: IpAddr) -> String {
    match address {
        IpAddr::V4(_) => address.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                std::net::Ipv6Addr::from(segments).to_string()
            }
        },
    }
}

/// What a username is stored as: its SHA-256, so that a password typed
/// into the username field is not kept.
fn name_hash(name: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_bytes())
        .as_ref()
        .to_vec()
}

impl Throttle {
    pub fn new(settings: ThrottleSettings, pool: Pool) -> Self {
        todoapp_runtime::metrics::declare_shed_reasons(&[SHED_LOGIN, SHED_REGISTRATION]);
        let sql = ThrottleSql::for_kind(pool.kind());
        let refused = Arc::new(Mutex::new(LruCache::new(settings.max_tracked)));
        Self {
            settings,
            pool,
            sql,
            refused,
        }
    }

    fn refusals(&self) -> std::sync::MutexGuard<'_, LruCache<Counter, i64>> {
        // Each update leaves the cache consistent: usable after a panic.
        self.refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A refusal this instance handed out for `counter` that still holds.
    fn remembered(&self, counter: &Counter, now: i64) -> Option<Throttled> {
        let mut refused = self.refusals();
        match refused.get(counter) {
            Some(until) if *until > now => Some(Throttled {
                retry_after: until_then(*until, now),
            }),
            Some(_) => {
                refused.remove(counter);
                None
            }
            None => None,
        }
    }

    /// Turns the database's decision into a verdict, remembering a refusal.
    fn judged(&self, decision: Result<(), Refusal>, now: i64) -> Verdict {
        decision.map_err(|refusal| {
            let throttled = Throttled {
                retry_after: until_then(refusal.until, now),
            };
            self.refusals().insert(refusal.counter, refusal.until);
            throttled
        })
    }

    fn backoff(&self, failures: i64) -> Duration {
        let s = &self.settings;
        let doublings = (failures - i64::from(s.login_failures)).clamp(0, 31) as u32;
        let initial = Duration::from_millis(s.login_backoff_initial_ms);
        let cap = Duration::from_secs(s.login_backoff_max_secs);
        initial.saturating_mul(1u32 << doublings).min(cap)
    }

    /// Lets a login attempt for `name` from `address` through, counted
    /// as a failure until [`Throttle::login_succeeded`], or refuses it.
    pub async fn login_attempt(&self, name: &str, address: IpAddr) -> Result<Verdict, StoreError> {
        let verdict = self.login_attempt_at(name, address, now_micros()).await?;
        if verdict.is_err() {
            todoapp_runtime::metrics::count_shed(SHED_LOGIN);
        }
        Ok(verdict)
    }

    /// [`Throttle::login_attempt`] at `now` (Unix microseconds).
    pub async fn login_attempt_at(
        &self,
        name: &str,
        address: IpAddr,
        now: i64,
    ) -> Result<Verdict, StoreError> {
        let s = &self.settings;
        let address = bucket(address);
        let name = name_hash(name);
        let address_counter = Counter::Window {
            scope: SCOPE_LOGIN,
            address: address.clone(),
        };
        let pair_counter = Counter::Pair {
            name: name.clone(),
            address: address.clone(),
        };
        for counter in [&address_counter, &pair_counter] {
            if let Some(throttled) = self.remembered(counter, now) {
                return Ok(Err(throttled));
            }
        }
        let address_window = micros(Duration::from_secs(s.address_window_secs));
        let pair_window = micros(Duration::from_secs(s.login_window_secs));
        let (sql, pool, address, name) = (self.sql, &self.pool, &address, &name);
        let (address_counter, pair_counter) = (&address_counter, &pair_counter);
        let _writer = self.pool.write_lock().await;
        let decision = retry_contended(|| async move {
            Ok::<_, StoreError>(on_pool!(pool, |p| async {
                // Always in this order (address, then pair), as everywhere
                // here, so that two attempts cannot deadlock.
                let mut tx = p.begin().await?;
                let mut window = locked_window!(tx, sql, SCOPE_LOGIN, address, now)
                    .await?
                    .current(now, address_window);
                if let Some(until) = window.exhausted(now, address_window, s.address_failures) {
                    return Ok(Err(Refusal {
                        counter: address_counter.clone(),
                        until,
                    }));
                }
                sqlx::query(sql.ensure_pair)
                    .bind(name)
                    .bind(address)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let (mut failures, last_failure, blocked_until): (i64, i64, Option<i64>) =
                    sqlx::query_as(sql.read_pair)
                        .bind(name)
                        .bind(address)
                        .fetch_one(&mut *tx)
                        .await?;
                if let Some(until) = blocked_until.filter(|until| *until > now) {
                    return Ok(Err(Refusal {
                        counter: pair_counter.clone(),
                        until,
                    }));
                }

                // Let it through, counted as failed until it succeeds.
                window.count();
                save_window!(tx, SCOPE_LOGIN, address, window, now).await?;
                if now - last_failure >= pair_window {
                    failures = 0;
                }
                failures += 1;
                let blocked_until = (failures >= i64::from(s.login_failures))
                    .then(|| now.saturating_add(micros(self.backoff(failures))));
                sqlx::query(SAVE_PAIR)
                    .bind(failures)
                    .bind(now)
                    .bind(blocked_until)
                    .bind(name)
                    .bind(address)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(Ok(()))
            }
            .await)?)
        })
        .await?;
        Ok(self.judged(decision, now))
    }

    /// The attempt let through by [`Throttle::login_attempt`] succeeded: the
    /// pair starts afresh and the address gets its failure back.
    pub async fn login_succeeded(&self, name: &str, address: IpAddr) -> Result<(), StoreError> {
        let address = bucket(address);
        let name = name_hash(name);
        self.refusals().remove(&Counter::Pair {
            name: name.clone(),
            address: address.clone(),
        });
        let (sql, pool, address, name) = (self.sql, &self.pool, &address, &name);
        let _writer = self.pool.write_lock().await;
        retry_contended(|| async move {
            Ok::<_, StoreError>(on_pool!(pool, |p| async {
                let mut tx = p.begin().await?;
                sqlx::query(sql.give_back)
                    .bind(SCOPE_LOGIN)
                    .bind(address)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(FORGET_PAIR)
                    .bind(name)
                    .bind(address)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            }
            .await)?)
        })
        .await
    }

    /// Counts a registration attempt from `address`, or refuses it.
    pub async fn registration(&self, address: IpAddr) -> Result<Verdict, StoreError> {
        let verdict = self.registration_at(address, now_micros()).await?;
        if verdict.is_err() {
            todoapp_runtime::metrics::count_shed(SHED_REGISTRATION);
        }
        Ok(verdict)
    }

    /// [`Throttle::registration`] at `now` (Unix microseconds).
    pub async fn registration_at(&self, address: IpAddr, now: i64) -> Result<Verdict, StoreError> {
        let s = &self.settings;
        let window_len = micros(Duration::from_secs(s.registration_window_secs));
        let address = bucket(address);
        let counter = Counter::Window {
            scope: SCOPE_REGISTRATION,
            address: address.clone(),
        };
        if let Some(throttled) = self.remembered(&counter, now) {
            return Ok(Err(throttled));
        }
        let (sql, pool, address, counter) = (self.sql, &self.pool, &address, &counter);
        let _writer = self.pool.write_lock().await;
        let decision = retry_contended(|| async move {
            Ok::<_, StoreError>(on_pool!(pool, |p| async {
                let mut tx = p.begin().await?;
                let mut window = locked_window!(tx, sql, SCOPE_REGISTRATION, address, now)
                    .await?
                    .current(now, window_len);
                if let Some(until) = window.exhausted(now, window_len, s.registrations) {
                    return Ok(Err(Refusal {
                        counter: counter.clone(),
                        until,
                    }));
                }
                window.count();
                save_window!(tx, SCOPE_REGISTRATION, address, window, now).await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(Ok(()))
            }
            .await)?)
        })
        .await?;
        Ok(self.judged(decision, now))
    }

    /// Deletes the counters that no longer hold anything back at `now`
    /// (Unix microseconds), then the least recently touched beyond
    /// `max_tracked` per kind; returns how many rows went.
    pub async fn forget_expired(&self, now: i64) -> Result<u64, StoreError> {
        let s = &self.settings;
        let login_window = micros(Duration::from_secs(s.login_window_secs));
        let expired: [(&str, Vec<i64>); 3] = [
            // A pair's failures are forgotten a window after the last one;
            // a lockout may outlast that.
            (
                "DELETE FROM login_throttle_pairs WHERE last_failure < ? AND (blocked_until IS NULL OR blocked_until <= ?)",
                vec![now - login_window, now],
            ),
            (
                "DELETE FROM throttle_windows WHERE scope = ? AND window_start <= ?",
                vec![
                    i64::from(SCOPE_LOGIN),
                    now - micros(Duration::from_secs(s.address_window_secs)),
                ],
            ),
            (
                "DELETE FROM throttle_windows WHERE scope = ? AND window_start <= ?",
                vec![
                    i64::from(SCOPE_REGISTRATION),
                    now - micros(Duration::from_secs(s.registration_window_secs)),
                ],
            ),
        ];
        let max = i64::try_from(s.max_tracked).unwrap_or(i64::MAX);
        let beyond_max: [(&str, &str, Vec<i64>); 3] = [
            (
                "SELECT last_failure FROM login_throttle_pairs ORDER BY last_failure DESC LIMIT 1 OFFSET ?",
                "DELETE FROM login_throttle_pairs WHERE last_failure <= ?",
                vec![],
            ),
            (
                "SELECT touched FROM throttle_windows WHERE scope = ? ORDER BY touched DESC LIMIT 1 OFFSET ?",
                "DELETE FROM throttle_windows WHERE scope = ? AND touched <= ?",
                vec![i64::from(SCOPE_LOGIN)],
            ),
            (
                "SELECT touched FROM throttle_windows WHERE scope = ? ORDER BY touched DESC LIMIT 1 OFFSET ?",
                "DELETE FROM throttle_windows WHERE scope = ? AND touched <= ?",
                vec![i64::from(SCOPE_REGISTRATION)],
            ),
        ];
        let pool = &self.pool;
        let mut forgotten = 0;
        for (sql, args) in &expired {
            forgotten += self.delete(sql, args).await?;
        }
        for (find, delete, scope) in &beyond_max {
            // The touch time of the `max_tracked + 1`-th most recent row:
            // it and everything older go.
            let oldest_kept: Option<i64> = on_pool!(pool, |p| {
                let mut query = sqlx::query_scalar(find);
                for arg in scope {
                    query = query.bind(*arg);
                }
                query.bind(max).fetch_optional(p).await
            })?;
            if let Some(cutoff) = oldest_kept {
                let args: Vec<i64> = scope.iter().copied().chain([cutoff]).collect();
                forgotten += self.delete(delete, &args).await?;
            }
        }
        Ok(forgotten)
    }

    /// Runs one DELETE with integer arguments; returns the rows deleted.
    async fn delete(&self, sql: &str, args: &[i64]) -> Result<u64, StoreError> {
        let pool = &self.pool;
        let _writer = self.pool.write_lock().await;
        retry_contended(|| async move {
            Ok::<_, StoreError>(on_pool!(pool, |p| {
                let mut query = sqlx::query(sql);
                for arg in args {
                    query = query.bind(*arg);
                }
                query.execute(p).await.map(|r| r.rows_affected())
            })?)
        })
        .await
    }

    /// Forgets expired counters now and every `every` from now on.
    pub fn spawn_expiry(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let throttle = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                match throttle.forget_expired(now_micros()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(forgotten = n, "expired throttling counters removed"),
                    Err(e) => {
                        tracing::warn!(error = %e.detail(), "throttling counter expiry failed")
                    }
                }
            }
        })
    }

    /// Rows per kind of counter.
    pub async fn tracked(&self) -> Result<Tracked, StoreError> {
        let count = |sql: &'static str, scope: Option<i16>| async move {
            let n: i64 = on_pool!(&self.pool, |p| {
                let mut query = sqlx::query_scalar(sql);
                if let Some(scope) = scope {
                    query = query.bind(scope);
                }
                query.fetch_one(p).await
            })?;
            Ok::<usize, StoreError>(usize::try_from(n).unwrap_or(0))
        };
        const WINDOWS: &str = "SELECT COUNT(*) FROM throttle_windows WHERE scope = ?";
        Ok(Tracked {
            pairs: count("SELECT COUNT(*) FROM login_throttle_pairs", None).await?,
            addresses: count(WINDOWS, Some(SCOPE_LOGIN)).await?,
            registrations: count(WINDOWS, Some(SCOPE_REGISTRATION)).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_bucketed_per_ipv4_and_ipv6_64() {
        let v4: IpAddr = "192.0.2.7".parse().expect("v4");
        assert_eq!(bucket(v4), "192.0.2.7");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("mapped");
        assert_eq!(bucket(mapped), "192.0.2.7");
        let v6: IpAddr = "2001:db8:0:1:5:6:7:8".parse().expect("v6");
        assert_eq!(bucket(v6), "2001:db8:0:1::");
    }

    #[test]
    fn names_are_stored_hashed() {
        assert_eq!(name_hash("ann").len(), 32);
        assert_ne!(name_hash("ann"), name_hash("Ann"));
        assert_ne!(name_hash("ann"), b"ann".to_vec());
    }
}
