//! Auth through the real state machine on RocksDB: entries applied with a
//! caller, etcd's rules and errors, the revision, the KV checks of the
//! applier chain, tokens and persistence.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;

use super::{AuthApplied, AuthInfo, AuthOptions, AuthStore, Perm, TokenKind};
use crate::apply::{Applied, Applier, ApplyResult, Waiters};
use crate::error::Error;
use crate::mvcc::MvccStore;
use crate::proto::authpb::{permission::Type as PermType, Permission, User, UserAddOptions};
use crate::proto::cairnpb::{raft_request::Request, AuthPasswordChange, AuthenticateEntry, Caller, RaftRequest};
use crate::proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request as Op,
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest, AuthRoleGetRequest, AuthRoleGrantPermissionRequest,
    AuthRoleListRequest, AuthRoleRevokePermissionRequest, AuthUserDeleteRequest, AuthUserGetRequest, AuthUserGrantRoleRequest,
    AuthUserListRequest, AuthUserRevokeRoleRequest, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::raft::StateMachine;
use crate::storage::Database;

struct Member {
    dir: tempfile::TempDir,
    auth: Arc<AuthStore>,
    waiters: Arc<Waiters>,
    applier: Applier,
    index: u64,
}

fn options() -> AuthOptions {
    AuthOptions {
        token: TokenKind::Simple,
        token_ttl: Duration::from_secs(300),
        // The cheapest bcrypt allows: the tests hash several passwords.
        bcrypt_cost: 4,
    }
}

fn open_in(dir: tempfile::TempDir, index: u64) -> Member {
    let engine = Database::open(dir.path()).expect("engine");
    let store = Arc::new(MvccStore::open(engine.clone()).expect("store"));
    let waiters = Arc::new(Waiters::default());
    let auth = Arc::new(AuthStore::open(&engine, &options()).expect("auth"));
    let applier = Applier::new(engine, store, waiters.clone())
        .expect("applier")
        .with_auth(auth.clone());
    Member {
        dir,
        auth,
        waiters,
        applier,
        index,
    }
}

fn member() -> Member {
    open_in(tempfile::tempdir().expect("temp dir"), 0)
}

fn as_user(user: &str, auth_revision: u64) -> Option<Caller> {
    Some(Caller {
        user: user.into(),
        auth_revision,
    })
}

impl Member {
    fn apply(&mut self, request: Request, caller: Option<Caller>) -> ApplyResult {
        self.index += 1;
        let id = 9000 + self.index;
        let mut rx = self.waiters.register(id);
        let data = RaftRequest {
            id,
            request: Some(request),
            caller,
        }
        .encode_to_vec();
        self.applier.apply(self.index, &data).expect("apply");
        rx.try_recv().expect("a result for the waiting client")
    }

    /// Applies as root at the current revision.
    fn root(&mut self, request: Request) -> ApplyResult {
        let rev = self.auth.revision();
        self.apply(request, as_user("root", rev))
    }

    fn ok(&mut self, request: Request) {
        let rev = self.auth.revision();
        if let Err(e) = self.apply(request, as_user("root", rev)) {
            panic!("refused: {e}");
        }
    }

    fn reopen(self) -> Member {
        let Member { dir, applier, index, .. } = self;
        drop(applier);
        open_in(dir, index)
    }
}

fn user_add(name: &str, password_hash: &[u8]) -> Request {
    Request::AuthUserAdd(User {
        name: name.as_bytes().to_vec(),
        password: password_hash.to_vec(),
        roles: Vec::new(),
        options: None,
    })
}

fn grant_role(user: &str, role: &str) -> Request {
    Request::AuthUserGrantRole(AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    })
}

fn role_add(name: &str) -> Request {
    Request::AuthRoleAdd(AuthRoleAddRequest { name: name.into() })
}

fn grant_perm(role: &str, t: PermType, key: &str, end: &str) -> Request {
    Request::AuthRoleGrantPermission(AuthRoleGrantPermissionRequest {
        name: role.into(),
        perm: Some(Permission {
            perm_type: t as i32,
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
        }),
    })
}

fn enable() -> Request {
    Request::AuthEnable(AuthEnableRequest {})
}

fn put(key: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    }
}

fn err_of(result: ApplyResult) -> Error {
    match result {
        Ok(applied) => panic!("expected a refusal, got {applied:?}"),
        Err(e) => e,
    }
}

