//! Launching and controlling server processes (cairn or the reference etcd).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::etcdctl::etcdctl_timeout;

/// How long a server may take to become ready before the test fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
pub const TERM_TIMEOUT: Duration = Duration::from_secs(30);

/// Member name given to every server the harness starts.  Both sides of a
/// differential test get the same name so names can be compared verbatim.
pub const MEMBER_NAME: &str = "cairn-test";

/// Which server implementation to launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The reference implementation: a real etcd 3.4 binary.
    Etcd,
    /// The second reference: the official etcd 3.5.1 binary.
    Etcd35,
    /// The system under test.
    Cairn,
}

impl Kind {
    pub(crate) fn binary(self) -> PathBuf {
        match self {
            Kind::Etcd => crate::require_etcd(),
            Kind::Etcd35 => crate::etcd35_bin(),
            Kind::Cairn => crate::cairn_bin(),
        }
    }
}

/// A single-member server running as a child process on free loopback ports,
/// with a private temporary directory holding its data dir and its logs.
pub struct Server {
    kind: Kind,
    bin: PathBuf,
    name: String,
    client_port: u16,
    peer_port: u16,
    extra_args: Vec<String>,
    dir: TempDir,
    child: Option<Child>,
    /// Number of times the process has been launched (1 after `start`).
    launches: u32,
    /// "https" for a client listener serving TLS.
    scheme: &'static str,
    /// etcdctl's TLS flags for talking to this server (readiness probes).
    etcdctl_flags: Vec<String>,
    /// `user:password` the readiness probe logs in with, once auth is on.
    probe_user: Option<String>,
}

/// Ports handed out by this process, never handed out twice so that
/// concurrently running tests cannot collide with each other.
fn used_ports() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Allocates a free TCP port on 127.0.0.1 by binding port 0.
pub fn free_port() -> u16 {
    let mut used = used_ports().lock().unwrap();
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        if used.insert(port) {
            return port;
        }
    }
    panic!("could not allocate a fresh TCP port");
}

impl Server {
    /// Starts a server of the given kind with default flags and waits until ready.
    pub fn start(kind: Kind) -> Server {
        Server::start_with_args(kind, &[])
    }

    /// Starts the system under test (cairn, or etcd when `CAIRN_TEST_TARGET=etcd`).
    pub fn start_target() -> Server {
        Server::start(crate::target_kind())
    }

    /// Starts a server with extra flags appended to the common flag set
    /// (e.g. `--max-request-bytes=4096`).  Both implementations get exactly
    /// the same command line apart from the binary.
    pub fn start_with_args(kind: Kind, extra_args: &[&str]) -> Server {
        Server::start_tls(kind, extra_args, None)
    }

    /// Like [`Server::start_with_args`]; with `etcdctl_flags` (TLS flags
    /// for etcdctl: `--cacert`, `--cert`, `--key`...) the client URL is
    /// `https://` and readiness is probed with those flags.
    pub fn start_tls(kind: Kind, extra_args: &[&str], etcdctl_flags: Option<Vec<String>>) -> Server {
        let mut s = Server::unstarted(kind, extra_args, etcdctl_flags);
        s.launch();
        s
    }

    /// Starts a server after `prepare` has filled its data dir (a restored
    /// backup, say); its readiness probe logs in as `probe_user`.
    pub fn start_prepared(kind: Kind, probe_user: Option<&str>, prepare: impl FnOnce(&Server)) -> Server {
        let mut s = Server::unstarted(kind, &[], None);
        s.probe_user = probe_user.map(str::to_string);
        prepare(&s);
        s.launch();
        s
    }

    fn unstarted(kind: Kind, extra_args: &[&str], etcdctl_flags: Option<Vec<String>>) -> Server {
        crate::require_etcdctl(); // readiness probing uses etcdctl
        let bin = kind.binary();
        let dir = tempfile::Builder::new()
            .prefix(match kind {
                Kind::Etcd => "cairn-test-etcd-",
                Kind::Etcd35 => "cairn-test-etcd35-",
                Kind::Cairn => "cairn-test-cairn-",
            })
            .tempdir()
            .expect("create tempdir");
        Server {
            kind,
            bin,
            name: MEMBER_NAME.to_string(),
            client_port: free_port(),
            peer_port: free_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            dir,
            child: None,
            launches: 0,
            scheme: if etcdctl_flags.is_some() { "https" } else { "http" },
            etcdctl_flags: etcdctl_flags.unwrap_or_default(),
            probe_user: None,
        }
    }

    /// Makes the readiness probe log in as `user:password` (needed once auth
    /// is enabled: etcd refuses an anonymous health check then).
    pub fn set_probe_user(&mut self, user: Option<&str>) {
        self.probe_user = user.map(str::to_string);
    }

