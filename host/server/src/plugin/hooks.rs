//! The hooks as apply and watch delivery use them: [`Plugins::admit`] decides
//! whether a committed write may go ahead, [`Plugins::transform`] shapes what
//! a watcher sees. Both depend only on replicated state (the bindings, the
//! store at the revision being applied, the write plan), so every member
//! reaches the same answer; a store read that fails on this member is an
//! error for apply to stop on, never an answer a plugin sees.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::bindings::{
    DeleteOp, Entry, EventKind, Identity, KeyValue as WitKv, Mutation, PutOp, RequestKind, Verdict, WatchAction, WatchEvent, WriteRequest,
};
use super::registry::{Binding, Plugins, Registry};
use super::runtime::{Compiled, Failure, Runtime, StateView};
use super::Hook;
use crate::error::{Error, Result};
use crate::metrics::metrics;
use crate::mvcc::{KeyRange, MvccStore, RangeResult};
use crate::proto::cairnpb::{PluginFailurePolicy, PluginMode};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};
use crate::txn::{Change, Write, WritePlan};

/// The store, read at the revision being applied. The guest cannot be
/// handed an error, so a failed read answers "nothing" to it and is kept
/// here for [`StoreState::check`], which fails the whole admission.
struct StoreState {
    store: Arc<MvccStore>,
    rev: i64,
    failed: Mutex<Option<Error>>,
}

impl StoreState {
    fn read(&self, range: &KeyRange, limit: usize, count_only: bool) -> Option<RangeResult> {
        match self.store.range(range, self.rev, limit, count_only) {
            Ok(r) => Some(r),
            Err(e) => {
                self.failed.lock().get_or_insert(e);
                None
            }
        }
    }

