//! What limits a socket that overflows: its receive buffer against the sysctls that bound it,
//! a listener's accept queue against somaxconn. The fixes name what this says, with its value,
//! so that nobody raises a sysctl that is not the limit.
//!
//! How the kernel sets the numbers compared here:
//! - `setsockopt(SO_RCVBUF, v)`: `sk_rcvbuf = max(2 × min(v, rmem_max), SOCK_MIN_RCVBUF)`
//!   (about 2304 bytes): `ss -m` shows `rb` = twice what was asked for.
//! - A UDP socket that never set it has `net.core.rmem_default`; a TCP socket starts at
//!   `tcp_rmem`'s default and autotuning grows it up to `tcp_rmem`'s max, unless SO_RCVBUF
//!   locked it.
//! - `listen(fd, backlog)`: the accept queue's limit is `min(backlog, somaxconn)`, taken when
//!   listen() is called.

use netprobe_common::vocab::ip_proto;

/// The sysctls that bound receive buffers and accept queues, as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferSysctls {
    pub rmem_default: Option<u64>,
    pub rmem_max: Option<u64>,
    /// min, default, max.
    pub tcp_rmem: Option<[u64; 3]>,
    pub somaxconn: Option<u64>,
}

/// What limits a socket's receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveLimit {
    /// The application set SO_RCVBUF to `so_rcvbuf` bytes (rcvbuf / 2; at the kernel's minimum
    /// rcvbuf it asked for that or less), below what rmem_max allows: rmem_max is not the limit.
    SoRcvbuf { so_rcvbuf: u64 },
    /// A UDP socket that never set SO_RCVBUF: it has `net.core.rmem_default`.
    RmemDefault { rmem_default: u64 },
    /// The application asked for rmem_max or more and got rmem_max: the sysctl is the limit.
    RmemMax { rmem_max: u64 },
    /// A TCP socket whose autotuning reached `tcp_rmem`'s max.
    TcpRmemMax { tcp_rmem_max: u64 },
    /// A TCP socket below `tcp_rmem`'s max: autotuning can still grow it (unless SO_RCVBUF
    /// locked it there), so the application reads too slowly.
    TcpReader { tcp_rmem_max: u64 },
}

impl ReceiveLimit {
    /// The socket's `rcvbuf` against the sysctls; `None` when the sysctls needed are unknown.
    pub fn of(protocol: u8, rcvbuf: u32, sysctls: &BufferSysctls) -> Option<Self> {
        let rcvbuf = u64::from(rcvbuf);
        let at_rmem_max = sysctls.rmem_max.filter(|max| rcvbuf == 2 * max);
        if protocol == ip_proto::TCP {
            let [_, default, max] = sysctls.tcp_rmem?;
            return Some(if rcvbuf >= max {
                ReceiveLimit::TcpRmemMax { tcp_rmem_max: max }
            } else if let Some(rmem_max) = at_rmem_max {
                ReceiveLimit::RmemMax { rmem_max }
            } else if rcvbuf < default {
                // Autotuning starts at the default and only grows: below it, SO_RCVBUF set it.
                ReceiveLimit::SoRcvbuf {
                    so_rcvbuf: rcvbuf / 2,
                }
            } else {
                ReceiveLimit::TcpReader { tcp_rmem_max: max }
            });
        }
        if let Some(rmem_max) = at_rmem_max {
            return Some(ReceiveLimit::RmemMax { rmem_max });
        }
        match sysctls.rmem_default {
            Some(rmem_default) if rcvbuf == rmem_default => {
                Some(ReceiveLimit::RmemDefault { rmem_default })
            }
            // Neither the default nor the cap: the application's own SO_RCVBUF (or
            // SO_RCVBUFFORCE above the cap).
            Some(_) => Some(ReceiveLimit::SoRcvbuf {
                so_rcvbuf: rcvbuf / 2,
            }),
            None if sysctls.rmem_max.is_some() => Some(ReceiveLimit::SoRcvbuf {
                so_rcvbuf: rcvbuf / 2,
            }),
            None => None,
        }
    }

    /// The name rows and findings use (`limited_by`).
    pub fn name(self) -> &'static str {
        match self {
            ReceiveLimit::SoRcvbuf { .. } => "so_rcvbuf",
            ReceiveLimit::RmemDefault { .. } => "rmem_default",
            ReceiveLimit::RmemMax { .. } => "rmem_max",
            ReceiveLimit::TcpRmemMax { .. } => "tcp_rmem",
            ReceiveLimit::TcpReader { .. } => "reader",
        }
    }

    /// The limit's value in bytes: what SO_RCVBUF asked for, or the sysctl's value.
    pub fn value(self) -> u64 {
        match self {
            ReceiveLimit::SoRcvbuf { so_rcvbuf } => so_rcvbuf,
            ReceiveLimit::RmemDefault { rmem_default } => rmem_default,
            ReceiveLimit::RmemMax { rmem_max } => rmem_max,
            ReceiveLimit::TcpRmemMax { tcp_rmem_max }
            | ReceiveLimit::TcpReader { tcp_rmem_max } => tcp_rmem_max,
        }
    }
}

/// What sets a listener's accept-queue limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenLimit {
    /// The application's listen() backlog, below somaxconn.
    ListenBacklog { backlog: u32, somaxconn: u64 },
    /// somaxconn capped the backlog (the application asked for as much or more); a limit
    /// above somaxconn was taken before somaxconn was lowered.
    Somaxconn { somaxconn: u64 },
}

