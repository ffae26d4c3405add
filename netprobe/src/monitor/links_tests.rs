use std::{os::unix::fs::symlink, path::PathBuf};

use super::*;

/// A fake /sys/class/net: a directory per device with the files and links these tests need.
struct FakeSysfs(PathBuf);

impl FakeSysfs {
    fn new(tag: &str) -> Self {
        let root = std::env::temp_dir().join(format!("np-links-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        Self(root)
    }

    fn device(&self, name: &str, ifindex: u32, operstate: &str) -> &Self {
        let dir = self.0.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("ifindex"), format!("{ifindex}\n")).unwrap();
        fs::write(dir.join("operstate"), format!("{operstate}\n")).unwrap();
        self
    }

    fn file(&self, path: &str, text: &str) -> &Self {
        let path = self.0.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        self
    }

    fn lower(&self, upper: &str, lower: &str) -> &Self {
        symlink(
            self.0.join(lower),
            self.0.join(upper).join(format!("lower_{lower}")),
        )
        .unwrap();
        self
    }

    fn bond(&self, name: &str, ifindex: u32, mode: &str, slaves: &[&str]) -> &Self {
        self.device(name, ifindex, "up")
            .file(&format!("{name}/bonding/mode"), &format!("{mode}\n"))
            .file(
                &format!("{name}/bonding/slaves"),
                &format!("{}\n", slaves.join(" ")),
            );
        for slave in slaves {
            self.lower(name, slave);
        }
        self
    }
}

impl Drop for FakeSysfs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_bond_is_its_slaves_with_its_mode() {
    let sys = FakeSysfs::new("bond");
    sys.device("eth0", 2, "up").device("eth1", 3, "down").bond(
        "bond0",
        4,
        "active-backup 1",
        &["eth0", "eth1"],
    );
    let source = resolve(&sys.0, "bond0");
    assert_eq!(source.via(), "bond");
    assert_eq!(
        source.bond,
        Some(Bond {
            name: "bond0".into(),
            mode: "active-backup".into()
        })
    );
    assert_eq!(source.devices, ["eth0", "eth1"]);
    assert!(source.lowers.is_empty());
    assert_eq!(
        describe("bond0", &source),
        "bond0 (bond bond0, mode active-backup, NIC columns the sum of slaves eth0, eth1)"
    );
}

#[test]
fn a_vlan_is_the_device_underneath_and_a_vlan_on_a_bond_is_its_slaves() {
    let sys = FakeSysfs::new("vlan");
    sys.device("eth0", 2, "up")
        .device("eth0.100", 5, "up")
        .lower("eth0.100", "eth0")
        .device("eth1", 3, "up")
        .bond("bond0", 4, "802.3ad 4", &["eth1"])
        .device("bond0.7", 6, "up")
        .lower("bond0.7", "bond0");
    let vlan = resolve(&sys.0, "eth0.100");
    assert_eq!(vlan.via(), "lower");
    assert_eq!(
        (vlan.lowers.as_slice(), vlan.devices.as_slice()),
        (&["eth0".to_string()][..], &["eth0".to_string()][..])
    );
    assert_eq!(
        describe("eth0.100", &vlan),
        "eth0.100 (NIC columns from eth0 underneath, whose ring carries all its traffic)"
    );
    let on_bond = resolve(&sys.0, "bond0.7");
    assert_eq!(on_bond.via(), "bond");
    assert_eq!(on_bond.lowers, ["bond0"]);
    assert_eq!(on_bond.devices, ["eth1"]);
    assert_eq!(
        describe("bond0.7", &on_bond),
        "bond0.7 (over bond0: bond bond0, mode 802.3ad, NIC columns the sum of slaves eth1)"
    );
    // A device with nothing underneath is counted as itself.
    let own = resolve(&sys.0, "eth0");
    assert!(own.is_own());
    assert_eq!(own.devices, ["eth0"]);
    assert_eq!(describe("eth0", &own), "eth0");
}

#[test]
fn a_bridge_is_its_own_device_not_its_ports() {
    let sys = FakeSysfs::new("bridge");
    sys.device("eth0", 2, "up")
        .device("br0", 3, "up")
        .file("br0/bridge/stp_state", "0\n")
        .lower("br0", "eth0");
    let source = resolve(&sys.0, "br0");
    assert!(source.is_own(), "{source:?}");
    assert_eq!(source.devices, ["br0"]);
}

/// Per-device NIC counters as the single-device reader of counters.rs would give them.
fn reader(
    values: &'static [(&'static str, u64, u64)],
) -> impl FnMut(&str, u32, &mut Readings, &mut Vec<String>) {
    move |name, ifindex, readings, _| {
        let (_, rx, tx) = values.iter().find(|(n, ..)| *n == name).unwrap();
        readings.set(Column::NicRx, format!("{ifindex}/rx_queue_0_drops"), *rx);
        if *tx == u64::MAX {
            readings.mark_unavailable(Column::NicTx, "driver veth has no tx drop statistic");
        } else {
            readings.set(Column::NicTx, format!("{ifindex}/tx_drops"), *tx);
        }
        readings.mark_unavailable(
            Column::NicMissed,
            "virtual device: no hardware receive ring",
        );
    }
}

