//! The applier chain for KV writes, after etcd's: the MVCC applier at the
//! bottom executes a [`WritePlan`]; cross-cutting checks wrap it and may
//! refuse the plan first. Adding a check (auth, quota) is one more wrapper
//! in [`writes`].

use std::sync::Arc;

use crate::error::Result;
use crate::mvcc::{MvccStore, WriteTxn};
use crate::plugin::Plugins;
use crate::txn::{self, WritePlan, WriteResponse};

/// One link of the chain. `txn` is still at `plan.revision`; an `Err` leaves
/// it to be dropped, so a refused write changes nothing.
pub trait WriteApplier: Send + Sync {
    fn apply(&self, plan: &WritePlan<'_>, txn: &mut WriteTxn<'_>) -> Result<WriteResponse>;
}

/// Executes the plan against MVCC.
pub struct MvccApplier;

impl WriteApplier for MvccApplier {
    fn apply(&self, plan: &WritePlan<'_>, txn: &mut WriteTxn<'_>) -> Result<WriteResponse> {
        txn::execute(txn, plan)
    }
}

/// Runs the admission and validate plugins on the plan before `inner`.
pub struct PluginChecks<A> {
    plugins: Arc<Plugins>,
    store: Arc<MvccStore>,
    inner: A,
}

impl<A: WriteApplier> WriteApplier for PluginChecks<A> {
    fn apply(&self, plan: &WritePlan<'_>, txn: &mut WriteTxn<'_>) -> Result<WriteResponse> {
        self.plugins.admit(plan, &self.store)?;
        self.inner.apply(plan, txn)
    }
}

/// The chain every applied KV write goes through.
pub fn writes(plugins: Arc<Plugins>, store: Arc<MvccStore>) -> Box<dyn WriteApplier> {
    Box::new(PluginChecks {
        plugins,
        store,
        inner: MvccApplier,
    })
}