impl ListenLimit {
    /// `limit` is the listener's accept-queue limit (sock_diag's `idiag_wqueue`).
    pub fn of(limit: u32, somaxconn: Option<u64>) -> Option<Self> {
        let somaxconn = somaxconn?;
        Some(if u64::from(limit) < somaxconn {
            ListenLimit::ListenBacklog {
                backlog: limit,
                somaxconn,
            }
        } else {
            ListenLimit::Somaxconn { somaxconn }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ListenLimit::ListenBacklog { .. } => "listen_backlog",
            ListenLimit::Somaxconn { .. } => "somaxconn",
        }
    }

    pub fn value(self) -> u64 {
        match self {
            ListenLimit::ListenBacklog { backlog, .. } => u64::from(backlog),
            ListenLimit::Somaxconn { somaxconn } => somaxconn,
        }
    }
}

/// The SO_RCVBUF to propose for a socket whose own setting (or the default) is the limit: four
/// times what it has (an application buffer costs memory only while data waits in it), at
/// least rmem_default, and no more than rmem_max allows (a larger request would be capped).
/// `None` when that is no more than it has: then rmem_max is the limit.
pub fn so_rcvbuf_proposal(current: u64, sysctls: &BufferSysctls) -> Option<u64> {
    let mut proposed = (current * 4).max(sysctls.rmem_default.unwrap_or(0));
    if let Some(max) = sysctls.rmem_max {
        proposed = proposed.min(max);
    }
    (proposed > current).then_some(proposed)
}

/// A listen() backlog to propose: twice the current, at least 128, at most somaxconn (what
/// the kernel would take of a larger one).
pub fn backlog_proposal(backlog: u32, somaxconn: u64) -> u64 {
    (u64::from(backlog) * 2).max(128).min(somaxconn)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UDP: u8 = ip_proto::UDP;
    const TCP: u8 = ip_proto::TCP;

    fn host() -> BufferSysctls {
        BufferSysctls {
            rmem_default: Some(212_992),
            rmem_max: Some(4 << 20),
            tcp_rmem: Some([4096, 131_072, 6_291_456]),
            somaxconn: Some(4096),
        }
    }

    /// The socket: SO_RCVBUF 1024 (the kernel's minimum, rb2304) with rmem_max 4 MiB.
    #[test]
    fn a_tiny_so_rcvbuf_is_the_applications_not_rmem_max() {
        let limit = ReceiveLimit::of(UDP, 2304, &host()).unwrap();
        assert_eq!(limit, ReceiveLimit::SoRcvbuf { so_rcvbuf: 1152 });
        assert_eq!((limit.name(), limit.value()), ("so_rcvbuf", 1152));
        assert_eq!(so_rcvbuf_proposal(1152, &host()), Some(212_992));
    }

    #[test]
    fn only_a_buffer_at_the_cap_is_rmem_maxs() {
        let at_cap = ReceiveLimit::of(UDP, 2 * (4 << 20), &host());
        assert_eq!(at_cap, Some(ReceiveLimit::RmemMax { rmem_max: 4 << 20 }));
        let default = ReceiveLimit::of(UDP, 212_992, &host());
        assert_eq!(
            default,
            Some(ReceiveLimit::RmemDefault {
                rmem_default: 212_992
            })
        );
        // Just below the cap: the application asked for less than rmem_max allows.
        assert_eq!(
            ReceiveLimit::of(UDP, 2 * (4 << 20) - 2, &host()),
            Some(ReceiveLimit::SoRcvbuf {
                so_rcvbuf: (4 << 20) - 1
            })
        );
        assert_eq!(so_rcvbuf_proposal((4 << 20) - 1, &host()), Some(4 << 20));
        assert_eq!(so_rcvbuf_proposal(4 << 20, &host()), None);
        assert_eq!(ReceiveLimit::of(UDP, 2304, &BufferSysctls::default()), None);
    }

    #[test]
    fn tcp_buffers_against_tcp_rmem() {
        let of = |rcvbuf| ReceiveLimit::of(TCP, rcvbuf, &host()).unwrap();
        assert_eq!(
            of(6_291_456),
            ReceiveLimit::TcpRmemMax {
                tcp_rmem_max: 6_291_456
            }
        );
        assert_eq!(of(4608), ReceiveLimit::SoRcvbuf { so_rcvbuf: 2304 });
        assert_eq!(
            of(1 << 20),
            ReceiveLimit::TcpReader {
                tcp_rmem_max: 6_291_456
            }
        );
    }

    #[test]
    fn listeners_name_backlog_or_somaxconn() {
        assert_eq!(
            ListenLimit::of(4, Some(4096)),
            Some(ListenLimit::ListenBacklog {
                backlog: 4,
                somaxconn: 4096
            })
        );
        assert_eq!(
            ListenLimit::of(4096, Some(4096)).map(ListenLimit::name),
            Some("somaxconn")
        );
        // somaxconn lowered since the listener took 8192.
        assert_eq!(
            ListenLimit::of(8192, Some(1024)),
            Some(ListenLimit::Somaxconn { somaxconn: 1024 })
        );
        assert_eq!(ListenLimit::of(4, None), None);
        assert_eq!(backlog_proposal(4, 4096), 128);
        assert_eq!(backlog_proposal(1000, 1024), 1024);
    }
}
