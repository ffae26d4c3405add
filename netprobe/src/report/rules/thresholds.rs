//! Every rule's thresholds, in one table (docs/report.md lists the same).

use crate::report::model::Severity;

/// Warning and critical thresholds of one rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub id: &'static str,
    pub warning: f64,
    pub critical: f64,
    pub unit: &'static str,
}

pub const THRESHOLDS: &[Threshold] = &[
    Threshold {
        id: "tcp_retransmits",
        warning: 10.0,
        critical: 50.0,
        unit: "segments/s",
    },
    Threshold {
        id: "tcp_reordering",
        warning: 10.0,
        critical: 1000.0,
        unit: "segments/s",
    },
    Threshold {
        id: "tcp_timewait",
        warning: 5000.0,
        critical: 20000.0,
        unit: "sockets",
    },
    Threshold {
        id: "tcp_closewait",
        warning: 1.0,
        critical: 100.0,
        unit: "sockets",
    },
    Threshold {
        id: "network_errors",
        warning: 1.0,
        critical: 100.0,
        unit: "errors+drops/s per interface",
    },
    Threshold {
        id: "conntrack_usage",
        warning: 70.0,
        critical: 90.0,
        unit: "% of nf_conntrack_max",
    },
    Threshold {
        id: "conntrack_drops",
        warning: 1.0,
        critical: 100.0,
        unit: "drops/s",
    },
    Threshold {
        id: "softnet_dropped",
        warning: 1.0,
        critical: 10.0,
        unit: "drops/s per CPU",
    },
    Threshold {
        id: "softnet_time_squeeze",
        warning: 10.0,
        critical: 100.0,
        unit: "squeezes/s per CPU",
    },
    Threshold {
        id: "irq_imbalance",
        warning: 5.0,
        critical: 20.0,
        unit: "busiest CPU / mean",
    },
    Threshold {
        id: "listen_overflows",
        warning: 1.0,
        critical: 100.0,
        unit: "overflows/s",
    },
    Threshold {
        id: "nic_rx_discards",
        warning: 100.0,
        critical: 10000.0,
        unit: "discards/s per NIC",
    },
    Threshold {
        id: "nic_ring_undersized",
        warning: 1.0,
        critical: 10000.0,
        unit: "rx loss/s with ring below max",
    },
    Threshold {
        id: "udp_rcvbuf_errors",
        warning: 1.0,
        critical: 100.0,
        unit: "errors/s",
    },
    Threshold {
        id: "tcp_rcvbuf_pruned",
        warning: 1.0,
        critical: 100.0,
        unit: "pruned/s",
    },
    Threshold {
        id: "qdisc_drops",
        warning: 1.0,
        critical: 100.0,
        unit: "drops/s per qdisc",
    },
    Threshold {
        id: "accept_queue_full",
        warning: 80.0,
        critical: 100.0,
        unit: "% of accept-queue limit",
    },
];

/// NET_RX softirqs per second on the busiest CPU below which imbalance is not judged: an idle
/// host is always "imbalanced".
pub const IMBALANCE_MIN_RATE: f64 = 1000.0;

pub fn threshold(id: &str) -> Threshold {
    *THRESHOLDS
        .iter()
        .find(|t| t.id == id)
        .expect("every rule has thresholds")
}

impl Threshold {
    /// The severity `value` reaches, if it reaches one.
    pub fn judge(&self, value: f64) -> Option<Severity> {
        if value >= self.critical {
            Some(Severity::Critical)
        } else if value >= self.warning {
            Some(Severity::Warning)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_classify() {
        let judge = |id, value| threshold(id).judge(value);
        assert_eq!(judge("tcp_retransmits", 9.9), None);
        assert_eq!(judge("tcp_retransmits", 10.0), Some(Severity::Warning));
        assert_eq!(judge("tcp_retransmits", 50.0), Some(Severity::Critical));
        assert_eq!(judge("tcp_closewait", 1.0), Some(Severity::Warning));
        assert_eq!(judge("conntrack_usage", 91.0), Some(Severity::Critical));
        for t in THRESHOLDS {
            assert!(t.warning < t.critical, "{}", t.id);
        }
    }
}
