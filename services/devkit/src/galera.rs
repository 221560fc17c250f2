//! A private 3-node MariaDB Galera cluster on loopback ports, from
//! `mariadbd` and Debian's galera-4 library: for the stack's
//! `--database galera` and for the fault tests.
//!
//! Each node is a [`MariaDb`] with wsrep options: its own group
//! communication (`gmcast.listen_addr`), IST and rsync SST addresses on
//! 127.0.0.1, clients on its own Unix socket. The first node bootstraps the
//! cluster (`--wsrep-new-cluster`), the others join and receive a state
//! transfer. Started as root, the servers run as the `mysql` account and own
//! their files: the rsync SST daemon cannot write a root-owned data directory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, MySqlConnection};

use crate::mariadb::{create_database_at, find_mariadbd, server_command, MariaDb, ServerOptions};
use crate::DevError;

/// Where Debian's galera-4 package installs the provider.
pub const PROVIDER_PATHS: [&str; 2] = [
    "/usr/lib/galera/libgalera_smm.so",
    "/usr/lib/libgalera_smm.so",
];

pub const NODES: usize = 3;

/// How long a cluster may take to form, or a node to rejoin.
const SYNC_LIMIT: Duration = Duration::from_secs(90);

/// The ports one node listens on (all on 127.0.0.1).
#[derive(Debug, Clone, Copy)]
struct NodePorts {
    group: u16,
    ist: u16,
    sst: u16,
}

pub struct GaleraCluster {
    base: PathBuf,
    ports: Vec<NodePorts>,
    provider: PathBuf,
    /// `None` while a node is down (after [`GaleraCluster::kill`]).
    nodes: Vec<Option<MariaDb>>,
    /// Whether each node stops when the thread that started it ends.
    die_with_parent: bool,
}

impl GaleraCluster {
    /// Starts three nodes with files under `base/node{0,1,2}` and waits until
    /// the cluster has three members, all `Synced`. Fails loudly (with the
    /// log to look at) when galera-4 is missing or a node cannot start.
    pub fn start(base: &Path) -> Result<Self, DevError> {
        Self::start_inner(base, false)
    }

    /// [`GaleraCluster::start`], and every node gets SIGTERM when the
    /// calling thread ends, even when the process is killed with SIGKILL
    /// (see [`crate::process::die_with_parent`]). For a caller that starts
    /// and restarts the nodes from one thread that lives as long as they
    /// should.
    pub fn start_tied_to_this_thread(base: &Path) -> Result<Self, DevError> {
        Self::start_inner(base, true)
    }

