//! The KV workloads: put, range, compare-and-swap txn, mixed, and bulk load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::conn::Conn;
use serde_json::Value;

use super::args::{Common, Consistency};
use super::driver::{merge, run_workers, Budget, ClientResult, Worker};
use super::gateway::{b64, Gateway};
use super::keys::{KeyGen, ValueGen};
use super::report::{record, Report};
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::response_op::Response as OpResponse;
use crate::proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// Keys of the KV workloads carry no prefix, so `--key-size` is all digits
/// when it can be.
const KEY_PREFIX: &[u8] = b"";
/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

fn client(channels: &[Conn], i: usize) -> KvClient<Conn> {
    KvClient::new(channels[i % channels.len()].clone()).max_decoding_message_size(usize::MAX)
}

fn keygen(common: &Common) -> anyhow::Result<KeyGen> {
    KeyGen::new(KEY_PREFIX, common.key_size, common.key_space, common.sequential_keys)
}

fn seed(i: usize) -> u64 {
    i as u64 * 7919 + 1
}

struct PutWorker {
    kv: KvClient<Conn>,
    keys: KeyGen,
    values: ValueGen,
}

impl Worker for PutWorker {
    async fn step(&mut self) -> Result<(), tonic::Status> {
        let req = PutRequest {
            key: self.keys.next_key(),
            value: self.values.fresh(),
            ..Default::default()
        };
        self.kv.put(req).await.map(|_| ())
    }
}

