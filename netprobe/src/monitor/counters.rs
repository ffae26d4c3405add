//! One cheap sample of every counter behind the columns: a few ioctls, one rtnetlink qdisc
//! dump and four /proc files. No forked tool, no socket dump, no scan of processes.
//! docs/monitor.md is the table of which counter feeds which column.

use std::{collections::BTreeMap, fs, path::Path, time::Instant};

use super::{
    columns::Column,
    delta::Readings,
    links::{self, NicSample},
};
use crate::report::{
    ethtool::{self, NicStat},
    netlink, procfs,
    sample::{read_counters, SYS_CLASS_NET},
    sysfs::{read_number, read_trimmed},
};

/// The monitored interface as this sample found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    /// `None`: no interface of that name now.
    pub ifindex: Option<u32>,
    /// sysfs `operstate` (`up`, `down`, `lowerlayerdown`…).
    pub operstate: Option<String>,
    /// When the name is gone but the device it had is still there: its new name.
    pub renamed_to: Option<String>,
}

impl LinkState {
    pub fn is_up(&self) -> bool {
        matches!(self.operstate.as_deref(), Some("up" | "unknown"))
    }
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub link: LinkState,
    pub readings: Readings,
    /// Whose NIC counters the NIC columns are (a bond's slaves, the device under a VLAN), each
    /// device's own.
    pub nic: NicSample,
    /// softnet_stat's time_squeeze per CPU (for the Prometheus export; no column).
    pub time_squeeze: BTreeMap<u32, u64>,
    /// Sources that could not be read this time, with the error.
    pub problems: Vec<String>,
}

/// (column, group, field) of /proc/net/snmp, netstat and snmp6 (group `Snmp6`) behind the
/// SNMP columns. ListenDrops is deliberately absent: it counts every listener drop again,
/// those of `syn_queue` and `accept_queue` included.
const SNMP_SOURCES: &[(Column, &str, &str)] = &[
    (Column::SynQueue, "TcpExt", "TCPReqQFullDrop"),
    (Column::AcceptQueue, "TcpExt", "ListenOverflows"),
    (Column::TcpPruned, "TcpExt", "RcvPruned"),
    (Column::TcpCollapsed, "TcpExt", "TCPRcvCollapsed"),
    (Column::UdpRcvbuf, "Udp", "RcvbufErrors"),
    (Column::UdpRcvbuf, "Snmp6", "Udp6RcvbufErrors"),
    (Column::UdpSndbuf, "Udp", "SndbufErrors"),
    (Column::UdpSndbuf, "Snmp6", "Udp6SndbufErrors"),
];

/// sysfs `statistics/` files behind `nic_missed`: the host could not take what the NIC
/// received (ring full, FIFO overrun). Only the driver writes them.
const MISSED_STATISTICS: &[&str] = &["rx_missed_errors", "rx_fifo_errors"];

/// Samples everything once. `previous_ifindex` lets a renamed device be named.
pub fn take(interface: &str, previous_ifindex: Option<u32>) -> Sample {
    let mut sample = Sample {
        at: Instant::now(),
        link: link_state(interface, previous_ifindex),
        readings: Readings::default(),
        nic: NicSample::default(),
        time_squeeze: BTreeMap::new(),
        problems: Vec::new(),
    };
    read_interface_columns(interface, &mut sample);
    read_softnet(&mut sample);
    read_snmp(&mut sample);
    sample
}

fn link_state(interface: &str, previous_ifindex: Option<u32>) -> LinkState {
    let dir = Path::new(SYS_CLASS_NET).join(interface);
    let ifindex = read_number(&dir.join("ifindex")).map(|i| i as u32);
    LinkState {
        ifindex,
        operstate: ifindex.and_then(|_| read_trimmed(&dir.join("operstate"))),
        renamed_to: match (ifindex, previous_ifindex) {
            (None, Some(old)) => name_of_ifindex(old),
            _ => None,
        },
    }
}

/// The interface that has `ifindex` now (read only when the monitored name vanished).
fn name_of_ifindex(ifindex: u32) -> Option<String> {
    fs::read_dir(SYS_CLASS_NET).ok()?.flatten().find_map(|e| {
        (read_number(&e.path().join("ifindex")) == Some(ifindex as u64))
            .then(|| e.file_name().to_string_lossy().into_owned())
    })
}

