//! Test certificates: a CA, certificates it signs (server, client, peer,
//! expired, revoked) and revocation lists, made with rcgen into a private
//! temporary directory; and the etcdctl flags that use them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tempfile::TempDir;

/// Serial numbers unique within the test process.
static SERIAL: AtomicU64 = AtomicU64::new(100);

/// The names every certificate is valid for: the harness serves on loopback.
pub const LOOPBACK_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// A certificate and key on disk.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: u64,
    /// The certificate's DER bytes (what a server presents).
    pub der: Vec<u8>,
}

/// How long a certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    Current,
    /// Expired in 2001.
    Expired,
}

/// A certificate authority with its files in a temporary directory.
pub struct Pki {
    dir: TempDir,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    ca_file: PathBuf,
}

impl Pki {
    /// A new CA named `name` (its CN).
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::Builder::new().prefix("cairn-test-pki-").tempdir().expect("tempdir");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        let ca_file = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, cert.pem()).expect("write CA");
        Pki {
            dir,
            name: name.to_string(),
            issuer: Issuer::new(params, key),
            ca_file,
        }
    }

    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A certificate for `cn`, valid for loopback, for servers and clients
    /// alike, written as `<stem>.pem` and `<stem>-key.pem`.
    pub fn issue(&self, stem: &str, cn: &str, validity: Validity) -> CertFiles {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = LOOPBACK_NAMES.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let serial = SERIAL.fetch_add(1, Ordering::SeqCst);
        params.serial_number = Some(SerialNumber::from(serial));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        match validity {
            Validity::Current => {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2100, 1, 1);
            }
            Validity::Expired => {
                params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            }
        }
        let cert = params.signed_by(&key, &self.issuer).expect("sign certificate");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{}-{stem}.pem", self.name)),
            key: self.dir.path().join(format!("{}-{stem}-key.pem", self.name)),
            serial,
            der: cert.der().to_vec(),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    /// A revocation list naming `revoked`, written as `<stem>.crl.pem`.
    pub fn crl(&self, stem: &str, revoked: &[&CertFiles]) -> PathBuf {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: SerialNumber::from(SERIAL.fetch_add(1, Ordering::SeqCst)),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|c| RevokedCertParams {
                    serial_number: SerialNumber::from(c.serial),
                    revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).expect("sign CRL");
        let path = self.dir.path().join(format!("{stem}.crl.pem"));
        std::fs::write(&path, crl.pem().expect("CRL PEM")).expect("write CRL");
        path
    }
}

/// etcdctl's flags for a client presenting `client` and trusting `ca`.
pub fn etcdctl_flags(ca: &Path, client: Option<&CertFiles>) -> Vec<String> {
    let mut flags = vec![format!("--cacert={}", ca.display())];
    if let Some(c) = client {
        flags.push(format!("--cert={}", c.cert.display()));
        flags.push(format!("--key={}", c.key.display()));
    }
    flags
}

/// The server flags for client TLS with `server`'s certificate, requiring
/// client certificates signed by `ca`.
pub fn client_tls_flags(ca: &Path, server: &CertFiles) -> Vec<String> {
    vec![
        format!("--cert-file={}", server.cert.display()),
        format!("--key-file={}", server.key.display()),
        format!("--trusted-ca-file={}", ca.display()),
        "--client-cert-auth".to_string(),
    ]
}

/// The server flags for mutual peer TLS with `peer`'s certificate.
pub fn peer_tls_flags(ca: &Path, peer: &CertFiles) -> Vec<String> {
    vec![
        format!("--peer-cert-file={}", peer.cert.display()),
        format!("--peer-key-file={}", peer.key.display()),
        format!("--peer-trusted-ca-file={}", ca.display()),
        "--peer-client-cert-auth".to_string(),
    ]
}

/// Connects to `addr` over TLS trusting `ca` (presenting `client` if
/// given), sends the HTTP/2 client preface and reads the first bytes of the
/// answer: a refused client certificate shows up there under TLS 1.3.
/// Returns the certificate the server presented, or why it failed.
pub fn probe(addr: SocketAddr, ca: &Path, client: Option<&CertFiles>) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
                .map_err(|e| e.to_string())?
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_file(&c.key).map_err(|e| e.to_string())?;
            builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .map_err(|e| format!("TLS: {e}"))?;
    // An empty SETTINGS frame, so the server answers with its own.
    tls.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).map_err(|e| format!("TLS: {e}"))?;
    let mut first = [0u8; 9];
    let n = tls.read(&mut first).map_err(|e| format!("TLS: {e}"))?;
    if n == 0 {
        return Err("connection closed without an answer".to_string());
    }
    let served = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no server certificate")?;
    Ok(served.to_vec())
}