pub async fn put(common: &Common, channels: &[Conn]) -> anyhow::Result<Report> {
    let keys = keygen(common)?;
    let workers = (0..common.clients)
        .map(|i| {
            Ok(PutWorker {
                kv: client(channels, i),
                keys: keys.for_client(seed(i)),
                values: ValueGen::new(common.val_size, seed(i)),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    run_workers("put", common, workers, Budget::from_common(common)).await
}

struct RangeWorker {
    kv: KvClient<Conn>,
    keys: KeyGen,
    serializable: bool,
}

impl Worker for RangeWorker {
    async fn step(&mut self) -> Result<(), tonic::Status> {
        let req = RangeRequest {
            key: self.keys.next_key(),
            serializable: self.serializable,
            ..Default::default()
        };
        self.kv.range(req).await.map(|_| ())
    }
}

pub async fn range(common: &Common, channels: &[Conn], consistency: Consistency, prefill: bool) -> anyhow::Result<Report> {
    if prefill {
        fill(common, channels, MAX_TXN_OPS).await?;
    }
    let keys = keygen(common)?;
    let workers = (0..common.clients)
        .map(|i| {
            Ok(RangeWorker {
                kv: client(channels, i),
                keys: keys.for_client(seed(i)),
                serializable: consistency == Consistency::S,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let name = match consistency {
        Consistency::L => "range-l",
        Consistency::S => "range-s",
    };
    run_workers(name, common, workers, Budget::from_common(common)).await
}

/// A put through the JSON gateway.
struct GatewayPutWorker {
    gateway: Arc<Gateway>,
    keys: KeyGen,
    values: ValueGen,
}

impl Worker for GatewayPutWorker {
    async fn step(&mut self) -> Result<(), tonic::Status> {
        let body = serde_json::json!({"key": b64(&self.keys.next_key()), "value": b64(&self.values.fresh())});
        self.gateway.post("/v3/kv/put", body).await.map(|_| ())
    }
}

pub async fn gateway_put(common: &Common, gateway: Arc<Gateway>) -> anyhow::Result<Report> {
    let keys = keygen(common)?;
    let workers = (0..common.clients)
        .map(|i| GatewayPutWorker {
            gateway: gateway.clone(),
            keys: keys.for_client(seed(i)),
            values: ValueGen::new(common.val_size, seed(i)),
        })
        .collect();
    run_workers("gateway-put", common, workers, Budget::from_common(common)).await
}

/// A single-key range through the JSON gateway; the reply must hold the
/// key, so a prefilled key space is read, not missed.
struct GatewayRangeWorker {
    gateway: Arc<Gateway>,
    keys: KeyGen,
    serializable: bool,
}

impl Worker for GatewayRangeWorker {
    async fn step(&mut self) -> Result<(), tonic::Status> {
        let mut body = serde_json::json!({"key": b64(&self.keys.next_key())});
        if self.serializable {
            body["serializable"] = Value::Bool(true);
        }
        let reply = self.gateway.post("/v3/kv/range", body).await?;
        match reply["kvs"].as_array() {
            Some(kvs) if kvs.len() == 1 => Ok(()),
            _ => Err(tonic::Status::not_found(format!("range found no key: {reply}"))),
        }
    }
}

/// `prefill`: the gRPC connections to write the key space with first (only
/// the measured reads go through the gateway).
pub async fn gateway_range(
    common: &Common,
    prefill: Option<&[Conn]>,
    gateway: Arc<Gateway>,
    consistency: Consistency,
) -> anyhow::Result<Report> {
    if let Some(channels) = prefill {
        fill(common, channels, MAX_TXN_OPS).await?;
    }
    let keys = keygen(common)?;
    let workers = (0..common.clients)
        .map(|i| GatewayRangeWorker {
            gateway: gateway.clone(),
            keys: keys.for_client(seed(i)),
            serializable: consistency == Consistency::S,
        })
        .collect();
    let name = match consistency {
        Consistency::L => "gateway-range-l",
        Consistency::S => "gateway-range-s",
    };
    run_workers(name, common, workers, Budget::from_common(common)).await
}

/// Compare-and-swap: put only if the key's mod_revision is still the one
/// this client last saw (0, "absent", for keys it has not seen). A lost race
/// teaches it the current revision from the failure branch's range.
struct TxnWorker {
    kv: KvClient<Conn>,
    keys: KeyGen,
    values: ValueGen,
    known: HashMap<Vec<u8>, i64>,
    succeeded: u64,
    failed: u64,
}

impl Worker for TxnWorker {
    async fn step(&mut self) -> Result<(), tonic::Status> {
        let key = self.keys.next_key();
        let seen = self.known.get(&key).copied().unwrap_or(0);
        let req = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: key.clone(),
                target_union: Some(TargetUnion::ModRevision(seen)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: key.clone(),
                    value: self.values.fresh(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(Op::RequestRange(RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })),
            }],
        };
        let resp = self.kv.txn(req).await?.into_inner();
        if resp.succeeded {
            self.succeeded += 1;
            let revision = resp.header.map_or(0, |h| h.revision);
            self.known.insert(key, revision);
        } else {
            self.failed += 1;
            let current = resp.responses.into_iter().find_map(|r| match r.response {
                Some(OpResponse::ResponseRange(range)) => Some(range.kvs.first().map_or(0, |kv| kv.mod_revision)),
                _ => None,
            });
            self.known.insert(key, current.unwrap_or(0));
        }
        Ok(())
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("txn_succeeded", self.succeeded), ("txn_failed", self.failed)]
    }
}

pub async fn txn(common: &Common, channels: &[Conn]) -> anyhow::Result<Report> {
    let keys = keygen(common)?;
    let workers = (0..common.clients)
        .map(|i| {
            Ok(TxnWorker {
                kv: client(channels, i),
                keys: keys.for_client(seed(i)),
                values: ValueGen::new(common.val_size, seed(i)),
                known: HashMap::new(),
                succeeded: 0,
                failed: 0,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    run_workers("txn", common, workers, Budget::from_common(common)).await
}

struct MixedWorker {
    kv: KvClient<Conn>,
    keys: KeyGen,
    values: ValueGen,
    read_ratio: f64,
    serializable: bool,
    reads: u64,
    writes: u64,
}

impl Worker for MixedWorker {
    async fn step(&mut self) -> Result<(), tonic::Status> {
        let key = self.keys.next_key();
        if self.keys.coin() < self.read_ratio {
            self.reads += 1;
            let req = RangeRequest {
                key,
                serializable: self.serializable,
                ..Default::default()
            };
            self.kv.range(req).await.map(|_| ())
        } else {
            self.writes += 1;
            let req = PutRequest {
                key,
                value: self.values.fresh(),
                ..Default::default()
            };
            self.kv.put(req).await.map(|_| ())
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("reads", self.reads), ("writes", self.writes)]
    }
}

pub async fn mixed(common: &Common, channels: &[Conn], read_ratio: f64, consistency: Consistency, prefill: bool) -> anyhow::Result<Report> {
    if !(0.0..=1.0).contains(&read_ratio) {
        anyhow::bail!("--read-ratio must be between 0 and 1, got {read_ratio}");
    }
    if prefill {
        fill(common, channels, MAX_TXN_OPS).await?;
    }
    let keys = keygen(common)?;
    let workers = (0..common.clients)
        .map(|i| {
            Ok(MixedWorker {
                kv: client(channels, i),
                keys: keys.for_client(seed(i)),
                values: ValueGen::new(common.val_size, seed(i)),
                read_ratio,
                serializable: consistency == Consistency::S,
                reads: 0,
                writes: 0,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    run_workers("mixed", common, workers, Budget::from_common(common)).await
}

/// Writes keys `0..--key-space` once, `batch` puts per txn, from
/// `--clients` concurrent clients. Each request in the report is one txn.
pub async fn load(common: &Common, channels: &[Conn], batch: usize) -> anyhow::Result<Report> {
    if batch == 0 || batch > MAX_TXN_OPS {
        anyhow::bail!("--batch must be between 1 and {MAX_TXN_OPS}");
    }
    let mut report = fill(common, channels, batch).await?;
    report.extra.push(("keys".into(), Value::from(common.key_space)));
    Ok(report)
}

async fn fill(common: &Common, channels: &[Conn], batch: usize) -> anyhow::Result<Report> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..common.clients {
        let mut kv = client(channels, i);
        let keys = keygen(common)?;
        let mut values = ValueGen::new(common.val_size, seed(i));
        let next = next.clone();
        let space = common.key_space;
        let timeout = common.request_timeout;
        tasks.push(tokio::spawn(async move {
            let mut r = ClientResult::empty();
            loop {
                let first = next.fetch_add(batch as u64, Ordering::Relaxed);
                if first >= space {
                    break;
                }
                let last = (first + batch as u64).min(space);
                let success = (first..last)
                    .map(|n| RequestOp {
                        request: Some(Op::RequestPut(PutRequest {
                            key: keys.key(n),
                            value: values.fresh(),
                            ..Default::default()
                        })),
                    })
                    .collect();
                let req = TxnRequest {
                    success,
                    ..Default::default()
                };
                let t = Instant::now();
                match tokio::time::timeout(timeout, kv.txn(req)).await {
                    Ok(Ok(_)) => {
                        record(&mut r.latency, t.elapsed());
                        r.ok += 1;
                    }
                    Ok(Err(status)) => {
                        r.errors += 1;
                        r.first_error
                            .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
                    }
                    Err(_) => {
                        r.errors += 1;
                        r.first_error.get_or_insert_with(|| "cairn-bench: request timed out".into());
                    }
                }
            }
            r
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await?);
    }
    let report = merge("load", results, start.elapsed());
    if report.errors > 0 {
        anyhow::bail!(
            "loading the key space failed: {} of {} txns failed, first error: {}",
            report.errors,
            report.errors + report.requests,
            report.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(report)
}
