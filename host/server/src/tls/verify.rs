//! Certificate checks beyond rustls' own: the peer listener's
//! `--peer-cert-allowed-cn` / `--peer-cert-allowed-hostname`, and the
//! dialer's acceptance of any peer certificate under `--peer-auto-tls`
//! (self-signed certificates encrypt without authenticating, as etcd's
//! InsecureSkipVerify).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::common_name::common_name;

/// A client certificate verifier that, after the CA chain and revocation
/// checks, also requires the certificate to carry an allowed CN or to be
/// valid for an allowed host name (either suffices when both are set, as
/// in etcd).
#[derive(Debug)]
pub struct AllowedNames {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub cn: Option<String>,
    pub hostname: Option<String>,
}

impl AllowedNames {
    fn allowed(&self, end_entity: &CertificateDer<'_>) -> bool {
        let cn_ok = self
            .cn
            .as_ref()
            .is_some_and(|want| common_name(end_entity).as_deref() == Some(want.as_str()));
        let host_ok = self.hostname.as_ref().is_some_and(|host| {
            let Ok(name) = ServerName::try_from(host.as_str()) else {
                return false;
            };
            rustls::server::ParsedCertificate::try_from(end_entity)
                .is_ok_and(|parsed| rustls::client::verify_server_name(&parsed, &name).is_ok())
        });
        cn_ok || host_ok
    }
}

impl ClientCertVerifier for AllowedNames {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        if !self.allowed(end_entity) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any server certificate, still checking that the server holds
/// its key (the handshake signature).
#[derive(Debug)]
pub struct AnyServerCertificate {
    pub provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::WebPkiClientVerifier;

    /// A CA and a certificate it signed for `cn`, valid for `host`.
    fn signed(cn: &str, host: &str) -> (rustls::RootCertStore, CertificateDer<'static>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = params.signed_by(&key, &issuer).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        (roots, leaf.der().clone())
    }

    fn verifies(cn: Option<&str>, hostname: Option<&str>) -> bool {
        let (roots, leaf) = signed("member-1", "peer.example");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        let verifier = AllowedNames {
            inner,
            cn: cn.map(str::to_string),
            hostname: hostname.map(str::to_string),
        };
        verifier.verify_client_cert(&leaf, &[], UnixTime::now()).is_ok()
    }

    #[test]
    fn allowed_cn_or_hostname() {
        assert!(verifies(Some("member-1"), None));
        assert!(!verifies(Some("member-2"), None));
        assert!(verifies(None, Some("peer.example")));
        assert!(!verifies(None, Some("other.example")));
        assert!(verifies(Some("member-2"), Some("peer.example")), "either one suffices");
    }
}
