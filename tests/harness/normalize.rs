//! Normalisation of server responses for differential comparison.
//!
//! Identifiers that legitimately differ between two independent clusters
//! (cluster id, member ids, raft terms and indexes, lease ids, listen URLs,
//! database sizes, durations, server version) are replaced by placeholders.
//! Member and lease ids are mapped consistently ("first id seen" becomes
//! `<member-1>`, ...), so equalities such as `leader == member_id` survive.
//! Everything that is part of the KV semantics - revisions, versions,
//! create/mod revisions, keys, values, counts, flags - is kept exactly.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::server::Server;

/// Placeholder used for the cluster id.
pub const CLUSTER_ID: &str = "<cluster-id>";

/// Per-server normaliser (holds the id mappings seen so far).
#[derive(Debug, Default, Clone)]
pub struct Normalizer {
    /// Literal text substitutions, longest first.
    replacements: Vec<(String, String)>,
    members: BTreeMap<String, String>,
    leases: BTreeMap<String, String>,
}

fn number_key(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn is_zero(v: &Value) -> bool {
    matches!(v, Value::Number(n) if n.as_i64() == Some(0) || n.as_u64() == Some(0))
}

impl Normalizer {
    /// A normaliser that knows the URLs of `server`.
    pub fn for_server(server: &Server) -> Normalizer {
        let mut n = Normalizer::default();
        n.add_replacement(&server.endpoint(), "<client-url>");
        n.add_replacement(&server.peer_url(), "<peer-url>");
        n.add_replacement(&server.client_addr().to_string(), "<client-addr>");
        n
    }

    /// Adds a literal text substitution applied to every string.
    pub fn add_replacement(&mut self, from: &str, to: &str) {
        self.replacements.push((from.to_string(), to.to_string()));
        self.replacements.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    }

    /// Registers a lease id (as returned by LeaseGrant) and returns its placeholder.
    /// Lease ids also appear in etcdctl text output as 16 hex digits, which
    /// are replaced too.
    pub fn lease(&mut self, id: i64) -> String {
        let key = id.to_string();
        if let Some(p) = self.leases.get(&key) {
            return p.clone();
        }
        let p = format!("<lease-{}>", self.leases.len() + 1);
        self.leases.insert(key, p.clone());
        self.add_replacement(&format!("{:016x}", id), &p);
        p
    }

    fn member(&mut self, key: String) -> String {
        let next = self.members.len() + 1;
        self.members.entry(key).or_insert_with(|| format!("<member-{next}>")).clone()
    }

    /// Applies the literal substitutions to a string.
    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (from, to) in &self.replacements {
            if out.contains(from.as_str()) {
                out = out.replace(from.as_str(), to);
            }
        }
        out
    }

    /// Normalises a JSON document (etcdctl `-w json` output, or the JSON
    /// produced by [`crate::convert`] from etcd-client responses).
    pub fn json(&mut self, v: &Value) -> Value {
        match v {
            Value::Object(map) => self.object(map),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.json(i)).collect()),
            Value::String(s) => Value::String(self.text(s)),
            other => other.clone(),
        }
    }

    fn object(&mut self, map: &Map<String, Value>) -> Value {
        let is_member = map.contains_key("peerURLs") || map.contains_key("clientURLs");
        let mut out = Map::new();
        for (k, v) in map {
            let nv = match k.as_str() {
                "cluster_id" if !is_zero(v) => Value::String(CLUSTER_ID.into()),
                "member_id" | "leader" if !is_zero(v) => match number_key(v) {
                    Some(key) => Value::String(self.member(key)),
                    None => self.json(v),
                },
                "ID" if is_member => match number_key(v) {
                    Some(key) => Value::String(self.member(key)),
                    None => self.json(v),
                },
                // Lease ids: `lease` of a key-value, `ID` of lease responses,
                // `id` of `lease list` entries.
                "lease" | "ID" | "id" if !is_zero(v) => match v {
                    Value::Number(n) => {
                        let id = n.as_i64().or_else(|| n.as_u64().map(|u| u as i64)).expect("lease id fits in i64");
                        Value::String(self.lease(id))
                    }
                    _ => self.json(v),
                },
                "raft_term" | "raftTerm" if !is_zero(v) => Value::String("<raft-term>".into()),
                "raftIndex" | "raftAppliedIndex" if !is_zero(v) => Value::String("<raft-index>".into()),
                "dbSize" | "dbSizeInUse" if !is_zero(v) => Value::String("<db-size>".into()),
                "took" => Value::String("<duration>".into()),
                // Server version (string); a key-value's `version` is a number and kept.
                "version" if v.is_string() => Value::String("<server-version>".into()),
                _ => self.json(v),
            };
            out.insert(k.clone(), nv);
        }
        Value::Object(out)
    }

    /// Normalises etcdctl stdout: JSON documents line by line when they
    /// parse as JSON, otherwise text substitutions.
    pub fn stdout(&mut self, stdout: &str) -> Vec<Value> {
        stdout
            .lines()
            .map(|line| match serde_json::from_str::<Value>(line) {
                Ok(v) if line.trim_start().starts_with(['{', '[']) => self.json(&v),
                _ if line.starts_with(['+', '|']) => Value::String(table_row(&self.text(line))),
                _ => Value::String(without_duration(&self.text(line))),
            })
            .collect()
    }

    /// Normalises etcdctl stderr.  etcdctl's client library logs retry
    /// warnings as JSON lines containing timestamps and random client ids;
    /// only their level, message, attempt and error (which carries the gRPC
    /// code and message) are kept.  Other lines get text substitutions.
    pub fn stderr(&mut self, stderr: &str) -> Vec<String> {
        stderr
            .lines()
            .map(|line| {
                if line.starts_with('{') {
                    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(line) {
                        let get = |k: &str| m.get(k).map(|v| v.to_string()).unwrap_or_default();
                        return self.text(&format!(
                            "[log level={} msg={} attempt={} error={}]",
                            get("level"),
                            get("msg"),
                            get("attempt"),
                            get("error")
                        ));
                    }
                }
                without_duration(&self.text(line))
            })
            .collect()
    }
}

