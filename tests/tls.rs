//! TLS for clients and peers: etcdctl and the etcd-client crate over
//! https with client certificates (against cairn and real etcd), the
//! certificates a member refuses, auto-TLS, certificate rotation, and
//! clusters whose members talk mutual TLS or auto-TLS.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use harness::cluster::CONVERGE_TIMEOUT;
use harness::tls::{client_tls_flags, etcdctl_flags, peer_tls_flags, probe, CertFiles, Pki, Validity};
use harness::{etcdctl, Cluster, Differential, Kind, Output, Server};

/// How long a rotated certificate may take to be served.
const ROTATION_TIMEOUT: Duration = Duration::from_secs(30);

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `etcdctl` with TLS flags against `endpoint`.
fn ctl(endpoint: &str, flags: &[String], args: &[&str]) -> Output {
    let mut all = strs(flags);
    all.extend_from_slice(args);
    etcdctl(endpoint, &all)
}

/// A server listening for clients on https (the harness gives it an
/// `https://` client URL) with `server_flags`.
fn start_https(kind: Kind, server_flags: &[String], etcdctl: Vec<String>) -> Server {
    Server::start_tls(kind, &strs(server_flags), Some(etcdctl))
}

/// A CA, a cairn serving clients over TLS with a certificate it signed and
/// requiring client certificates, and a client certificate ("alice").
fn mutual_tls_server() -> (Pki, CertFiles, Server) {
    let pki = Pki::new("ca");
    let server = pki.issue("server", "server", Validity::Current);
    let client = pki.issue("client", "alice", Validity::Current);
    let srv = start_https(
        Kind::Cairn,
        &client_tls_flags(pki.ca_file(), &server),
        etcdctl_flags(pki.ca_file(), Some(&client)),
    );
    (pki, client, srv)
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn etcdctl_with_client_certificate_matches_etcd() {
    let pki = Pki::new("ca");
    let server = pki.issue("server", "server", Validity::Current);
    let client = pki.issue("client", "alice", Validity::Current);
    let flags = etcdctl_flags(pki.ca_file(), Some(&client));
    let args = client_tls_flags(pki.ca_file(), &server);
    let mut d = Differential::start_tls(&strs(&args), Some(flags.clone()));
    assert!(d.target.endpoint().starts_with("https://"));
    let with = |args: &[&str]| {
        let mut all = strs(&flags);
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    for (step, args) in [
        ("put", with(&["put", "greeting", "hello"])),
        ("get", with(&["get", "greeting"])),
        ("put again", with(&["put", "greeting", "hi", "--prev-kv"])),
        ("get prefix", with(&["get", "g", "--prefix", "-w", "json"])),
        ("del", with(&["del", "greeting"])),
    ] {
        d.ctl(step, &strs(&args));
    }
    let (_, got) = d.ctl("get after del", &strs(&with(&["get", "greeting", "--print-value-only"])));
    assert_eq!(got.stdout, "");
}

/// Clients a member with `--client-cert-auth` and a CRL must refuse, each
/// checked with a TLS client (which must see the handshake fail) and with
/// etcdctl, followed by a good client that must still be served.
fn refusals(kind: Kind) {
    let pki = Pki::new("ca");
    let other = Pki::new("other");
    let server = pki.issue("server", "server", Validity::Current);
    let good = pki.issue("good", "alice", Validity::Current);
    let expired = pki.issue("expired", "old", Validity::Expired);
    let revoked = pki.issue("revoked", "mallory", Validity::Current);
    let foreign = other.issue("foreign", "alice", Validity::Current);
    let crl = pki.crl("revoked", &[&revoked]);
    let mut server_flags = client_tls_flags(pki.ca_file(), &server);
    server_flags.push(format!("--client-crl-file={}", crl.display()));
    let good_flags = etcdctl_flags(pki.ca_file(), Some(&good));
    let srv = start_https(kind, &server_flags, good_flags.clone());
    let ep = srv.endpoint();
    ctl(&ep, &good_flags, &["put", "k", "v0"]).assert_ok();
    let cases: [(&str, Option<&CertFiles>); 4] = [
        ("no client certificate", None),
        ("a certificate from another CA", Some(&foreign)),
        ("an expired certificate", Some(&expired)),
        ("a revoked certificate", Some(&revoked)),
    ];
    for (i, (case, cert)) in cases.iter().enumerate() {
        let refused = probe(srv.client_addr(), pki.ca_file(), *cert);
        let why = refused.expect_err(&format!("{kind:?} accepted {case}"));
        // etcd checks revocation after the handshake and closes the
        // connection; everything else fails in the handshake.
        let tls_refusal = why.starts_with("TLS") || why.contains("connection closed");
        assert!(tls_refusal, "{kind:?}, {case}: not refused by TLS: {why}");
        let out = ctl(
            &ep,
            &etcdctl_flags(pki.ca_file(), *cert),
            &["get", "k", "--dial-timeout=2s", "--command-timeout=3s"],
        );
        assert_ne!(out.status, Some(0), "{kind:?} served etcdctl with {case}: {out:?}");
        let value = format!("v{}", i + 1);
        ctl(&ep, &good_flags, &["put", "k", &value]).assert_ok();
        let got = ctl(&ep, &good_flags, &["get", "k", "--print-value-only"]);
        assert_eq!(got.assert_ok().stdout.trim(), value, "{kind:?} after {case}");
        assert!(
            probe(srv.client_addr(), pki.ca_file(), Some(&good)).is_ok(),
            "{kind:?} after {case}"
        );
    }
}

#[test]
fn refused_client_certificates() {
    refusals(Kind::Cairn);
}

/// The refusals are real: etcd refuses the same clients.
#[test]
fn refused_client_certificates_on_etcd() {
    refusals(Kind::Etcd);
}

/// An etcd-client session over TLS trusting `ca`, presenting `client` if
/// given: a put and a get of one key.
async fn etcd_client_session(endpoint: String, ca: String, client: Option<(String, String)>) -> Result<String, etcd_client::Error> {
    let mut tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
    }
    let opts = etcd_client::ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(10));
    let mut c = etcd_client::Client::connect([endpoint.as_str()], Some(opts)).await?;
    c.put("crate", "over-tls", None).await?;
    let got = c.get("crate", None).await?;
    Ok(got
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
        .unwrap_or_default())
}

