//! Auth smoke test with the real etcdctl: users, a role with a prefix
//! permission, auth enable, allowed and denied requests with `--user`, and
//! auth disabled again. The same script runs against real etcd, so the
//! expected outputs and error lines are etcd's own.

use harness::{etcdctl, Kind, Output, Server};

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
