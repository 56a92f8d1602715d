//! The closed loop shared by the request/response workloads: each client
//! keeps one request in flight until the run's budget is spent.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::Value;

use super::args::Common;
use super::report::{new_histogram, record, Report};

/// One client's request loop body.
pub trait Worker: Send + 'static {
    /// Issues one request and waits for its answer.
    fn step(&mut self) -> impl Future<Output = Result<(), tonic::Status>> + Send;

    /// Counters this worker kept beyond successes and errors.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// How many requests remain, shared by all clients of a run.
pub struct Budget {
    total: Option<u64>,
    deadline: Option<Instant>,
    issued: AtomicU64,
}

impl Budget {
    pub fn new(total: Option<u64>, duration: Option<Duration>) -> Budget {
        Budget {
            total,
            deadline: duration.map(|d| Instant::now() + d),
            issued: AtomicU64::new(0),
        }
    }

    pub fn from_common(c: &Common) -> Budget {
        Budget::new(c.total_or_default(), c.duration)
    }

    /// Claims the right to issue one more request.
    pub fn take(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        match self.total {
            Some(t) => self.issued.fetch_add(1, Ordering::Relaxed) < t,
            None => true,
        }
    }
}

pub struct ClientResult {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: Histogram<u64>,
    pub counters: Vec<(&'static str, u64)>,
}

impl ClientResult {
    /// No requests yet.
    pub fn empty() -> Self {
        ClientResult {
            ok: 0,
            errors: 0,
            first_error: None,
            latency: new_histogram(),
            counters: Vec::new(),
        }
    }
}

async fn drive<W: Worker>(mut worker: W, budget: Arc<Budget>, timeout: Duration) -> ClientResult {
    let mut r = ClientResult::empty();
    while budget.take() {
        let start = Instant::now();
        let outcome = match tokio::time::timeout(timeout, worker.step()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(tonic::Status::deadline_exceeded("cairn-bench: request timed out")),
        };
        match outcome {
            Ok(()) => {
                record(&mut r.latency, start.elapsed());
                r.ok += 1;
            }
            Err(status) => {
                r.errors += 1;
                r.first_error
                    .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
            }
        }
    }
    r.counters = worker.counters();
    r
}

/// Runs one worker per client concurrently and merges what they measured.
pub async fn run_workers<W: Worker>(name: &str, common: &Common, workers: Vec<W>, budget: Budget) -> anyhow::Result<Report> {
    let budget = Arc::new(budget);
    let start = Instant::now();
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|w| tokio::spawn(drive(w, budget.clone(), common.request_timeout)))
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await?);
    }
    let elapsed = start.elapsed();
    Ok(merge(name, results, elapsed))
}

pub fn merge(name: &str, results: Vec<ClientResult>, elapsed: Duration) -> Report {
    let mut report = Report {
        workload: name.to_string(),
        requests: 0,
        errors: 0,
        first_error: None,
        elapsed,
        latency: new_histogram(),
        extra: Vec::new(),
    };
    let mut counters: Vec<(&'static str, u64)> = Vec::new();
    for r in results {
        report.requests += r.ok;
        report.errors += r.errors;
        if report.first_error.is_none() {
            report.first_error = r.first_error;
        }
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = report.latency.add(&r.latency);
        for (k, v) in r.counters {
            match counters.iter_mut().find(|(name, _)| *name == k) {
                Some((_, total)) => *total += v,
                None => counters.push((k, v)),
            }
        }
    }
    report.extra = counters.into_iter().map(|(k, v)| (k.to_string(), Value::from(v))).collect();
    report
}
