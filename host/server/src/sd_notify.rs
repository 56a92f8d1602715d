//! systemd's readiness protocol: with `Type=notify`, systemd passes a
//! datagram socket in `$NOTIFY_SOCKET` and waits for `READY=1` before it
//! counts the service as started (and starts the units ordered after it).
//! A path starting with `@` names a socket in the abstract namespace.
//! Without the variable (not run by systemd) nothing is sent.

use std::os::unix::net::UnixDatagram;

/// The member serves clients: it has a leader and has published itself to
/// the cluster, which is when etcd tells systemd too.
pub const READY: &str = "READY=1";
/// Shutdown has begun.
pub const STOPPING: &str = "STOPPING=1";

/// Sends `state` to systemd when it asked for notifications. A failure is
/// only logged: systemd then applies its start timeout, which is the right
/// outcome for a service that cannot report readiness.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&target, state) {
        tracing::warn!(socket = ?target, error = %e, state, "telling systemd the service state failed");
    }
}

fn send(target: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    let bytes = target.as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::linux::net::SocketAddrExt;
    use std::time::Duration;

    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        socket.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        send(path.as_os_str(), READY).expect("send to a path");
        assert_eq!(received(&listener), "READY=1");

        let name = format!("cairn-sd-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        send(std::ffi::OsStr::new(&format!("@{name}")), STOPPING).expect("send to an abstract name");
        assert_eq!(received(&listener), "STOPPING=1");

        assert!(send(dir.path().join("absent").as_os_str(), READY).is_err());
    }
}
