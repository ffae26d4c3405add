//! The monitor's drop columns, in the CSV's order, and the severity of an interval: the
//! names are the shared vocabulary's (netprobe-common's `vocab`); here, one value per column.

pub use netprobe_common::vocab::{DropColumn as Column, IntervalSeverity as Severity};

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
