//! Auth: users, roles and permissions (etcd's auth store), replicated
//! through Raft and checked at the API and at apply.
//!
//! [`AuthStore`] is this member's copy: the replicated state of
//! [`state`] (kept in memory, persisted in the meta column family, reloaded
//! after a snapshot install) plus the member-local [`token`] provider.
//!
//! # Checking a request
//!
//! ```ignore
//! let auth = member.auth();
//! // Who is asking: the `token` metadata, else the client certificate's CN.
//! let info = auth.authorize_request(&request)?;        // or authorize(token, identity)
//! auth.check_range(&info, &key, &range_end, Perm::Read)?; // KV keys
//! auth.check_admin(&info)?;                            // root role only
//! auth.check_authenticated(&info)?;                    // any known user
//! // Writes go through Raft carrying the caller, so apply checks them too:
//! member.propose_as(&info, request).await?;
//! ```
//!
//! Every check answers `Ok` while auth is disabled. A bad or expired token
//! is [`Error::InvalidAuthToken`]; a request without a user, while auth is
//! on, is [`Error::AuthUserEmpty`]; a caller checked at an older auth
//! revision than the state now has is [`Error::AuthOldRevision`], on which
//! etcd's clients authenticate again.

pub mod perm;
pub mod state;
pub mod token;

use std::time::Duration;

use parking_lot::RwLock;
use rocksdb::WriteBatch;

use crate::client_identity::ClientIdentity;
use crate::error::{Error, Result};
use crate::lease::LeaseTable;
use crate::proto::cairnpb::raft_request::Request;
use crate::proto::cairnpb::Caller;
use crate::proto::etcdserverpb::{request_op::Request as Op, DeleteRangeRequest, PutRequest, TxnRequest};
use crate::storage::Database;
use crate::txn::Write;

pub use perm::Perm;
pub use state::{AuthApplied, AuthState, ROOT_ROLE, ROOT_USER};
pub use token::{TokenKind, Tokens};

/// The gRPC metadata key etcd's clients put their token in.
pub const TOKEN_METADATA_KEY: &str = "token";
/// etcd's default `--bcrypt-cost`.
pub const DEFAULT_BCRYPT_COST: u32 = 10;

/// Who made a request, as far as auth is concerned: the user and the auth
/// revision their permissions are judged at. Empty while auth is off or
/// when the request names no user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthInfo {
    pub user: String,
    pub revision: u64,
}

impl AuthInfo {
    pub fn is_anonymous(&self) -> bool {
        self.user.is_empty()
    }

    /// The caller as a Raft entry carries it. A client's entry always has
    /// one (with an empty user for nobody); only the cluster's own entries
    /// (lease expiry, member attributes) go without, and skip the checks.
    pub fn as_caller(&self) -> Caller {
        Caller {
            user: self.user.clone(),
            auth_revision: self.revision,
        }
    }
}

impl From<&Caller> for AuthInfo {
    fn from(c: &Caller) -> Self {
        AuthInfo {
            user: c.user.clone(),
            revision: c.auth_revision,
        }
    }
}

/// This member's local auth settings (flags).
#[derive(Clone, Debug)]
pub struct AuthOptions {
    pub token: TokenKind,
    pub token_ttl: Duration,
    pub bcrypt_cost: u32,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            token: TokenKind::Simple,
            token_ttl: Duration::from_secs(300),
            bcrypt_cost: DEFAULT_BCRYPT_COST,
        }
    }
}

/// This member's auth store.
pub struct AuthStore {
    state: RwLock<AuthState>,
    tokens: Tokens,
    bcrypt_cost: u32,
}