    /// Which implementation this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Client URL, e.g. `http://127.0.0.1:40123` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client_port)
    }

    /// `127.0.0.1:PORT` of the peer listener.
    pub fn peer_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.peer_port))
    }

    /// Peer URL, e.g. `http://127.0.0.1:40124`.
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// `127.0.0.1:PORT` of the client listener.
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// The member name passed with `--name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `--data-dir` of this server.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temporary directory that holds data dir and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id of the running server, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the process is currently running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => c.try_wait().expect("try_wait").is_none(),
        }
    }

    fn stdout_path(&self) -> PathBuf {
        self.dir.path().join("server.stdout.log")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("server.stderr.log")
    }

    /// The full command line (without the binary).
    pub fn args(&self) -> Vec<String> {
        let ep = self.endpoint();
        let peer = self.peer_url();
        let mut args = vec![
            "--name".to_string(),
            self.name.clone(),
            "--data-dir".to_string(),
            self.data_dir().display().to_string(),
            "--listen-client-urls".to_string(),
            ep.clone(),
            "--advertise-client-urls".to_string(),
            ep,
            "--listen-peer-urls".to_string(),
            peer.clone(),
            "--initial-advertise-peer-urls".to_string(),
            peer.clone(),
            "--initial-cluster".to_string(),
            format!("{}={}", self.name, peer),
            "--initial-cluster-state".to_string(),
            "new".to_string(),
            "--log-level".to_string(),
            "info".to_string(),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    fn open_log(path: &Path) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "server already running");
        self.launches += 1;
        let banner = format!(
            "\n===== launch #{} of {:?}: {} {} =====\n",
            self.launches,
            self.kind,
            self.bin.display(),
            self.args().join(" ")
        );
        for p in [self.stdout_path(), self.stderr_path()] {
            use std::io::Write;
            let _ = Self::open_log(&p).write_all(banner.as_bytes());
        }
        let child = Command::new(&self.bin)
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Self::open_log(&self.stdout_path()))
            .stderr(Self::open_log(&self.stderr_path()))
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls until the server answers a linearizable read (`etcdctl endpoint
    /// health`), bounded by [`READY_TIMEOUT`].  Panics with the log tail otherwise.
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        let mut last = String::from("(no health check attempted: port never accepted connections)");
        loop {
            if let Some(st) = self.child.as_mut().expect("not running").try_wait().unwrap() {
                self.child = None;
                panic!("{:?} server exited during startup with {st}\n{}", self.kind, self.log_tail(60));
            }
            if TcpStream::connect_timeout(&self.client_addr(), Duration::from_millis(500)).is_ok() {
                let user = self.probe_user.as_ref().map(|u| format!("--user={u}"));
                let mut probe: Vec<&str> = self.etcdctl_flags.iter().map(String::as_str).collect();
                probe.extend(["endpoint", "health", "--dial-timeout=2s", "--command-timeout=3s"]);
                probe.extend(user.as_deref());
                let out = etcdctl_timeout(&self.endpoint(), &probe, None, Duration::from_secs(10));
                if out.status == Some(0) {
                    return;
                }
                last = format!("{out:?}");
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "{:?} server at {} not ready after {:?}; last health check: {last}\n{}",
                    self.kind,
                    self.endpoint(),
                    READY_TIMEOUT,
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs the process and reaps it.  No-op when not running.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL on Unix
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; returns its status.
    /// Panics if it does not exit within [`TERM_TIMEOUT`] (the process is then SIGKILLed).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("terminate: server is not running");
        let pid = c.id() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child's pid, which has not been reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait().expect("try_wait") {
                return st;
            }
            if start.elapsed() > TERM_TIMEOUT {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "{:?} server did not exit within {:?} of SIGTERM\n{}",
                    self.kind,
                    TERM_TIMEOUT,
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same data dir, ports and flags, and
    /// waits until ready.  If it is still running it is terminated first.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        self.launch();
    }

    /// The last `lines` lines of the captured stdout and stderr.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "--- {:?} stdout tail ({}) ---\n{}\n--- {:?} stderr tail ({}) ---\n{}",
            self.kind,
            self.stdout_path().display(),
            tail_of_file(&self.stdout_path(), lines),
            self.kind,
            self.stderr_path().display(),
            tail_of_file(&self.stderr_path(), lines)
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "server {:?} at {} (data dir {}), dropped during a panic:\n{}",
                self.kind,
                self.endpoint(),
                self.data_dir().display(),
                self.log_tail(40)
            );
        }
        self.kill9();
    }
}

fn tail_of_file(path: &Path, lines: usize) -> String {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("(cannot open: {e})"),
    };
    // Only look at the last 64 KiB; logs can be large.
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
