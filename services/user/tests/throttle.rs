//! Login and registration throttling with its counters in the database,
//! on SQLite and a real MariaDB: backoff, windows, per-address limits,
//! bounds, and two instances over one database counting together.

use std::net::IpAddr;
use std::time::Duration;

use todoapp_db::{connect, DatabaseSettings, Pool};
use todoapp_runtime::Secret;
use todoapp_user::config::ThrottleSettings;
use todoapp_user::store::SqlUserStore;
use todoapp_user::throttle::{Throttle, Verdict};

const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// An arbitrary wall-clock start, in Unix microseconds.
const T0: i64 = 1_800_000_000_000_000;

fn secs(n: i64) -> i64 {
    n * 1_000_000
}

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

fn database(url: String) -> DatabaseSettings {
    DatabaseSettings {
        url: Secret::new(url),
        ..DatabaseSettings::sqlite("unused")
    }
}

async fn migrated(url: String) -> Pool {
    let pool = connect(&database(url)).await.expect("connect");
    SqlUserStore::new(pool.clone())
        .migrate()
        .await
        .expect("migrate");
    pool
}

/// A database of each engine, by name (SQLite in `dir`).
async fn pool(engine: &str, dir: &std::path::Path) -> Pool {
    match engine {
        "sqlite" => migrated(format!("sqlite://{}", dir.join("user.db").display())).await,
        _ => {
            migrated(
                todoapp_devkit::mariadb::test_database("user_throttle")
                    .await
                    .expect("MariaDB for tests"),
            )
            .await
        }
    }
}

async fn throttle(engine: &str, dir: &std::path::Path, settings: ThrottleSettings) -> Throttle {
    Throttle::new(settings, pool(engine, dir).await)
}

fn wait(verdict: Verdict) -> Duration {
    verdict.expect_err("expected throttling").retry_after
}

async fn login(throttle: &Throttle, name: &str, address: IpAddr, now: i64) -> Verdict {
    throttle
        .login_attempt_at(name, address, now)
        .await
        .expect("store")
}

async fn register(throttle: &Throttle, address: IpAddr, now: i64) -> Verdict {
    throttle.registration_at(address, now).await.expect("store")
}

async fn pair_backoff_grows_exponentially_to_the_cap_and_success_resets(engine: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let throttle = throttle(
        engine,
        dir.path(),
        ThrottleSettings {
            address_failures: 100,
            ..settings()
        },
    )
    .await;
    for _ in 0..3 {
        login(&throttle, "ann", A, T0).await.expect("allowed");
    }
    assert_eq!(
        wait(login(&throttle, "ann", A, T0).await),
        Duration::from_secs(1)
    );
    // Each failure after the lockout doubles it: 2, 4, 8, then the 10 s cap.
    let mut now = T0;
    for expected in [2, 4, 8, 10, 10] {
        now += secs(11);
        login(&throttle, "ann", A, now)
            .await
            .expect("after the wait");
        assert_eq!(
            wait(login(&throttle, "ann", A, now).await),
            Duration::from_secs(expected)
        );
    }
    // Another address, another username: unaffected.
    login(&throttle, "ann", B, now)
        .await
        .expect("B is not locked out");
    login(&throttle, "bob", A, now)
        .await
        .expect("bob is not locked out");
    now += secs(11);
    login(&throttle, "ann", A, now)
        .await
        .expect("after the wait");
    throttle.login_succeeded("ann", A).await.expect("store");
    for _ in 0..3 {
        login(&throttle, "ann", A, now)
            .await
            .expect("reset by success");
    }
}

async fn pair_failures_expire_after_the_window(engine: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let throttle = throttle(engine, dir.path(), settings()).await;
    login(&throttle, "ann", A, T0).await.expect("allowed");
    login(&throttle, "ann", A, T0).await.expect("allowed");
    let later = T0 + secs(901);
    for _ in 0..3 {
        login(&throttle, "ann", A, later)
            .await
            .expect("window restarted");
    }
    assert!(login(&throttle, "ann", A, later).await.is_err());
}

