//! What the client listener knows about a connection that serving its
//! requests may need: where it comes from and, over TLS with a verified
//! client certificate, the certificate's common name (the user name when
//! auth is on and no token is given, as in etcd).
//!
//! The listener makes it each connection's `ConnectInfo`, so tonic puts it
//! in every request's extensions; the HTTP gateway copies it into the
//! requests it hands to the same services.

use std::net::SocketAddr;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    pub remote_addr: Option<SocketAddr>,
    /// The common name of the client's verified certificate, if it sent one.
    pub certificate_common_name: Option<String>,
}

impl ClientIdentity {
    /// The identity of the connection a request came in on, if the listener
    /// recorded one.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&ClientIdentity> {
        request.extensions().get::<ClientIdentity>()
    }
}
