//! etcdctl commands that do not exit by themselves (`watch`, `elect`,
//! `lock` while waiting): started in the background, read until the output
//! holds what the test waits for, then killed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a background command may take to print what a test waits for.
pub const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// A running etcdctl whose stdout is collected line by line.
pub struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    args: Vec<String>,
}

impl Background {
    /// Starts `etcdctl --endpoints=ENDPOINT ARGS...` (API v3).
    pub fn start(endpoint: &str, args: &[&str]) -> Background {
        let (bin, mut cmd) = crate::etcdctl::command(endpoint);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Background {
            child,
            lines,
            seen: Vec::new(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Reads until `done(lines so far)` holds; panics after the timeout.
    #[track_caller]
    pub fn wait_for(&mut self, what: &str, done: impl Fn(&[String]) -> bool) -> &[String] {
        let deadline = Instant::now() + BACKGROUND_TIMEOUT;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "etcdctl {:?} did not print {what} within {BACKGROUND_TIMEOUT:?}; output so far: {:#?}",
                    self.args, self.seen
                ),
            }
        }
        &self.seen
    }

    /// Sends SIGINT, which etcdctl answers by cleaning up (unlocking,
    /// resigning) before it exits.
    pub fn interrupt(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Kills the process and returns everything it printed.
    pub fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many watch events etcdctl's simple output holds so far.
pub fn simple_events(lines: &[String]) -> usize {
    lines.iter().filter(|l| *l == "PUT" || *l == "DELETE").count()
}

/// How many watch events etcdctl's `-w json` output holds so far.
pub fn json_events(lines: &[String]) -> usize {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["Events"].as_array().map_or(0, |a| a.len()))
        .sum()
}
