//! A multi-member cairn cluster of real processes on loopback ports, each
//! member's peer traffic passing through a [`PeerProxy`] so tests can cut it
//! off from the others.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::etcdctl::etcdctl_timeout;
use crate::proxy::PeerProxy;
use crate::server::{free_port, Kind, READY_TIMEOUT};

/// How long members may take to agree after a fault heals.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Member {
    pub name: String,
    /// The server binary: cairn, or etcd for a reference cluster.
    bin: PathBuf,
    client_port: u16,
    peer_port: u16,
    proxy: PeerProxy,
    dir: TempDir,
    child: Option<Child>,
    initial_cluster: String,
    state: &'static str,
    extra_args: Vec<String>,
    /// Extra environment for the next start.
    env: Vec<(String, String)>,
    /// "https" when peers talk TLS.
    peer_scheme: &'static str,
    /// `user:password` the harness's own etcdctl probes log in with.
    probe_user: Option<String>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The advertised peer URL (the proxy's).
    pub fn peer_url(&self) -> String {
        self.proxy.url().replacen("http://", &format!("{}://", self.peer_scheme), 1)
    }

    /// `127.0.0.1:PORT` the member's peer listener is bound to.
    pub fn listen_peer_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.peer_port))
    }

    /// Whether the member's log mentions `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(self.log_path()).unwrap_or_default().contains(needle)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The `--initial-cluster` the member starts with.
    pub fn initial_cluster(&self) -> &str {
        &self.initial_cluster
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn args(&self) -> Vec<String> {
        let ep = self.endpoint();
        let mut args = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir().display()),
            format!("--listen-client-urls={ep}"),
            format!("--advertise-client-urls={ep}"),
            format!("--listen-peer-urls={}://127.0.0.1:{}", self.peer_scheme, self.peer_port),
            format!("--initial-advertise-peer-urls={}", self.peer_url()),
            format!("--initial-cluster={}", self.initial_cluster),
            format!("--initial-cluster-state={}", self.state),
            "--initial-cluster-token=cairn-test-cluster".to_string(),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "member {} already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open member log");
        {
            use std::io::Write;
            let _ = (&log).write_all(format!("\n===== launch: {} =====\n", self.args().join(" ")).as_bytes());
        }
        let child = Command::new(&self.bin)
            .args(self.args())
            .env("RUST_LOG", "info,raft=info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn cairn");
        self.child = Some(child);
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => c.try_wait().expect("try_wait").is_none(),
        }
    }

    /// Runs one of the harness's own etcdctl probes against this member,
    /// logged in when auth is on.
    fn probe(&self, args: &[&str], timeout: Duration) -> crate::Output {
        let user = self.probe_user.as_ref().map(|u| format!("--user={u}"));
        let mut all = args.to_vec();
        all.extend(user.as_deref());
        etcdctl_timeout(&self.endpoint(), &all, None, timeout)
    }

    /// Whether the member answers a linearizable read.
    pub fn healthy(&self) -> bool {
        let out = self.probe(
            &["endpoint", "health", "--dial-timeout=1s", "--command-timeout=3s"],
            Duration::from_secs(10),
        );
        out.status == Some(0)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        format!("--- {} log ---\n{}", self.name, all[all.len().saturating_sub(lines)..].join("\n"))
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let start = Instant::now();
            while c.try_wait().expect("try_wait").is_none() {
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("member {} ignored SIGTERM\n{}", self.name, self.log_tail(40));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Cuts all peer traffic to this member (and so every reply to it).
    pub fn isolate(&self) {
        self.proxy.cut();
    }

    pub fn heal(&self) {
        self.proxy.heal();
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

pub struct Cluster {
    pub members: Vec<Member>,
    extra_args: Vec<String>,
    kind: Kind,
    peer_scheme: &'static str,
}

impl Cluster {
    /// Starts `n` members as a new cluster and waits until each serves.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with_args(n, &[])
    }

    pub fn start_with_args(n: usize, extra_args: &[&str]) -> Cluster {
        Cluster::start_kind(Kind::Cairn, n, extra_args)
    }

    /// Starts a cluster of `kind`: cairn, or a real etcd cluster as the
    /// reference for differential cluster tests (the flags are etcd's).
    pub fn start_kind(kind: Kind, n: usize, extra_args: &[&str]) -> Cluster {
        Cluster::start_prepared(kind, n, extra_args, |_| {})
    }

    /// Like [`Cluster::start_kind`], calling `prepare` on each member before
    /// its first start (to restore a backup into its data dir, say).
    pub fn start_prepared(kind: Kind, n: usize, extra_args: &[&str], prepare: impl Fn(&Member)) -> Cluster {
        Cluster::start_with_peer_scheme(kind, "http", n, extra_args, prepare)
    }

    /// Starts `n` members whose peer URLs are `https://`; `extra_args` must
    /// carry the peer TLS flags.
    pub fn start_peer_tls(kind: Kind, n: usize, extra_args: &[&str]) -> Cluster {
        Cluster::start_with_peer_scheme(kind, "https", n, extra_args, |_| {})
    }

    fn start_with_peer_scheme(kind: Kind, peer_scheme: &'static str, n: usize, extra_args: &[&str], prepare: impl Fn(&Member)) -> Cluster {
        let mut cluster = Cluster::unstarted(kind, peer_scheme, n, extra_args);
        for m in &mut cluster.members {
            prepare(m);
            m.spawn();
        }
        for i in 0..n {
            cluster.wait_ready(i);
        }
        cluster.wait_members_published();
        cluster
    }

    /// Starts `n` cairn members as a new cluster with every member made to
    /// crash at `failpoint` (see cairn's `failpoint` module) during its very
    /// first start, then starts them all again and waits until they serve.
    pub fn start_after_first_start_crash(n: usize, failpoint: &str) -> Cluster {
        let mut cluster = Cluster::unstarted(Kind::Cairn, "http", n, &[]);
        for m in &mut cluster.members {
            m.env = vec![("CAIRN_FAILPOINT".to_string(), failpoint.to_string())];
            m.spawn();
        }
        for i in 0..n {
            cluster.wait_exited(i);
            assert!(
                cluster.log_contains(i, "CAIRN_FAILPOINT reached"),
                "member {i} did not crash at {failpoint}\n{}",
                cluster.log_tails()
            );
        }
        for m in &mut cluster.members {
            m.env.clear();
            m.spawn();
        }
        for i in 0..n {
            cluster.wait_ready(i);
        }
        cluster.wait_members_published();
        cluster
    }

    /// Starts `n` cairn members with `env` in the environment of the last
    /// one, which is started only once the others serve (so that, at first,
    /// it does not lead): for one member made to misbehave by a failpoint.
    pub fn start_with_last_env(n: usize, extra_args: &[&str], env: &[(&str, &str)]) -> Cluster {
        let mut cluster = Cluster::unstarted(Kind::Cairn, "http", n, extra_args);
        let last = n - 1;
        cluster.members[last].env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        for i in 0..last {
            cluster.members[i].spawn();
        }
        for i in 0..last {
            cluster.wait_ready(i);
        }
        cluster.members[last].spawn();
        cluster.wait_ready(last);
        cluster.wait_members_published();
        cluster
    }

    /// Starts stopped member `i` again with `extra_args` added to its
    /// flags from now on, without waiting for it to serve.
    pub fn spawn_with_args(&mut self, i: usize, extra_args: &[&str]) {
        let m = &mut self.members[i];
        m.kill9();
        m.extra_args.extend(extra_args.iter().map(|a| a.to_string()));
        m.spawn();
    }

    /// The members of a new cluster, configured but not started.
    fn unstarted(kind: Kind, peer_scheme: &'static str, n: usize, extra_args: &[&str]) -> Cluster {
        crate::require_etcdctl();
        let mut members: Vec<Member> = (0..n)
            .map(|i| new_member(kind, peer_scheme, &format!("m{i}"), extra_args))
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster = initial.clone();
        }
        Cluster {
            members,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            kind,
            peer_scheme,
        }
    }

    /// Makes the harness's own probes (readiness, status, hashes) log in as
    /// `user:password`, as they must once auth is enabled.
    pub fn set_probe_user(&mut self, user: Option<&str>) {
        for m in &mut self.members {
            m.probe_user = user.map(str::to_string);
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Waits (bounded) until member `i` answers a linearizable read.
    pub fn wait_ready(&mut self, i: usize) {
        let start = Instant::now();
        loop {
            let m = &mut self.members[i];
            if !m.is_running() {
                panic!("member {} exited\n{}", m.name, m.log_tail(60));
            }
            if m.healthy() {
                return;
            }
            if start.elapsed() > READY_TIMEOUT {
                let name = m.name.clone();
                panic!("member {name} not ready after {READY_TIMEOUT:?}\n{}", self.log_tails());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running member lists every member with client URLs.
    pub fn wait_members_published(&mut self) {
        let start = Instant::now();
        let want = self.members.len();
        'outer: loop {
            if start.elapsed() > READY_TIMEOUT {
                panic!("members never learned each other's client URLs\n{}", self.log_tails());
            }
            std::thread::sleep(Duration::from_millis(100));
            for i in 0..self.members.len() {
                if !self.members[i].is_running() {
                    continue;
                }
                let out = self.members[i].probe(&["member", "list", "-w", "json"], Duration::from_secs(15));
                if out.status != Some(0) {
                    continue 'outer;
                }
                let j: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("member list json");
                let members = j["members"].as_array().cloned().unwrap_or_default();
                let published = members
                    .iter()
                    .filter(|m| m["clientURLs"].as_array().is_some_and(|a| !a.is_empty()))
                    .count();
                if members.len() != want || published != want {
                    continue 'outer;
                }
            }
            return;
        }
    }

    /// Cuts member `i` off from the others in both directions: nothing
    /// reaches it through its proxy, and the proxies of the others refuse
    /// its connections. Returns what [`Cluster::heal_partition`] needs.
    pub fn partition(&mut self, i: usize) -> u32 {
        let pid = self.members[i].pid().expect("partitioning a member that is not running");
        self.members[i].isolate();
        for (j, m) in self.members.iter().enumerate() {
            if j != i {
                m.proxy.block(pid);
            }
        }
        pid
    }

    /// Ends the partition of member `i` (whose process was `pid`).
    pub fn heal_partition(&mut self, i: usize, pid: u32) {
        for m in &self.members {
            m.proxy.unblock(pid);
        }
        self.members[i].heal();
    }

    /// Connections the other members' proxies refused from partitioned
    /// processes: proof that a partitioned member `i` tried to reach them.
    pub fn refused_outbound(&self, i: usize) -> usize {
        (0..self.members.len())
            .filter(|j| *j != i)
            .map(|j| self.members[j].proxy.refused_blocked())
            .sum()
    }

    pub fn kill9(&mut self, i: usize) {
        self.members[i].kill9();
    }

    /// Starts a stopped member again on its data dir and waits until it serves.
    pub fn restart(&mut self, i: usize) {
        self.members[i].kill9();
        self.members[i].spawn();
        self.wait_ready(i);
    }

    /// Kills every member with SIGKILL, starts them together (a restarted
    /// cluster needs a quorum before any of them serves) and waits until
    /// all serve.
    pub fn restart_all(&mut self) {
        for m in &mut self.members {
            m.kill9();
        }
        for m in &mut self.members {
            m.spawn();
        }
        for i in 0..self.members.len() {
            self.wait_ready(i);
        }
    }

    /// Index of the member every running member agrees leads, waiting
    /// (bounded) for an election to settle.
    pub fn leader(&mut self) -> usize {
        let all: Vec<usize> = (0..self.members.len()).collect();
        self.leader_among(&all)
    }

    /// Like [`Cluster::leader`], asking only members `among`.
    pub fn leader_among(&mut self, among: &[usize]) -> usize {
        let start = Instant::now();
        loop {
            let mut leaders = Vec::new();
            let mut ids = Vec::new();
            for &i in among {
                if !self.members[i].is_running() {
                    continue;
                }
                let out = self.members[i].probe(&["endpoint", "status", "-w", "json"], Duration::from_secs(15));
                if out.status != Some(0) {
                    leaders.clear();
                    break;
                }
                let j: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("status json");
                let st = &j[0]["Status"];
                leaders.push(st["leader"].as_u64().unwrap_or(0));
                ids.push((i, st["header"]["member_id"].as_u64().unwrap_or(0)));
            }
            if let Some(&l) = leaders.first() {
                if l != 0 && leaders.iter().all(|x| *x == l) {
                    if let Some((i, _)) = ids.iter().find(|(_, id)| *id == l) {
                        return *i;
                    }
                }
            }
            if start.elapsed() > CONVERGE_TIMEOUT {
                panic!("no agreed leader: {leaders:?}\n{}", self.log_tails());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Member id (from `endpoint status`) of member `i`.
    pub fn member_id(&self, i: usize) -> u64 {
        let out = self.members[i].probe(&["endpoint", "status", "-w", "json"], Duration::from_secs(15));
        out.assert_ok();
        out.json()[0]["Status"]["header"]["member_id"].as_u64().expect("member id")
    }

    /// Waits (bounded) until every running member reports the same revision
    /// and the same HashKV, and returns that revision. Learners serve no
    /// HashKV (as on etcd): a learner must instead hold, in a serializable
    /// read of every key, exactly what a voter holds at the same revision.
    pub fn assert_converged(&mut self) -> i64 {
        let start = Instant::now();
        loop {
            let seen = self.member_states();
            if let Some(states) = &seen {
                let voters: Vec<&MemberState> = states.iter().filter(|s| !s.learner).collect();
                if let Some(first) = voters.first() {
                    let agree = voters.iter().all(|v| v.revision == first.revision && v.hash == first.hash)
                        && states.iter().all(|s| s.revision == first.revision && s.keys == first.keys);
                    if agree {
                        return first.revision;
                    }
                }
            }
            if start.elapsed() > CONVERGE_TIMEOUT {
                let summary: Vec<(i64, Option<u64>, bool)> =
                    seen.unwrap_or_default().iter().map(|s| (s.revision, s.hash, s.learner)).collect();
                panic!(
                    "members did not converge: (revision, hash, learner) = {summary:?}\n{}",
                    self.log_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Each running member's revision, HashKV (voters) and, when there are
    /// learners, its serializable view of every key; `None` if one failed.
    fn member_states(&mut self) -> Option<Vec<MemberState>> {
        let mut states = Vec::new();
        for i in 0..self.members.len() {
            if !self.members[i].is_running() {
                continue;
            }
            let m = &self.members[i];
            let ep = m.endpoint();
            let status = m.probe(&["endpoint", "status", "-w", "json"], Duration::from_secs(15));
            if status.status != Some(0) {
                return None;
            }
            let learner = status.json()[0]["Status"]["isLearner"].as_bool() == Some(true);
            let (revision, hash) = if learner {
                (None, None)
            } else {
                let out = m.probe(&["endpoint", "hashkv", "-w", "json"], Duration::from_secs(15));
                if out.status != Some(0) {
                    return None;
                }
                let h = &out.json()[0]["HashKV"];
                (h["header"]["revision"].as_i64(), h["hash"].as_u64())
            };
            states.push(MemberState {
                endpoint: ep,
                learner,
                revision: revision.unwrap_or(-1),
                hash,
                keys: String::new(),
            });
        }
        if states.iter().any(|s| s.learner) {
            for s in &mut states {
                let out = etcdctl_timeout(
                    &s.endpoint,
                    &["get", "", "--from-key", "--consistency=s", "-w", "json"],
                    None,
                    Duration::from_secs(15),
                );
                if out.status != Some(0) {
                    return None;
                }
                let j = out.json();
                if s.learner {
                    s.revision = j["header"]["revision"].as_i64().unwrap_or(-1);
                }
                s.keys = j["kvs"].to_string();
            }
        }
        Some(states)
    }

    /// Adds a member with `etcdctl member add` (through member `via`) and
    /// starts it with `--initial-cluster-state existing`; waits until it serves.
    pub fn add_member(&mut self, via: usize, learner: bool) -> usize {
        let extra = self.extra_args.clone();
        let i = self.add_member_started(via, learner, &extra);
        self.wait_status(i);
        i
    }

    /// Adds a member as [`Cluster::add_member`] does, started with
    /// `extra_args` instead of the cluster's, without waiting for it.
    pub fn add_member_started(&mut self, via: usize, learner: bool, extra_args: &[String]) -> usize {
        let name = format!("m{}", self.members.len());
        let extra: Vec<&str> = extra_args.iter().map(String::as_str).collect();
        let mut m = new_member(self.kind, self.peer_scheme, &name, &extra);
        let mut args = vec!["member", "add", name.as_str()];
        let peer = format!("--peer-urls={}", m.peer_url());
        args.push(&peer);
        if learner {
            args.push("--learner");
        }
        // With strict reconfiguration checks (etcd's default) a member is
        // only added once the one asked has been connected to every voter
        // for a few seconds, which a freshly started cluster may not be.
        let start = Instant::now();
        let out = loop {
            let out = etcdctl_timeout(&self.members[via].endpoint(), &args, None, Duration::from_secs(30));
            if !out.stderr.contains("etcdserver: unhealthy cluster") || start.elapsed() > CONVERGE_TIMEOUT {
                break out;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        out.assert_ok();
        let initial = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or_else(|| panic!("member add printed no ETCD_INITIAL_CLUSTER: {out:?}"))
            .to_string();
        m.initial_cluster = initial;
        m.state = "existing";
        m.spawn();
        self.members.push(m);
        self.members.len() - 1
    }

    /// Waits (bounded) until member `i` answers `endpoint status`, which
    /// needs no leader (a learner or a catching-up member answers it).
    pub fn wait_status(&mut self, i: usize) {
        let start = Instant::now();
        loop {
            let m = &mut self.members[i];
            if !m.is_running() {
                panic!("member {} exited\n{}", m.name, m.log_tail(60));
            }
            let out = m.probe(&["endpoint", "status", "--dial-timeout=1s"], Duration::from_secs(10));
            if out.status == Some(0) {
                return;
            }
            if start.elapsed() > READY_TIMEOUT {
                let name = m.name.clone();
                panic!("member {name} not serving after {READY_TIMEOUT:?}\n{}", self.log_tails());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (bounded) until member `i`'s process has exited by itself.
    pub fn wait_exited(&mut self, i: usize) {
        let start = Instant::now();
        while self.members[i].is_running() {
            if start.elapsed() > READY_TIMEOUT {
                panic!("member {} still running\n{}", self.members[i].name, self.members[i].log_tail(40));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.members[i].child = None;
    }

    /// Whether member `i`'s log mentions `needle` (diagnostics only).
    pub fn log_contains(&self, i: usize, needle: &str) -> bool {
        std::fs::read_to_string(self.members[i].log_path())
            .unwrap_or_default()
            .contains(needle)
    }

    pub fn log_tails(&self) -> String {
        self.members.iter().map(|m| m.log_tail(40)).collect::<Vec<_>>().join("\n")
    }
}

/// What [`Cluster::assert_converged`] compares of one member.
struct MemberState {
    endpoint: String,
    learner: bool,
    revision: i64,
    hash: Option<u64>,
    /// Every key as a serializable read returns it (only with learners).
    keys: String,
}

fn new_member(kind: Kind, peer_scheme: &'static str, name: &str, extra_args: &[&str]) -> Member {
    let peer_port = free_port();
    let proxy = PeerProxy::start(free_port(), SocketAddr::from(([127, 0, 0, 1], peer_port)));
    Member {
        name: name.to_string(),
        bin: kind.binary(),
        client_port: free_port(),
        peer_port,
        proxy,
        dir: tempfile::Builder::new().prefix("cairn-cluster-").tempdir().expect("tempdir"),
        child: None,
        initial_cluster: String::new(),
        state: "new",
        extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        peer_scheme,
        probe_user: None,
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(60));
        }
        self.kill9();
    }
}
