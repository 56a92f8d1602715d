//! Auth smoke test with the real etcdctl: users, a role with a prefix
//! permission, auth enable, allowed and denied requests with `--user`, and
//! auth disabled again. The same script runs against real etcd, so the
//! expected outputs and error lines are etcd's own.

use cairn_proto::etcdserverpb::{auth_client::AuthClient, kv_client::KvClient, AuthenticateRequest, PutRequest, RangeRequest};
use harness::{etcdctl, Cluster, Kind, Output, Server};
use tonic::transport::Channel;

#[track_caller]
fn out(o: &Output) -> &str {
    o.assert_ok();
    &o.stdout
}

fn script(kind: Kind) {
    let srv = Server::start(kind);
    let ep = srv.endpoint();
    let ctl = |args: &[&str]| etcdctl(&ep, args);
    let root = |args: &[&str]| etcdctl(&ep, &[&["--user", "root:rootpw"], args].concat());
    let alice = |args: &[&str]| etcdctl(&ep, &[&["--user", "alice:alicepw"], args].concat());

    assert_eq!(
        out(&ctl(&["user", "add", "root", "--new-user-password=rootpw"])),
        "User root created\n"
    );
    assert_eq!(out(&ctl(&["role", "add", "root"])), "Role root created\n");
    assert_eq!(
        out(&ctl(&["user", "grant-role", "root", "root"])),
        "Role root is granted to user root\n"
    );
    assert_eq!(out(&ctl(&["role", "add", "app"])), "Role app created\n");
    assert_eq!(
        out(&ctl(&["role", "grant-permission", "app", "--prefix=true", "readwrite", "/app/"])),
        "Role app updated\n"
    );
    assert_eq!(
        out(&ctl(&["user", "add", "alice", "--new-user-password=alicepw"])),
        "User alice created\n"
    );
    assert_eq!(
        out(&ctl(&["user", "grant-role", "alice", "app"])),
        "Role app is granted to user alice\n"
    );
    assert_eq!(out(&ctl(&["put", "/other", "before"])), "OK\n");

    assert_eq!(out(&ctl(&["auth", "enable"])), "Authentication Enabled\n");

    // Within the role's prefix.
    assert_eq!(out(&alice(&["put", "/app/x", "1"])), "OK\n");
    assert_eq!(out(&alice(&["get", "/app/x"])), "/app/x\n1\n");
    assert_eq!(out(&alice(&["get", "/app/", "--prefix", "--keys-only"])), "/app/x\n\n");
    // Outside it, or without a user, or with a wrong password.
    alice(&["put", "/other", "2"]).fails_with(1, "etcdserver: permission denied");
    alice(&["get", "/other"]).fails_with(1, "etcdserver: permission denied");
    alice(&["get", "/app/", "--from-key"]).fails_with(1, "etcdserver: permission denied");
    alice(&["del", "/app/x", "--prev-kv"]).assert_ok();
    ctl(&["get", "/app/x"]).fails_with(1, "etcdserver: user name is empty");
    ctl(&["put", "/app/x", "3"]).fails_with(1, "etcdserver: user name is empty");
    // etcdctl logs in as it connects: a failure there is its exit code 2.
    etcdctl(&ep, &["--user", "alice:wrong", "get", "/app/x"])
        .fails_with(2, "etcdserver: authentication failed, invalid user ID or password");
    // Managing auth takes the root role.
    alice(&["user", "add", "bob", "--new-user-password=bobpw"]).fails_with(1, "etcdserver: permission denied");
    alice(&["role", "list"]).fails_with(1, "etcdserver: permission denied");
    assert_eq!(out(&root(&["user", "list"])), "alice\nroot\n");
    assert_eq!(out(&root(&["get", "/other"])), "/other\nbefore\n");
    root(&["user", "delete", "root"]).fails_with(1, "etcdserver: invalid auth management");
    root(&["user", "get", "carol"]).fails_with(1, "etcdserver: user name not found");
    root(&["role", "revoke-permission", "app", "/nothing"]).fails_with(1, "etcdserver: permission is not granted to the role");
    // A user sees its own record.
    assert_eq!(out(&alice(&["user", "get", "alice"])), "User: alice\nRoles: app\n");

    assert_eq!(out(&root(&["auth", "disable"])), "Authentication Disabled\n");
    assert_eq!(out(&ctl(&["put", "/other", "after"])), "OK\n");
    assert_eq!(out(&ctl(&["get", "/other", "--print-value-only"])), "after\n");
    ctl(&["auth", "disable"]).assert_ok();
}

#[test]
fn auth_with_etcdctl_on_cairn() {
    script(Kind::Cairn);
}

/// The expectations above are etcd's behaviour.
#[test]
fn auth_with_etcdctl_on_etcd() {
    script(Kind::Etcd);
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("token", token.parse().expect("ascii token"));
    request
}

fn put(key: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    }
}

/// A token issued by one member works on the others, and the auth state
/// is the same everywhere.
#[test]
fn tokens_and_permissions_hold_on_every_member() {
    let c = Cluster::start(3);
    let eps = c.endpoints();
    let ctl = |args: &[&str]| etcdctl(&eps[0], args);
    for args in [
        &["user", "add", "root", "--new-user-password=rootpw"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "app"],
        &["role", "grant-permission", "app", "--prefix=true", "readwrite", "/app/"],
        &["user", "add", "alice", "--new-user-password=alicepw"],
        &["user", "grant-role", "alice", "app"],
        &["auth", "enable"],
    ] {
        ctl(args).assert_ok();
    }
    harness::runtime().block_on(async {
        let channel = |ep: &str| Channel::from_shared(ep.to_string()).expect("endpoint").connect_lazy();
        let token = AuthClient::new(channel(&eps[0]))
            .authenticate(AuthenticateRequest {
                name: "alice".into(),
                password: "alicepw".into(),
            })
            .await
            .expect("authenticate")
            .into_inner()
            .token;
        let mut kv1 = KvClient::new(channel(&eps[1]));
        kv1.put(with_token(put("/app/one"), &token))
            .await
            .expect("put through another member");
        let mut kv2 = KvClient::new(channel(&eps[2]));
        let got = kv2
            .range(with_token(
                RangeRequest {
                    key: b"/app/one".to_vec(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("range through a third member")
            .into_inner();
        assert_eq!(got.kvs.len(), 1);
        let denied = kv2.put(with_token(put("/other"), &token)).await.expect_err("outside the role");
        assert_eq!(
            (denied.code(), denied.message()),
            (tonic::Code::PermissionDenied, "etcdserver: permission denied")
        );
        let forged = kv1.put(with_token(put("/app/two"), "forged.1")).await.expect_err("unknown token");
        assert_eq!(
            (forged.code(), forged.message()),
            (tonic::Code::Unauthenticated, "etcdserver: invalid auth token")
        );
        let anonymous = kv1.put(tonic::Request::new(put("/app/two"))).await.expect_err("no user");
        assert_eq!(
            (anonymous.code(), anonymous.message()),
            (tonic::Code::InvalidArgument, "etcdserver: user name is empty")
        );
    });
    for ep in &eps {
        let users = etcdctl(ep, &["--user", "root:rootpw", "user", "list"]);
        assert_eq!(users.assert_ok().stdout, "alice\nroot\n", "through {ep}");
    }
}
