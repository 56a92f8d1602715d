//! One side's TLS settings (client or peer) turned into rustls
//! configurations: the listener's `ServerConfig` and, for peers, the
//! dialer's `ClientConfig`.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};

use super::files;
use super::verify::{AllowedNames, AnyServerCertificate};
use super::{Protocol, TlsError};

/// What a listener presents: its certificate chain and key.
#[derive(Clone, Debug)]
pub struct Identity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Everything one side's configurations are built from.
#[derive(Clone, Debug)]
pub struct SideConfig {
    pub identity: Option<Identity>,
    /// Made by auto-TLS: nothing is authenticated with it.
    pub self_signed: bool,
    pub trusted_ca_file: Option<PathBuf>,
    /// Client certificates are required (`--client-cert-auth`, or a trusted
    /// CA named, as in etcd).
    pub client_cert_auth: bool,
    pub crl_file: Option<PathBuf>,
    pub allowed_cn: Option<String>,
    pub allowed_hostname: Option<String>,
    pub protocol: Protocol,
}

/// HTTP/2 for gRPC; HTTP/1.1 for the HTTP endpoints beside it.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

impl SideConfig {
    /// The files the configurations are read from.
    pub fn files(&self) -> Vec<PathBuf> {
        let identity = self.identity.iter().flat_map(|i| [i.cert_file.clone(), i.key_file.clone()]);
        identity.chain(files::watched(&[&self.trusted_ca_file, &self.crl_file])).collect()
    }

    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
        let identity = self
            .identity
            .as_ref()
            .ok_or_else(|| TlsError::Incomplete("no certificate to serve TLS with".to_string()))?;
        let builder =
            ServerConfig::builder_with_provider(self.protocol.provider.clone()).with_protocol_versions(&self.protocol.versions)?;
        let builder = if self.client_cert_auth {
            let ca = self
                .trusted_ca_file
                .as_ref()
                .ok_or_else(|| TlsError::Incomplete("client certificate authentication needs a trusted CA file".to_string()))?;
            let roots = Arc::new(files::roots(ca)?);
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, self.protocol.provider.clone());
            if let Some(crl) = &self.crl_file {
                verifier = verifier
                    .with_crls(files::crls(crl)?)
                    .only_check_end_entity_revocation()
                    .allow_unknown_revocation_status();
            }
            let verifier = verifier.build()?;
            let verifier: Arc<dyn ClientCertVerifier> = if self.allowed_cn.is_some() || self.allowed_hostname.is_some() {
                Arc::new(AllowedNames {
                    inner: verifier,
                    cn: self.allowed_cn.clone(),
                    hostname: self.allowed_hostname.clone(),
                })
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let chain = files::certificates(&identity.cert_file)?;
        let key = files::private_key(&identity.key_file)?;
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// How this member dials its peers: verifying them against the trusted
    /// CA (or the system's CAs), presenting its own certificate, or under
    /// auto-TLS encrypting without verifying.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let builder =
            ClientConfig::builder_with_provider(self.protocol.provider.clone()).with_protocol_versions(&self.protocol.versions)?;
        let builder = if self.self_signed && self.trusted_ca_file.is_none() {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyServerCertificate {
                provider: self.protocol.provider.clone(),
            }))
        } else {
            let roots = match &self.trusted_ca_file {
                Some(ca) => files::roots(ca)?,
                None => files::system_roots(),
            };
            builder.with_root_certificates(roots)
        };
        let mut config = match &self.identity {
            Some(identity) => {
                builder.with_client_auth_cert(files::certificates(&identity.cert_file)?, files::private_key(&identity.key_file)?)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}