/// `endpoint health`'s `took = 1.23ms` with the duration replaced.
fn without_duration(line: &str) -> String {
    const TOOK: &str = "took = ";
    match line.find(TOOK) {
        Some(at) => {
            let rest = &line[at + TOOK.len()..];
            let end = rest.find(|c: char| c.is_whitespace() || c == ',').unwrap_or(rest.len());
            format!("{}{TOOK}<duration>{}", &line[..at], &rest[end..])
        }
        None => line.to_string(),
    }
}

/// A `-w table` row with its padding collapsed: column widths follow the
/// widest cell, and ids (hex without leading zeros) vary in length.
fn table_row(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if (c == ' ' || c == '-') && out.ends_with(c) {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_mapped_consistently() {
        let mut n = Normalizer::default();
        n.add_replacement("http://127.0.0.1:1234", "<client-url>");
        let status = json!([{"Endpoint":"http://127.0.0.1:1234","Status":{
            "header":{"cluster_id":15118495548433857066u64,"member_id":13668033151171901709u64,"revision":2,"raft_term":2},
            "version":"3.4.23","dbSize":20480,"leader":13668033151171901709u64,"raftIndex":6,"raftTerm":2,
            "raftAppliedIndex":6,"dbSizeInUse":16384}}]);
        let got = n.json(&status);
        assert_eq!(
            got,
            json!([{"Endpoint":"<client-url>","Status":{
                "header":{"cluster_id":"<cluster-id>","member_id":"<member-1>","revision":2,"raft_term":"<raft-term>"},
                "version":"<server-version>","dbSize":"<db-size>","leader":"<member-1>","raftIndex":"<raft-index>",
                "raftTerm":"<raft-term>","raftAppliedIndex":"<raft-index>","dbSizeInUse":"<db-size>"}}])
        );
    }

    #[test]
    fn kv_fields_are_kept_and_leases_mapped() {
        let mut n = Normalizer::default();
        let grant = json!({"header":{"revision":3},"ID":7587862000000000001i64,"TTL":60});
        assert_eq!(n.json(&grant), json!({"header":{"revision":3},"ID":"<lease-1>","TTL":60}));
        let get = json!({"kvs":[{"key":"YQ==","create_revision":2,"mod_revision":3,"version":2,
                          "value":"MQ==","lease":7587862000000000001i64}],"count":1});
        assert_eq!(
            n.json(&get),
            json!({"kvs":[{"key":"YQ==","create_revision":2,"mod_revision":3,"version":2,
                    "value":"MQ==","lease":"<lease-1>"}],"count":1})
        );
        assert_eq!(
            n.text("lease 694d7b1a4f3f1a01 revoked"),
            "lease 694d7b1a4f3f1a01 revoked",
            "unknown leases untouched"
        );
        assert_eq!(
            n.text(&format!("lease {:016x} revoked", 7587862000000000001i64)),
            "lease <lease-1> revoked"
        );
    }

    #[test]
    fn health_durations_are_replaced() {
        let mut n = Normalizer::default();
        assert_eq!(
            n.stderr("http://x is healthy: successfully committed proposal: took = 5.491657ms"),
            vec!["http://x is healthy: successfully committed proposal: took = <duration>".to_string()]
        );
    }

    #[test]
    fn stderr_log_lines_are_reduced() {
        let mut n = Normalizer::default();
        n.add_replacement("127.0.0.1:23791", "<client-addr>");
        let err = r#"{"level":"warn","ts":"2026-11-25T06:18:57.141Z","caller":"clientv3/retry_interceptor.go:62","msg":"retrying of unary invoker failed","target":"endpoint://client-5fed3596/127.0.0.1:23791","attempt":0,"error":"rpc error: code = InvalidArgument desc = etcdserver: key is not provided"}
Error: etcdserver: key is not provided"#;
        assert_eq!(
            n.stderr(err),
            vec![
                r#"[log level="warn" msg="retrying of unary invoker failed" attempt=0 error="rpc error: code = InvalidArgument desc = etcdserver: key is not provided"]"#.to_string(),
                "Error: etcdserver: key is not provided".to_string()
            ]
        );
    }
}
