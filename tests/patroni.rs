//! Patroni (PostgreSQL high availability) with its etcd3 DCS, which speaks
//! etcd's JSON gateway (`/v3/kv/range`, `/v3/kv/txn`, `/v3/lease/*`,
//! `/v3/watch`), running a two-node PostgreSQL cluster on cairn: a leader is
//! elected, the replica streams from it, and when the leader's Patroni and
//! PostgreSQL are killed the replica is promoted. Real Patroni (pinned, from
//! PyPI, in /opt/cairn-patroni) and Debian's PostgreSQL, both installed by
//! scripts/install-deps.sh. PostgreSQL refuses to run as root, so as root
//! the nodes run as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::server::free_port;
use harness::{etcdctl, Cluster, Server};
use serde_json::Value;

const PATRONI_DIR: &str = "/opt/cairn-patroni";
const SCOPE: &str = "cairn-test";
/// Bootstrapping (initdb), the replica's base backup and a failover after
/// the leader lease's 10 s TTL all fit well within this.
const WAIT: Duration = Duration::from_secs(120);

fn pg_bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/install-deps.sh installs PostgreSQL)", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL server under /usr/lib/postgresql")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// One Patroni-managed PostgreSQL node in its own directory.
struct PgNode {
    name: String,
    dir: PathBuf,
    rest_port: u16,
    pg_port: u16,
    patroni: Option<Child>,
}

