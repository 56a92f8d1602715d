//! Reading certificates, keys, CA bundles and revocation lists from disk.

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::TlsError;

/// Where Debian keeps the system's trusted CAs, used to verify peers when
/// no `--peer-trusted-ca-file` is named (as Go uses the system pool).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn bad_pem(path: &Path, e: rustls_pki_types::pem::Error) -> TlsError {
    TlsError::BadPem {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

/// The certificate chain in a PEM file, leaf first.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(path, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(chain)
}

pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey(path.to_path_buf()),
        e => bad_pem(path, e),
    })
}

/// The CAs in a PEM bundle.
pub fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path)? {
        store.add(cert).map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            why: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(store)
}

/// The system's CAs, or none when the bundle is missing.
pub fn system_roots() -> RootCertStore {
    let mut store = RootCertStore::empty();
    if let Ok(bytes) = std::fs::read(SYSTEM_CA_BUNDLE) {
        let certs = CertificateDer::pem_slice_iter(&bytes).filter_map(Result::ok);
        store.add_parsable_certificates(certs);
    }
    store
}

/// The revocation lists in a file, PEM or DER (as Go's parser accepts both).
pub fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let pem: Result<Vec<_>, _> = CertificateRevocationListDer::pem_slice_iter(&bytes).collect();
    match pem {
        Ok(list) if !list.is_empty() => Ok(list),
        Ok(_) if bytes.first() == Some(&0x30) => Ok(vec![CertificateRevocationListDer::from(bytes)]),
        Ok(_) => Err(TlsError::BadCrl {
            path: path.to_path_buf(),
            why: "no CRL found".to_string(),
        }),
        Err(e) => Err(TlsError::BadCrl {
            path: path.to_path_buf(),
            why: e.to_string(),
        }),
    }
}

/// The files a configuration is built from, to notice when they change.
pub fn watched(paths: &[&Option<PathBuf>]) -> Vec<PathBuf> {
    paths.iter().filter_map(|p| (*p).clone()).collect()
}