impl AuthStore {
    pub fn open(engine: &Database, options: &AuthOptions) -> anyhow::Result<AuthStore> {
        Ok(AuthStore {
            state: RwLock::new(AuthState::load(engine)?),
            tokens: Tokens::new(&options.token, options.token_ttl)?,
            bcrypt_cost: options.bcrypt_cost,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.state.read().enabled
    }

    /// The auth revision: moves on every change to users, roles or the
    /// enabled flag.
    pub fn revision(&self) -> u64 {
        self.state.read().revision
    }

    /// A copy of the current state (for status and tests).
    pub fn snapshot(&self) -> AuthState {
        self.state.read().clone()
    }

    /// Who a gRPC request comes from: its `token` metadata (a token takes
    /// precedence), else its connection's certificate common name.
    pub fn authorize_request<T>(&self, request: &tonic::Request<T>) -> Result<AuthInfo> {
        self.authorize_metadata(request.metadata(), ClientIdentity::of(request))
    }

    pub fn authorize_metadata(&self, metadata: &tonic::metadata::MetadataMap, identity: Option<&ClientIdentity>) -> Result<AuthInfo> {
        let token = match metadata.get(TOKEN_METADATA_KEY) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| Error::InvalidAuthToken)?),
        };
        self.authorize(token, identity)
    }

    /// Who a request comes from, given its token (if any) and connection.
    /// Anonymous while auth is off.
    pub fn authorize(&self, token: Option<&str>, identity: Option<&ClientIdentity>) -> Result<AuthInfo> {
        let revision = {
            let state = self.state.read();
            if !state.enabled {
                return Ok(AuthInfo::default());
            }
            state.revision
        };
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            let owner = self.tokens.owner(token)?;
            return Ok(AuthInfo {
                user: owner.user,
                revision: owner.revision.unwrap_or(revision),
            });
        }
        match identity.and_then(|i| i.certificate_common_name.as_deref()) {
            Some(cn) if !cn.is_empty() => Ok(AuthInfo {
                user: cn.to_string(),
                revision,
            }),
            _ => Ok(AuthInfo::default()),
        }
    }

    /// `info` may access the keys `[key, range_end)` (one key when
    /// `range_end` is empty, to the end when it is "\0").
    pub fn check_range(&self, info: &AuthInfo, key: &[u8], range_end: &[u8], perm: Perm) -> Result<()> {
        self.state.read().check_range(&info.as_caller(), key, range_end, perm)
    }

    /// `info` holds the root role.
    pub fn check_admin(&self, info: &AuthInfo) -> Result<()> {
        self.state.read().check_admin(&info.as_caller())
    }

    /// `info` names a user, checked at the current auth revision.
    pub fn check_authenticated(&self, info: &AuthInfo) -> Result<()> {
        self.state.read().check_authenticated(&info.as_caller())
    }

    /// The checks of a read-only txn (every range and compare needs READ).
    pub fn check_txn(&self, info: &AuthInfo, txn: &TxnRequest, leases: &LeaseTable) -> Result<()> {
        let state = self.state.read();
        check_write(&state, &info.as_caller(), Write::Txn(txn), leases)
    }

    /// Hashes a new password with `--bcrypt-cost` (slow: call it off the
    /// async workers).
    pub fn hash_password(&self, password: &str) -> Result<Vec<u8>> {
        bcrypt::hash(password, self.bcrypt_cost)
            .map(String::into_bytes)
            .map_err(|e| Error::AuthInternal(format!("bcrypt: {e}")))
    }

    /// etcd's `CheckPassword`: the auth revision the password was found
    /// right at (slow: call it off the async workers).
    pub fn check_password(&self, name: &str, password: &str) -> Result<u64> {
        let (hash, revision) = {
            let state = self.state.read();
            if !state.enabled {
                return Err(Error::AuthNotEnabled);
            }
            let user = state.users.get(name).ok_or(Error::AuthFailed)?;
            if user.options.as_ref().is_some_and(|o| o.no_password) {
                return Err(Error::AuthFailed);
            }
            (String::from_utf8_lossy(&user.password).into_owned(), state.revision)
        };
        match bcrypt::verify(password, &hash) {
            Ok(true) => Ok(revision),
            _ => Err(Error::AuthFailed),
        }
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Applies one auth entry: writes its records with `mark_applied` in
    /// one batch, then makes them this member's state.
    pub fn apply(
        &self,
        engine: &Database,
        request: &Request,
        caller: Option<&Caller>,
        mark_applied: impl FnOnce(&mut WriteBatch),
    ) -> Result<AuthApplied> {
        let change = state::apply(engine, &self.state.read(), request, caller)?;
        let mut batch = change.batch;
        mark_applied(&mut batch);
        engine.write(batch, false)?;
        *self.state.write() = change.state;
        let effects = change.tokens;
        if effects.clear_all {
            self.tokens.clear();
        }
        for user in &effects.invalidate_users {
            self.tokens.invalidate_user(user);
        }
        if let Some((token, user)) = effects.register {
            self.tokens.register(token, user);
        }
        Ok(change.applied)
    }

    /// Re-reads the state after a snapshot replaced the stored records.
    pub fn reload(&self, engine: &Database) -> Result<()> {
        *self.state.write() = AuthState::load(engine)?;
        // Tokens stay: they are checked against the new users on use.
        Ok(())
    }

    /// The checks apply makes on a KV write carried by an entry from
    /// `caller` (see [`check_write`]); `None` is the cluster itself.
    pub fn check_applied_write(&self, caller: Option<&Caller>, write: Write<'_>, leases: &LeaseTable) -> Result<()> {
        match caller {
            Some(caller) => check_write(&self.state.read(), caller, write, leases),
            None => Ok(()),
        }
    }

    /// etcd's `checkLeasePuts`: `caller` may write every key attached to
    /// `lease` (to revoke it, or to attach more keys to it).
    pub fn check_lease_keys(&self, caller: Option<&Caller>, lease: i64, leases: &LeaseTable) -> Result<()> {
        let Some(caller) = caller else {
            return Ok(());
        };
        let keys = leases.keys_of(lease).unwrap_or_default();
        if keys.is_empty() {
            return Ok(());
        }
        let state = self.state.read();
        keys.iter().try_for_each(|key| state.check_range(caller, key, &[], Perm::Write))
    }

    /// [`AuthStore::check_admin`] for a caller an entry carries; `None` is
    /// the cluster itself.
    pub fn check_applied_admin(&self, caller: Option<&Caller>) -> Result<()> {
        match caller {
            Some(caller) => self.state.read().check_admin(caller),
            None => Ok(()),
        }
    }
}

