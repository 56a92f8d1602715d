//! Differential driver: the same etcdctl invocations (or gRPC calls) against
//! a real etcd and against the system under test, compared after normalisation.

use std::future::Future;

use serde_json::{json, Value};

use crate::etcdctl::{etcdctl_timeout, Output, ETCDCTL_TIMEOUT};
use crate::normalize::Normalizer;
use crate::server::{Kind, Server};

/// A reference etcd and a target server started with identical flags.
pub struct Differential {
    pub reference: Server,
    pub target: Server,
    pub nref: Normalizer,
    pub ntgt: Normalizer,
    steps: usize,
}

/// Runs two closures on two threads and returns both results, re-raising panics.
pub fn both<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|s| {
        let ha = s.spawn(a);
        let hb = s.spawn(b);
        let ra = ha.join();
        let rb = hb.join();
        match (ra, rb) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => std::panic::resume_unwind(e),
        }
    })
}

impl Differential {
    /// Starts a reference etcd and the target (cairn, or etcd when
    /// `CAIRN_TEST_TARGET=etcd`).  Fails loudly if etcd is not installed.
    pub fn start() -> Differential {
        Differential::start_with_args(&[])
    }

    /// Same as [`Differential::start`] with extra server flags given to both.
    pub fn start_with_args(args: &[&str]) -> Differential {
        Differential::start_tls(args, None)
    }

    /// Same as [`Differential::start_with_args`], serving clients over TLS
    /// when `etcdctl_flags` are given (see [`Server::start_tls`]).
    pub fn start_tls(args: &[&str], etcdctl_flags: Option<Vec<String>>) -> Differential {
        crate::require_etcd();
        let kind = crate::target_kind();
        let (reference, target) = both(
            || Server::start_tls(Kind::Etcd, args, etcdctl_flags.clone()),
            || Server::start_tls(kind, args, etcdctl_flags.clone()),
        );
        let nref = Normalizer::for_server(&reference);
        let ntgt = Normalizer::for_server(&target);
        Differential {
            reference,
            target,
            nref,
            ntgt,
            steps: 0,
        }
    }

    /// Runs `etcdctl ARGS` against both servers and asserts equal exit codes,
    /// normalised stdout and normalised stderr.  Returns (reference, target).
    #[track_caller]
    pub fn ctl(&mut self, step: &str, args: &[&str]) -> (Output, Output) {
        self.ctl_inner(step, args, args, None)
    }

    /// Like [`Differential::ctl`] with the same bytes fed to stdin on both sides.
    #[track_caller]
    pub fn ctl_stdin(&mut self, step: &str, args: &[&str], stdin: &[u8]) -> (Output, Output) {
        self.ctl_inner(step, args, args, Some(stdin))
    }

    /// Like [`Differential::ctl`] but with different arguments per side
    /// (e.g. server-generated lease ids), still compared after normalisation.
    #[track_caller]
    pub fn ctl_each(&mut self, step: &str, args_ref: &[&str], args_tgt: &[&str], stdin: Option<&[u8]>) -> (Output, Output) {
        self.ctl_inner(step, args_ref, args_tgt, stdin)
    }

    #[track_caller]
    fn ctl_inner(&mut self, step: &str, args_ref: &[&str], args_tgt: &[&str], stdin: Option<&[u8]>) -> (Output, Output) {
        self.steps += 1;
        let ep_ref = self.reference.endpoint();
        let ep_tgt = self.target.endpoint();
        let (r, t) = both(
            || etcdctl_timeout(&ep_ref, args_ref, stdin, ETCDCTL_TIMEOUT),
            || etcdctl_timeout(&ep_tgt, args_tgt, stdin, ETCDCTL_TIMEOUT),
        );
        let nr = json!({
            "exit": r.status,
            "stdout": self.nref.stdout(&r.stdout),
            "stderr": self.nref.stderr(&r.stderr),
        });
        let nt = json!({
            "exit": t.status,
            "stdout": self.ntgt.stdout(&t.stdout),
            "stderr": self.ntgt.stderr(&t.stderr),
        });
        if nr != nt {
            panic!(
                "differential step #{} {step:?} differs\nargs: etcdctl {}\n\
                 --- etcd (normalised) ---\n{}\n--- {:?} (normalised) ---\n{}\n\
                 --- etcd raw ---\n{:#?}\n--- {:?} raw ---\n{:#?}",
                self.steps,
                args_tgt.join(" "),
                serde_json::to_string_pretty(&nr).unwrap(),
                self.target.kind(),
                serde_json::to_string_pretty(&nt).unwrap(),
                r,
                self.target.kind(),
                t
            );
        }
        (r, t)
    }

    /// Runs the same client session against both servers at once, each on
    /// a runtime of its own, and returns what each produced (reference,
    /// target). The session gets the server's client endpoint.
    pub fn sessions<F, Fut, V>(&self, session: F) -> (Value, Value)
    where
        F: Fn(String) -> Fut + Sync,
        Fut: Future<Output = V>,
        V: Into<Value> + Send,
    {
        let (ep_ref, ep_tgt) = (self.reference.endpoint(), self.target.endpoint());
        let (r, t) = both(
            || crate::runtime().block_on(session(ep_ref)),
            || crate::runtime().block_on(session(ep_tgt)),
        );
        (r.into(), t.into())
    }

    /// Like [`Differential::sessions`], then compares the two outcomes
    /// after normalisation.
    #[track_caller]
    pub fn compare_sessions<F, Fut, V>(&mut self, step: &str, session: F)
    where
        F: Fn(String) -> Fut + Sync,
        Fut: Future<Output = V>,
        V: Into<Value> + Send,
    {
        let (r, t) = self.sessions(session);
        self.compare_json(step, &r, &t);
    }

    /// Compares two JSON documents (one per server) after normalisation.
    #[track_caller]
    pub fn compare_json(&mut self, step: &str, reference: &Value, target: &Value) {
        self.steps += 1;
        let nr = self.nref.json(reference);
        let nt = self.ntgt.json(target);
        if nr != nt {
            panic!(
                "differential step #{} {step:?} differs\n--- etcd (normalised) ---\n{}\n\
                 --- {:?} (normalised) ---\n{}\n--- etcd raw ---\n{}\n--- {:?} raw ---\n{}",
                self.steps,
                serde_json::to_string_pretty(&nr).unwrap(),
                self.target.kind(),
                serde_json::to_string_pretty(&nt).unwrap(),
                serde_json::to_string_pretty(reference).unwrap(),
                self.target.kind(),
                serde_json::to_string_pretty(target).unwrap(),
            );
        }
    }

    /// Number of compared steps so far.
    pub fn steps(&self) -> usize {
        self.steps
    }
}