/// root (root role), alice with role `app` (readwrite on the prefix /app/,
/// read on /shared), bob without roles, auth enabled.
fn with_users() -> Member {
    let mut m = member();
    for r in [
        user_add("root", b""),
        role_add("root"),
        grant_role("root", "root"),
        user_add("alice", b""),
        user_add("bob", b""),
        role_add("app"),
        grant_perm("app", PermType::Readwrite, "/app/", "/app0"),
        grant_perm("app", PermType::Read, "/shared", ""),
        grant_role("alice", "app"),
        enable(),
    ] {
        m.ok(r);
    }
    m
}

#[test]
fn enabling_needs_a_root_user_with_the_root_role() {
    let mut m = member();
    assert!(matches!(err_of(m.root(enable())), Error::AuthRootUserNotExist));
    m.ok(user_add("root", b""));
    assert!(matches!(err_of(m.root(enable())), Error::AuthRootRoleNotExist));
    // The root role can be granted before it is created, as in etcd.
    m.ok(grant_role("root", "root"));
    assert!(!m.auth.is_enabled());
    m.ok(enable());
    assert!(m.auth.is_enabled());
    // Enabling twice is no error.
    m.ok(enable());
}

#[test]
fn while_enabled_only_root_manages_auth() {
    let mut m = with_users();
    let rev = m.auth.revision();
    assert!(matches!(err_of(m.apply(role_add("x"), as_user("", 0))), Error::AuthUserEmpty));
    assert!(matches!(
        err_of(m.apply(role_add("x"), as_user("alice", rev))),
        Error::PermissionDenied
    ));
    assert!(matches!(
        err_of(m.apply(role_add("x"), as_user("nobody", rev))),
        Error::AuthUserNotFound
    ));
    let list = Request::AuthUserList(AuthUserListRequest {});
    assert!(matches!(
        err_of(m.apply(list.clone(), as_user("bob", rev))),
        Error::PermissionDenied
    ));
    let users = m.root(list).expect("root lists users");
    assert!(matches!(users, Applied::Auth(AuthApplied::UserList(u)) if u == ["alice", "bob", "root"]));
    // A user may read its own record and the roles it holds, nothing else.
    let get = |name: &str| Request::AuthUserGet(AuthUserGetRequest { name: name.into() });
    let own = m.apply(get("alice"), as_user("alice", rev)).expect("own record");
    assert!(matches!(own, Applied::Auth(AuthApplied::UserGet(r)) if r == ["app"]));
    assert!(matches!(
        err_of(m.apply(get("bob"), as_user("alice", rev))),
        Error::PermissionDenied
    ));
    let role_get = |role: &str| Request::AuthRoleGet(AuthRoleGetRequest { role: role.into() });
    let perms = m.apply(role_get("app"), as_user("alice", rev)).expect("held role");
    assert!(matches!(perms, Applied::Auth(AuthApplied::RoleGet(p)) if p.len() == 2));
    assert!(matches!(
        err_of(m.apply(role_get("app"), as_user("bob", rev))),
        Error::PermissionDenied
    ));
    // The cluster's own entries (no caller) need nothing.
    m.apply(role_add("y"), None).expect("cluster entry");
}