fn read_interface_columns(interface: &str, sample: &mut Sample) {
    let Some(ifindex) = sample.link.ifindex else {
        for column in Column::ALL.into_iter().filter(|c| c.is_interface()) {
            sample
                .readings
                .mark_unavailable(column, format!("{interface} does not exist now"));
        }
        return;
    };
    // A bond or a stacked device has no NIC counters of its own: its slaves' or the real
    // device's underneath stand for them (links.rs). The qdisc is always the interface's own.
    sample.nic = links::take(
        Path::new(SYS_CLASS_NET),
        interface,
        &mut sample.problems,
        |device, index, readings, problems| {
            read_driver_drops(device, index, readings, problems);
            read_missed(device, index, readings, problems);
        },
    );
    links::merge_into(&sample.nic, &mut sample.readings);
    read_qdisc(ifindex, sample);
}

/// `nic_rx` and `nic_tx` from the driver's own statistics (`ethtool -S`).
fn read_driver_drops(
    interface: &str,
    ifindex: u32,
    readings: &mut Readings,
    problems: &mut Vec<String>,
) {
    let nic = match ethtool::read_nic(interface) {
        Ok(nic) => nic,
        Err(e) => {
            let reason = if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                "no driver statistics via ethtool".to_string()
            } else {
                problems.push(format!("ethtool {interface}: {e}"));
                format!("ethtool {interface}: {e}")
            };
            for column in [Column::NicRx, Column::NicTx] {
                readings.mark_unavailable(column, reason.clone());
            }
            return;
        }
    };
    for (column, direction) in [(Column::NicRx, "rx"), (Column::NicTx, "tx")] {
        let stats = driver_drop_stats(&nic.stats, direction);
        if stats.is_empty() {
            readings.mark_unavailable(
                column,
                format!("driver {} has no {direction} drop statistic", nic.driver),
            );
        }
        for stat in stats {
            readings.set(column, format!("{ifindex}/{}", stat.name), stat.value);
        }
    }
}

/// The driver statistics that count packets dropped in one direction: names with drop,
/// discard or no-buffer in them (`rx_queue_0_drops`, `rx_discards_phy`, `rx_no_buffer_count`).
/// Missed and FIFO counters are `nic_missed`'s (from sysfs), errors are not drops, and the
/// plain `rx_dropped`/`tx_dropped` many drivers copy from the device totals are left out:
/// those totals include the core's own drops (backlog full, no protocol handler), which
/// `softirq` counts already. When the driver has direction-wide counters, only they count;
/// per-queue ones would count the same packets again.
pub fn driver_drop_stats<'a>(stats: &'a [NicStat], direction: &str) -> Vec<&'a NicStat> {
    const DROP_WORDS: [&str; 4] = ["drop", "discard", "no_buf", "nobuf"];
    const NOT_HERE: [&str; 3] = ["miss", "fifo", "overrun"];
    let selected: Vec<(&NicStat, Option<u32>)> = stats
        .iter()
        .filter_map(|s| {
            let class = ethtool::classify(&s.name)?;
            let lower = s.name.to_ascii_lowercase();
            let counts = class.direction == direction
                && DROP_WORDS.iter().any(|w| lower.contains(w))
                && !NOT_HERE.iter().any(|w| lower.contains(w))
                && lower != format!("{direction}_dropped");
            counts.then_some((s, class.queue))
        })
        .collect();
    let direction_wide = selected.iter().any(|(_, queue)| queue.is_none());
    selected
        .into_iter()
        .filter(|(_, queue)| !direction_wide || queue.is_none())
        .map(|(s, _)| s)
        .collect()
}

/// `nic_missed` from sysfs; a virtual device (no `device` behind it) has no ring to miss.
fn read_missed(interface: &str, ifindex: u32, readings: &mut Readings, problems: &mut Vec<String>) {
    let dir = Path::new(SYS_CLASS_NET).join(interface);
    if !dir.join("device").exists() {
        readings.mark_unavailable(
            Column::NicMissed,
            "virtual device: no hardware receive ring",
        );
        return;
    }
    for name in MISSED_STATISTICS {
        match read_number(&dir.join("statistics").join(name)) {
            Some(value) => readings.set(Column::NicMissed, format!("{ifindex}/{name}"), value),
            None => problems.push(format!(
                "{}: unreadable",
                dir.join("statistics").join(name).display()
            )),
        }
    }
}

