//! The monitor's drop columns, in the CSV's order, and the severity of an interval.
//! docs/monitor.md says which kernel counter feeds each column.

use std::fmt;

/// One per-layer drop column of the CSV log (and of the JSON `drops` object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Column {
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

impl Column {
    /// Every column, in the CSV's order.
    pub const ALL: [Column; 11] = [
        Column::NicRx,
        Column::NicTx,
        Column::NicMissed,
        Column::Qdisc,
        Column::Softirq,
        Column::SynQueue,
        Column::AcceptQueue,
        Column::TcpPruned,
        Column::TcpCollapsed,
        Column::UdpRcvbuf,
        Column::UdpSndbuf,
    ];

    /// The CSV header's name (also the JSON key).
    pub const fn name(self) -> &'static str {
        match self {
            Column::NicRx => "nic_rx",
            Column::NicTx => "nic_tx",
            Column::NicMissed => "nic_missed",
            Column::Qdisc => "qdisc",
            Column::Softirq => "softirq",
            Column::SynQueue => "syn_queue",
            Column::AcceptQueue => "accept_queue",
            Column::TcpPruned => "tcp_pruned",
            Column::TcpCollapsed => "tcp_collapsed",
            Column::UdpRcvbuf => "udp_rcvbuf",
            Column::UdpSndbuf => "udp_sndbuf",
        }
    }

    /// The console's sub-line label, as the script printed it.
    pub const fn label(self) -> &'static str {
        match self {
            Column::NicRx => "NIC RX Dropped",
            Column::NicTx => "NIC TX Dropped",
            Column::NicMissed => "NIC Missed",
            Column::Qdisc => "Qdisc Dropped",
            Column::Softirq => "Softirq Dropped",
            Column::SynQueue => "SYN Queue Dropped",
            Column::AcceptQueue => "Accept Queue Overflow",
            Column::TcpPruned => "TCP Pruned",
            Column::TcpCollapsed => "TCP Collapsed",
            Column::UdpRcvbuf => "UDP Rcvbuf Errors",
            Column::UdpSndbuf => "UDP Sndbuf Errors",
        }
    }

    /// Whether the column counts lost packets. TCPRcvCollapsed counts segments merged to save
    /// memory, every byte kept: a sign of receive-memory pressure shown beside the drops, but
    /// adding it to `total_drops` would call intact data lost.
    pub const fn is_loss(self) -> bool {
        !matches!(self, Column::TcpCollapsed)
    }

    /// The columns read from the monitored interface; the others are the namespace's (SNMP)
    /// or the host's (softnet_stat).
    pub const fn is_interface(self) -> bool {
        matches!(
            self,
            Column::NicRx | Column::NicTx | Column::NicMissed | Column::Qdisc
        )
    }

    fn index(self) -> usize {
        Column::ALL
            .iter()
            .position(|c| *c == self)
            .expect("every column is in ALL")
    }
}

/// One value per column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops([u64; 11]);

impl Drops {
    pub fn get(&self, column: Column) -> u64 {
        self.0[column.index()]
    }

    pub fn add(&mut self, column: Column, value: u64) {
        let slot = &mut self.0[column.index()];
        *slot = slot.saturating_add(value);
    }

    /// The interval's drops: every loss column (not `tcp_collapsed`).
    pub fn total(&self) -> u64 {
        Column::ALL
            .iter()
            .filter(|c| c.is_loss())
            .map(|c| self.get(*c))
            .fold(0, u64::saturating_add)
    }

    /// The non-zero columns in the CSV's order.
    pub fn non_zero(&self) -> impl Iterator<Item = (Column, u64)> + '_ {
        Column::ALL
            .iter()
            .map(|c| (*c, self.get(*c)))
            .filter(|(_, v)| *v > 0)
    }
}

/// An interval's verdict from its total drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Ok,
    Warn,
    Crit,
}

impl Severity {
    /// `OK` with no drop, `CRIT` from `threshold` drops on, `WARN` in between.
    pub fn of(total: u64, threshold: u64) -> Self {
        if total == 0 {
            Severity::Ok
        } else if total >= threshold {
            Severity::Crit
        } else {
            Severity::Warn
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Severity::Ok => "OK",
            Severity::Warn => "WARN",
            Severity::Crit => "CRIT",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_bounds() {
        assert_eq!(Severity::of(0, 100), Severity::Ok);
        assert_eq!(Severity::of(1, 100), Severity::Warn);
        assert_eq!(Severity::of(99, 100), Severity::Warn);
        assert_eq!(Severity::of(100, 100), Severity::Crit);
        assert_eq!(Severity::of(5000, 100), Severity::Crit);
        // A threshold of 1: every drop is critical, none is a warning.
        assert_eq!(Severity::of(1, 1), Severity::Crit);
    }

    #[test]
    fn total_leaves_collapsed_segments_out() {
        let mut d = Drops::default();
        d.add(Column::Softirq, 45);
        d.add(Column::TcpCollapsed, 1000);
        d.add(Column::UdpRcvbuf, 5);
        assert_eq!(d.total(), 50);
        let shown: Vec<_> = d.non_zero().collect();
        assert_eq!(
            shown,
            vec![
                (Column::Softirq, 45),
                (Column::TcpCollapsed, 1000),
                (Column::UdpRcvbuf, 5)
            ]
        );
    }

    #[test]
    fn names_are_the_csv_header_in_order() {
        let names: Vec<_> = Column::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(
            names.join(","),
            "nic_rx,nic_tx,nic_missed,qdisc,softirq,syn_queue,accept_queue,tcp_pruned,tcp_collapsed,udp_rcvbuf,udp_sndbuf"
        );
    }
}