#[test]
fn etcds_rules_for_users_and_roles() {
    let mut m = with_users();
    assert!(matches!(err_of(m.root(user_add("alice", b""))), Error::AuthUserAlreadyExist));
    assert!(matches!(err_of(m.root(user_add("", b""))), Error::AuthUserEmpty));
    assert!(matches!(err_of(m.root(role_add("app"))), Error::AuthRoleAlreadyExist));
    assert!(matches!(err_of(m.root(role_add(""))), Error::AuthRoleEmpty));
    assert!(matches!(err_of(m.root(grant_role("bob", "missing"))), Error::AuthRoleNotFound));
    assert!(matches!(err_of(m.root(grant_role("carol", "app"))), Error::AuthUserNotFound));
    let revoke = |name: &str, role: &str| {
        Request::AuthUserRevokeRole(AuthUserRevokeRoleRequest {
            name: name.into(),
            role: role.into(),
        })
    };
    assert!(matches!(err_of(m.root(revoke("bob", "app"))), Error::AuthRoleNotGranted));
    assert!(matches!(err_of(m.root(revoke("root", "root"))), Error::AuthInvalidMgmt));
    let delete_user = |name: &str| Request::AuthUserDelete(AuthUserDeleteRequest { name: name.into() });
    assert!(matches!(err_of(m.root(delete_user("root"))), Error::AuthInvalidMgmt));
    assert!(matches!(err_of(m.root(delete_user("carol"))), Error::AuthUserNotFound));
    let delete_role = |role: &str| Request::AuthRoleDelete(AuthRoleDeleteRequest { role: role.into() });
    assert!(matches!(err_of(m.root(delete_role("root"))), Error::AuthInvalidMgmt));
    assert!(matches!(err_of(m.root(delete_role("nope"))), Error::AuthRoleNotFound));
    let revoke_perm = |key: &str, end: &str| {
        Request::AuthRoleRevokePermission(AuthRoleRevokePermissionRequest {
            role: "app".into(),
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
        })
    };
    assert!(matches!(err_of(m.root(revoke_perm("/app/", ""))), Error::AuthPermissionNotGranted));
    let no_perm = Request::AuthRoleGrantPermission(AuthRoleGrantPermissionRequest {
        name: "app".into(),
        perm: None,
    });
    assert!(matches!(err_of(m.root(no_perm)), Error::AuthPermissionNotGiven));
    // Granting the same key and range again updates its type.
    m.ok(grant_perm("app", PermType::Write, "/shared", ""));
    let perms = m.auth.snapshot().roles["app"].key_permission.clone();
    assert_eq!(perms.len(), 2);
    assert!(perms.iter().any(|p| p.key == b"/shared" && p.perm_type == PermType::Write as i32));
    m.ok(revoke_perm("/app/", "/app0"));
    // Deleting a role takes it from its holders; granting twice is no error.
    m.ok(grant_role("bob", "app"));
    m.ok(grant_role("bob", "app"));
    m.ok(delete_role("app"));
    let state = m.auth.snapshot();
    assert!(state.users["alice"].roles.is_empty() && state.users["bob"].roles.is_empty());
    m.ok(delete_user("bob"));
    assert!(!m.auth.snapshot().users.contains_key("bob"));
    let roles = m.root(Request::AuthRoleList(AuthRoleListRequest {})).expect("role list");
    assert!(matches!(roles, Applied::Auth(AuthApplied::RoleList(r)) if r == ["root"]));
}

#[test]
fn changes_move_the_auth_revision_and_reads_do_not() {
    let mut m = member();
    let start = m.auth.revision();
    assert_eq!(start, 1);
    m.ok(user_add("root", b""));
    assert_eq!(m.auth.revision(), start + 1);
    m.ok(Request::AuthUserGet(AuthUserGetRequest { name: "root".into() }));
    m.ok(Request::AuthUserList(AuthUserListRequest {}));
    assert_eq!(m.auth.revision(), start + 1);
    // A refused change moves nothing.
    let _ = m.root(user_add("root", b""));
    assert_eq!(m.auth.revision(), start + 1);
    m.ok(grant_role("root", "root"));
    m.ok(enable());
    let enabled_at = m.auth.revision();
    m.ok(Request::AuthDisable(AuthDisableRequest {}));
    assert!(!m.auth.is_enabled());
    assert!(m.auth.revision() > enabled_at);
}

