//! The hooks as apply and watch delivery use them: [`Plugins::admit`] decides
//! whether a committed write may go ahead, [`Plugins::transform`] shapes what
//! a watcher sees. Both depend only on replicated state (the bindings, the
//! store at the revision being applied, the request), so every member
//! reaches the same answer.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::bindings::{
    DeleteOp, Entry, EventKind, Identity, KeyValue as WitKv, Mutation, PutOp, RequestKind, Verdict, WatchAction, WatchEvent, WriteRequest,
};
use super::registry::{Binding, Plugins, Registry};
use super::runtime::{Failure, StateView};
use super::Hook;
use crate::error::{Error, Result};
use crate::kv;
use crate::mvcc::{KeyRange, MvccStore, Reader};
use crate::proto::cairnpb::{PluginFailurePolicy, PluginMode};
use crate::proto::etcdserverpb::{request_op::Request as Op, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};

/// A write request as admission sees it.
#[derive(Clone, Copy)]
pub enum WriteView<'a> {
    Put(&'a PutRequest),
    DeleteRange(&'a DeleteRangeRequest),
    Txn(&'a TxnRequest),
}

/// The store, read at the revision being applied.
struct StoreState {
    store: Arc<MvccStore>,
    rev: i64,
}

impl StateView for StoreState {
    fn get(&self, key: &[u8]) -> Option<WitKv> {
        match self.store.range(&KeyRange::Single(key.to_vec()), self.rev, 1, false) {
            Ok(r) => r.kvs.into_iter().next().map(to_wit),
            Err(e) => {
                tracing::error!(error = %e, "plugin state read failed");
                None
            }
        }
    }

    fn range_count(&self, key: &[u8], range_end: &[u8]) -> u64 {
        match self.store.range(&KeyRange::new(key, range_end), self.rev, 0, true) {
            Ok(r) => r.count.max(0) as u64,
            Err(e) => {
                tracing::error!(error = %e, "plugin state read failed");
                0
            }
        }
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

/// The mutations a write would make (a txn's selected branches, nested txns
/// flattened in order), and the key-values its puts would store.
struct Flattened {
    kind: RequestKind,
    mutations: Vec<Mutation>,
    entries: Vec<Entry>,
}

fn flatten(write: WriteView<'_>, view: &dyn Reader) -> Flattened {
    let mut out = Flattened {
        kind: RequestKind::Put,
        mutations: Vec::new(),
        entries: Vec::new(),
    };
    match write {
        WriteView::Put(p) => add_put(&mut out, p, view),
        WriteView::DeleteRange(d) => {
            out.kind = RequestKind::DeleteRange;
            add_delete(&mut out, d);
        }
        WriteView::Txn(t) => {
            out.kind = RequestKind::Txn;
            add_txn(&mut out, t, view);
        }
    }
    out
}

fn add_put(out: &mut Flattened, p: &PutRequest, view: &dyn Reader) {
    out.mutations.push(Mutation::Put(PutOp {
        key: p.key.clone(),
        value: p.value.clone(),
        lease: p.lease,
    }));
    // A put that keeps the stored value or lease stores those: validate the
    // key-value as it would be stored.
    let (mut value, mut lease) = (p.value.clone(), p.lease);
    if p.ignore_value || p.ignore_lease {
        let prev = view
            .range(&KeyRange::Single(p.key.clone()), 0, 1, false)
            .ok()
            .and_then(|r| r.kvs.into_iter().next());
        if let Some(prev) = prev {
            if p.ignore_value {
                value = prev.value;
            }
            if p.ignore_lease {
                lease = prev.lease;
            }
        }
    }
    out.entries.push(Entry {
        key: p.key.clone(),
        value,
        lease,
    });
}

fn add_delete(out: &mut Flattened, d: &DeleteRangeRequest) {
    out.mutations.push(Mutation::DeleteRange(DeleteOp {
        key: d.key.clone(),
        range_end: d.range_end.clone(),
    }));
}

fn add_txn(out: &mut Flattened, t: &TxnRequest, view: &dyn Reader) {
    // Like kv::txn, every compare is judged on the state before the txn.
    for RequestOp { request } in kv::chosen_branch(view, t) {
        match request {
            Some(Op::RequestPut(p)) => add_put(out, p, view),
            Some(Op::RequestDeleteRange(d)) => add_delete(out, d),
            Some(Op::RequestTxn(nested)) => add_txn(out, nested, view),
            Some(Op::RequestRange(_)) | None => {}
        }
    }
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
fn denial(bound: &Binding, outcome: std::result::Result<Verdict, Failure>) -> Option<String> {
    record(bound, &outcome);
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

/// Counts a call for `plugin list`.
fn record<T>(bound: &Binding, outcome: &std::result::Result<T, Failure>) {
    bound.stats.calls.fetch_add(1, Ordering::Relaxed);
    if outcome.is_err() {
        bound.stats.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether a would-be denial stops the request, per the binding's mode.
fn enforced(bound: &Binding, reason: &str) -> bool {
    bound.stats.denials.fetch_add(1, Ordering::Relaxed);
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
    /// Runs the admission and validate bindings that `write` touches,
    /// against the store at the revision being applied. `Err` is the denial
    /// the client receives; the caller then changes nothing.
    pub fn admit(&self, write: WriteView<'_>, store: &Arc<MvccStore>) -> Result<()> {
        let registry = self.current();
        if registry.of(Hook::Admission).next().is_none() && registry.of(Hook::Validate).next().is_none() {
            return Ok(());
        }
        let view = store.read_view();
        let flat = flatten(write, &view);
        let state: Arc<dyn StateView> = Arc::new(StoreState {
            store: store.clone(),
            rev: view.rev(),
        });
        self.run_admission(&registry, &flat, view.rev(), &state)?;
        self.run_validate(&registry, &flat, &state)
    }

    fn run_admission(&self, registry: &Registry, flat: &Flattened, revision: i64, state: &Arc<dyn StateView>) -> Result<()> {
        let mut request: Option<WriteRequest> = None;
        for bound in registry.of(Hook::Admission) {
            if !flat.mutations.iter().any(|m| touches(&bound.range, m)) {
                continue;
            }
            let request = request.get_or_insert_with(|| WriteRequest {
                kind: flat.kind,
                mutations: flat.mutations.clone(),
                identity: Identity { user: String::new() },
                revision,
            });
            let outcome = match Plugins::compiled(&self.apply, bound) {
                Ok(c) => self
                    .apply
                    .admit(&c, &bound.name, bound.limits, &bound.binding().config, request, state.clone()),
                Err(_) => Err(Failure::Instantiation),
            };
            if let Some(reason) = denial(bound, outcome) {
                if enforced(bound, &reason) {
                    return Err(Error::PluginDenied {
                        plugin: bound.name.clone(),
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    fn run_validate(&self, registry: &Registry, flat: &Flattened, state: &Arc<dyn StateView>) -> Result<()> {
        for entry in &flat.entries {
            for bound in registry.of(Hook::Validate) {
                if !bound.range.contains(&entry.key) {
                    continue;
                }
                let outcome = match Plugins::compiled(&self.apply, bound) {
                    Ok(c) => self
                        .apply
                        .validate(&c, &bound.name, bound.limits, &bound.binding().config, entry, state.clone()),
                    Err(_) => Err(Failure::Instantiation),
                };
                if let Some(reason) = denial(bound, outcome) {
                    if enforced(bound, &reason) {
                        return Err(Error::PluginRejectedKey {
                            plugin: bound.name.clone(),
                            key: String::from_utf8_lossy(&entry.key).into_owned(),
                            reason,
                        });
                    }
                }
            }
        }
        Ok(())
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
            let outcome = match Plugins::compiled(&self.serve, bound) {
                Ok(c) => self.serve.transform(&c, &bound.name, bound.limits, &bound.binding().config, &input),
                Err(_) => Err(Failure::Instantiation),
            };
            record(bound, &outcome);
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