/// Every key a write touches, as etcd 3.6 checks them: puts and deletes
/// need WRITE; compares, ranges and `prev_kv` need READ; a put attaching a
/// lease needs WRITE on every key already attached to it (the user could
/// not revoke it otherwise); txns are checked in both branches, nested ones
/// at any depth.
pub fn check_write(state: &AuthState, caller: &Caller, write: Write<'_>, leases: &LeaseTable) -> Result<()> {
    let Some(perms) = state.permissions_of(caller)? else {
        return Ok(());
    };
    let check = WriteCheck { perms, leases };
    match write {
        Write::Put(p) => check.put(p),
        Write::DeleteRange(d) => check.delete(d),
        Write::Txn(t) => check.txn(t),
    }
}

/// The key checks of one write, for a caller that is not root.
struct WriteCheck<'a> {
    perms: perm::MergedPerms,
    leases: &'a LeaseTable,
}

impl WriteCheck<'_> {
    fn range(&self, key: &[u8], range_end: &[u8], perm: Perm) -> Result<()> {
        if self.perms.covers(&perm::Interval::of(key, range_end), perm) {
            Ok(())
        } else {
            Err(Error::PermissionDenied)
        }
    }

    fn put(&self, p: &PutRequest) -> Result<()> {
        self.range(&p.key, &[], Perm::Write)?;
        if p.lease != 0 {
            // A lease that does not exist has no keys to protect; the plan
            // refuses it.
            for key in self.leases.keys_of(p.lease).unwrap_or_default() {
                self.range(&key, &[], Perm::Write)?;
            }
        }
        if p.prev_kv {
            self.range(&p.key, &[], Perm::Read)?;
        }
        Ok(())
    }

    fn delete(&self, d: &DeleteRangeRequest) -> Result<()> {
        self.range(&d.key, &d.range_end, Perm::Write)?;
        if d.prev_kv {
            self.range(&d.key, &d.range_end, Perm::Read)?;
        }
        Ok(())
    }

    fn txn(&self, t: &TxnRequest) -> Result<()> {
        for c in &t.compare {
            self.range(&c.key, &c.range_end, Perm::Read)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(Op::RequestRange(r)) => self.range(&r.key, &r.range_end, Perm::Read)?,
                Some(Op::RequestPut(p)) => self.put(p)?,
                Some(Op::RequestDeleteRange(d)) => self.delete(d)?,
                Some(Op::RequestTxn(nested)) => self.txn(nested)?,
                None => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
