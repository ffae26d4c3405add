//! A bond and a VLAN (or, on a kernel without 802.1Q, a macvlan) in test namespaces, for the
//! monitor's bond and stacked-device scenarios (tests/tests/monitor_links.rs).

use std::process::Command;

use crate::{sh, Netns};

/// Whether this kernel can make devices of `kind` (`bond`, `vlan`): tried in a scratch
/// namespace. When it cannot, the kernel's own configuration must say so (when it is
/// readable): a kernel that has the driver but fails to make one is a failure, not a skip.
pub fn kernel_has(kind: &str, config_option: &str) -> bool {
    let ns = Netns::new(&format!("bndprobe{kind}"));
    let ip = |args: &[&str]| {
        Command::new("ip")
            .args(["-n", &ns.name])
            .args(args)
            .output()
            .expect("ip")
    };
    let out = match kind {
        // A VLAN needs a device that can carry tags (not loopback).
        "vlan" => {
            assert!(ip(&["link", "add", "probe0", "type", "veth"])
                .status
                .success());
            ip(&[
                "link", "add", "link", "probe0", "name", "probe0.7", "type", "vlan", "id", "7",
            ])
        }
        _ => ip(&["link", "add", "probe0", "type", kind]),
    };
    if out.status.success() {
        return true;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(config) = kernel_config() {
        assert!(
            config.contains(&format!("# {config_option} is not set")),
            "ip link add type {kind} failed ({stderr}) though the kernel has {config_option}"
        );
    }
    eprintln!(
        "this kernel has no {kind} driver ({config_option}): {}",
        stderr.trim()
    );
    false
}

/// /proc/config.gz, when the kernel has one.
fn kernel_config() -> Option<String> {
    let out = Command::new("zcat").arg("/proc/config.gz").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Namespace `a` with one veth per slave, each peered with a slave of `bond0` in namespace
/// `b`; slave `i` and its peer are on 198.18.`subnet + i`.0/24 (.1 in a, .2 on the bond), and
/// a has a permanent neighbour entry for the bond on each, so that a's frames reach the slaves
/// whatever the slaves do with them.
pub struct BondHosts {
    pub a: Netns,
    pub b: Netns,
    pub slaves: Vec<String>,
    subnet: u8,
}

impl BondHosts {
    pub fn new(tag: &str, mode: &str, slaves: &[&str], subnet: u8) -> Self {
        let hosts = Self {
            a: Netns::new(&format!("{tag}a")),
            b: Netns::new(&format!("{tag}b")),
            slaves: slaves.iter().map(|s| s.to_string()).collect(),
            subnet,
        };
        // Nothing but the scenario's own frames may reach the slaves: no IPv6 in a (neighbour
        // discovery, multicast reports), and permanent neighbours instead of ARP (below).
        for scope in ["all", "default"] {
            hosts
                .a
                .sysctl(&format!("net.ipv6.conf.{scope}.disable_ipv6"), "1");
        }
        hosts.ip_b(&["link", "add", "bond0", "type", "bond", "mode", mode]);
        for (i, slave) in slaves.iter().enumerate() {
            hosts.add_veth(slave);
            hosts.enslave(slave);
            let net = subnet + i as u8;
            hosts.ip_b(&["addr", "add", &format!("198.18.{net}.2/24"), "dev", "bond0"]);
            hosts.ip_a(&[
                "addr",
                "add",
                &format!("198.18.{net}.1/24"),
                "dev",
                &peer(slave),
            ]);
            hosts.ip_a(&["link", "set", &peer(slave), "up"]);
        }
        hosts.ip_b(&["link", "set", "bond0", "up"]);
        let mac = hosts.bond_mac();
        for (i, slave) in slaves.iter().enumerate() {
            let bond_ip = format!("198.18.{}.2", subnet + i as u8);
            hosts.ip_a(&[
                "neigh",
                "replace",
                &bond_ip,
                "lladdr",
                &mac,
                "dev",
                &peer(slave),
                "nud",
                "permanent",
            ]);
        }
        hosts
    }

    fn ip_a(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.a.name.as_str()];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    fn ip_b(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.b.name.as_str()];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// A veth `slave` in b (not enslaved), peered with `peer(slave)` in a.
    pub fn add_veth(&self, slave: &str) {
        self.ip_a(&[
            "link",
            "add",
            &peer(slave),
            "type",
            "veth",
            "peer",
            "name",
            slave,
            "netns",
            &self.b.name,
        ]);
    }

    /// Enslaves `slave` to bond0 (a slave must be down to join) and brings it up.
    pub fn enslave(&self, slave: &str) {
        let b = self.b.name.as_str();
        sh("ip", &["-n", b, "link", "set", slave, "down"]);
        sh("ip", &["-n", b, "link", "set", slave, "master", "bond0"]);
        sh("ip", &["-n", b, "link", "set", slave, "up"]);
    }

    pub fn release(&self, slave: &str) {
        sh(
            "ip",
            &["-n", &self.b.name, "link", "set", slave, "nomaster"],
        );
    }

    fn bond_mac(&self) -> String {
        let json = sh("ip", &["-n", &self.b.name, "-j", "link", "show", "bond0"]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("ip -j link");
        v[0]["address"].as_str().expect("mac").to_string()
    }

    /// Where a's frames out of slave `i`'s peer go: the bond's address on that slave's subnet.
    pub fn bond_addr_via(&self, i: usize, port: u16) -> std::net::SocketAddr {
        format!("198.18.{}.2:{port}", self.subnet + i as u8)
            .parse()
            .unwrap()
    }
}

/// The name of `slave`'s veth peer in namespace a.
pub fn peer(slave: &str) -> String {
    format!("p{slave}")
}
