//! Why a TLS configuration cannot be built. All of these are found at
//! start-up or when certificate files change; none comes from a request.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: no certificate found (expected PEM)", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: no private key found (expected a PEM PKCS#8, PKCS#1 or SEC1 key)", .0.display())]
    NoPrivateKey(PathBuf),
    #[error("{}: not a certificate revocation list in PEM or DER: {why}", path.display())]
    BadCrl { path: PathBuf, why: String },
    #[error("{}: {why}", path.display())]
    BadPem { path: PathBuf, why: String },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("generating a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    #[error("unknown cipher suite {0:?} (expected Go's names, such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)")]
    UnknownCipherSuite(String),
    #[error("cipher suite {0} is not supported: only ECDHE suites with AES-GCM or ChaCha20-Poly1305 are")]
    UnsupportedCipherSuite(String),
    #[error("--cipher-suites cannot be used when TLS 1.3 is the only version allowed (TLS 1.3 suites are fixed)")]
    CipherSuitesWithTls13Only,
    #[error("{flag} {version}: TLS 1.0 and 1.1 are not supported; use TLS1.2 or TLS1.3")]
    UnsupportedVersion { flag: &'static str, version: String },
    #[error("{flag} {version:?}: unknown TLS version (expected TLS1.2 or TLS1.3)")]
    UnknownVersion { flag: &'static str, version: String },
    #[error("--tls-min-version {min} is above --tls-max-version {max}")]
    VersionRange { min: String, max: String },
    #[error("{0}")]
    Incomplete(String),
}