    fn start_inner(base: &Path, die_with_parent: bool) -> Result<Self, DevError> {
        let provider = PROVIDER_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| {
                DevError::Missing(format!(
                    "the Galera provider is not installed (looked for {}): \
                     Debian/Ubuntu: `apt-get install galera-4`",
                    PROVIDER_PATHS.join(", ")
                ))
            })?;
        let ports = (0..NODES)
            .map(|_| {
                Ok(NodePorts {
                    group: free_port()?,
                    ist: free_port()?,
                    sst: free_port()?,
                })
            })
            .collect::<Result<Vec<_>, DevError>>()?;
        let mut cluster = Self {
            base: base.to_path_buf(),
            ports,
            provider,
            nodes: (0..NODES).map(|_| None).collect(),
            die_with_parent,
        };
        if !cluster.node_base(0).join("data").is_dir() {
            cluster.seed_identical_data_dirs()?;
        }
        // A cluster stopped by `stop` left node 0 safe to bootstrap; after a
        // crash no node is, and node 0 is made so (a development cluster:
        // should another node have seen later transactions, it takes a
        // state transfer from node 0 and they are lost).
        mark_safe_to_bootstrap(&cluster.node_base(0).join("data/grastate.dat"))?;
        cluster.start_node(0, true)?;
        cluster.wait_synced(0)?;
        // The joiners together: with the same state as node 0 they need no
        // state transfer (else they take one, IST or rsync SST).
        for node in 1..NODES {
            cluster.start_node(node, false)?;
        }
        for node in 1..NODES {
            cluster.wait_synced(node)?;
        }
        cluster.wait_cluster_size(NODES)?;
        Ok(cluster)
    }

    /// A first start: node 0's data directory is created and its cluster
    /// state saved by a clean stop; the other nodes start from copies, so
    /// they join without a state transfer (an rsync SST takes seconds).
    fn seed_identical_data_dirs(&mut self) -> Result<(), DevError> {
        self.start_node(0, true)?;
        self.wait_synced(0)?;
        if let Some(mut first) = self.nodes[0].take() {
            first.stop();
        }
        let data = self.node_base(0).join("data");
        for node in 1..NODES {
            let base = self.node_base(node);
            std::fs::create_dir_all(&base)
                .map_err(DevError::io(format!("creating {}", base.display())))?;
            let out = Command::new("cp")
                .arg("-a")
                .arg(&data)
                .arg(base.join("data"))
                .stderr(Stdio::piped())
                .output()
                .map_err(DevError::io("running cp"))?;
            if !out.status.success() {
                return Err(DevError::MariaDb(format!(
                    "copying {}: {}",
                    data.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        Ok(())
    }

    /// Starts `node` from its data directory. After a crash (saved seqno
    /// -1) its position is first recovered from InnoDB (`--wsrep-recover`,
    /// as the galera_recovery script does), so it can rejoin by IST from the
    /// others' gcache instead of a full state transfer.
    fn start_node(&mut self, node: usize, bootstrap: bool) -> Result<(), DevError> {
        let mut options = self.options(node, bootstrap);
        let grastate = self.node_base(node).join("data/grastate.dat");
        let crashed = std::fs::read_to_string(&grastate).is_ok_and(|state| {
            state
                .lines()
                .any(|l| l.split_whitespace().eq(["seqno:", "-1"]))
        });
        if crashed {
            if let Some(position) = self.recover_position(node, &options)? {
                options
                    .extra_args
                    .push(format!("--wsrep-start-position={position}"));
            }
        }
        let server = MariaDb::start_with(&self.node_base(node), &options)?;
        self.nodes[node] = Some(server);
        Ok(())
    }

    fn recover_position(
        &self,
        node: usize,
        options: &ServerOptions,
    ) -> Result<Option<String>, DevError> {
        let base = self.node_base(node);
        let log = base.join("recover.log");
        let _ = std::fs::remove_file(&log);
        let status = server_command(&find_mariadbd()?, &base, options)?
            .arg("--wsrep-recover")
            .arg(format!("--log-error={}", log.display()))
            .status()
            .map_err(DevError::io("running mariadbd --wsrep-recover"))?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if !status.success() {
            return Err(DevError::MariaDb(format!(
                "node{node}: mariadbd --wsrep-recover failed ({status}); see {}",
                log.display()
            )));
        }
        Ok(text
            .lines()
            .filter_map(|l| l.split_once("WSREP: Recovered position: "))
            .map(|(_, position)| position.trim().to_owned())
            .next_back())
    }

    fn node_base(&self, node: usize) -> PathBuf {
        self.base.join(format!("node{node}"))
    }

    fn options(&self, node: usize, bootstrap: bool) -> ServerOptions {
        let me = self.ports[node];
        let members = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.group))
            .collect::<Vec<_>>()
            .join(",");
        // Short failure detection, so a killed node is evicted (and the
        // others commit again) within a few seconds; a small gcache, so
        // three nodes stay light, yet large enough for IST after a crash.
        let provider_options = format!(
            "gmcast.listen_addr=tcp://127.0.0.1:{};ist.recv_addr=127.0.0.1:{};\
             gcache.size=32M;evs.keepalive_period=PT0.5S;evs.inactive_check_period=PT0.5S;\
             evs.suspect_timeout=PT2S;evs.inactive_timeout=PT4S;evs.install_timeout=PT3S",
            me.group, me.ist
        );
        let mut extra_args = vec![
            "--wsrep-on=ON".to_owned(),
            format!("--wsrep-provider={}", self.provider.display()),
            format!("--wsrep-cluster-address=gcomm://{members}"),
            "--wsrep-cluster-name=todoapp-dev".to_owned(),
            format!("--wsrep-node-name=node{node}"),
            format!("--wsrep-node-address=127.0.0.1:{}", me.group),
            format!("--wsrep-provider-options={provider_options}"),
            "--wsrep-sst-method=rsync".to_owned(),
            format!("--wsrep-sst-receive-address=127.0.0.1:{}", me.sst),
            "--binlog-format=ROW".to_owned(),
            "--default-storage-engine=InnoDB".to_owned(),
            "--innodb-autoinc-lock-mode=2".to_owned(),
            "--wsrep-slave-threads=2".to_owned(),
        ];
        if bootstrap {
            extra_args.push("--wsrep-new-cluster".to_owned());
        }
        ServerOptions {
            extra_args,
            os_user: Some("mysql".to_owned()),
            die_with_parent: self.die_with_parent,
        }
    }

    /// URL of database `db` on `node`, over its Unix socket.
    pub fn url(&self, node: usize, db: &str) -> String {
        format!(
            "mysql://root@localhost/{db}?socket={}",
            self.node_base(node).join("mysqld.sock").display()
        )
    }

    /// Creates database `db` (on a running node; DDL replicates) and returns
    /// its URL on every node, in node order.
    pub async fn create_database(&self, db: &str) -> Result<Vec<String>, DevError> {
        let up = self
            .nodes
            .iter()
            .position(Option::is_some)
            .ok_or_else(|| DevError::MariaDb("no Galera node is running".into()))?;
        create_database_at(&self.url(up, ""), db).await?;
        Ok((0..NODES).map(|n| self.url(n, db)).collect())
    }

    /// Kills node `node` with SIGKILL, as a crash would.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut server) = self.nodes[node].take() {
            server.kill();
        }
    }

    /// Restarts a killed node; it rejoins (IST from the others' gcache when
    /// it can, else a full SST) and this returns once it is `Synced` and the
    /// cluster has all members again.
    pub fn restart(&mut self, node: usize) -> Result<(), DevError> {
        if self.nodes[node].is_some() {
            return Ok(());
        }
        self.start_node(node, false)?;
        self.wait_synced(node)?;
        self.wait_cluster_size(NODES)
    }

    pub fn pid(&self, node: usize) -> Option<u32> {
        self.nodes[node].as_ref().map(MariaDb::pid)
    }

    /// Waits until every running node reports `size` members.
    pub fn wait_cluster_size(&self, size: usize) -> Result<(), DevError> {
        for node in (0..NODES).filter(|n| self.nodes[*n].is_some()) {
            self.wait_status(node, "wsrep_cluster_size", &size.to_string())?;
        }
        Ok(())
    }

    fn wait_synced(&mut self, node: usize) -> Result<(), DevError> {
        self.wait_status(node, "wsrep_local_state_comment", "Synced")
    }

    fn wait_status(&self, node: usize, name: &str, want: &str) -> Result<(), DevError> {
        let url = self.url(node, "");
        let log = self.node_base(node).join("mariadbd.log");
        let deadline = Instant::now() + SYNC_LIMIT;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(DevError::io("starting a runtime"))?;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            match runtime.block_on(status(&url, name)) {
                Ok(value) if value == want => return Ok(()),
                Ok(value) => last = value,
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(DevError::MariaDb(format!(
            "Galera node{node}: {name} did not become {want} within {SYNC_LIMIT:?} \
             (last: {last}); see {}",
            log.display()
        )))
    }

    /// Stops every node (SIGTERM, each in turn).
    pub fn stop(&mut self) {
        for node in self.nodes.iter_mut().rev() {
            if let Some(mut server) = node.take() {
                server.stop();
            }
        }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }
}

impl Drop for GaleraCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn mark_safe_to_bootstrap(grastate: &Path) -> Result<(), DevError> {
    let Ok(state) = std::fs::read_to_string(grastate) else {
        return Ok(());
    };
    if !state.contains("safe_to_bootstrap: 0") {
        return Ok(());
    }
    std::fs::write(
        grastate,
        state.replace("safe_to_bootstrap: 0", "safe_to_bootstrap: 1"),
    )
    .map_err(DevError::io(format!("writing {}", grastate.display())))
}

/// One global status value of the server at `url`.
pub async fn status(url: &str, name: &str) -> Result<String, DevError> {
    let mut conn = MySqlConnection::connect(url)
        .await
        .map_err(|e| DevError::MariaDb(format!("connecting: {e}")))?;
    let value: Option<String> = sqlx::query_scalar(
        "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = ?",
    )
    .bind(name)
    .fetch_optional(&mut conn)
    .await
    .map_err(|e| DevError::MariaDb(format!("reading {name}: {e}")))?;
    let _ = conn.close().await;
    Ok(value.unwrap_or_default())
}

/// A port free on 127.0.0.1 right now, below the kernel's ephemeral range
/// when there is room there. The nodes bind their ports one after another
/// while earlier nodes already connect out, and an outgoing connection's
/// source port (taken from the ephemeral range) could take a port picked
/// in that range before its node binds it: the node would then fail to
/// start. Ports handed out in this process are not handed out again.
fn free_port() -> Result<u16, DevError> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 10_000;
    if ephemeral_start > LOWEST + 1000 {
        let span = u64::from(ephemeral_start - LOWEST);
        // A start that differs per process, so parallel test binaries try
        // different ports first.
        let seed = u64::from(std::process::id()).wrapping_mul(2_654_435_761)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| u64::from(t.subsec_nanos()));
        for step in 0..span.min(2000) {
            let offset = u16::try_from((seed.wrapping_add(step * 7919)) % span).unwrap_or(0);
            let port = LOWEST + offset;
            if handed_out.contains(&port) {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                handed_out.push(port);
                return Ok(port);
            }
        }
    }
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(DevError::io("finding a free loopback port"))?;
    let port = listener
        .local_addr()
        .map_err(DevError::io("finding a free loopback port"))?
        .port();
    handed_out.push(port);
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..3 * NODES).map(|_| free_port().expect("port")).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .expect("the kernel's ephemeral port range");
        let start: u16 = range
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .expect("a port number");
        // (A range that starts too low leaves no room: then any free port.)
        if start > 11_000 {
            assert!(
                ports.iter().all(|&p| p < start),
                "{ports:?} not below {start}"
            );
        }
    }
}
