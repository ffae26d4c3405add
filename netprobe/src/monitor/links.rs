//! Bond masters and stacked devices (VLAN, macvlan): which devices' NIC counters stand for the
//! monitored interface in `nic_rx`, `nic_tx` and `nic_missed`. A bond has no ring and no
//! driver statistics of its own: its NIC columns are the sum over its slaves. A VLAN or macvlan
//! has none either: its NIC columns are the real device's underneath (whose ring carries the
//! traffic of every device stacked on it). The qdisc column stays the interface's own.
//!
//! Read from sysfs, the source the rest of a sample already reads (ifindex, operstate,
//! statistics) and `netprobe report` uses for the same relations: the bond driver publishes
//! its mode and slaves there as text, and the core links every stacked device to the one under
//! it (`lower_*`) whatever its kind. rtnetlink would give the same facts at the cost of a link
//! dump per interval and the bond driver's nested attributes.

use std::{collections::BTreeSet, fs, path::Path};

use serde::Serialize;

use super::{
    columns::{Column, Drops},
    delta::{self, Readings},
};
use crate::report::sysfs::{read_number, read_trimmed};

/// The columns that come from the device(s) under a bond or a stacked interface.
pub const NIC_COLUMNS: [Column; 3] = [Column::NicRx, Column::NicTx, Column::NicMissed];

/// How deep stacked devices are followed (a VLAN on a VLAN on a bond is 2).
const MAX_DEPTH: usize = 8;

/// A bond found on the way down, with its mode as the driver names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bond {
    pub name: String,
    /// `active-backup`, `balance-rr`, `802.3ad`…
    pub mode: String,
}

/// Whose NIC counters the interface's NIC columns are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NicSource {
    /// The devices under the interface, outermost first, down to the real one or the bond
    /// (`eth0.100`: `eth0`; `bond0.100`: `bond0`). Empty for the interface itself or a bond.
    pub lowers: Vec<String>,
    /// Set when the counted devices are a bond's slaves (the interface's or a lower's).
    pub bond: Option<Bond>,
    /// The devices whose NIC counters are read: the interface itself, the real device under
    /// it, or a bond's slaves (none for a bond without slaves).
    pub devices: Vec<String>,
}

impl NicSource {
    /// The interface's own counters: nothing to say about them.
    pub fn is_own(&self) -> bool {
        self.lowers.is_empty() && self.bond.is_none()
    }

    pub fn via(&self) -> &'static str {
        match (&self.bond, self.lowers.is_empty()) {
            (Some(_), _) => "bond",
            (None, false) => "lower",
            (None, true) => "own",
        }
    }
}

/// Follows the interface down through sysfs. A device with exactly one `lower_*` link and no
/// bridge of its own is stacked on it; a bond's slaves come from `bonding/slaves`. Anything
/// else (a bridge, whose ports carry traffic that is not its own; a team; a physical device)
/// is counted as itself.
pub fn resolve(root: &Path, interface: &str) -> NicSource {
    let mut source = NicSource::default();
    let mut name = interface.to_string();
    for _ in 0..MAX_DEPTH {
        let dir = root.join(&name);
        if let Some(mode) = read_trimmed(&dir.join("bonding/mode")) {
            source.devices = read_trimmed(&dir.join("bonding/slaves"))
                .map(|s| s.split_whitespace().map(String::from).collect())
                .unwrap_or_default();
            // The file says `active-backup 1`: the name and the number of the mode.
            let mode = mode.split_whitespace().next().unwrap_or("").to_string();
            source.bond = Some(Bond { name, mode });
            return source;
        }
        let lowers = lower_links(&dir);
        if lowers.len() != 1 || dir.join("bridge").exists() {
            break;
        }
        name = lowers.into_iter().next().expect("one lower");
        source.lowers.push(name.clone());
    }
    source.devices = vec![name];
    source
}

/// The `lower_NAME` links of a device's sysfs directory, by name.
fn lower_links(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("lower_").map(String::from)
        })
        .collect()
}

/// One counted device as a sample found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NicDevice {
    pub name: String,
    /// `None`: the name is listed but no such device is visible (in another namespace).
    pub ifindex: Option<u32>,
    /// Its operstate is up (or unknown, as virtual devices say).
    pub up: bool,
    /// A bond slave's state in the bond (`active`, `backup`).
    pub bond_state: Option<String>,
    /// Its NIC counters alone (keys carry its ifindex, as the interface's own do).
    pub readings: Readings,
}

/// The NIC side of one sample: where the counters came from and each device's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NicSample {
    pub source: NicSource,
    pub devices: Vec<NicDevice>,
}

