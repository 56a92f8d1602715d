//! The binding's config blob as JSON.
//!
//! The host hands the config to every call byte for byte; parsing it is up to
//! the plugin. A malformed config is a plugin error, which the plugin should
//! turn into a `Verdict::Deny` so that the binding's owner sees it at once.

use serde::de::DeserializeOwned;

/// Parses the config as JSON into `T`. The error is a one-line message meant
/// for a deny reason.
pub fn json<T: DeserializeOwned>(config: &[u8]) -> Result<T, String> {
    serde_json::from_slice(config).map_err(|e| format!("invalid plugin config: {e}"))
}

/// Like [`json`], but an empty (or all-whitespace) config means `T::default()`.
pub fn json_or_default<T: DeserializeOwned + Default>(config: &[u8]) -> Result<T, String> {
    if config.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        json(config)
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    struct Cfg {
        limit: u32,
    }

    #[test]
    fn parses_and_defaults() {
        assert_eq!(super::json::<Cfg>(br#"{"limit": 3}"#), Ok(Cfg { limit: 3 }));
        assert_eq!(super::json_or_default::<Cfg>(b"  "), Ok(Cfg::default()));
        let err = super::json::<Cfg>(b"{").unwrap_err();
        assert!(err.starts_with("invalid plugin config:"), "{err}");
    }
}
