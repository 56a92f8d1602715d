//! Conversion of etcd-client responses to JSON for field-by-field comparison.
//!
//! Every protobuf field is emitted (zero values included) except that
//! optional sub-messages are `null` when absent, so a response header that is
//! missing on one side and present on the other shows up as a difference.
//! Feed the result through [`crate::Normalizer::json`] before comparing.

use etcd_client::{
    CompactionResponse, DeleteResponse, Error, GetResponse, KeyValue, PutResponse, ResponseHeader, TxnOpResponse, TxnResponse,
};
use serde_json::{json, Value};

/// Bytes as a string when valid UTF-8, otherwise as `{"bytes": [..]}`.
pub fn bytes(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "bytes": b }),
    }
}

pub fn header(h: Option<&ResponseHeader>) -> Value {
    match h {
        None => Value::Null,
        Some(h) => json!({
            "cluster_id": h.cluster_id(),
            "member_id": h.member_id(),
            "revision": h.revision(),
            "raft_term": h.raft_term(),
        }),
    }
}

pub fn kv(kv: &KeyValue) -> Value {
    json!({
        "key": bytes(kv.key()),
        "value": bytes(kv.value()),
        "create_revision": kv.create_revision(),
        "mod_revision": kv.mod_revision(),
        "version": kv.version(),
        "lease": kv.lease(),
    })
}

pub fn get(r: &GetResponse) -> Value {
    json!({
        "header": header(r.header()),
        "kvs": r.kvs().iter().map(kv).collect::<Vec<_>>(),
        "more": r.more(),
        "count": r.count(),
    })
}

pub fn put(r: &PutResponse) -> Value {
    json!({
        "header": header(r.header()),
        "prev_kv": r.prev_key().map(kv).unwrap_or(Value::Null),
    })
}

pub fn delete(r: &DeleteResponse) -> Value {
    json!({
        "header": header(r.header()),
        "deleted": r.deleted(),
        "prev_kvs": r.prev_kvs().iter().map(kv).collect::<Vec<_>>(),
    })
}

pub fn compaction(r: &CompactionResponse) -> Value {
    json!({ "header": header(r.header()) })
}

pub fn txn(r: &TxnResponse) -> Value {
    let responses: Vec<Value> = r
        .op_responses()
        .iter()
        .map(|op| match op {
            TxnOpResponse::Put(p) => json!({ "put": put(p) }),
            TxnOpResponse::Get(g) => json!({ "range": get(g) }),
            TxnOpResponse::Delete(d) => json!({ "delete_range": delete(d) }),
            TxnOpResponse::Txn(t) => json!({ "txn": txn(t) }),
        })
        .collect();
    json!({
        "header": header(r.header()),
        "succeeded": r.succeeded(),
        "responses": responses,
    })
}

/// An error as JSON: gRPC code and message for status errors.
pub fn error(e: &Error) -> Value {
    match e {
        Error::GRpcStatus(s) => json!({
            "grpc_code": format!("{:?}", s.code()),
            "message": s.message(),
        }),
        other => json!({ "client_error": other.to_string() }),
    }
}

/// Converts a result with `f` on success and [`error`] on failure.
pub fn result<T>(r: &Result<T, Error>, f: impl Fn(&T) -> Value) -> Value {
    match r {
        Ok(v) => json!({ "ok": f(v) }),
        Err(e) => json!({ "err": error(e) }),
    }
}
