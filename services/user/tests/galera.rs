//! Login throttling over a real 3-node Galera cluster (started from
//! `mariadbd` and galera-4 for this binary's one test), one instance per
//! node: logins from one address through every node share no counter row,
//! so none fails on certification, while the address's limit still holds
//! (within one attempt per other node) and an account's lockout is exact.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use todoapp_db::{connect, DatabaseSettings};
use todoapp_devkit::galera::{GaleraCluster, NODES};
use todoapp_runtime::Secret;
use todoapp_user::config::ThrottleSettings;
use todoapp_user::store::SqlUserStore;
use todoapp_user::throttle::Throttle;

const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
const C: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

/// `clients` per node making attempts from `address` with fresh usernames
/// until `load` ends or (with `succeed` off) each is refused. Returns the
/// attempts let through, the store errors, and the latencies.
async fn attempts_through_every_node(
    throttles: &[Throttle],
    address: IpAddr,
    clients: usize,
    load: Duration,
    succeed: bool,
) -> (usize, Vec<String>, Vec<Duration>) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (node, throttle) in throttles.iter().enumerate() {
        for c in 0..clients {
            let throttle = throttle.clone();
            tasks.push(tokio::spawn(async move {
                let (mut let_through, mut errors, mut latencies) = (0, Vec::new(), Vec::new());
                while started.elapsed() < load {
                    let name = format!("n{node} c{c} #{let_through} {succeed}");
                    let call = Instant::now();
                    match throttle.login_attempt(&name, address).await {
                        Ok(Ok(())) if succeed => {
                            if let Err(e) = throttle.login_succeeded(&name, address).await {
                                errors.push(e.detail());
                            }
                            let_through += 1;
                        }
                        Ok(Ok(())) => let_through += 1,
                        Ok(Err(_)) => break,
                        Err(e) => errors.push(e.detail()),
                    }
                    latencies.push(call.elapsed());
                }
                (let_through, errors, latencies)
            }));
        }
    }
    let (mut let_through, mut errors, mut latencies) = (0, Vec::new(), Vec::new());
    for task in tasks {
        let (n, e, l) = task.await.expect("client");
        let_through += n;
        errors.extend(e);
        latencies.extend(l);
    }
    latencies.sort();
    (let_through, errors, latencies)
}

#[test]
fn logins_from_one_address_through_every_node_do_not_conflict_and_stay_limited() {
    const CLIENTS_PER_NODE: usize = 4;
    const LOAD: Duration = Duration::from_secs(3);
    const ADDRESS_FAILURES: u32 = 30;
    let base = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let cluster = GaleraCluster::start(base.path()).expect("a private 3-node Galera cluster");
    eprintln!("Galera cluster formed in {:?}", started.elapsed());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let urls = runtime
        .block_on(cluster.create_database(&format!("throttle_{}", std::process::id())))
        .expect("create database");
    runtime.block_on(async {
        let settings = ThrottleSettings {
            address_failures: ADDRESS_FAILURES,
            login_failures: 3,
            ..ThrottleSettings::default()
        };
        let mut throttles = Vec::new();
        for url in &urls {
            let database = DatabaseSettings {
                url: Secret::new(url.clone()),
                max_connections: Some(8),
                ..DatabaseSettings::sqlite("unused")
            };
            let pool = connect(&database).await.expect("connect");
            SqlUserStore::new(pool.clone())
                .migrate()
                .await
                .expect("migrate");
            throttles.push(Throttle::new(settings.clone(), pool));
        }

        // Successful logins of many users behind one address: none fails.
        let (logins, errors, latencies) =
            attempts_through_every_node(&throttles, A, CLIENTS_PER_NODE, LOAD, true).await;
        eprintln!(
            "logins from one address through {NODES} nodes, {} clients: {logins} in {LOAD:?} ({:.0}/s), p99 {:?}, failed {}",
            NODES * CLIENTS_PER_NODE,
            logins as f64 / LOAD.as_secs_f64(),
            latencies[latencies.len() * 99 / 100],
            errors.len()
        );
        assert!(errors.is_empty(), "attempts failed: {:?}", &errors[..errors.len().min(5)]);
        assert!(logins > 0);

        // Failed logins from another address until every client is
        // refused: the limit holds, over it by at most one attempt in
        // flight through each other node.
        let (failures, errors, _) = attempts_through_every_node(
            &throttles,
            B,
            CLIENTS_PER_NODE,
            Duration::from_secs(30),
            false,
        )
        .await;
        eprintln!("address limit {ADDRESS_FAILURES}: {failures} failed attempts let through");
        assert!(errors.is_empty(), "attempts failed: {:?}", &errors[..errors.len().min(5)]);
        assert!(
            failures >= ADDRESS_FAILURES as usize
                && failures < ADDRESS_FAILURES as usize + NODES,
            "{failures} let through against a limit of {ADDRESS_FAILURES}"
        );
        for throttle in &throttles {
            assert!(matches!(throttle.login_attempt("fresh", B).await, Ok(Err(_))));
        }

        // One account guessed through the nodes in turn: locked out after
        // exactly login_failures, whichever node.
        for n in 0..3 {
            assert!(
                matches!(throttles[n % NODES].login_attempt("ann", C).await, Ok(Ok(()))),
                "guess {n} let through"
            );
        }
        for throttle in &throttles {
            assert!(matches!(throttle.login_attempt("ann", C).await, Ok(Err(_))));
        }
    });
    drop(cluster);
}
