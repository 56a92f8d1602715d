//! `--cipher-suites`, `--tls-min-version` and `--tls-max-version`: etcd's
//! (Go's) names mapped to what rustls offers. Both listeners and the peer
//! dialer use the same choice, as in etcd.

use std::sync::Arc;

use rustls::crypto::ring::{self, cipher_suite};
use rustls::crypto::CryptoProvider;
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

use super::TlsError;

/// The crypto provider (with the chosen suites) and protocol versions.
#[derive(Clone, Debug)]
pub struct Protocol {
    pub provider: Arc<CryptoProvider>,
    pub versions: Vec<&'static SupportedProtocolVersion>,
}

/// Go's names of the TLS 1.2 suites rustls implements (Go has two names for
/// the ChaCha20 ones).
const TLS12_SUITES: &[(&str, SupportedCipherSuite)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// TLS 1.3 suites: Go does not let them be chosen, so naming them is
/// accepted and changes nothing.
const TLS13_SUITES: &[&str] = &["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"];

/// Suites Go knows (and etcd accepts) that rustls does not implement: CBC,
/// RC4, 3DES and static-RSA key exchange.
const UNSUPPORTED_SUITES: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Version {
    Tls12,
    Tls13,
}

fn parse_version(flag: &'static str, text: &str) -> Result<Option<Version>, TlsError> {
    match text {
        "" => Ok(None),
        "TLS1.2" => Ok(Some(Version::Tls12)),
        "TLS1.3" => Ok(Some(Version::Tls13)),
        "TLS1.0" | "TLS1.1" => Err(TlsError::UnsupportedVersion {
            flag,
            version: text.to_string(),
        }),
        _ => Err(TlsError::UnknownVersion {
            flag,
            version: text.to_string(),
        }),
    }
}

impl Protocol {
    pub fn from_flags(cipher_suites: &[String], min: &str, max: &str) -> Result<Protocol, TlsError> {
        let low = parse_version("--tls-min-version", min)?.unwrap_or(Version::Tls12);
        let high = parse_version("--tls-max-version", max)?.unwrap_or(Version::Tls13);
        if low > high {
            return Err(TlsError::VersionRange {
                min: min.to_string(),
                max: max.to_string(),
            });
        }
        let names: Vec<&str> = cipher_suites.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
        if !names.is_empty() && low == Version::Tls13 {
            return Err(TlsError::CipherSuitesWithTls13Only);
        }
        let mut tls12: Vec<SupportedCipherSuite> = Vec::new();
        for name in &names {
            if let Some((_, suite)) = TLS12_SUITES.iter().find(|(n, _)| n == name) {
                if !tls12.iter().any(|s| s.suite() == suite.suite()) {
                    tls12.push(*suite);
                }
            } else if UNSUPPORTED_SUITES.contains(name) {
                return Err(TlsError::UnsupportedCipherSuite(name.to_string()));
            } else if !TLS13_SUITES.contains(name) {
                return Err(TlsError::UnknownCipherSuite(name.to_string()));
            }
        }
        let defaults = ring::default_provider();
        let cipher_suites = if names.is_empty() {
            defaults.cipher_suites.clone()
        } else {
            let tls13 = defaults.cipher_suites.iter().filter(|s| s.tls13().is_some()).copied();
            tls13.chain(tls12).collect()
        };
        let mut versions = Vec::new();
        if high == Version::Tls13 {
            versions.push(&rustls::version::TLS13);
        }
        if low <= Version::Tls12 {
            versions.push(&rustls::version::TLS12);
        }
        Ok(Protocol {
            provider: Arc::new(CryptoProvider { cipher_suites, ..defaults }),
            versions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(p: &Protocol) -> Vec<rustls::ProtocolVersion> {
        p.versions.iter().map(|v| v.version).collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn go_names_choose_suites() {
        let p = Protocol::from_flags(&names(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]), "TLS1.2", "").unwrap();
        let tls12: Vec<_> = p.provider.cipher_suites.iter().filter(|s| s.tls13().is_none()).collect();
        assert_eq!(tls12.len(), 1);
        assert_eq!(tls12[0].suite(), rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256);
        assert_eq!(p.versions.len(), 2);
        let all = Protocol::from_flags(&[], "TLS1.2", "").unwrap();
        assert_eq!(all.provider.cipher_suites.len(), ring::default_provider().cipher_suites.len());
    }

    #[test]
    fn refusals_are_clear() {
        assert!(matches!(
            Protocol::from_flags(&names(&["TLS_NOPE"]), "TLS1.2", ""),
            Err(TlsError::UnknownCipherSuite(_))
        ));
        assert!(matches!(
            Protocol::from_flags(&names(&["TLS_RSA_WITH_AES_128_CBC_SHA"]), "TLS1.2", ""),
            Err(TlsError::UnsupportedCipherSuite(_))
        ));
        assert!(matches!(
            Protocol::from_flags(&[], "TLS1.0", ""),
            Err(TlsError::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            Protocol::from_flags(&[], "TLS9", ""),
            Err(TlsError::UnknownVersion { .. })
        ));
        assert!(matches!(
            Protocol::from_flags(&[], "TLS1.3", "TLS1.2"),
            Err(TlsError::VersionRange { .. })
        ));
        let only13 = Protocol::from_flags(&[], "TLS1.3", "").unwrap();
        assert_eq!(versions(&only13), vec![rustls::ProtocolVersion::TLSv1_3]);
        let only12 = Protocol::from_flags(&[], "", "TLS1.2").unwrap();
        assert_eq!(versions(&only12), vec![rustls::ProtocolVersion::TLSv1_2]);
    }
}
