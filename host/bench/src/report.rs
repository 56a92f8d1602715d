//! Measurements of a run and how they are printed.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// Latencies are recorded in microseconds, from 1 µs to 10 min, to three
/// significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

pub struct Report {
    pub workload: String,
    /// Requests that succeeded; only these are in `latency`.
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
    /// Workload-specific counters and histograms, in print order.
    pub extra: Vec<(String, Value)>,
}

impl Report {
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("workload".into(), json!(self.workload));
        obj.insert("requests".into(), json!(self.requests));
        obj.insert("errors".into(), json!(self.errors));
        obj.insert("first_error".into(), json!(self.first_error));
        obj.insert("elapsed_secs".into(), json!(self.elapsed.as_secs_f64()));
        obj.insert("throughput".into(), json!(self.throughput()));
        obj.insert("latency_ms".into(), latency_json(&self.latency));
        for (k, v) in &self.extra {
            obj.insert(k.clone(), v.clone());
        }
        Value::Object(obj)
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Summary ({}):", self.workload);
        let _ = writeln!(s, "  Requests:\t{} ok, {} errors", self.requests, self.errors);
        if let Some(e) = &self.first_error {
            let _ = writeln!(s, "  First error:\t{e}");
        }
        let _ = writeln!(s, "  Total:\t{:.4} secs", self.elapsed.as_secs_f64());
        let _ = writeln!(s, "  Requests/sec:\t{:.1}", self.throughput());
        latency_text(&mut s, "Latency", &self.latency);
        for (k, v) in &self.extra {
            match v {
                Value::Object(_) => {
                    let _ = writeln!(s, "{k} (ms): {v}");
                }
                _ => {
                    let _ = writeln!(s, "  {k}:\t{v}");
                }
            }
        }
        s
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub fn latency_json(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "mean": h.mean() / 1000.0,
        "min": ms(h.min()),
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p99_9": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
    })
}

fn latency_text(s: &mut String, title: &str, h: &Histogram<u64>) {
    let _ = writeln!(s, "{title} (ms):");
    let _ = writeln!(s, "  Fastest:\t{:.3}", ms(h.min()));
    let _ = writeln!(s, "  Average:\t{:.3}", h.mean() / 1000.0);
    let _ = writeln!(s, "  Slowest:\t{:.3}", ms(h.max()));
    for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
        let _ = writeln!(s, "  {label}:\t{:.3}", ms(h.value_at_quantile(q)));
    }
}
