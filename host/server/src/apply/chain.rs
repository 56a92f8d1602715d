//! The applier chain for KV writes, after etcd's: the MVCC applier at the
//! bottom executes a [`WritePlan`]; cross-cutting checks wrap it and may
//! refuse the plan first. Adding a check is one more wrapper in [`writes`]:
//! alarms first, then auth, then plugins, then MVCC.

use std::sync::Arc;

use crate::alarm::{quota, AlarmStore};
use crate::auth::AuthStore;
use crate::error::{Error, Result};
use crate::lease::LeaseTable;
use crate::mvcc::{MvccStore, WriteTxn};
use crate::plugin::Plugins;
use crate::proto::cairnpb::Caller;
use crate::proto::etcdserverpb::AlarmType;
use crate::txn::{self, Write, WritePlan, WriteResponse};

/// One link of the chain. `txn` is still at `plan.revision`; an `Err` leaves
/// it to be dropped, so a refused write changes nothing. `caller` is who the
/// entry says made the request (`None`: the cluster itself).
pub trait WriteApplier: Send + Sync {
    fn apply(&self, plan: &WritePlan<'_>, caller: Option<&Caller>, txn: &mut WriteTxn<'_>) -> Result<WriteResponse>;
}

/// Executes the plan against MVCC.
pub struct MvccApplier;

impl WriteApplier for MvccApplier {
    fn apply(&self, plan: &WritePlan<'_>, _caller: Option<&Caller>, txn: &mut WriteTxn<'_>) -> Result<WriteResponse> {
        txn::execute(txn, plan)
    }
}

/// Refuses a write whose caller may not touch every key it names, or was
/// authenticated at an older auth revision than the state's, as etcd's
/// auth applier does.
pub struct AuthChecks<A> {
    auth: Arc<AuthStore>,
    leases: Arc<LeaseTable>,
    inner: A,
}

impl<A: WriteApplier> WriteApplier for AuthChecks<A> {
    fn apply(&self, plan: &WritePlan<'_>, caller: Option<&Caller>, txn: &mut WriteTxn<'_>) -> Result<WriteResponse> {
        self.auth.check_applied_write(caller, plan.request, &self.leases)?;
        self.inner.apply(plan, caller, txn)
    }
}

/// Runs the admission and validate plugins on the plan before `inner`.
pub struct PluginChecks<A> {
    plugins: Arc<Plugins>,
    store: Arc<MvccStore>,
    inner: A,
}

impl<A: WriteApplier> WriteApplier for PluginChecks<A> {
    fn apply(&self, plan: &WritePlan<'_>, caller: Option<&Caller>, txn: &mut WriteTxn<'_>) -> Result<WriteResponse> {
        self.plugins.admit(plan, caller.map_or("", |c| c.user.as_str()), &self.store)?;
        self.inner.apply(plan, caller, txn)
    }
}

/// Refuses writes while an alarm is raised, as etcd's alarm appliers do:
/// under CORRUPT every write, under NOSPACE every write that would add data
/// (a put, a txn with puts). The alarms are replicated, so every member
/// refuses alike.
pub struct AlarmChecks<A> {
    alarms: Arc<AlarmStore>,
    inner: A,
}

/// Whether `request` may be applied under the raised alarms.
pub fn check_alarms(alarms: &AlarmStore, adds_data: bool) -> Result<()> {
    if alarms.is_raised(AlarmType::Corrupt) {
        return Err(Error::CorruptCluster);
    }
    if adds_data && alarms.is_raised(AlarmType::Nospace) {
        return Err(Error::NoSpace);
    }
    Ok(())
}

impl<A: WriteApplier> WriteApplier for AlarmChecks<A> {
    fn apply(&self, plan: &WritePlan<'_>, caller: Option<&Caller>, txn: &mut WriteTxn<'_>) -> Result<WriteResponse> {
        let adds_data = match plan.request {
            Write::Put(_) => true,
            Write::DeleteRange(_) => false,
            Write::Txn(t) => quota::txn_cost(t) > 0,
        };
        check_alarms(&self.alarms, adds_data)?;
        self.inner.apply(plan, caller, txn)
    }
}

/// The chain every applied KV write goes through.
pub fn writes(
    alarms: Arc<AlarmStore>,
    auth: Arc<AuthStore>,
    leases: Arc<LeaseTable>,
    plugins: Arc<Plugins>,
    store: Arc<MvccStore>,
) -> Box<dyn WriteApplier> {
    Box::new(AlarmChecks {
        alarms,
        inner: AuthChecks {
            auth,
            leases,
            inner: PluginChecks {
                plugins,
                store,
                inner: MvccApplier,
            },
        },
    })
}