/// Reads every counted device of `interface` with `read` (the single-device reader of
/// counters.rs: its NIC counters into `Readings`, its failures into the problems).
pub fn take(
    root: &Path,
    interface: &str,
    problems: &mut Vec<String>,
    mut read: impl FnMut(&str, u32, &mut Readings, &mut Vec<String>),
) -> NicSample {
    let source = resolve(root, interface);
    let devices = source
        .devices
        .iter()
        .map(|name| {
            let dir = root.join(name);
            let ifindex = read_number(&dir.join("ifindex")).map(|i| i as u32);
            let mut readings = Readings::default();
            match ifindex {
                Some(index) => read(name, index, &mut readings, problems),
                None => {
                    for column in NIC_COLUMNS {
                        readings.mark_unavailable(column, "not in this network namespace");
                    }
                }
            }
            NicDevice {
                name: name.clone(),
                ifindex,
                up: matches!(
                    read_trimmed(&dir.join("operstate")).as_deref(),
                    Some("up" | "unknown")
                ),
                bond_state: read_trimmed(&dir.join("bonding_slave/state")),
                readings,
            }
        })
        .collect();
    NicSample { source, devices }
}

/// Puts every counted device's NIC counters into the interface's readings (their keys differ
/// by ifindex, so the interval's delta is the sum of each device's, and a device seen in only
/// one of two samples counts nothing), and says which columns none of them has.
pub fn merge_into(nic: &NicSample, readings: &mut Readings) {
    for device in &nic.devices {
        for (column, counters) in &device.readings.counters {
            for (key, value) in counters {
                readings.set(*column, key.clone(), *value);
            }
        }
    }
    for column in NIC_COLUMNS {
        if nic
            .devices
            .iter()
            .any(|d| d.readings.counters.contains_key(&column))
        {
            continue;
        }
        readings.mark_unavailable(column, unavailable_reason(nic, column));
    }
}

fn unavailable_reason(nic: &NicSample, column: Column) -> String {
    let reason_of = |d: &NicDevice| {
        d.readings
            .unavailable
            .get(&column)
            .cloned()
            .unwrap_or_else(|| "no counter".to_string())
    };
    let source = &nic.source;
    match (&source.bond, nic.devices.as_slice()) {
        (Some(bond), []) => format!("bond {} has no slaves", bond.name),
        (Some(_), devices) => {
            let reasons: BTreeSet<String> = devices.iter().map(reason_of).collect();
            if reasons.len() == 1 {
                format!(
                    "every slave: {}",
                    reasons.into_iter().next().unwrap_or_default()
                )
            } else {
                let each: Vec<String> = devices
                    .iter()
                    .map(|d| format!("{}: {}", d.name, reason_of(d)))
                    .collect();
                format!("no slave has it ({})", each.join(", "))
            }
        }
        (None, [device]) if !source.lowers.is_empty() => {
            format!("{} underneath: {}", device.name, reason_of(device))
        }
        (None, [device]) => reason_of(device),
        (None, _) => "no device to read".to_string(),
    }
}

/// One counted device over an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInterval {
    pub name: String,
    pub ifindex: Option<u32>,
    pub up: bool,
    pub bond_state: Option<String>,
    /// Its NIC columns' growth; `None` when it was not counted in both samples (it joined
    /// the bond, or was recreated, during the interval).
    pub drops: Option<Drops>,
    /// The NIC columns it cannot have.
    pub unavailable: Vec<Column>,
}

/// The NIC side of an interval: the source at its end and each device's share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NicInterval {
    pub source: NicSource,
    pub devices: Vec<DeviceInterval>,
}

/// Each device's share of the interval, and the changes in words (a slave that joined or
/// left, a bond's mode, another device underneath).
pub fn interval(before: &NicSample, after: &NicSample) -> (NicInterval, Vec<String>) {
    let previous = |d: &NicDevice| {
        before
            .devices
            .iter()
            .find(|b| b.name == d.name && b.ifindex == d.ifindex && d.ifindex.is_some())
    };
    let devices = after
        .devices
        .iter()
        .map(|d| DeviceInterval {
            name: d.name.clone(),
            ifindex: d.ifindex,
            up: d.up,
            bond_state: d.bond_state.clone(),
            drops: previous(d).map(|b| delta::between(&b.readings, &d.readings).drops),
            unavailable: NIC_COLUMNS
                .into_iter()
                .filter(|c| !d.readings.counters.contains_key(c))
                .collect(),
        })
        .collect();
    let detail = NicInterval {
        source: after.source.clone(),
        devices,
    };
    (detail, change_notes(before, after))
}