#[test]
fn etcd_client_crate_with_client_certificate() {
    let (pki, client, srv) = mutual_tls_server();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("read PEM");
    let identity = Some((read(&client.cert), read(&client.key)));
    let rt = harness::runtime();
    let got = rt.block_on(etcd_client_session(srv.endpoint(), read(pki.ca_file()), identity));
    assert_eq!(got.expect("put and get over TLS"), "over-tls");
    // Without a client certificate the same client is refused.
    let refused = rt.block_on(etcd_client_session(srv.endpoint(), read(pki.ca_file()), None));
    assert!(refused.is_err(), "served a client without a certificate: {refused:?}");
}

#[test]
fn auto_tls_encrypts_with_a_private_self_signed_certificate() {
    let skip_verify = vec!["--insecure-transport=false".to_string(), "--insecure-skip-tls-verify".to_string()];
    let srv = start_https(Kind::Cairn, &["--auto-tls".to_string()], skip_verify.clone());
    let ep = srv.endpoint();
    ctl(&ep, &skip_verify, &["put", "auto", "tls"]).assert_ok();
    let got = ctl(&ep, &skip_verify, &["get", "auto", "--print-value-only"]);
    assert_eq!(got.assert_ok().stdout.trim(), "tls");
    let fixtures = srv.data_dir().join("fixtures").join("client");
    assert_eq!(mode(&fixtures), 0o700);
    assert_eq!(mode(&fixtures.join("key.pem")), 0o600);
    assert_eq!(mode(&fixtures.join("cert.pem")), 0o600);
    // Plain http to the TLS port fails, and so does verifying the
    // self-signed certificate against no CA.
    let plain = etcdctl(
        &format!("http://{}", srv.client_addr()),
        &["get", "auto", "--dial-timeout=2s", "--command-timeout=3s"],
    );
    assert_ne!(plain.status, Some(0), "served plain http on the TLS port: {plain:?}");
}

/// Writes `files`' certificate and key over the ones at `cert`/`key`, each
/// replaced at once (a rename), the key first.
fn install(files: &CertFiles, cert: &std::path::Path, key: &std::path::Path) {
    for (from, to) in [(&files.key, key), (&files.cert, cert)] {
        let staged = to.with_extension("staged");
        std::fs::copy(from, &staged).expect("stage");
        std::fs::rename(&staged, to).expect("install");
    }
}

