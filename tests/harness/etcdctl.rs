//! Running the real `etcdctl` (API v3) against a server.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Process-level timeout for one etcdctl invocation.
pub const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// Result of one etcdctl invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Exit code; `None` if killed by a signal.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts exit code 0 and returns self.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.status, Some(0), "etcdctl failed: {self:#?}");
        self
    }

    /// Asserts a failure with the given exit code and that stderr contains
    /// the line `Error: <msg>`.
    #[track_caller]
    pub fn fails_with(&self, code: i32, msg: &str) -> &Self {
        assert_eq!(self.status, Some(code), "unexpected exit code: {self:#?}");
        let want = format!("Error: {msg}");
        assert!(self.stderr.lines().any(|l| l == want), "stderr lacks {want:?}: {self:#?}");
        self
    }

    /// Parses stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("etcdctl stdout is not JSON ({e}): {self:#?}"))
    }

    /// The `Error: ...` lines of stderr (etcdctl prints one per failure).
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.starts_with("Error:")).collect()
    }
}

/// Runs `etcdctl --endpoints=ENDPOINT --command-timeout=10s ARGS...` with
/// `ETCDCTL_API=3` and a process-level timeout.
pub fn etcdctl(endpoint: &str, args: &[&str]) -> Output {
    etcdctl_timeout(endpoint, args, None, ETCDCTL_TIMEOUT)
}

/// Same as [`etcdctl`] with bytes fed on stdin (e.g. for `txn` or `put KEY`).
pub fn etcdctl_stdin(endpoint: &str, args: &[&str], stdin: &[u8]) -> Output {
    etcdctl_timeout(endpoint, args, Some(stdin), ETCDCTL_TIMEOUT)
}

/// `etcdctl --endpoints=ENDPOINT` speaking API v3, with the user's own
/// `ETCDCTL_*` environment kept from leaking into the tests. Returns the
/// binary's path (for messages) and the command, ready for more arguments.
pub(crate) fn command(endpoint: &str) -> (std::path::PathBuf, Command) {
    command_of(crate::require_etcdctl(), endpoint)
}

/// Like [`command`] with a given etcdctl binary (etcd 3.5.1's, say).
fn command_of(bin: std::path::PathBuf, endpoint: &str) -> (std::path::PathBuf, Command) {
    let mut cmd = Command::new(&bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=5s");
    (bin, cmd)
}

/// Fully parameterised etcdctl runner.  Stdin is `/dev/null` when `None`.
/// Panics if the process outlives `timeout` (after killing it).
pub fn etcdctl_timeout(endpoint: &str, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Output {
    run(command(endpoint), endpoint, args, stdin, timeout)
}

/// [`etcdctl_timeout`] with a given etcdctl binary.
pub fn etcdctl_with(bin: &Path, endpoint: &str, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Output {
    run(command_of(bin.to_path_buf(), endpoint), endpoint, args, stdin, timeout)
}

fn run((bin, mut cmd): (std::path::PathBuf, Command), endpoint: &str, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Output {
    cmd.arg("--command-timeout=10s")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));

    let writer = stdin.map(|data| {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            // etcdctl may exit before reading everything (e.g. bad flags).
            let _ = pipe.write_all(&data);
        })
    });
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out_pipe.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err_pipe.read_to_end(&mut b);
        b
    });

    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait etcdctl") {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("etcdctl {args:?} against {endpoint} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
    Output {
        status: status.code(),
        stdout,
        stderr,
    }
}

/// Builds the stdin of a non-interactive `etcdctl txn`: compares, a blank
/// line, success requests, a blank line, failure requests, a blank line.
///
/// Compares use etcdctl's syntax, e.g. `value("k") = "v"`, `ver("k") > "0"`,
/// `create("k") = "0"`, `mod("k") < "10"`; requests are `put k v`, `get k --prefix`,
/// `del k` etc.  etcdctl exits with code 3 if stdin ends before the third
/// blank line, so this always terminates every section.
pub fn txn_input(compares: &[&str], success: &[&str], failure: &[&str]) -> String {
    let mut s = String::new();
    for section in [compares, success, failure] {
        for line in section {
            s.push_str(line);
            s.push('\n');
        }
        s.push('\n');
    }
    s
}