#[test]
fn a_bond_s_columns_are_the_sum_of_its_slaves_deltas() {
    let sys = FakeSysfs::new("sum");
    sys.device("vA", 2, "up")
        .device("vB", 3, "up")
        .file("vA/bonding_slave/state", "active\n")
        .file("vB/bonding_slave/state", "backup\n")
        .bond("bond0", 4, "balance-rr 0", &["vA", "vB"]);
    let mut problems = Vec::new();
    let before = take(
        &sys.0,
        "bond0",
        &mut problems,
        reader(&[("vA", 10, u64::MAX), ("vB", 100, u64::MAX)]),
    );
    let after = take(
        &sys.0,
        "bond0",
        &mut problems,
        reader(&[("vA", 13, u64::MAX), ("vB", 107, u64::MAX)]),
    );
    assert!(problems.is_empty());
    let (mut r0, mut r1) = (Readings::default(), Readings::default());
    merge_into(&before, &mut r0);
    merge_into(&after, &mut r1);
    assert_eq!(delta::between(&r0, &r1).drops.get(Column::NicRx), 10);
    assert_eq!(
        r1.unavailable.get(&Column::NicTx).map(String::as_str),
        Some("every slave: driver veth has no tx drop statistic")
    );
    let (detail, notes) = interval(&before, &after);
    assert!(notes.is_empty(), "{notes:?}");
    let shares: Vec<_> = detail
        .devices
        .iter()
        .map(|d| {
            (
                d.name.as_str(),
                d.drops.map(|x| x.get(Column::NicRx)),
                d.bond_state.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        shares,
        [
            ("vA", Some(3), Some("active")),
            ("vB", Some(7), Some("backup"))
        ]
    );
    let json = serde_json::to_value(detail.json()).unwrap();
    assert_eq!(json["via"], "bond");
    assert_eq!(json["bond_mode"], "balance-rr");
    assert_eq!(json["devices"][1]["nic_rx"], 7);
    assert_eq!(
        json["devices"][1]["unavailable"],
        serde_json::json!(["nic_tx", "nic_missed"])
    );
}

/// A slave that joins with a large counter, and one that leaves: no spike, nothing negative,
/// and the interval says both.
#[test]
fn slaves_joining_or_leaving_are_said_and_never_a_spike() {
    let sys = FakeSysfs::new("churn");
    sys.device("vA", 2, "up")
        .device("vB", 3, "up")
        .device("vC", 5, "up")
        .bond("bond0", 4, "active-backup 1", &["vA", "vB"]);
    let mut problems = Vec::new();
    const BEFORE: &[(&str, u64, u64)] = &[("vA", 10, 0), ("vB", 500, 0)];
    let before = take(&sys.0, "bond0", &mut problems, reader(BEFORE));
    sys.file("bond0/bonding/slaves", "vA vC\n");
    const AFTER: &[(&str, u64, u64)] = &[("vA", 12, 0), ("vC", 90_000, 0)];
    let after = take(&sys.0, "bond0", &mut problems, reader(AFTER));
    let (mut r0, mut r1) = (Readings::default(), Readings::default());
    merge_into(&before, &mut r0);
    merge_into(&after, &mut r1);
    let deltas = delta::between(&r0, &r1);
    assert_eq!(deltas.drops.get(Column::NicRx), 2);
    assert!(deltas.jumps.is_empty());
    let (detail, notes) = interval(&before, &after);
    assert_eq!(
        notes,
        [
            "vC joined bond0: its NIC counters count from the next interval",
            "vB left bond0: its NIC counters since the last sample are not counted"
        ]
    );
    assert_eq!(detail.devices[1].drops, None);
    let json = serde_json::to_value(detail.json()).unwrap();
    assert_eq!(json["devices"][1]["counted"], false);
}

#[test]
fn a_bond_without_slaves_says_so() {
    let sys = FakeSysfs::new("empty");
    sys.bond("bond0", 4, "active-backup 1", &[]);
    let mut problems = Vec::new();
    let nic = take(&sys.0, "bond0", &mut problems, |_, _, _, _| {
        panic!("nothing to read")
    });
    let mut readings = Readings::default();
    merge_into(&nic, &mut readings);
    for column in NIC_COLUMNS {
        assert_eq!(readings.unavailable[&column], "bond bond0 has no slaves");
    }
    assert_eq!(
        describe("bond0", &nic.source),
        "bond0 (bond bond0, mode active-backup, no slaves yet)"
    );
}
