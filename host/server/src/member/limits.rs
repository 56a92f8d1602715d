//! Request size limits from the server flags, refused at start-up when a
//! proposal within them could not be replicated: every Raft entry travels
//! to the followers inside one peer message, and an entry larger than a
//! peer will accept would be resent forever, wedging replication.

use crate::config::ServerConfig;
use crate::peer::MAX_PEER_MESSAGE_BYTES;

/// Room for the binding's other fields around a plugin component's bytes.
const BINDING_OVERHEAD_BYTES: usize = 2 << 20;
/// What a proposal gains on its way into a peer message: the Raft entry
/// and message around it, and the batch carrying that message.
const ENTRY_OVERHEAD_BYTES: usize = 64 << 10;

/// The request limits this member enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// Largest plugin component accepted for install.
    pub max_plugin_bytes: usize,
}

impl Limits {
    /// The limits the flags ask for, or why they cannot work.
    pub fn from_config(cfg: &ServerConfig) -> anyhow::Result<Limits> {
        let limits = Limits {
            max_request_bytes: cfg.max_request_bytes,
            max_txn_ops: cfg.max_txn_ops,
            max_plugin_bytes: cfg.max_plugin_bytes,
        };
        limits.check()?;
        Ok(limits)
    }

    /// The largest encoded proposal that installs a plugin.
    pub fn max_plugin_proposal_bytes(&self) -> usize {
        self.max_plugin_bytes.saturating_add(BINDING_OVERHEAD_BYTES)
    }

    fn check(&self) -> anyhow::Result<()> {
        let fits = |proposal: usize| proposal.saturating_add(ENTRY_OVERHEAD_BYTES) <= MAX_PEER_MESSAGE_BYTES;
        if !fits(self.max_request_bytes) {
            anyhow::bail!(
                "--max-request-bytes={} is too large: a request must fit in a peer message of {} bytes with {} bytes \
                 of Raft framing, so at most {} bytes",
                self.max_request_bytes,
                MAX_PEER_MESSAGE_BYTES,
                ENTRY_OVERHEAD_BYTES,
                MAX_PEER_MESSAGE_BYTES - ENTRY_OVERHEAD_BYTES
            );
        }
        if !fits(self.max_plugin_proposal_bytes()) {
            anyhow::bail!(
                "--max-plugin-bytes={} is too large: an install must fit in a peer message of {} bytes with {} bytes \
                 of binding and Raft framing, so at most {} bytes",
                self.max_plugin_bytes,
                MAX_PEER_MESSAGE_BYTES,
                BINDING_OVERHEAD_BYTES + ENTRY_OVERHEAD_BYTES,
                MAX_PEER_MESSAGE_BYTES - BINDING_OVERHEAD_BYTES - ENTRY_OVERHEAD_BYTES
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn limits(args: &[&str]) -> anyhow::Result<Limits> {
        let cfg = ServerConfig::try_parse_from(std::iter::once("cairn").chain(args.iter().copied()))?;
        Limits::from_config(&cfg)
    }

    #[test]
    fn the_defaults_fit() {
        let l = limits(&[]).unwrap();
        assert_eq!(l.max_request_bytes, 1_572_864);
        assert_eq!(l.max_plugin_bytes, crate::plugin::registry::DEFAULT_MAX_PLUGIN_BYTES);
    }

    #[test]
    fn the_largest_limits_that_fit_are_accepted() {
        let request = MAX_PEER_MESSAGE_BYTES - ENTRY_OVERHEAD_BYTES;
        let plugin = MAX_PEER_MESSAGE_BYTES - BINDING_OVERHEAD_BYTES - ENTRY_OVERHEAD_BYTES;
        let l = limits(&[&format!("--max-request-bytes={request}"), &format!("--max-plugin-bytes={plugin}")]).unwrap();
        assert_eq!((l.max_request_bytes, l.max_plugin_bytes), (request, plugin));
    }

    #[test]
    fn a_request_limit_past_the_peer_message_cap_is_refused() {
        let request = MAX_PEER_MESSAGE_BYTES - ENTRY_OVERHEAD_BYTES + 1;
        let e = limits(&[&format!("--max-request-bytes={request}")]).unwrap_err().to_string();
        assert!(e.contains("--max-request-bytes"), "{e}");
    }

    #[test]
    fn a_plugin_limit_past_the_peer_message_cap_is_refused() {
        // 15 MiB: below the peer cap itself, but not with the binding around it.
        let e = limits(&["--max-plugin-bytes=15728640"]).unwrap_err().to_string();
        assert!(e.contains("--max-plugin-bytes"), "{e}");
        let e = limits(&[&format!("--max-plugin-bytes={}", usize::MAX)]).unwrap_err().to_string();
        assert!(e.contains("--max-plugin-bytes"), "{e}");
    }
}
