//! TLS for the client and peer listeners and for dialing peers, with etcd's
//! flags and meanings: certificates from files or generated (auto-TLS),
//! client certificates required as soon as a trusted CA is named,
//! revocation lists, etcd's cipher-suite names and protocol bounds, and
//! certificates that reload when their files change on disk.

mod auto;
mod common_name;
mod dialer;
mod error;
mod files;
mod flags;
mod listener;
mod protocol;
mod reload;
mod server_config;
mod setup;
mod verify;

pub use dialer::{Dial, PeerConnector, PeerDialer};
pub use error::TlsError;
pub use flags::TlsFlags;
pub use listener::{accept, ClientConn};
pub use protocol::Protocol;
pub use reload::Reloading;
pub use setup::{ServerTls, Setup};
