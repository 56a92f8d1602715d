//! Plain HTTP requests with curl, and `/metrics` as a real Prometheus text
//! parser (the Python `prometheus_client`, which scripts/install-deps.sh
//! installs) reads it.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// `GET {endpoint}{path}` with curl: the status and the body.
pub fn http_get(endpoint: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .arg(format!("{endpoint}{path}"))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {path}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8 reply");
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (status.trim().parse().expect("status"), body.to_string())
}

/// One parsed sample: its name with its labels as sorted JSON, and value.
pub type Sample = (String, f64);

/// Every metric family the endpoint exposes, by the parser's family name
/// (counters lose their `_total`): its type and samples.
pub type Scrape = BTreeMap<String, (String, Vec<Sample>)>;

const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out[fam.name] = [fam.type, [[s.name + json.dumps(s.labels, sort_keys=True), s.value] for s in fam.samples]]
print(json.dumps(out))
"#;

/// Scrapes `{endpoint}/metrics` and parses it; panics if the parser
/// refuses the text.
pub fn scrape(endpoint: &str) -> Scrape {
    let (status, text) = http_get(endpoint, "/metrics");
    assert_eq!(status, 200, "{text}");
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 (scripts/install-deps.sh installs prometheus_client)");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser JSON")
}

/// The value of the sample `name` whose labels include every `labels`
/// pair, or 0 when there is none (a labelled counter not yet incremented).
pub fn sample(scrape: &Scrape, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let Some((_, samples)) = scrape.get(family) else {
        return 0.0;
    };
    samples
        .iter()
        .filter(|(id, _)| {
            let Some(json) = id.strip_prefix(name).filter(|rest| rest.starts_with('{')) else {
                return false;
            };
            let parsed: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            labels.iter().all(|(k, v)| parsed[*k].as_str() == Some(*v))
        })
        .map(|(_, value)| value)
        .sum()
}
