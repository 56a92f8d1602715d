//! The single mapping from internal errors to etcd's gRPC codes and messages.

use tonic::{Code, Status};

use crate::error::Error;

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let (code, message) = match &e {
            Error::EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided".to_string()),
            Error::KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found".to_string()),
            Error::ValueProvided => (Code::InvalidArgument, "etcdserver: value is provided".to_string()),
            Error::LeaseProvided => (Code::InvalidArgument, "etcdserver: lease is provided".to_string()),
            Error::TooManyOps => (Code::InvalidArgument, "etcdserver: too many operations in txn request".to_string()),
            Error::DuplicateKey => (Code::InvalidArgument, "etcdserver: duplicate key given in txn request".to_string()),
            Error::Compacted => (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted".to_string(),
            ),
            Error::FutureRev => (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision".to_string(),
            ),
            Error::LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found".to_string()),
            Error::LeaseExists => (Code::FailedPrecondition, "etcdserver: lease already exists".to_string()),
            Error::LeaseTtlTooLarge => (Code::OutOfRange, "etcdserver: too large lease TTL".to_string()),
            // etcd's election server returns these as plain Go errors, which
            // gRPC reports as Unknown.
            Error::ElectionNotLeader => (Code::Unknown, "election: not leader".to_string()),
            Error::ElectionNoLeader => (Code::Unknown, "election: no leader".to_string()),
            Error::MissingLeaderKey => (Code::Unknown, "\"leader\" field must be provided".to_string()),
            Error::RequestTooLarge => (Code::InvalidArgument, "etcdserver: request is too large".to_string()),
            Error::NoLeader => (Code::Unavailable, "etcdserver: no leader".to_string()),
            Error::Timeout => (Code::Unavailable, "etcdserver: request timed out".to_string()),
            Error::Stopped => (Code::Unavailable, "etcdserver: server stopped".to_string()),
            Error::MemberNotFound => (Code::NotFound, format!("etcdserver: {e}")),
            Error::MemberBadUrls => (Code::InvalidArgument, format!("etcdserver: {e}")),
            Error::NotLeader => (Code::FailedPrecondition, format!("etcdserver: {e}")),
            Error::NotSupportedForLearner | Error::Unhealthy => (Code::Unavailable, format!("etcdserver: {e}")),
            Error::LeaderTransferTimeout | Error::MemberRemoved => (Code::Unavailable, format!("etcdserver: {e}")),
            Error::MemberExist
            | Error::PeerUrlExist
            | Error::MemberNotLearner
            | Error::LearnerNotReady
            | Error::TooManyLearners
            | Error::NotEnoughStartedMembers
            | Error::BadLeaderTransferee => (Code::FailedPrecondition, format!("etcdserver: {e}")),
            Error::NoSpace => (Code::ResourceExhausted, format!("etcdserver: {e}")),
            Error::CorruptCluster => (Code::DataLoss, format!("etcdserver: {e}")),
            Error::Unimplemented(what) => (Code::Unimplemented, format!("cairn: {what} is not implemented yet")),
            Error::PluginDenied { .. } | Error::PluginRejectedKey { .. } => (Code::FailedPrecondition, format!("cairn: {e}")),
            Error::PluginInvalid(_) => (Code::InvalidArgument, format!("cairn: {e}")),
            Error::PluginNotFound(_) => (Code::NotFound, format!("cairn: {e}")),
            Error::PluginEngine(_) => (Code::Internal, format!("cairn: {e}")),
            Error::AuthUserEmpty
            | Error::AuthRoleEmpty
            | Error::AuthFailed
            | Error::AuthPermissionNotGiven
            | Error::AuthInvalidMgmt
            | Error::AuthOldRevision => (Code::InvalidArgument, format!("etcdserver: {e}")),
            Error::AuthRootUserNotExist
            | Error::AuthRootRoleNotExist
            | Error::AuthUserAlreadyExist
            | Error::AuthUserNotFound
            | Error::AuthRoleAlreadyExist
            | Error::AuthRoleNotFound
            | Error::AuthRoleNotGranted
            | Error::AuthPermissionNotGranted
            | Error::AuthNotEnabled => (Code::FailedPrecondition, format!("etcdserver: {e}")),
            Error::PermissionDenied => (Code::PermissionDenied, format!("etcdserver: {e}")),
            Error::InvalidAuthToken => (Code::Unauthenticated, format!("etcdserver: {e}")),
            Error::AuthInternal(_) => {
                tracing::error!(error = %e, "auth failed on this member");
                (Code::Internal, format!("etcdserver: {e}"))
            }
            Error::InvalidRequest(msg) => (Code::InvalidArgument, format!("etcdserver: {msg}")),
            // etcd's maintenance server returns the auth store's error as a
            // plain Go error, which gRPC reports as Unknown.
            Error::AuthUnconverted(_) => (Code::Unknown, e.to_string()),
            Error::UnexpectedApplied(_) | Error::TaskFailed(_) => {
                tracing::error!(error = %e, "internal error serving request");
                (Code::Internal, format!("etcdserver: {e}"))
            }
            Error::Storage(_) | Error::Corrupt(_) | Error::Raft(_) | Error::Io(_) => {
                tracing::error!(error = %e, "internal error serving request");
                (Code::Internal, format!("etcdserver: {e}"))
            }
        };
        Status::new(code, message)
    }
}

/// An error as etcd reports it where it hands a gRPC error on as text (a
/// watch's `cancel_reason`): Go's `rpc error: code = … desc = …`.
pub fn go_error_text(e: Error) -> String {
    let status = Status::from(e);
    format!("rpc error: code = {} desc = {}", go_code_name(status.code()), status.message())
}

/// An error of a service etcd serves through its own in-process client
/// (Lock, Election): that client hands the server a plain Go error, which
/// gRPC reports as Unknown, with the message kept.
pub fn via_client(e: Error) -> Status {
    Status::new(Code::Unknown, Status::from(e).message())
}

/// grpc-go's names of the codes.
fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}
