//! Typed errors used throughout the server. They are mapped to etcd's gRPC
//! status codes and messages in exactly one place: `api::grpc_error` (and,
//! for the peer protocol, `peer::PeerRefusal`).

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key is not provided")]
    EmptyKey,
    #[error("key not found")]
    KeyNotFound,
    #[error("value is provided")]
    ValueProvided,
    #[error("lease is provided")]
    LeaseProvided,
    #[error("too many operations in txn request")]
    TooManyOps,
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRev,
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExists,
    #[error("too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("election: not leader")]
    ElectionNotLeader,
    #[error("election: no leader")]
    ElectionNoLeader,
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    #[error("request is too large")]
    RequestTooLarge,
    #[error("no leader")]
    NoLeader,
    #[error("request timed out")]
    Timeout,
    #[error("server stopped")]
    Stopped,
    #[error("member ID already exist")]
    MemberExist,
    #[error("Peer URLs already exists")]
    PeerUrlExist,
    #[error("given member URLs are invalid")]
    MemberBadUrls,
    #[error("member not found")]
    MemberNotFound,
    #[error("can only promote a learner member")]
    MemberNotLearner,
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("too many learner members in cluster")]
    TooManyLearners,
    #[error("re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("not leader")]
    NotLeader,
    #[error("rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("unhealthy cluster")]
    Unhealthy,
    #[error("bad leader transferee")]
    BadLeaderTransferee,
    #[error("request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    #[error("the member has been permanently removed from the cluster")]
    MemberRemoved,
    /// The NOSPACE alarm is raised, or this member's state has no room for
    /// the request.
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// The CORRUPT alarm is raised: some member's state diverged.
    #[error("corrupt cluster")]
    CorruptCluster,
    #[error("{0} is not implemented yet")]
    Unimplemented(&'static str),
    #[error("plugin \"{plugin}\" denied the request: {reason}")]
    PluginDenied { plugin: String, reason: String },
    #[error("plugin \"{plugin}\" rejected key \"{key}\": {reason}")]
    PluginRejectedKey { plugin: String, key: String, reason: String },
    #[error("invalid plugin: {0}")]
    PluginInvalid(String),
    #[error("plugin \"{0}\" not found")]
    PluginNotFound(String),
    #[error("plugin engine: {0}")]
    PluginEngine(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("root user does not exist")]
    AuthRootUserNotExist,
    #[error("root user does not have root role")]
    AuthRootRoleNotExist,
    #[error("user name already exists")]
    AuthUserAlreadyExist,
    #[error("user name is empty")]
    AuthUserEmpty,
    #[error("user name not found")]
    AuthUserNotFound,
    #[error("role name already exists")]
    AuthRoleAlreadyExist,
    #[error("role name not found")]
    AuthRoleNotFound,
    #[error("role name is empty")]
    AuthRoleEmpty,
    #[error("authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("permission not given")]
    AuthPermissionNotGiven,
    #[error("permission denied")]
    PermissionDenied,
    #[error("role is not granted to the user")]
    AuthRoleNotGranted,
    #[error("permission is not granted to the role")]
    AuthPermissionNotGranted,
    #[error("authentication is not enabled")]
    AuthNotEnabled,
    #[error("invalid auth management")]
    AuthInvalidMgmt,
    #[error("revision of auth store is old")]
    AuthOldRevision,
    /// The token names no live session on this member (expired, revoked,
    /// or signed by another key).
    #[error("invalid auth token")]
    InvalidAuthToken,
    /// Hashing a password or signing a token failed on this member.
    #[error("auth: {0}")]
    AuthInternal(String),
    /// Apply answered a proposal with a result of another kind.
    #[error("unexpected apply result for {0}")]
    UnexpectedApplied(&'static str),
    /// Work moved off the async workers did not finish (it panicked or
    /// the runtime is shutting down).
    #[error("background task failed: {0}")]
    TaskFailed(String),
    #[error("storage: {0}")]
    Storage(#[from] rocksdb::Error),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// An auth refusal answered as etcd's maintenance server answers it
    /// (Defragment, Snapshot, Hash, HashKV): the auth store's own error,
    /// not converted to its gRPC form. Never applied from the log.
    #[error("auth: {0}")]
    AuthUnconverted(Box<Error>),
}

impl Error {
    /// Whether every member applying the same entry on the same replicated
    /// state reaches this error too. Only such errors may be a client's
    /// answer from apply; any other one (the disk, this process, timing)
    /// must stop the member instead. Exhaustive on purpose: a new variant
    /// has to be classified.
    pub fn is_deterministic(&self) -> bool {
        match self {
            // Decided by the request and the replicated state alone.
            Error::EmptyKey
            | Error::KeyNotFound
            | Error::ValueProvided
            | Error::LeaseProvided
            | Error::TooManyOps
            | Error::DuplicateKey
            | Error::Compacted
            | Error::FutureRev
            | Error::LeaseNotFound
            | Error::LeaseExists
            | Error::LeaseTtlTooLarge
            | Error::ElectionNotLeader
            | Error::ElectionNoLeader
            | Error::MissingLeaderKey
            | Error::RequestTooLarge
            | Error::MemberExist
            | Error::PeerUrlExist
            | Error::MemberBadUrls
            | Error::MemberNotFound
            | Error::MemberNotLearner
            | Error::TooManyLearners
            // Decided by the replicated alarms (the API's own check of this
            // member's size refuses before proposing).
            | Error::NoSpace
            | Error::CorruptCluster
            | Error::Unimplemented(_)
            | Error::PluginDenied { .. }
            | Error::PluginRejectedKey { .. }
            | Error::PluginInvalid(_)
            | Error::PluginNotFound(_)
            | Error::InvalidRequest(_)
            | Error::AuthRootUserNotExist
            | Error::AuthRootRoleNotExist
            | Error::AuthUserAlreadyExist
            | Error::AuthUserEmpty
            | Error::AuthUserNotFound
            | Error::AuthRoleAlreadyExist
            | Error::AuthRoleNotFound
            | Error::AuthRoleEmpty
            | Error::AuthFailed
            | Error::AuthPermissionNotGiven
            | Error::PermissionDenied
            | Error::AuthRoleNotGranted
            | Error::AuthPermissionNotGranted
            | Error::AuthNotEnabled
            | Error::AuthInvalidMgmt
            | Error::AuthOldRevision => true,
            // This member's view of the cluster, its clock or its health.
            Error::NoLeader
            | Error::Timeout
            | Error::Stopped
            | Error::LearnerNotReady
            | Error::NotEnoughStartedMembers
            | Error::NotLeader
            | Error::NotSupportedForLearner
            | Error::Unhealthy
            | Error::BadLeaderTransferee
            | Error::LeaderTransferTimeout
            | Error::MemberRemoved
            // Tokens live in each member's memory, with its own clock.
            | Error::InvalidAuthToken => false,
            // This member's disk, process or plugin engine, or a bug: neither
            // is the same on every member.
            Error::PluginEngine(_)
            | Error::Storage(_)
            | Error::Corrupt(_)
            | Error::Raft(_)
            | Error::Io(_)
            | Error::UnexpectedApplied(_)
            | Error::AuthInternal(_)
            | Error::TaskFailed(_) => false,
            // Decided at the API from this member's tokens, never at apply.
            Error::AuthUnconverted(_) => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Error::Corrupt(e.to_string())
    }
}
