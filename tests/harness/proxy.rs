//! A small fault-injecting TCP proxy for peer links. Each member advertises
//! its proxy's address as its peer URL, so everything sent to that member
//! goes through the proxy; cutting the proxy isolates the member from all
//! inbound peer traffic (and so from every reply to what it sends).
//! Blocking a process on the proxies of the other members cuts its outbound
//! traffic too, for a partition in both directions: on loopback every
//! connection comes from 127.0.0.1, so the proxy finds the process holding
//! the other end of a connection through /proc.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct PeerProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Live connections: the client's end as accepted, and the one to the target.
    conns: Arc<Mutex<Vec<(TcpStream, TcpStream)>>>,
    /// Processes whose connections are refused.
    blocked: Arc<Mutex<HashSet<u32>>>,
    refused_blocked: Arc<AtomicUsize>,
}

impl PeerProxy {
    /// Forwards connections on `127.0.0.1:listen_port` to `target`.
    pub fn start(listen_port: u16, target: SocketAddr) -> PeerProxy {
        let listener = TcpListener::bind(("127.0.0.1", listen_port)).expect("bind proxy port");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().unwrap();
        let proxy = PeerProxy {
            addr,
            cut: Arc::default(),
            stop: Arc::default(),
            conns: Arc::default(),
            blocked: Arc::default(),
            refused_blocked: Arc::default(),
        };
        let (cut, stop, conns) = (proxy.cut.clone(), proxy.stop.clone(), proxy.conns.clone());
        let (blocked, refused_blocked) = (proxy.blocked.clone(), proxy.refused_blocked.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                {
                    let blocked = blocked.lock().unwrap();
                    if !blocked.is_empty() && owner_among(&client, &blocked).is_some() {
                        refused_blocked.fetch_add(1, Ordering::SeqCst);
                        drop(client);
                        continue;
                    }
                }
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut list = conns.lock().unwrap();
                    list.retain(|(c, _)| c.peer_addr().is_ok());
                    list.push((client.try_clone().unwrap(), server.try_clone().unwrap()));
                }
                pump(client.try_clone().unwrap(), server.try_clone().unwrap(), cut.clone());
                pump(server, client, cut.clone());
            }
        });
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every connection and refuses new ones until [`PeerProxy::heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for (c, s) in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Drops the connections process `pid` made through this proxy and
    /// refuses its new ones until [`PeerProxy::unblock`].
    pub fn block(&self, pid: u32) {
        let mut blocked = self.blocked.lock().unwrap();
        blocked.insert(pid);
        let only = HashSet::from([pid]);
        self.conns.lock().unwrap().retain(|(c, s)| {
            if owner_among(c, &only).is_some() {
                let _ = c.shutdown(Shutdown::Both);
                let _ = s.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }

    pub fn unblock(&self, pid: u32) {
        self.blocked.lock().unwrap().remove(&pid);
    }

    /// How many connections from blocked processes were refused.
    pub fn refused_blocked(&self) -> usize {
        self.refused_blocked.load(Ordering::SeqCst)
    }
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

/// The process, among `pids`, that holds the other end of `accepted`.
fn owner_among(accepted: &TcpStream, pids: &HashSet<u32>) -> Option<u32> {
    let (Ok(remote), Ok(local)) = (accepted.peer_addr(), accepted.local_addr()) else {
        return None;
    };
    // The client's socket has the accepted socket's addresses swapped.
    let inode = socket_inode(remote, local)?;
    let link = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == link.as_str()))
        })
    })
}

/// The inode of the IPv4 TCP socket with these local and remote addresses.
fn socket_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let (want_local, want_remote) = (proc_addr(local)?, proc_addr(remote)?);
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() > 9 && fields[1] == want_local && fields[2] == want_remote)
            .then(|| fields[9].parse().ok())
            .flatten()
    })
}

/// An address as /proc/net/tcp prints it: the IPv4 address as the kernel's
/// in-memory (network order) word in hex, then the port.
fn proc_addr(addr: SocketAddr) -> Option<String> {
    match addr {
        SocketAddr::V4(v4) => Some(format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.ip().octets()), v4.port())),
        SocketAddr::V6(_) => None,
    }
}

/// Copies bytes one way until either side closes or the link is cut.
fn pump(mut from: TcpStream, mut to: TcpStream, cut: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if cut.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}