#[test]
fn certificates_rotate_without_restart() {
    let pki = Pki::new("ca");
    let first = pki.issue("server-1", "server-one", Validity::Current);
    let second = pki.issue("server-2", "server-two", Validity::Current);
    let client = pki.issue("client", "alice", Validity::Current);
    let cert = pki.dir().join("served.pem");
    let key = pki.dir().join("served-key.pem");
    install(&first, &cert, &key);
    let served_files = CertFiles {
        cert: cert.clone(),
        key: key.clone(),
        serial: first.serial,
        der: first.der.clone(),
    };
    let flags = etcdctl_flags(pki.ca_file(), Some(&client));
    let srv = start_https(Kind::Cairn, &client_tls_flags(pki.ca_file(), &served_files), flags.clone());
    let served = || probe(srv.client_addr(), pki.ca_file(), Some(&client)).expect("TLS connection");
    assert_eq!(served(), first.der);

    // Rotated: new connections get the new certificate.
    install(&second, &cert, &key);
    let start = Instant::now();
    while served() != second.der {
        assert!(
            start.elapsed() < ROTATION_TIMEOUT,
            "the rotated certificate is not served\n{}",
            srv.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ctl(&srv.endpoint(), &flags, &["put", "after", "rotation"]).assert_ok();

    // A broken replacement keeps the certificate in use.
    std::fs::write(&cert, b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").expect("break");
    let start = Instant::now();
    while !srv.log_tail(200).contains("cannot reload TLS certificates") {
        assert!(
            start.elapsed() < ROTATION_TIMEOUT,
            "the broken file was not noticed\n{}",
            srv.log_tail(30)
        );
        served();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(served(), second.der);
    let got = ctl(&srv.endpoint(), &flags, &["get", "after", "--print-value-only"]);
    assert_eq!(got.assert_ok().stdout.trim(), "rotation");
}

/// Writes on member 0 and reads the value back on every member.
fn writes_reach_every_member(cluster: &mut Cluster, key: &str) {
    let value = format!("{key}-value");
    etcdctl(&cluster.members[0].endpoint(), &["put", key, &value]).assert_ok();
    for m in &cluster.members {
        let got = etcdctl(&m.endpoint(), &["get", key, "--print-value-only"]);
        assert_eq!(got.assert_ok().stdout.trim(), value, "on {}", m.name);
    }
}

#[test]
fn cluster_with_mutual_peer_tls() {
    let pki = Pki::new("ca");
    let peer = pki.issue("peer", "peer", Validity::Current);
    let mut cluster = Cluster::start_peer_tls(Kind::Cairn, 3, &strs(&peer_tls_flags(pki.ca_file(), &peer)));
    assert!(cluster.members[0].peer_url().starts_with("https://"));
    writes_reach_every_member(&mut cluster, "peer-tls");
    cluster.assert_converged();
    // The peer listener speaks TLS and wants a certificate from the CA.
    let listener = cluster.members[1].listen_peer_addr();
    assert!(probe(listener, pki.ca_file(), Some(&peer)).is_ok());
    let refused = probe(listener, pki.ca_file(), None);
    assert!(refused.is_err(), "peer listener served a client without a certificate");
}

#[test]
fn cluster_with_peer_auto_tls() {
    let mut cluster = Cluster::start_peer_tls(Kind::Cairn, 3, &["--peer-auto-tls"]);
    writes_reach_every_member(&mut cluster, "peer-auto-tls");
    for m in &cluster.members {
        let fixtures = m.data_dir().join("fixtures").join("peer");
        assert_eq!(mode(&fixtures), 0o700, "{}", m.name);
        assert_eq!(mode(&fixtures.join("key.pem")), 0o600, "{}", m.name);
    }
}

#[test]
fn untrusted_peer_certificate_cannot_join() {
    let pki = Pki::new("ca");
    let other = Pki::new("other");
    let peer = pki.issue("peer", "peer", Validity::Current);
    let intruder = other.issue("peer", "peer", Validity::Current);
    let mut cluster = Cluster::start_peer_tls(Kind::Cairn, 3, &strs(&peer_tls_flags(pki.ca_file(), &peer)));
    writes_reach_every_member(&mut cluster, "before");
    let i = cluster.add_member_started(0, false, &peer_tls_flags(other.ca_file(), &intruder));
    // It cannot fetch the member list from peers that refuse its
    // certificate, so it gives up starting.
    let start = Instant::now();
    while cluster.members[i].is_running() {
        assert!(
            start.elapsed() < CONVERGE_TIMEOUT,
            "the untrusted member keeps running\n{}",
            cluster.log_tails()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        cluster.members[i].log_contains("cannot fetch the cluster's members"),
        "{}",
        cluster.members[i].log_tail(20)
    );
    let intruder_member = cluster.members.pop().expect("the added member");
    drop(intruder_member);
    writes_reach_every_member(&mut cluster, "after");
}

/// Where scripts/install-deps.sh installs Python's etcd3 client.
const PYTHON_ETCD3_DIR: &str = "/opt/cairn-test-python";

#[test]
fn python_etcd3_with_client_certificate() {
    assert!(
        std::path::Path::new(PYTHON_ETCD3_DIR).join("etcd3").is_dir(),
        "Python etcd3 is not installed in {PYTHON_ETCD3_DIR}: run scripts/install-deps.sh"
    );
    let (pki, client, srv) = mutual_tls_server();
    let script = r#"
import sys, etcd3
port, ca, cert, key = sys.argv[1:5]
c = etcd3.client(host="127.0.0.1", port=int(port), ca_cert=ca, cert_cert=cert, cert_key=key, timeout=10)
c.put("python", "over-tls")
value, meta = c.get("python")
print(value.decode(), meta.key.decode())
"#;
    let port = srv.client_addr().port().to_string();
    let out = std::process::Command::new("python3")
        .env("PYTHONPATH", PYTHON_ETCD3_DIR)
        .args(["-c", script, &port])
        .arg(pki.ca_file())
        .arg(&client.cert)
        .arg(&client.key)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python etcd3 failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "over-tls python");
    let got = ctl(
        &srv.endpoint(),
        &etcdctl_flags(pki.ca_file(), Some(&client)),
        &["get", "python", "--print-value-only"],
    );
    assert_eq!(got.assert_ok().stdout.trim(), "over-tls");
}
