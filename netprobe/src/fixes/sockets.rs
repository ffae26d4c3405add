//! Fixes for sockets that overflow: each names what limits the socket, with its value, and
//! turns only that. An application's own SO_RCVBUF or listen() backlog is fixed in the
//! application; a sysctl is raised only when it is the limit.

use super::{settings, tcp_rcvbuf_pruned, Fix, LiveValues};
use crate::model::socket_limits::{
    backlog_proposal, so_rcvbuf_proposal, ListenLimit, ReceiveLimit,
};

/// Handshakes dropped at full listen queues: the listener that refused the most, when the
/// socket dump named one; otherwise the general advice.
pub(super) fn listen_overflow(live: &LiveValues) -> Fix {
    if let Some(listener) = &live.overflowing_listener {
        return accept_queue_full(&listener.who, listener.limit, live);
    }
    let setting = settings::somaxconn(live);
    Fix {
        command: format!(
            "make the application accept faster; raise its listen() backlog and sysctl -w {}",
            setting.assignment()
        ),
        settings: vec![setting],
    }
}

/// One listener's accept queue full: its listen() backlog when that is below somaxconn (no
/// sysctl then), else somaxconn and the backlog together.
pub(super) fn accept_queue_full(owner: &str, limit: u32, live: &LiveValues) -> Fix {
    if let Some(ListenLimit::ListenBacklog { backlog, somaxconn }) =
        ListenLimit::of(limit, live.somaxconn)
    {
        return Fix::advice(format!(
            "{owner} must accept() faster, or pass a larger backlog to listen() (e.g. {}): its listen() backlog {backlog} is the limit, not net.core.somaxconn ({somaxconn})",
            backlog_proposal(backlog, somaxconn)
        ));
    }
    let setting = settings::somaxconn(live);
    Fix {
        command: format!(
            "{owner} must accept() faster; raise its listen() backlog (limit {limit}) and sysctl -w {}",
            setting.assignment()
        ),
        settings: vec![setting],
    }
}

/// Drops at a full socket receive buffer: the socket that dropped the most, by what limits
/// it; without one, rmem_max and the application's SO_RCVBUF together.
pub(super) fn socket_rcvbuf_full(live: &LiveValues) -> Fix {
    let Some(socket) = &live.overflowing_socket else {
        return rmem_max_fix("the application", live);
    };
    let who = &socket.who;
    let rcvbuf = socket.rcvbuf;
    let sysctls = live.buffer_sysctls();
    let rmem_max = sysctls
        .rmem_max
        .map_or("unknown".to_string(), |m| m.to_string());
    match socket.limit {
        ReceiveLimit::SoRcvbuf { so_rcvbuf } => match so_rcvbuf_proposal(so_rcvbuf, &sysctls) {
            Some(proposed) => Fix::advice(format!(
                "{who} sets SO_RCVBUF {so_rcvbuf} (rcvbuf {rcvbuf}, {} drops in the window): have it set SO_RCVBUF {proposed} (net.core.rmem_max {rmem_max} allows it; it is not the limit), or read faster",
                socket.drops
            )),
            None => rmem_max_fix(who, live),
        },
        ReceiveLimit::RmemDefault { rmem_default } => {
            match so_rcvbuf_proposal(rmem_default, &sysctls) {
                Some(proposed) => Fix::advice(format!(
                    "{who} never sets SO_RCVBUF: it has net.core.rmem_default ({rmem_default}), {} drops in the window; have it set SO_RCVBUF {proposed} (net.core.rmem_max {rmem_max} allows it), or read faster",
                    socket.drops
                )),
                None => rmem_max_fix(who, live),
            }
        }
        ReceiveLimit::RmemMax { .. } => rmem_max_fix(who, live),
        ReceiveLimit::TcpRmemMax { tcp_rmem_max } => {
            let mut fix = tcp_rcvbuf_pruned(live);
            fix.command = format!(
                "{} ({who}: rcvbuf {rcvbuf} is at tcp_rmem's max {tcp_rmem_max}), or read faster",
                fix.command
            );
            fix
        }
        ReceiveLimit::TcpReader { tcp_rmem_max } => Fix::advice(format!(
            "{who} reads too slowly: its receive buffer ({rcvbuf}) is below tcp_rmem's max ({tcp_rmem_max}), which autotuning reaches unless SO_RCVBUF locks it; read faster (and do not set SO_RCVBUF)"
        )),
    }
}

/// The socket asked for rmem_max or more: the cap is the limit.
fn rmem_max_fix(who: &str, live: &LiveValues) -> Fix {
    let setting = settings::rmem_max(live);
    Fix {
        command: format!(
            "sysctl -w {} and have {who} set SO_RCVBUF (or read faster)",
            setting.assignment()
        ),
        settings: vec![setting],
    }
}