#[test]
fn kv_writes_are_checked_at_apply_key_by_key() {
    let mut m = with_users();
    let rev = m.auth.revision();
    let alice = || as_user("alice", rev);
    m.apply(Request::Put(put("/app/a")), alice()).expect("own prefix");
    assert!(matches!(
        err_of(m.apply(Request::Put(put("/other")), alice())),
        Error::PermissionDenied
    ));
    assert!(matches!(
        err_of(m.apply(Request::Put(put("/shared")), alice())),
        Error::PermissionDenied
    ));
    assert!(matches!(
        err_of(m.apply(Request::Put(put("/app/a")), as_user("", 0))),
        Error::AuthUserEmpty
    ));
    assert!(matches!(
        err_of(m.apply(Request::Put(put("/app/a")), as_user("bob", rev))),
        Error::PermissionDenied
    ));
    m.apply(Request::Put(put("/other")), as_user("root", rev))
        .expect("root writes anything");
    m.apply(Request::Put(put("/other2")), None).expect("the cluster's own entry");
    // A delete of a range must be covered as a whole.
    let delete = |key: &str, end: &str| {
        Request::DeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
            prev_kv: false,
        })
    };
    m.apply(delete("/app/", "/app0"), alice()).expect("the whole prefix");
    assert!(matches!(err_of(m.apply(delete("/app/", "\0"), alice())), Error::PermissionDenied));
    // A txn is checked in both branches, its compares and nested txns too,
    // whichever branch runs.
    let txn = |compare_key: &str, success: Vec<RequestOp>, failure: Vec<RequestOp>| TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Version as i32,
            key: compare_key.as_bytes().to_vec(),
            range_end: Vec::new(),
            target_union: Some(TargetUnion::Version(0)),
        }],
        success,
        failure,
    };
    let op_put = |key: &str| RequestOp {
        request: Some(Op::RequestPut(put(key))),
    };
    let op_range = |key: &str| RequestOp {
        request: Some(Op::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    };
    let ok = txn("/shared", vec![op_put("/app/b"), op_range("/shared")], vec![]);
    m.apply(Request::Txn(ok), alice()).expect("allowed txn");
    let failure_branch = txn("/app/x", vec![op_put("/app/c")], vec![op_put("/secret")]);
    assert!(matches!(
        err_of(m.apply(Request::Txn(failure_branch), alice())),
        Error::PermissionDenied
    ));
    let compare = txn("/secret", vec![op_put("/app/c")], vec![]);
    assert!(matches!(err_of(m.apply(Request::Txn(compare), alice())), Error::PermissionDenied));
    let nested = txn(
        "/app/x",
        vec![RequestOp {
            request: Some(Op::RequestTxn(txn(
                "/app/y",
                vec![],
                vec![RequestOp {
                    request: Some(Op::RequestTxn(txn("/app/z", vec![op_range("/secret")], vec![]))),
                }],
            ))),
        }],
        vec![],
    );
    assert!(matches!(err_of(m.apply(Request::Txn(nested), alice())), Error::PermissionDenied));
    // prev_kv reads the old value: READ is needed too.
    let mut shared = put("/shared");
    m.ok(grant_perm("app", PermType::Write, "/w", ""));
    let rev = m.auth.revision();
    shared.key = b"/w".to_vec();
    shared.prev_kv = true;
    assert!(matches!(
        err_of(m.apply(Request::Put(shared.clone()), as_user("alice", rev))),
        Error::PermissionDenied
    ));
    shared.prev_kv = false;
    m.apply(Request::Put(shared), as_user("alice", rev)).expect("write-only key");
}

#[test]
fn a_caller_checked_at_an_older_auth_revision_is_refused() {
    let mut m = with_users();
    let old = m.auth.revision();
    m.ok(role_add("another"));
    let e = err_of(m.apply(Request::Put(put("/app/a")), as_user("alice", old)));
    assert!(matches!(e, Error::AuthOldRevision), "{e}");
    m.apply(Request::Put(put("/app/a")), as_user("alice", m.auth.revision()))
        .expect("current revision");
}

#[test]
fn leases_guard_the_keys_attached_to_them() {
    let mut m = with_users();
    let rev = m.auth.revision();
    m.apply(Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 5 }), None)
        .expect("grant");
    let mut root_put = put("/secret");
    root_put.lease = 5;
    m.apply(Request::Put(root_put), as_user("root", rev)).expect("root attaches");
    // alice may write /app/, but attaching the lease would let her revoke
    // root's key with it.
    let mut p = put("/app/a");
    p.lease = 5;
    assert!(matches!(
        err_of(m.apply(Request::Put(p), as_user("alice", rev))),
        Error::PermissionDenied
    ));
    let revoke = Request::LeaseRevoke(LeaseRevokeRequest { id: 5 });
    assert!(matches!(
        err_of(m.apply(revoke.clone(), as_user("alice", rev))),
        Error::PermissionDenied
    ));
    m.apply(revoke, None).expect("lease expiry by the cluster");
}

#[test]
fn compaction_needs_root() {
    let mut m = with_users();
    let rev = m.auth.revision();
    m.apply(Request::Put(put("/app/a")), as_user("alice", rev))
        .expect("put at revision 2");
    let compact = Request::Compaction(CompactionRequest {
        revision: 2,
        ..Default::default()
    });
    assert!(matches!(
        err_of(m.apply(compact.clone(), as_user("alice", rev))),
        Error::PermissionDenied
    ));
    m.apply(compact, as_user("root", rev)).expect("root compacts");
}