impl PgNode {
    fn start(root: &Path, index: usize, dcs_hosts: &str, bin_dir: &Path) -> PgNode {
        let name = format!("pg{index}");
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let (rest_port, pg_port) = (free_port(), free_port());
        let d = dir.display();
        let bin = bin_dir.display();
        // Small TTL and loop wait keep the failover within seconds.
        let config = format!(
            r#"scope: {SCOPE}
name: {name}
log:
  level: INFO
restapi:
  listen: 127.0.0.1:{rest_port}
  connect_address: 127.0.0.1:{rest_port}
etcd3:
  hosts: {dcs_hosts}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 104857600
    postgresql:
      use_pg_rewind: false
      parameters:
        wal_level: replica
        hot_standby: "on"
        max_wal_senders: 5
        max_replication_slots: 5
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {d}/data
  bin_dir: {bin}
  pgpass: {d}/pgpass
  authentication:
    replication:
      username: replicator
      password: rep
    superuser:
      username: postgres
      password: pg
  parameters:
    unix_socket_directories: {d}
    shared_buffers: 16MB
"#
        );
        let config_path = dir.join("patroni.yml");
        std::fs::write(&config_path, config).expect("write patroni.yml");
        let log = std::fs::File::create(dir.join("patroni.log")).expect("log file");
        let mut cmd = if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown (the postgres user comes with Debian's postgresql package)");
            assert!(status.success(), "chown {} to postgres", dir.display());
            let mut c = Command::new("setpriv");
            c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "/usr/bin/python3"]);
            c
        } else {
            Command::new("/usr/bin/python3")
        };
        cmd.args(["-m", "patroni"])
            .arg(&config_path)
            .env("PYTHONPATH", PATRONI_DIR)
            .env("HOME", &dir)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let patroni = cmd
            .spawn()
            .expect("run Patroni (scripts/install-deps.sh installs it into /opt/cairn-patroni)");
        PgNode {
            name,
            dir,
            rest_port,
            pg_port,
            patroni: Some(patroni),
        }
    }

    fn rest(&self, path: &str) -> Option<(u16, Value)> {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{}{path}", self.rest_port))
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let (body, status) = text.rsplit_once('\n')?;
        Some((status.trim().parse().ok()?, serde_json::from_str(body).ok()?))
    }

    /// Runs one SQL statement over TCP; the trimmed unaligned output.
    fn sql(&self, statement: &str) -> Result<String, String> {
        let out = Command::new(pg_bin_dir().join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.pg_port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", statement])
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir.join("data").join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Kills Patroni and its PostgreSQL at once, as a crashed machine would.
    fn kill9(&mut self) {
        if let Some(mut p) = self.patroni.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        if let Some(pid) = self.postmaster_pid() {
            // SAFETY: signalling a pid read from this node's own pid file.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("patroni.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for PgNode {
    fn drop(&mut self) {
        // Patroni stops its PostgreSQL on SIGTERM; a killed one leaves the
        // postmaster, which goes next.
        if let Some(mut p) = self.patroni.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && matches!(p.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = p.kill();
            let _ = p.wait();
        }
        if let Some(pid) = self.postmaster_pid() {
            // SAFETY: the node's own postmaster, from its pid file.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Polls `check` until it yields, failing with the nodes' logs.
fn wait_for<T>(what: &str, nodes: &[&PgNode], mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes.iter().map(|n| format!("--- {}:\n{}", n.name, n.log_tail())).collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The cluster as one node's REST API sees it: (leader, streaming replicas).
fn roles(node: &PgNode) -> Option<(String, Vec<String>)> {
    let (status, cluster) = node.rest("/cluster")?;
    if status != 200 {
        return None;
    }
    let members = cluster["members"].as_array()?;
    let leader = members.iter().find(|m| m["role"] == "leader" && m["state"] == "running")?["name"]
        .as_str()?
        .to_string();
    let streaming = members
        .iter()
        .filter(|m| m["role"] == "replica" && m["state"] == "streaming")
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect();
    Some((leader, streaming))
}

/// The whole scenario against a DCS at `endpoints` (client URLs).
fn leader_replica_failover(endpoints: &[String]) {
    let root = tempfile::Builder::new().prefix("cairn-patroni").tempdir().expect("temp dir");
    // The postgres user needs to reach its node directories.
    std::fs::set_permissions(root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let hosts: Vec<String> = endpoints.iter().map(|e| e.trim_start_matches("http://").to_string()).collect();
    let hosts = hosts.join(",");
    let bin_dir = pg_bin_dir();
    let mut first = PgNode::start(root.path(), 0, &hosts, &bin_dir);
    // The first node bootstraps the cluster; the second then joins as a
    // replica by base backup.
    let leader_name = wait_for("the first node to lead", &[&first], || {
        roles(&first).filter(|(leader, _)| *leader == first.name).map(|(l, _)| l)
    });
    let second = PgNode::start(root.path(), 1, &hosts, &bin_dir);
    wait_for("a streaming replica", &[&first, &second], || {
        roles(&first).filter(|(leader, replicas)| *leader == leader_name && replicas.as_slice() == std::slice::from_ref(&second.name))
    });
    // The leader sees its replica connected and streaming.
    wait_for("pg_stat_replication to show the replica", &[&first, &second], || {
        first.sql("select state from pg_stat_replication").ok().filter(|s| s == "streaming")
    });
    first
        .sql("create table t (x int); insert into t values (42)")
        .expect("write on the leader");
    wait_for("the row on the replica", &[&first, &second], || {
        second.sql("select x from t").ok().filter(|x| x == "42")
    });
    assert_eq!(second.sql("select pg_is_in_recovery()").as_deref(), Ok("t"));

    // The DCS holds the leader key, under a lease.
    let leader_key = format!("/service/{SCOPE}/leader");
    let got = etcdctl(&endpoints[0], &["get", &leader_key, "--print-value-only"]);
    assert_eq!(got.assert_ok().stdout.trim(), first.name, "{got:?}");

    first.kill9();
    wait_for("the replica's promotion", &[&first, &second], || {
        roles(&second).filter(|(leader, _)| *leader == second.name)
    });
    wait_for("the promoted node to leave recovery", &[&second], || {
        second.sql("select pg_is_in_recovery()").ok().filter(|r| r == "f")
    });
    assert_eq!(second.sql("select x from t").as_deref(), Ok("42"), "the row survives");
    second.sql("insert into t values (43)").expect("the promoted node takes writes");
    let got = etcdctl(&endpoints[0], &["get", &leader_key, "--print-value-only"]);
    assert_eq!(got.assert_ok().stdout.trim(), second.name, "{got:?}");
    let (status, body) = second.rest("/primary").expect("REST API");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn patroni_on_one_member() {
    let server = Server::start_target();
    leader_replica_failover(&[server.endpoint()]);
}

#[test]
fn patroni_on_three_members() {
    let cluster = Cluster::start_kind(harness::target_kind(), 3, &[]);
    leader_replica_failover(&cluster.endpoints());
}
