//! The typed results of proposals: each request's result type says which
//! kind of apply result it is, once, so a caller gets the type it asked for
//! and a mismatch is a typed internal error rather than a match at every
//! call site.

use crate::apply::Applied;
use crate::auth::AuthApplied;
use crate::proto::cairnpb::PluginInfo;
use crate::proto::etcdserverpb::{
    AlarmResponse, CompactionResponse, DeleteRangeResponse, LeaseCheckpointResponse, LeaseGrantResponse, LeaseRevokeResponse, PutResponse,
    ResponseHeader, TxnResponse,
};

/// A proposal's result, taken out of what apply returned.
pub trait FromApplied: Sized {
    /// What the result is of, for the error a mismatch gives.
    const WHAT: &'static str;

    /// The result, or `None` when apply returned another kind.
    fn from_applied(applied: Applied) -> Option<Self>;

    /// The header the member fills in before the caller sees the result.
    fn header_mut(&mut self) -> Option<&mut Option<ResponseHeader>> {
        None
    }
}

/// A plugin was removed.
#[derive(Debug)]
pub struct PluginRemoved;

/// A member record (its attributes or peer URLs) was applied.
#[derive(Debug)]
pub struct MembersApplied;

/// Implements [`FromApplied`] for etcd responses, which carry a header.
macro_rules! with_header {
    ($($ty:ty => $variant:ident, $what:literal;)*) => {$(
        impl FromApplied for $ty {
            const WHAT: &'static str = $what;

            fn from_applied(applied: Applied) -> Option<Self> {
                match applied {
                    Applied::$variant(resp) => Some(resp),
                    _ => None,
                }
            }

            fn header_mut(&mut self) -> Option<&mut Option<ResponseHeader>> {
                Some(&mut self.header)
            }
        }
    )*};
}

with_header! {
    PutResponse => Put, "put";
    DeleteRangeResponse => DeleteRange, "delete range";
    TxnResponse => Txn, "txn";
    CompactionResponse => Compaction, "compaction";
    LeaseGrantResponse => LeaseGrant, "lease grant";
    LeaseRevokeResponse => LeaseRevoke, "lease revoke";
    LeaseCheckpointResponse => LeaseCheckpoint, "lease checkpoint";
    AlarmResponse => Alarm, "alarm";
}

impl FromApplied for PluginInfo {
    const WHAT: &'static str = "plugin install";

    fn from_applied(applied: Applied) -> Option<Self> {
        match applied {
            Applied::PluginInstall(info) => Some(info),
            _ => None,
        }
    }
}

impl FromApplied for PluginRemoved {
    const WHAT: &'static str = "plugin remove";

    fn from_applied(applied: Applied) -> Option<Self> {
        matches!(applied, Applied::PluginRemove).then_some(PluginRemoved)
    }
}

impl FromApplied for MembersApplied {
    const WHAT: &'static str = "member attributes";

    fn from_applied(applied: Applied) -> Option<Self> {
        matches!(applied, Applied::Members).then_some(MembersApplied)
    }
}

impl FromApplied for AuthApplied {
    const WHAT: &'static str = "auth";

    fn from_applied(applied: Applied) -> Option<Self> {
        match applied {
            Applied::Auth(a) => Some(a),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_of_the_expected_kind_is_taken() {
        let resp = PutResponse {
            prev_kv: None,
            header: Some(ResponseHeader {
                revision: 7,
                ..Default::default()
            }),
        };
        let taken = PutResponse::from_applied(Applied::Put(resp)).map(|r| r.header.map(|h| h.revision));
        assert_eq!(taken, Some(Some(7)));
        assert!(PluginRemoved::from_applied(Applied::PluginRemove).is_some());
    }

    #[test]
    fn a_result_of_another_kind_is_refused() {
        assert!(PutResponse::from_applied(Applied::PluginRemove).is_none());
        assert!(TxnResponse::from_applied(Applied::Put(PutResponse::default())).is_none());
        assert!(PluginRemoved::from_applied(Applied::Members).is_none());
        assert!(MembersApplied::from_applied(Applied::PluginRemove).is_none());
    }
}