#[test]
fn authenticate_registers_the_simple_token_the_entry_carries() {
    let mut m = member();
    let hash = m.auth.hash_password("secret").expect("hash");
    m.ok(user_add("root", &hash));
    m.ok(grant_role("root", "root"));
    let authenticate = |token: &str, checked_revision: u64| {
        Request::Authenticate(AuthenticateEntry {
            name: "root".into(),
            simple_token: token.into(),
            checked_revision,
        })
    };
    assert!(matches!(m.auth.check_password("root", "secret"), Err(Error::AuthNotEnabled)));
    assert!(matches!(err_of(m.apply(authenticate("t.1", 1), None)), Error::AuthNotEnabled));
    m.ok(enable());
    let rev = m.auth.check_password("root", "secret").expect("right password");
    assert_eq!(rev, m.auth.revision());
    assert!(matches!(m.auth.check_password("root", "wrong"), Err(Error::AuthFailed)));
    assert!(matches!(m.auth.check_password("nobody", "secret"), Err(Error::AuthFailed)));
    // Checked at another revision: the proposer must check again.
    assert!(matches!(
        err_of(m.apply(authenticate("t.2", rev - 1), None)),
        Error::AuthOldRevision
    ));
    assert!(matches!(m.auth.authorize(Some("t.2"), None), Err(Error::InvalidAuthToken)));
    let applied = m.apply(authenticate("t.3", rev), None).expect("authenticate");
    assert!(matches!(applied, Applied::Auth(AuthApplied::Authenticate { ref user, revision }) if user == "root" && revision == rev));
    let info = m.auth.authorize(Some("t.3"), None).expect("valid token");
    assert_eq!(
        info,
        AuthInfo {
            user: "root".into(),
            revision: rev
        }
    );
    m.auth.check_admin(&info).expect("root");
    // A password change voids the user's tokens.
    let change = Request::AuthUserChangePassword(AuthPasswordChange {
        name: "root".into(),
        password_hash: m.auth.hash_password("new").expect("hash"),
    });
    m.ok(change);
    assert!(matches!(m.auth.authorize(Some("t.3"), None), Err(Error::InvalidAuthToken)));
    assert!(m.auth.check_password("root", "new").is_ok());
    // A no-password user cannot log in with any password.
    let mut nopass = user_add("svc", b"");
    if let Request::AuthUserAdd(u) = &mut nopass {
        u.options = Some(UserAddOptions { no_password: true });
    }
    m.ok(nopass);
    assert!(matches!(m.auth.check_password("svc", ""), Err(Error::AuthFailed)));
    let svc = Request::Authenticate(AuthenticateEntry {
        name: "svc".into(),
        simple_token: "t.4".into(),
        checked_revision: m.auth.revision(),
    });
    assert!(matches!(err_of(m.apply(svc, None)), Error::AuthFailed));
}

#[test]
fn identity_from_token_or_certificate_and_anonymous_while_disabled() {
    let mut m = member();
    let cert = crate::client_identity::ClientIdentity {
        remote_addr: None,
        certificate_common_name: Some("alice".into()),
    };
    // Disabled: everyone is anonymous and every check passes, even with a
    // token nobody knows.
    let info = m.auth.authorize(Some("junk"), Some(&cert)).expect("disabled");
    assert!(info.is_anonymous());
    m.auth.check_range(&info, b"k", b"", Perm::Write).expect("disabled");
    m.auth.check_admin(&info).expect("disabled");
    m.auth.check_authenticated(&info).expect("disabled");
    for r in [user_add("root", b""), grant_role("root", "root"), user_add("alice", b""), enable()] {
        m.ok(r);
    }
    let rev = m.auth.revision();
    let info = m.auth.authorize(None, Some(&cert)).expect("certificate");
    assert_eq!(
        info,
        AuthInfo {
            user: "alice".into(),
            revision: rev
        }
    );
    assert!(matches!(
        m.auth.check_range(&info, b"k", b"", Perm::Read),
        Err(Error::PermissionDenied)
    ));
    m.auth.check_authenticated(&info).expect("a user");
    assert!(matches!(m.auth.check_admin(&info), Err(Error::PermissionDenied)));
    // A token takes precedence over the certificate, and a bad one fails.
    assert!(matches!(m.auth.authorize(Some("junk"), Some(&cert)), Err(Error::InvalidAuthToken)));
    let nobody = m.auth.authorize(None, None).expect("anonymous");
    assert!(matches!(
        m.auth.check_range(&nobody, b"k", b"", Perm::Read),
        Err(Error::AuthUserEmpty)
    ));
    assert!(matches!(m.auth.check_authenticated(&nobody), Err(Error::AuthUserEmpty)));
}

#[test]
fn the_state_survives_a_restart() {
    let mut m = with_users();
    let before = m.auth.snapshot();
    let m = {
        m.ok(role_add("late"));
        m.reopen()
    };
    let after = m.auth.snapshot();
    assert!(after.enabled);
    assert_eq!(after.revision, before.revision + 1);
    assert_eq!(after.users, before.users);
    assert!(after.roles.contains_key("late") && after.roles.contains_key("app"));
}