fn change_notes(before: &NicSample, after: &NicSample) -> Vec<String> {
    let mut notes = Vec::new();
    let key = |d: &NicDevice| (d.name.clone(), d.ifindex);
    let old: BTreeSet<_> = before.devices.iter().map(key).collect();
    let new: BTreeSet<_> = after.devices.iter().map(key).collect();
    if let (Some(was), Some(now)) = (&before.source.bond, &after.source.bond) {
        if was.mode != now.mode {
            notes.push(format!("{} mode {} → {}", now.name, was.mode, now.mode));
        }
    }
    let Some(bond) = after.source.bond.as_ref().or(before.source.bond.as_ref()) else {
        if old != new && !before.devices.is_empty() && !after.devices.is_empty() {
            let names = |s: &NicSample| s.source.devices.join(", ");
            notes.push(format!(
                "NIC counters now from {} (were {}): counted from the next interval",
                names(after),
                names(before)
            ));
        }
        return notes;
    };
    for (name, _) in new.difference(&old) {
        notes.push(format!(
            "{name} joined {}: its NIC counters count from the next interval",
            bond.name
        ));
    }
    for (name, _) in old.difference(&new) {
        notes.push(format!(
            "{name} left {}: its NIC counters since the last sample are not counted",
            bond.name
        ));
    }
    notes
}

/// The interface as the start line names it: a bond's mode and slaves, the device under a
/// stacked one.
pub fn describe(interface: &str, nic: &NicSource) -> String {
    let bond = nic.bond.as_ref().map(|b| {
        if nic.devices.is_empty() {
            format!("bond {}, mode {}, no slaves yet", b.name, b.mode)
        } else {
            format!(
                "bond {}, mode {}, NIC columns the sum of slaves {}",
                b.name,
                b.mode,
                nic.devices.join(", ")
            )
        }
    });
    match (nic.lowers.first(), bond) {
        (None, None) => interface.to_string(),
        (None, Some(bond)) => format!("{interface} ({bond})"),
        (Some(lower), Some(bond)) => format!("{interface} (over {lower}: {bond})"),
        (Some(_), None) => format!(
            "{interface} (NIC columns from {} underneath, whose ring carries all its traffic)",
            nic.devices.join(", ")
        ),
    }
}

/// `nic_source` of the JSON: null for the interface's own counters.
#[derive(Debug, Serialize)]
pub struct NicSourceJson<'a> {
    /// `bond` (a bond's slaves, summed) or `lower` (the device underneath).
    pub via: &'static str,
    /// The devices between the interface and the counted ones, outermost first.
    pub lowers: &'a [String],
    pub bond: Option<&'a str>,
    pub bond_mode: Option<&'a str>,
    pub devices: Vec<NicDeviceJson<'a>>,
}

/// One counted device in the JSON: its share of the NIC columns over the interval.
#[derive(Debug, Serialize)]
pub struct NicDeviceJson<'a> {
    pub name: &'a str,
    pub ifindex: Option<u32>,
    pub up: bool,
    /// A bond slave's state: `active` or `backup`.
    pub bond_state: Option<&'a str>,
    /// False when it was not in both samples (joined or recreated meanwhile): not counted.
    pub counted: bool,
    pub nic_rx: u64,
    pub nic_tx: u64,
    pub nic_missed: u64,
    pub unavailable: Vec<&'static str>,
}

impl NicInterval {
    pub fn json(&self) -> Option<NicSourceJson<'_>> {
        if self.source.is_own() {
            return None;
        }
        let bond = self.source.bond.as_ref();
        Some(NicSourceJson {
            via: self.source.via(),
            lowers: &self.source.lowers,
            bond: bond.map(|b| b.name.as_str()),
            bond_mode: bond.map(|b| b.mode.as_str()),
            devices: self
                .devices
                .iter()
                .map(|d| {
                    let drops = d.drops.unwrap_or_default();
                    NicDeviceJson {
                        name: &d.name,
                        ifindex: d.ifindex,
                        up: d.up,
                        bond_state: d.bond_state.as_deref(),
                        counted: d.drops.is_some(),
                        nic_rx: drops.get(Column::NicRx),
                        nic_tx: drops.get(Column::NicTx),
                        nic_missed: drops.get(Column::NicMissed),
                        unavailable: d.unavailable.iter().map(|c| c.name()).collect(),
                    }
                })
                .collect(),
        })
    }
}

#[cfg(test)]
#[path = "links_tests.rs"]
mod tests;