    /// The first read that failed during the calls so far, if any.
    fn check(&self) -> Result<()> {
        match self.failed.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl StateView for StoreState {
    fn get(&self, key: &[u8]) -> Option<WitKv> {
        let found = self.read(&KeyRange::Single(key.to_vec()), 1, false)?;
        found.kvs.into_iter().next().map(to_wit)
    }

    fn range_count(&self, key: &[u8], range_end: &[u8]) -> u64 {
        self.read(&KeyRange::new(key, range_end), 0, true)
            .map_or(0, |r| r.count.max(0) as u64)
    }
}

pub fn to_wit(kv: KeyValue) -> WitKv {
    WitKv {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

fn from_wit(kv: WitKv) -> KeyValue {
    KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

/// A write plan as the plugin interface describes it: the mutations (a
/// txn's chosen branches, nested txns flattened in order, puts as the client
/// sent them) and the key-values its puts would store.
struct Flattened {
    kind: RequestKind,
    mutations: Vec<Mutation>,
    entries: Vec<Entry>,
}

fn flatten(plan: &WritePlan<'_>) -> Flattened {
    let kind = match plan.request {
        Write::Put(_) => RequestKind::Put,
        Write::DeleteRange(_) => RequestKind::DeleteRange,
        Write::Txn(_) => RequestKind::Txn,
    };
    let mut out = Flattened {
        kind,
        mutations: Vec::new(),
        entries: Vec::new(),
    };
    for change in &plan.changes {
        match change {
            Change::Put(p) => {
                out.mutations.push(Mutation::Put(PutOp {
                    key: p.request.key.clone(),
                    value: p.request.value.clone(),
                    lease: p.request.lease,
                }));
                out.entries.push(Entry {
                    key: p.request.key.clone(),
                    value: p.value.clone(),
                    lease: p.lease,
                });
            }
            Change::DeleteRange(d) => out.mutations.push(Mutation::DeleteRange(DeleteOp {
                key: d.key.clone(),
                range_end: d.range_end.clone(),
            })),
        }
    }
    out
}

/// `[start, end)` with `None` for "no end".
fn bounds(range: &KeyRange) -> (Vec<u8>, Option<Vec<u8>>) {
    match range {
        KeyRange::Single(k) => {
            let mut end = k.clone();
            end.push(0);
            (k.clone(), Some(end))
        }
        KeyRange::Span { start, end } => (start.clone(), end.clone()),
    }
}

fn overlaps(a: &KeyRange, b: &KeyRange) -> bool {
    let (a_start, a_end) = bounds(a);
    let (b_start, b_end) = bounds(b);
    let before = |start: &[u8], end: &Option<Vec<u8>>| end.as_deref().is_none_or(|e| start < e);
    before(&a_start, &b_end) && before(&b_start, &a_end)
}

fn touches(range: &KeyRange, m: &Mutation) -> bool {
    match m {
        Mutation::Put(p) => range.contains(&p.key),
        Mutation::DeleteRange(d) => overlaps(range, &KeyRange::new(&d.key, &d.range_end)),
    }
}

/// What one call means for the request: `Some(reason)` when it would deny.
fn denial(bound: &Binding, outcome: std::result::Result<Verdict, Failure>, started: Instant) -> Option<String> {
    record(bound, &outcome, started);
    match outcome {
        Ok(Verdict::Allow) => None,
        Ok(Verdict::Warn(reason)) => {
            tracing::warn!(plugin = %bound.name, %reason, "plugin warning");
            None
        }
        Ok(Verdict::Deny(reason)) => Some(reason),
        Err(failure) => match bound.policy {
            PluginFailurePolicy::Fail => Some(format!("plugin failed: {failure}")),
            PluginFailurePolicy::Ignore => {
                tracing::warn!(plugin = %bound.name, kind = %failure, "plugin failed; allowed by its failure policy");
                None
            }
        },
    }
}

/// Counts a call started at `started`, for `plugin list` and the metrics.
fn record<T>(bound: &Binding, outcome: &std::result::Result<T, Failure>, started: Instant) {
    bound.stats.calls.fetch_add(1, Ordering::Relaxed);
    if outcome.is_err() {
        bound.stats.failures.fetch_add(1, Ordering::Relaxed);
    }
    let failure = outcome.as_ref().err().map(Failure::kind);
    metrics()
        .plugins
        .call(&bound.name, &bound.hook.to_string(), started.elapsed().as_secs_f64(), failure);
}

/// Whether a would-be denial stops the request, per the binding's mode.
fn enforced(bound: &Binding, reason: &str) -> bool {
    bound.stats.denials.fetch_add(1, Ordering::Relaxed);
    metrics().plugins.denial(&bound.name, &bound.hook.to_string());
    match bound.mode {
        PluginMode::Enforce => true,
        PluginMode::Warn => {
            tracing::warn!(plugin = %bound.name, %reason, "plugin would deny (warn mode): allowed");
            false
        }
        PluginMode::DryRun => {
            tracing::info!(plugin = %bound.name, %reason, "plugin would deny (dry-run)");
            false
        }
    }
}

impl Plugins {
    /// Runs the admission and validate bindings that `plan` touches,
    /// against the store at the plan's revision. `Err` is the denial the
    /// client receives, or a failed store read; the caller then changes
    /// nothing. `user` is the authenticated caller the entry carries
    /// (empty when auth is off), which admission plugins see.
    pub fn admit(&self, plan: &WritePlan<'_>, user: &str, store: &Arc<MvccStore>) -> Result<()> {
        let registry = self.current();
        if registry.of(Hook::Admission).next().is_none() && registry.of(Hook::Validate).next().is_none() {
            return Ok(());
        }
        let flat = flatten(plan);
        let state = Arc::new(StoreState {
            store: store.clone(),
            rev: plan.revision,
            failed: Mutex::new(None),
        });
        let admitted = self.run_admission(&registry, &flat, plan.revision, user, &state);
        // A read that failed may have changed the verdict: it wins.
        state.check()?;
        admitted?;
        let validated = self.run_validate(&registry, &flat, &state);
        state.check()?;
        validated
    }

    fn run_admission(&self, registry: &Registry, flat: &Flattened, revision: i64, user: &str, state: &Arc<StoreState>) -> Result<()> {
        let mut request: Option<WriteRequest> = None;
        for bound in registry.of(Hook::Admission) {
            if !flat.mutations.iter().any(|m| touches(&bound.range, m)) {
                continue;
            }
            let request = request.get_or_insert_with(|| WriteRequest {
                kind: flat.kind,
                mutations: flat.mutations.clone(),
                identity: Identity { user: user.to_string() },
                revision,
            });
            let refusal = self.enforced_denial(bound, |runtime, c| {
                runtime.admit(c, &bound.name, bound.limits, &bound.binding().config, request, state.clone())
            });
            if let Some(reason) = refusal {
                return Err(Error::PluginDenied {
                    plugin: bound.name.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }

    fn run_validate(&self, registry: &Registry, flat: &Flattened, state: &Arc<StoreState>) -> Result<()> {
        for entry in &flat.entries {
            for bound in registry.of(Hook::Validate) {
                if !bound.range.contains(&entry.key) {
                    continue;
                }
                let refusal = self.enforced_denial(bound, |runtime, c| {
                    runtime.validate(c, &bound.name, bound.limits, &bound.binding().config, entry, state.clone())
                });
                if let Some(reason) = refusal {
                    return Err(Error::PluginRejectedKey {
                        plugin: bound.name.clone(),
                        key: String::from_utf8_lossy(&entry.key).into_owned(),
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    /// Makes one apply-time call of `bound`: `Some(reason)` when it denies
    /// and its mode enforces the denial.
    fn enforced_denial(
        &self,
        bound: &Binding,
        call: impl FnOnce(&Runtime, &Compiled) -> std::result::Result<Verdict, Failure>,
    ) -> Option<String> {
        let started = Instant::now();
        let outcome = match Plugins::compiled(&self.apply, bound) {
            Ok(c) => call(&self.apply, &c),
            Err(_) => Err(Failure::Instantiation),
        };
        denial(bound, outcome, started).filter(|reason| enforced(bound, reason))
    }

    /// Passes each event through the watch bindings of its key, in name
    /// order: each may pass, drop or replace it. A plugin that fails drops
    /// the event under the `fail` policy (a failed redaction must not leak
    /// what it should have hidden) and passes it under `ignore`.
    pub fn transform(&self, events: Vec<Event>) -> Vec<Event> {
        let registry = self.current();
        if registry.of(Hook::Watch).next().is_none() {
            return events;
        }
        events.into_iter().filter_map(|e| self.transform_one(&registry, e)).collect()
    }

    fn transform_one(&self, registry: &Registry, mut event: Event) -> Option<Event> {
        for bound in registry.of(Hook::Watch) {
            let Some(key) = event.kv.as_ref().map(|kv| kv.key.as_slice()) else {
                continue;
            };
            if !bound.range.contains(key) {
                continue;
            }
            let input = to_wit_event(&event);
            let started = Instant::now();
            let outcome = match Plugins::compiled(&self.serve, bound) {
                Ok(c) => self.serve.transform(&c, &bound.name, bound.limits, &bound.binding().config, &input),
                Err(_) => Err(Failure::Instantiation),
            };
            record(bound, &outcome, started);
            let action = match outcome {
                Ok(a) => a,
                Err(failure) => match bound.policy {
                    PluginFailurePolicy::Fail => {
                        tracing::warn!(plugin = %bound.name, kind = %failure, "watch plugin failed; event dropped");
                        WatchAction::Drop
                    }
                    PluginFailurePolicy::Ignore => WatchAction::Pass,
                },
            };
            if bound.mode != PluginMode::Enforce {
                if !matches!(action, WatchAction::Pass) {
                    tracing::info!(plugin = %bound.name, mode = ?bound.mode, "watch plugin would change an event");
                }
                continue;
            }
            match action {
                WatchAction::Pass => {}
                WatchAction::Drop => return None,
                WatchAction::Replace(e) => event = from_wit_event(e),
            }
        }
        Some(event)
    }
}

pub fn to_wit_event(e: &Event) -> WatchEvent {
    WatchEvent {
        kind: if e.r#type == EventType::Delete as i32 {
            EventKind::Delete
        } else {
            EventKind::Put
        },
        kv: to_wit(e.kv.clone().unwrap_or_default()),
        prev_kv: e.prev_kv.clone().map(to_wit),
    }
}

pub fn from_wit_event(e: WatchEvent) -> Event {
    Event {
        r#type: match e.kind {
            EventKind::Put => EventType::Put as i32,
            EventKind::Delete => EventType::Delete as i32,
        },
        kv: Some(from_wit(e.kv)),
        prev_kv: e.prev_kv.map(from_wit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    use crate::proto::etcdserverpb::{request_op::Request as Op, Compare, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};
    use crate::storage::Database;
    use crate::txn::LeaseLookup;

    struct AnyLease;

    impl LeaseLookup for AnyLease {
        fn lease_exists(&self, _id: i64) -> bool {
            true
        }
    }

    fn op(request: Op) -> RequestOp {
        RequestOp { request: Some(request) }
    }

    fn put(key: &str, value: &str) -> RequestOp {
        op(Op::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }))
    }

    /// `key` exists iff `exists`.
    fn if_exists(key: &str, exists: bool) -> Vec<Compare> {
        vec![Compare {
            key: key.into(),
            target: CompareTarget::Version as i32,
            result: if exists { CompareResult::Greater } else { CompareResult::Equal } as i32,
            target_union: Some(TargetUnion::Version(0)),
            ..Default::default()
        }]
    }

    #[test]
    fn plugins_see_the_plan_of_a_nested_txn() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(MvccStore::open(Database::open(dir.path()).expect("engine")).expect("store"));
        let mut txn = store.write_txn();
        txn.put(b"kept", b"stored".to_vec(), 3).expect("put");
        txn.commit(|_| {}).expect("commit");

        let keep = op(Op::RequestPut(PutRequest {
            key: "kept".into(),
            ignore_value: true,
            lease: 4,
            ..Default::default()
        }));
        let inner = TxnRequest {
            compare: if_exists("kept", false),
            success: vec![put("inner-then", "x")],
            failure: vec![
                keep,
                op(Op::RequestDeleteRange(DeleteRangeRequest {
                    key: "d/".into(),
                    range_end: "d0".into(),
                    ..Default::default()
                })),
            ],
        };
        let outer = TxnRequest {
            compare: if_exists("kept", true),
            success: vec![put("a", "1"), op(Op::RequestTxn(inner)), put("b", "2")],
            failure: vec![put("outer-else", "x")],
        };
        let plan = WritePlan::new(&store.read_view(), Write::Txn(&outer), &AnyLease).expect("plan");
        let flat = flatten(&plan);
        assert!(matches!(flat.kind, RequestKind::Txn));
        let mutations: Vec<String> = flat
            .mutations
            .iter()
            .map(|m| match m {
                Mutation::Put(p) => format!(
                    "put {}={}@{}",
                    String::from_utf8_lossy(&p.key),
                    String::from_utf8_lossy(&p.value),
                    p.lease
                ),
                Mutation::DeleteRange(d) => format!(
                    "delete {}..{}",
                    String::from_utf8_lossy(&d.key),
                    String::from_utf8_lossy(&d.range_end)
                ),
            })
            .collect();
        // Mutations are what the client asked for, in execution order.
        assert_eq!(mutations, ["put a=1@0", "put kept=@4", "delete d/..d0", "put b=2@0"]);
        // Entries are what would be stored: the kept value.
        let entries: Vec<(String, String, i64)> = flat
            .entries
            .iter()
            .map(|e| {
                (
                    String::from_utf8_lossy(&e.key).into(),
                    String::from_utf8_lossy(&e.value).into(),
                    e.lease,
                )
            })
            .collect();
        let expected = [("a", "1", 0), ("kept", "stored", 4), ("b", "2", 0)].map(|(k, v, l)| (k.to_string(), v.to_string(), l));
        assert_eq!(entries, expected);
    }

    #[test]
    fn ranges_overlap_only_when_they_share_a_key() {
        let prefix = KeyRange::new(b"a/", b"a0");
        assert!(overlaps(&prefix, &KeyRange::new(b"a/x", b"")));
        assert!(overlaps(&prefix, &KeyRange::new(b"0", b"\0")));
        assert!(overlaps(&prefix, &KeyRange::new(b"0", b"a/\0")));
        assert!(!overlaps(&prefix, &KeyRange::new(b"0", b"a/")));
        assert!(!overlaps(&prefix, &KeyRange::new(b"a0", b"\0")));
        assert!(!overlaps(&prefix, &KeyRange::new(b"b", b"")));
    }
}
