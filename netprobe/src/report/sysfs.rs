//! Interface facts from /sys/class/net: speed, MTU, queue length, queues and their RPS/XPS
//! masks, state, bond and VLAN relations, and the full `statistics/` directory (which has
//! counters /proc/net/dev lacks, such as `rx_missed_errors`).

use std::{collections::BTreeMap, fs, path::Path};

use serde::Serialize;

use crate::model::cpuset::CpuSet;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub ifindex: Option<u32>,
    pub operstate: Option<String>,
    /// Link carrier (`carrier` in sysfs); `None` when the interface is administratively down.
    pub carrier: Option<bool>,
    /// Mbit/s; `None` when the driver does not say (virtual devices, link down).
    pub speed_mbps: Option<u64>,
    pub mtu: Option<u64>,
    pub txqueuelen: Option<u64>,
    pub rx_queues: usize,
    pub tx_queues: usize,
    /// `rx-N` → RPS CPU mask (hex as in sysfs); only non-empty masks.
    pub rps_cpus: BTreeMap<String, String>,
    /// `tx-N` → XPS CPU mask; only non-empty masks.
    pub xps_cpus: BTreeMap<String, String>,
    /// Bond master this interface is enslaved to.
    pub master: Option<String>,
    /// Slaves, when this is a bond.
    pub slaves: Vec<String>,
    /// Lower device (VLAN parent, macvlan …).
    pub lower: Vec<String>,
    /// Kernel driver (`/sys/class/net/<if>/device/driver`), when a device backs it.
    pub device: Option<String>,
    /// Every counter of `statistics/`, by file name.
    pub statistics: BTreeMap<String, u64>,
}

pub(crate) fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

pub(crate) fn read_number(path: &Path) -> Option<u64> {
    read_trimmed(path)?
        .parse::<i64>()
        .ok()
        .and_then(|v| u64::try_from(v).ok())
}

/// A CPU mask is "set" unless it names no CPU.
fn mask_is_set(mask: &str) -> bool {
    !CpuSet::parse_mask(mask).is_empty()
}

/// Reads one interface's directory under `root` (normally /sys/class/net).
pub fn read_interface(root: &Path, name: &str) -> InterfaceInfo {
    let dir = root.join(name);
    let mut info = InterfaceInfo {
        name: name.to_string(),
        ifindex: read_number(&dir.join("ifindex")).map(|v| v as u32),
        operstate: read_trimmed(&dir.join("operstate")),
        carrier: read_number(&dir.join("carrier")).map(|c| c == 1),
        // speed is -1 or EINVAL for links without one.
        speed_mbps: read_number(&dir.join("speed")).filter(|s| *s > 0 && *s < u32::MAX as u64),
        mtu: read_number(&dir.join("mtu")),
        txqueuelen: read_number(&dir.join("tx_queue_len")),
        ..Default::default()
    };
    if let Ok(entries) = fs::read_dir(dir.join("queues")) {
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for queue in names {
            if queue.starts_with("rx-") {
                info.rx_queues += 1;
                if let Some(mask) = read_trimmed(&dir.join("queues").join(&queue).join("rps_cpus"))
                    .filter(|m| mask_is_set(m))
                {
                    info.rps_cpus.insert(queue, mask);
                }
            } else if queue.starts_with("tx-") {
                info.tx_queues += 1;
                if let Some(mask) = read_trimmed(&dir.join("queues").join(&queue).join("xps_cpus"))
                    .filter(|m| mask_is_set(m))
                {
                    info.xps_cpus.insert(queue, mask);
                }
            }
        }
    }
    info.master = fs::read_link(dir.join("master"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if let Some(slaves) = read_trimmed(&dir.join("bonding/slaves")) {
        info.slaves = slaves.split_whitespace().map(String::from).collect();
    }
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            if let Some(lower) = e.file_name().to_string_lossy().strip_prefix("lower_") {
                info.lower.push(lower.to_string());
            }
        }
        info.lower.sort();
    }
    info.device = fs::read_link(dir.join("device/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if let Ok(entries) = fs::read_dir(dir.join("statistics")) {
        for e in entries.flatten() {
            if let Some(v) = read_number(&e.path()) {
                info.statistics
                    .insert(e.file_name().to_string_lossy().into_owned(), v);
            }
        }
    }
    info
}

/// IRQ numbers of a NIC's MSI vectors (`device/msi_irqs`, or its parent's for virtio).
pub fn msi_irqs(root: &Path, name: &str) -> Vec<u32> {
    let device = root.join(name).join("device");
    for dir in [device.join("msi_irqs"), device.join("../msi_irqs")] {
        if let Ok(entries) = fs::read_dir(&dir) {
            let mut irqs: Vec<u32> = entries
                .flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect();
            irqs.sort_unstable();
            if !irqs.is_empty() {
                return irqs;
            }
        }
    }
    Vec::new()
}

/// The device name behind an interface (`virtio0`, `0000:00:03.0`), which /proc/interrupts
/// uses instead of the interface name for some drivers.
pub fn device_name(root: &Path, name: &str) -> Option<String> {
    fs::canonicalize(root.join(name).join("device"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_sysfs_shaped_tree() {
        let root = std::env::temp_dir().join(format!("netprobe-sysfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let eth = root.join("eth0");
        for q in ["rx-0", "rx-1", "tx-0"] {
            fs::create_dir_all(eth.join("queues").join(q)).unwrap();
        }
        fs::write(eth.join("queues/rx-0/rps_cpus"), "00000000,00000000\n").unwrap();
        fs::write(eth.join("queues/rx-1/rps_cpus"), "00000000,0000000f\n").unwrap();
        fs::write(eth.join("queues/tx-0/xps_cpus"), "1\n").unwrap();
        fs::create_dir_all(eth.join("statistics")).unwrap();
        fs::write(eth.join("statistics/rx_missed_errors"), "12\n").unwrap();
        fs::write(eth.join("statistics/rx_dropped"), "3\n").unwrap();
        fs::write(eth.join("speed"), "-1\n").unwrap();
        fs::write(eth.join("mtu"), "9000\n").unwrap();
        fs::write(eth.join("tx_queue_len"), "1000\n").unwrap();
        fs::write(eth.join("operstate"), "up\n").unwrap();
        fs::create_dir_all(root.join("bond0/bonding")).unwrap();
        fs::write(root.join("bond0/bonding/slaves"), "eth0 eth1\n").unwrap();
        std::os::unix::fs::symlink("../bond0", eth.join("master")).unwrap();
        std::os::unix::fs::symlink("../eth0", root.join("bond0/lower_eth0")).unwrap();

        let info = read_interface(&root, "eth0");
        assert_eq!((info.rx_queues, info.tx_queues), (2, 1));
        assert_eq!(info.rps_cpus.keys().collect::<Vec<_>>(), vec!["rx-1"]);
        assert_eq!(info.xps_cpus["tx-0"], "1");
        assert_eq!(info.speed_mbps, None);
        assert_eq!((info.mtu, info.txqueuelen), (Some(9000), Some(1000)));
        assert_eq!(info.master.as_deref(), Some("bond0"));
        assert_eq!(info.statistics["rx_missed_errors"], 12);
        let bond = read_interface(&root, "bond0");
        assert_eq!(bond.slaves, vec!["eth0", "eth1"]);
        assert_eq!(bond.lower, vec!["eth0"]);
        // A missing interface yields an empty record, not a crash.
        let ghost = read_interface(&root, "ghost0");
        assert_eq!(ghost.mtu, None);
        let _ = fs::remove_dir_all(root);
    }
}