async fn an_address_is_limited_across_usernames(engine: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let throttle = throttle(engine, dir.path(), settings()).await;
    for n in 0..8 {
        login(&throttle, &format!("user{n}"), A, T0)
            .await
            .expect("allowed");
    }
    let now = T0 + secs(100);
    assert_eq!(
        wait(login(&throttle, "fresh", A, now).await),
        Duration::from_secs(500)
    );
    login(&throttle, "fresh", B, now)
        .await
        .expect("B unaffected");
    login(&throttle, "fresh", A, T0 + secs(600))
        .await
        .expect("next window");
}

async fn successes_do_not_use_up_the_address_budget(engine: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let throttle = throttle(engine, dir.path(), settings()).await;
    for _ in 0..20 {
        login(&throttle, "ann", A, T0).await.expect("allowed");
        throttle.login_succeeded("ann", A).await.expect("store");
    }
}

async fn ipv6_is_counted_per_64(engine: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let throttle = throttle(engine, dir.path(), settings()).await;
    for n in 0..8u16 {
        let address = IpAddr::V6([0x2001, 0xdb8, 0, 1, n, n, n, n].into());
        login(&throttle, &format!("user{n}"), address, T0)
            .await
            .expect("allowed");
    }
    let same_64 = IpAddr::V6([0x2001, 0xdb8, 0, 1, 9, 9, 9, 9].into());
    assert!(login(&throttle, "x", same_64, T0).await.is_err());
    let other_64 = IpAddr::V6([0x2001, 0xdb8, 0, 2, 9, 9, 9, 9].into());
    login(&throttle, "x", other_64, T0)
        .await
        .expect("other /64");
}

async fn registrations_are_limited_per_address(engine: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let throttle = throttle(engine, dir.path(), settings()).await;
    register(&throttle, A, T0).await.expect("first");
    register(&throttle, A, T0).await.expect("second");
    assert_eq!(
        wait(register(&throttle, A, T0 + secs(60)).await),
        Duration::from_secs(3540)
    );
    register(&throttle, B, T0).await.expect("B unaffected");
    register(&throttle, A, T0 + secs(3600))
        .await
        .expect("next window");
}

/// Expired counters are deleted; beyond `max_tracked` per kind the least
/// recently touched go; a lockout outlasting its pair's window stays.
async fn counters_expire_and_are_bounded_by_max_tracked(engine: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let throttle = throttle(
        engine,
        dir.path(),
        ThrottleSettings {
            max_tracked: 16,
            address_failures: u32::MAX,
            login_failures: 1,
            login_window_secs: 60,
            login_backoff_max_secs: 600,
            ..settings()
        },
    )
    .await;
    for n in 0..100u32 {
        let address = IpAddr::V4(n.into());
        let now = T0 + i64::from(n);
        login(&throttle, &format!("user{n}"), address, now)
            .await
            .expect("allowed");
        let _ = register(&throttle, address, now).await;
    }
    let all = throttle.tracked().await.expect("tracked");
    assert_eq!(
        (all.pairs, all.addresses, all.registrations),
        (100, 100, 100)
    );
    throttle.forget_expired(T0 + 100).await.expect("forget");
    let tracked = throttle.tracked().await.expect("tracked");
    assert_eq!(
        (tracked.pairs, tracked.addresses, tracked.registrations),
        (16, 16, 16),
        "the 16 most recent of each kind are kept"
    );
    // The most recent pair is among them: still locked out.
    assert!(
        login(&throttle, "user99", IpAddr::V4(99u32.into()), T0 + 200)
            .await
            .is_err()
    );

    // Failures spaced just past each lockout: 1, 2, 4, ... 64 s, so the
    // last lockout outlasts the 60 s window of its pair's failures.
    let locked = IpAddr::V4(7_000u32.into());
    let mut now = T0 + secs(1000);
    let mut lockout = Duration::ZERO;
    for _ in 0..7 {
        login(&throttle, "long", locked, now)
            .await
            .expect("after the lockout");
        lockout = wait(login(&throttle, "long", locked, now).await);
        now += secs(lockout.as_secs() as i64 + 1);
    }
    assert_eq!(lockout, Duration::from_secs(64));
    let last_failure = now - secs(65);
    let window_passed = last_failure + secs(61);
    throttle
        .forget_expired(window_passed)
        .await
        .expect("forget");
    assert_eq!(
        throttle.tracked().await.expect("tracked").pairs,
        1,
        "only the pair still locked out is kept"
    );
    assert!(login(&throttle, "long", locked, window_passed)
        .await
        .is_err());
    throttle
        .forget_expired(last_failure + secs(64))
        .await
        .expect("forget");
    assert_eq!(throttle.tracked().await.expect("tracked").pairs, 0);
}

macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name("sqlite").await;
            })*
        }
        mod mariadb {
            $(#[tokio::test]
            async fn $name() {
                super::$name("mysql").await;
            })*
        }
    };
}

on_both_engines!(
    pair_backoff_grows_exponentially_to_the_cap_and_success_resets,
    pair_failures_expire_after_the_window,
    an_address_is_limited_across_usernames,
    successes_do_not_use_up_the_address_budget,
    ipv6_is_counted_per_64,
    registrations_are_limited_per_address,
    counters_expire_and_are_bounded_by_max_tracked,
);

/// Two instances over one MariaDB database (each its own pool, as two
/// processes have): failed logins alternating between them are throttled
/// after the same count as on one, and so are an address's failures across
/// usernames and its registrations; concurrent guesses through both do not
/// slip past the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_over_one_database_count_together() {
    let url = todoapp_devkit::mariadb::test_database("user_throttle_shared")
        .await
        .expect("MariaDB for tests");
    let instances = [
        Throttle::new(settings(), migrated(url.clone()).await),
        Throttle::new(settings(), migrated(url.clone()).await),
    ];
    // login_failures = 3: the fourth attempt is refused, whichever instance.
    for n in 0..3 {
        login(&instances[n % 2], "ann", A, T0)
            .await
            .unwrap_or_else(|_| panic!("attempt {n} allowed"));
    }
    for instance in &instances {
        assert_eq!(
            wait(login(instance, "ann", A, T0).await),
            Duration::from_secs(1)
        );
    }
    // A success through one instance clears the pair for both.
    login(&instances[1], "ann", A, T0 + secs(2))
        .await
        .expect("after the lockout");
    instances[1].login_succeeded("ann", A).await.expect("store");
    for n in 0..3 {
        login(&instances[n % 2], "ann", A, T0 + secs(2))
            .await
            .unwrap_or_else(|_| panic!("attempt {n} after the success allowed"));
    }

    // The address's budget (8 failures per window) is shared: 6 of ann's
    // failures stand (the success gave one back), 2 more usernames use it up.
    for n in 0..2 {
        login(&instances[n % 2], &format!("user{n}"), A, T0 + secs(3))
            .await
            .unwrap_or_else(|_| panic!("user{n} allowed"));
    }
    for instance in &instances {
        assert!(login(instance, "fresh", A, T0 + secs(3)).await.is_err());
    }

    // Registrations (2 per window) likewise.
    register(&instances[0], B, T0).await.expect("first");
    register(&instances[1], B, T0).await.expect("second");
    for instance in &instances {
        assert!(register(instance, B, T0).await.is_err());
    }

    // 12 concurrent guesses for one pair, 6 through each instance: exactly
    // login_failures are let through.
    let guesses: Vec<_> = (0..12)
        .map(|n| {
            let instance = instances[n % 2].clone();
            tokio::spawn(async move {
                instance
                    .login_attempt_at("bob", B, T0 + secs(5))
                    .await
                    .expect("store")
            })
        })
        .collect();
    let mut let_through = 0;
    for guess in guesses {
        if guess.await.expect("join").is_ok() {
            let_through += 1;
        }
    }
    assert_eq!(let_through, 3, "concurrent guesses through two instances");
}
