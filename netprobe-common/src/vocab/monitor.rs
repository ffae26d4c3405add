//! `netprobe monitor`'s vocabulary: the per-layer drop columns of its CSV log and JSON, with
//! the console's labels, and the severity of an interval (the words of the script it replaces).

/// One per-layer drop column of `netprobe monitor`'s CSV log (and of its JSON `drops`
/// object), in the CSV's order; docs/monitor.md says which kernel counter feeds each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropColumn {
    NicRx,
    NicTx,
    NicMissed,
    Qdisc,
    Softirq,
    SynQueue,
    AcceptQueue,
    TcpPruned,
    TcpCollapsed,
    UdpRcvbuf,
    UdpSndbuf,
}

impl DropColumn {
    /// Every column, in the CSV's order.
    pub const ALL: [DropColumn; 11] = [
        DropColumn::NicRx,
        DropColumn::NicTx,
        DropColumn::NicMissed,
        DropColumn::Qdisc,
        DropColumn::Softirq,
        DropColumn::SynQueue,
        DropColumn::AcceptQueue,
        DropColumn::TcpPruned,
        DropColumn::TcpCollapsed,
        DropColumn::UdpRcvbuf,
        DropColumn::UdpSndbuf,
    ];

    /// The CSV header's name (also the JSON key).
    pub const fn name(self) -> &'static str {
        match self {
            DropColumn::NicRx => "nic_rx",
            DropColumn::NicTx => "nic_tx",
            DropColumn::NicMissed => "nic_missed",
            DropColumn::Qdisc => "qdisc",
            DropColumn::Softirq => "softirq",
            DropColumn::SynQueue => "syn_queue",
            DropColumn::AcceptQueue => "accept_queue",
            DropColumn::TcpPruned => "tcp_pruned",
            DropColumn::TcpCollapsed => "tcp_collapsed",
            DropColumn::UdpRcvbuf => "udp_rcvbuf",
            DropColumn::UdpSndbuf => "udp_sndbuf",
        }
    }

    /// The console's sub-line label, as the script printed it.
    pub const fn label(self) -> &'static str {
        match self {
            DropColumn::NicRx => "NIC RX Dropped",
            DropColumn::NicTx => "NIC TX Dropped",
            DropColumn::NicMissed => "NIC Missed",
            DropColumn::Qdisc => "Qdisc Dropped",
            DropColumn::Softirq => "Softirq Dropped",
            DropColumn::SynQueue => "SYN Queue Dropped",
            DropColumn::AcceptQueue => "Accept Queue Overflow",
            DropColumn::TcpPruned => "TCP Pruned",
            DropColumn::TcpCollapsed => "TCP Collapsed",
            DropColumn::UdpRcvbuf => "UDP Rcvbuf Errors",
            DropColumn::UdpSndbuf => "UDP Sndbuf Errors",
        }
    }

    /// Whether the column counts lost packets. TCPRcvCollapsed counts segments merged to save
    /// memory, every byte kept: a sign of receive-memory pressure shown beside the drops, but
    /// adding it to `total_drops` would call intact data lost.
    pub const fn is_loss(self) -> bool {
        !matches!(self, DropColumn::TcpCollapsed)
    }

    /// The columns read from the monitored interface; the others are the namespace's (SNMP)
    /// or the host's (softnet_stat).
    pub const fn is_interface(self) -> bool {
        matches!(
            self,
            DropColumn::NicRx | DropColumn::NicTx | DropColumn::NicMissed | DropColumn::Qdisc
        )
    }

    /// Position in [`Self::ALL`] (the CSV's order).
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// `netprobe monitor`'s verdict on one interval, from its total drops (the script's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalSeverity {
    Ok,
    Warn,
    Crit,
}

impl IntervalSeverity {
    /// `OK` with no drop, `CRIT` from `threshold` drops on, `WARN` in between.
    pub const fn of(total: u64, threshold: u64) -> Self {
        if total == 0 {
            IntervalSeverity::Ok
        } else if total >= threshold {
            IntervalSeverity::Crit
        } else {
            IntervalSeverity::Warn
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            IntervalSeverity::Ok => "OK",
            IntervalSeverity::Warn => "WARN",
            IntervalSeverity::Crit => "CRIT",
        }
    }
}
