//! TLS and auth together, as Kubernetes-style deployments run them: the
//! client certificate's common name is the user when no token is given, a
//! token takes precedence, and a certificate naming no user gets nothing.
//! Every step runs against real etcd 3.4 and cairn and must answer alike.

use harness::tls::{client_tls_flags, etcdctl_flags, CertFiles, Pki, Validity};
use harness::Differential;

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// etcdctl arguments presenting `cert`, then `args`.
fn as_cert(pki: &Pki, cert: &CertFiles, args: &[&str]) -> Vec<String> {
    let mut all = etcdctl_flags(pki.ca_file(), Some(cert));
    all.extend(args.iter().map(|s| s.to_string()));
    all
}

#[test]
fn certificate_common_name_is_the_user_and_a_token_takes_precedence() {
    let pki = Pki::new("ca");
    let server = pki.issue("server", "server", Validity::Current);
    let root = pki.issue("root", "root", Validity::Current);
    let alice = pki.issue("alice", "alice", Validity::Current);
    let mallory = pki.issue("mallory", "mallory", Validity::Current);
    let mut d = Differential::start_tls(
        &strs(&client_tls_flags(pki.ca_file(), &server)),
        Some(etcdctl_flags(pki.ca_file(), Some(&root))),
    );
    let step = |d: &mut Differential, name: &str, cert: &CertFiles, args: &[&str]| {
        let args = as_cert(&pki, cert, args);
        d.ctl(name, &strs(&args))
    };
    for (name, args) in [
        ("root user", &["user", "add", "root:root-pw"][..]),
        ("root role", &["user", "grant-role", "root", "root"]),
        ("reader role", &["role", "add", "reader"]),
        (
            "reader may read /app/",
            &["role", "grant-permission", "reader", "read", "/app/", "--prefix"],
        ),
        ("alice", &["user", "add", "alice:alice-pw"]),
        ("alice reads", &["user", "grant-role", "alice", "reader"]),
        ("a key to read", &["put", "/app/config", "v1"]),
        ("a key elsewhere", &["put", "/secret", "s"]),
        ("enable", &["auth", "enable"]),
    ] {
        step(&mut d, name, &root, args);
    }
    // alice's certificate alone makes her alice.
    let (_, got) = step(
        &mut d,
        "alice reads by her certificate",
        &alice,
        &["get", "/app/config", "--print-value-only"],
    );
    assert_eq!(got.stdout.trim(), "v1");
    let (_, denied) = step(&mut d, "alice may not write", &alice, &["put", "/app/config", "v2"]);
    assert!(denied.stderr.contains("permission denied"), "{denied:?}");
    step(&mut d, "alice may not read elsewhere", &alice, &["get", "/secret"]);
    step(&mut d, "alice may not list users", &alice, &["user", "list"]);
    // A token (here root's) wins over the certificate's name.
    step(
        &mut d,
        "token over certificate",
        &alice,
        &["--user", "root:root-pw", "put", "/app/config", "v3"],
    );
    step(
        &mut d,
        "wrong password with a good certificate",
        &alice,
        &["--user", "root:nope", "get", "/app/config"],
    );
    // A certificate naming nobody the store knows.
    step(&mut d, "unknown user's certificate", &mallory, &["get", "/app/config"]);
    // root's certificate is root.
    let (_, got) = step(&mut d, "root reads all", &root, &["get", "/secret", "--print-value-only"]);
    assert_eq!(got.stdout.trim(), "s");
    step(&mut d, "disable", &root, &["auth", "disable"]);
    step(&mut d, "anyone again", &mallory, &["get", "/app/config", "--print-value-only"]);
}