/// `qdisc`: the drops of the interface's root qdisc(s). A classful root (mq, htb…) reports its
/// children's drops in its own, so the children are not added again.
fn read_qdisc(ifindex: u32, sample: &mut Sample) {
    match netlink::qdiscs() {
        Ok(qdiscs) => {
            for q in qdiscs
                .iter()
                .filter(|q| q.root && q.ifindex == ifindex as i32)
            {
                let key = format!("{ifindex}/{}/{}", q.handle, q.kind);
                sample.readings.set(Column::Qdisc, key, q.drops);
            }
        }
        Err(e) => {
            sample.problems.push(format!("rtnetlink qdisc dump: {e}"));
            sample
                .readings
                .mark_unavailable(Column::Qdisc, format!("rtnetlink qdisc dump: {e}"));
        }
    }
}

/// `softirq`: softnet_stat's dropped (input backlog full), every CPU, host-wide.
fn read_softnet(sample: &mut Sample) {
    match fs::read_to_string("/proc/net/softnet_stat") {
        Ok(text) => {
            for row in procfs::parse_softnet(&text) {
                sample
                    .readings
                    .set(Column::Softirq, format!("cpu{}", row.cpu), row.dropped);
                sample.time_squeeze.insert(row.cpu as u32, row.time_squeeze);
            }
        }
        Err(e) => {
            sample.problems.push(format!("/proc/net/softnet_stat: {e}"));
            sample
                .readings
                .mark_unavailable(Column::Softirq, format!("/proc/net/softnet_stat: {e}"));
        }
    }
}

fn read_snmp(sample: &mut Sample) {
    let mut skipped = Vec::new();
    let counters = read_counters(&mut skipped);
    sample.problems.extend(
        skipped
            .into_iter()
            .map(|s| format!("{}: {}", s.source, s.reason)),
    );
    for (column, group, field) in SNMP_SOURCES {
        if let Some(value) = counters.get(*group).and_then(|g| g.get(*field)) {
            let value = u64::try_from(*value).unwrap_or(0);
            sample
                .readings
                .set(*column, format!("{group}.{field}"), value);
        }
    }
    for column in Column::ALL.into_iter().filter(|c| !c.is_interface()) {
        if column != Column::Softirq && !sample.readings.counters.contains_key(&column) {
            sample
                .readings
                .mark_unavailable(column, "this kernel has no such counter");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(names: &[&str]) -> Vec<NicStat> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| NicStat {
                name: n.to_string(),
                value: i as u64,
            })
            .collect()
    }

    fn names<'a>(selected: &[&'a NicStat]) -> Vec<&'a str> {
        selected.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn per_queue_drops_when_the_driver_has_nothing_wider() {
        // virtio_net / veth shapes.
        let s = stats(&[
            "peer_ifindex",
            "rx_queue_0_drops",
            "rx_queue_0_xdp_drops",
            "rx_queue_1_drops",
            "rx_queue_0_xdp_redirect",
            "tx_queue_0_xdp_xmit_errors",
        ]);
        assert_eq!(
            names(&driver_drop_stats(&s, "rx")),
            vec![
                "rx_queue_0_drops",
                "rx_queue_0_xdp_drops",
                "rx_queue_1_drops"
            ]
        );
        assert!(driver_drop_stats(&s, "tx").is_empty());
    }

    #[test]
    fn direction_wide_counters_win_and_totals_copies_and_missed_are_left_out() {
        let s = stats(&[
            "rx_dropped",
            "tx_dropped",
            "rx_missed_errors",
            "rx_fifo_errors",
            "rx_no_buffer_count",
            "rx_discards_phy",
            "rx_queue_3_drops",
            "tx_queue_2_drops",
            "rx_crc_errors",
        ]);
        assert_eq!(
            names(&driver_drop_stats(&s, "rx")),
            vec!["rx_no_buffer_count", "rx_discards_phy"]
        );
        assert_eq!(
            names(&driver_drop_stats(&s, "tx")),
            vec!["tx_queue_2_drops"]
        );
    }
}
