//! Connection attempts from a namespace: `n` clients at once, each giving up after `timeout`
//! (its socket closed then: SYN_SENT → CLOSE), for the handshake tests.

use std::{
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::Netns;

/// `n` connects to `to` from `ns`, in parallel; each one's outcome (connected or not). The
/// connected streams are returned open: their sockets stay ESTABLISHED.
pub fn connect_attempts(
    ns: &Netns,
    to: SocketAddr,
    n: usize,
    timeout: Duration,
) -> Vec<Option<TcpStream>> {
    let clients: Vec<_> = (0..n)
        .map(|_| ns.spawn(move || TcpStream::connect_timeout(&to, timeout).ok()))
        .collect();
    clients.into_iter().map(|c| c.join().unwrap()).collect()
}

/// The findings bundle's flows (`flows`) from `local`'s namespace to `port`.
pub fn bundle_flows_to(bundle: &serde_json::Value, port: u16) -> Vec<serde_json::Value> {
    let suffix = format!(":{port}");
    bundle["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["remote"].as_str().is_some_and(|r| r.ends_with(&suffix)))
        .cloned()
        .collect()
}
