//! The TLS a member runs with, assembled from its flags at start-up: the
//! client and peer listeners' configurations (for `https://` listen URLs)
//! and the dialer for its peers.

use std::path::Path;
use std::sync::Arc;

use super::flags::SideFlags;
use super::server_config::{Identity, SideConfig};
use super::{auto, PeerDialer, Protocol, Reloading, TlsError};
use crate::config::ServerConfig;

/// A listener's TLS configuration, current as of the last change on disk.
pub type ServerTls = Arc<Reloading<rustls::ServerConfig>>;

pub struct Setup {
    /// For `https://` client and metrics listen URLs (etcd serves https
    /// metrics with the client TLS flags).
    pub client: Option<ServerTls>,
    /// For `https://` peer listen URLs.
    pub peer: Option<ServerTls>,
    pub dialer: PeerDialer,
}

fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// The hosts of some URLs, for the names of a self-signed certificate.
fn hosts(urls: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = urls
        .iter()
        .filter_map(|u| url::Url::parse(u).ok())
        .filter_map(|u| {
            Some(match u.host()? {
                url::Host::Domain(d) => d.to_string(),
                url::Host::Ipv4(ip) => ip.to_string(),
                url::Host::Ipv6(ip) => ip.to_string(),
            })
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

fn side_config(
    flags: SideFlags,
    listen_urls: &[String],
    data_dir: &Path,
    validity_years: u32,
    protocol: &Protocol,
) -> Result<SideConfig, TlsError> {
    let (identity, self_signed) = match (&flags.cert_file, &flags.key_file) {
        (Some(cert_file), Some(key_file)) => {
            if flags.auto_tls {
                tracing::warn!(side = flags.side, "ignoring auto-TLS since certificate files were given");
            }
            let identity = Identity {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            };
            (Some(identity), false)
        }
        (None, None) if flags.auto_tls => {
            let dir = data_dir.join("fixtures").join(flags.side);
            (Some(auto::self_signed(&dir, &hosts(listen_urls), validity_years)?), true)
        }
        (None, None) => (None, false),
        _ => return Err(TlsError::Incomplete(format!("{} must be given together", flags.cert_flags))),
    };
    Ok(SideConfig {
        identity,
        self_signed,
        client_cert_auth: flags.client_cert_auth || flags.trusted_ca_file.is_some(),
        trusted_ca_file: flags.trusted_ca_file,
        crl_file: flags.crl_file,
        allowed_cn: flags.allowed_cn,
        allowed_hostname: flags.allowed_hostname,
        protocol: protocol.clone(),
    })
}

/// The listener configuration for `urls`, if any of them is `https://`.
fn listener(side: &'static str, cert_flags: &str, config: &SideConfig, urls: &[String]) -> Result<Option<ServerTls>, TlsError> {
    let Some(url) = urls.iter().find(|u| is_https(u)) else {
        return Ok(None);
    };
    if config.identity.is_none() {
        return Err(TlsError::Incomplete(format!(
            "TLS key/cert ({cert_flags}) must be provided for {side} url {url} with HTTPS scheme"
        )));
    }
    let build = config.clone();
    let reloading = Reloading::new(side, config.files(), move || build.server_config())?;
    Ok(Some(Arc::new(reloading)))
}

impl Setup {
    pub fn from_config(cfg: &ServerConfig) -> Result<Setup, TlsError> {
        let flags = &cfg.tls;
        let protocol = Protocol::from_flags(&flags.cipher_suites, &flags.tls_min_version, &flags.tls_max_version)?;
        let data_dir = cfg.data_dir();
        let validity = flags.self_signed_cert_validity;
        let client_flags = flags.client();
        let client_cert_flags = client_flags.cert_flags;
        let client_urls: Vec<String> = cfg.listen_client_urls.iter().chain(&cfg.listen_metrics_urls).cloned().collect();
        let client = side_config(client_flags, &client_urls, &data_dir, validity, &protocol)?;
        let peer_flags = flags.peer();
        let peer_cert_flags = peer_flags.cert_flags;
        let peer = side_config(peer_flags, &cfg.listen_peer_urls, &data_dir, validity, &protocol)?;
        Ok(Setup {
            client: listener("client", client_cert_flags, &client, &client_urls)?,
            peer: listener("peer", peer_cert_flags, &peer, &cfg.listen_peer_urls)?,
            dialer: PeerDialer::new(&peer, &protocol)?,
        })
    }
}
