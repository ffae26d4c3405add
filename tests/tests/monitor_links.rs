//! `netprobe monitor` on a bond and on a device stacked on a veth (VLAN, or macvlan where the
//! kernel has no 802.1Q): their NIC columns come from the devices that have the counters, and
//! equal those devices' `ethtool -S` deltas over the same intervals. The frames are dropped by
//! an XDP program on each veth, which a veth counts in its receive queue's `xdp_drops`. Run as
//! root with `--test-threads=1`. This host's kernel may lack bonding and 802.1Q: the last
//! test runs the others in a Debian kernel under qemu, where they are modules.

use std::{fs, thread, time::Duration};

use netprobe_integration::{
    vm::{kernels, Guest},
    *,
};
use serde_json::Value;

/// Set inside the guest: a kernel without the drivers is a failure there, not a skip.
const NEED_DRIVERS: &str = "NETPROBE_TEST_NEED_LINK_DRIVERS";

fn drivers_required() -> bool {
    std::env::var_os(NEED_DRIVERS).is_some()
}

fn ndjson(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect()
}

/// A device named `veth0.100` stacked on b's veth0 (a VLAN, else a macvlan), every frame b's
/// veth0 receives dropped by XDP: the monitor on `veth0.100` has veth0's receive drops as
/// its `nic_rx`, says where they come from, and keeps its own (empty) qdisc.
#[test]
fn a_vlan_s_nic_columns_are_the_device_s_underneath() {
    let vlan = kernel_has("vlan", "CONFIG_VLAN_8021Q");
    assert!(vlan || !drivers_required(), "no 802.1Q in the guest");
    let link = Link::new("bndv", 80);
    // Only the scenario's frames reach b: no IPv6 from a, no ARP (a permanent neighbour).
    link.a.sysctl("net.ipv6.conf.veth0.disable_ipv6", "1");
    link.static_neighbour_of_b_in_a();
    let kind: &[&str] = if vlan {
        &["type", "vlan", "id", "100"]
    } else {
        &["type", "macvlan", "mode", "bridge"]
    };
    let mut add = vec![
        "-n",
        &link.b.name,
        "link",
        "add",
        "link",
        "veth0",
        "name",
        "veth0.100",
    ];
    add.extend_from_slice(kind);
    sh("ip", &add);
    sh(
        "ip",
        &["-n", &link.b.name, "link", "set", "veth0.100", "up"],
    );
    let _drop = XdpDrop::attach(&link.b, "veth0");
    let log = fresh_log("bndv");
    let before = settled_rx_drops(&link.b, &["veth0".to_string()])[0];
    let monitor = Monitor::start(
        &link.b,
        &[
            "veth0.100",
            "1",
            log.to_str().unwrap(),
            "--count",
            "3",
            "--json",
        ],
    );
    let started = monitor.started.clone();
    send_udp(&link.a, link.b_port(9), &[0u8; 200], 2000);
    let run = monitor.wait();
    let dropped = veth_rx_drops(&link.b, "veth0") - before;
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        started.contains(
            "veth0.100 (NIC columns from veth0 underneath, whose ring carries all its traffic)"
        ),
        "{started}"
    );
    let rows = log_rows(&log);
    assert_eq!(rows.len(), 3);
    check_rows_consistent(&rows);
    eprintln!("veth0 rx drops {dropped}: {rows:#?}");
    assert!(dropped > 0, "XDP dropped nothing");
    assert_eq!(column_sum(&rows, "nic_rx"), dropped);
    assert_eq!(
        column_sum(&rows, "qdisc"),
        0,
        "the stacked device's own qdisc"
    );
    assert!(rows.iter().all(|r| r["interface"] == "veth0.100"));
    for object in ndjson(&run.stdout) {
        assert_eq!(object["interface"], "veth0.100");
        let source = &object["nic_source"];
        assert_eq!(source["via"], "lower", "{object}");
        assert_eq!(source["lowers"], serde_json::json!(["veth0"]));
        assert_eq!(source["devices"][0]["name"], "veth0");
        assert_eq!(source["devices"][0]["nic_rx"], object["drops"]["nic_rx"]);
        let missed = object["unavailable"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["column"] == "nic_missed")
            .expect("nic_missed unavailable");
        assert_eq!(
            missed["reason"],
            "veth0 underneath: virtual device: no hardware receive ring"
        );
    }
    let _ = fs::remove_file(log);
}

/// A bond (active-backup) of two veths, each dropping by XDP what a sends it, 300 frames to
/// one and 700 to the other: the bond's `nic_rx` is the sum of both slaves' drops over the
/// same intervals, the JSON gives each slave's share, the mode and the slaves' state, and the
/// start line names the mode and the slaves.
#[test]
fn a_bond_s_nic_columns_are_its_slaves_sum() {
    if !kernel_has("bond", "CONFIG_BONDING") {
        assert!(!drivers_required(), "no bonding in the guest");
        return;
    }
    let hosts = BondHosts::new("bnds", "active-backup", &["bndA", "bndB"], 82);
    let _drops: Vec<XdpDrop> = hosts
        .slaves
        .iter()
        .map(|s| XdpDrop::attach(&hosts.b, s))
        .collect();
    let log = fresh_log("bnds");
    let before = settled_rx_drops(&hosts.b, &hosts.slaves);
    let monitor = Monitor::start(
        &hosts.b,
        &[
            "bond0",
            "1",
            log.to_str().unwrap(),
            "--count",
            "3",
            "--json",
        ],
    );
    let started = monitor.started.clone();
    send_udp(&hosts.a, hosts.bond_addr_via(0, 9), &[0u8; 200], 300);
    send_udp(&hosts.a, hosts.bond_addr_via(1, 9), &[0u8; 200], 700);
    let run = monitor.wait();
    let deltas: Vec<u64> = hosts
        .slaves
        .iter()
        .zip(&before)
        .map(|(s, b)| veth_rx_drops(&hosts.b, s) - b)
        .collect();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        started.contains(
            "bond0 (bond bond0, mode active-backup, NIC columns the sum of slaves bndA, bndB)"
        ),
        "{started}"
    );
    let rows = log_rows(&log);
    assert_eq!(rows.len(), 3);
    check_rows_consistent(&rows);
    eprintln!("slave drops {deltas:?}: {rows:#?}");
    assert!(deltas.iter().all(|d| *d > 0), "{deltas:?}");
    assert_eq!(column_sum(&rows, "nic_rx"), deltas.iter().sum::<u64>());
    let objects = ndjson(&run.stdout);
    eprintln!("{started}{}", objects[0]);
    let mut shares = [0u64; 2];
    for object in &objects {
        let source = &object["nic_source"];
        assert_eq!(source["via"], "bond", "{object}");
        assert_eq!(source["bond_mode"], "active-backup");
        let devices = source["devices"].as_array().unwrap();
        let names: Vec<&str> = devices
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["bndA", "bndB"]);
        for (share, device) in shares.iter_mut().zip(devices) {
            assert_eq!(device["up"], true, "{device}");
            assert_eq!(device["counted"], true, "{device}");
            assert!(matches!(
                device["bond_state"].as_str(),
                Some("active" | "backup")
            ));
            *share += device["nic_rx"].as_u64().unwrap();
        }
    }
    assert_eq!(shares.to_vec(), deltas, "each slave's share");
    let _ = fs::remove_file(log);
}

/// A slave whose counter is already high joins mid-run, another leaves: each is said once in
/// the interval that saw it, and neither makes a spike or a negative delta (nothing is sent
/// meanwhile, so every NIC column stays 0).
#[test]
fn a_slave_joining_or_leaving_mid_run_is_said_never_a_spike() {
    if !kernel_has("bond", "CONFIG_BONDING") {
        assert!(!drivers_required(), "no bonding in the guest");
        return;
    }
    let hosts = BondHosts::new("bndc", "balance-rr", &["bndA", "bndB"], 86);
    // bndC's drop counter is made high before it joins (a slave cannot join with XDP on).
    hosts.add_veth("bndC");
    sh(
        "ip",
        &["-n", &hosts.a.name, "link", "set", &peer("bndC"), "up"],
    );
    sh("ip", &["-n", &hosts.b.name, "link", "set", "bndC", "up"]);
    sh(
        "ip",
        &[
            "-n",
            &hosts.a.name,
            "addr",
            "add",
            "198.18.88.1/24",
            "dev",
            &peer("bndC"),
        ],
    );
    sh(
        "ip",
        &[
            "-n",
            &hosts.a.name,
            "neigh",
            "replace",
            "198.18.88.2",
            "lladdr",
            "02:00:00:00:00:01",
            "dev",
            &peer("bndC"),
            "nud",
            "permanent",
        ],
    );
    {
        let _drop = XdpDrop::attach(&hosts.b, "bndC");
        send_udp(&hosts.a, "198.18.88.2:9".parse().unwrap(), &[0u8; 100], 500);
    }
    let high = veth_rx_drops(&hosts.b, "bndC");
    assert!(high > 0, "bndC's counter before it joins");
    let log = fresh_log("bndc");
    let monitor = Monitor::start(&hosts.b, &["bond0", "0.5", log.to_str().unwrap(), "--json"]);
    thread::sleep(Duration::from_millis(1200));
    hosts.enslave("bndC");
    thread::sleep(Duration::from_millis(1000));
    hosts.release("bndA");
    // Stopped after both changes, however slow they were (a guest under emulation).
    thread::sleep(Duration::from_millis(1100));
    signal(monitor.pid(), libc::SIGTERM);
    let run = monitor.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let rows = log_rows(&log);
    assert!(rows.len() >= 6, "{rows:#?}");
    check_rows_consistent(&rows);
    assert_eq!(column_sum(&rows, "nic_rx"), 0, "{rows:#?}");
    let notes: Vec<&str> = rows.iter().map(|r| r["notes"].as_str()).collect();
    eprintln!("notes {notes:#?}");
    for said in ["bndC joined bond0", "bndA left bond0"] {
        assert_eq!(
            notes.iter().filter(|n| n.contains(said)).count(),
            1,
            "{said}: {notes:#?}"
        );
    }
    // bndC is listed uncounted in the interval it joined in, counted after.
    let counted: Vec<Option<bool>> = ndjson(&run.stdout)
        .iter()
        .map(|o| {
            o["nic_source"]["devices"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["name"] == "bndC")
                .map(|d| d["counted"] == true)
        })
        .collect();
    let joined = counted
        .iter()
        .position(|c| c.is_some())
        .expect("bndC listed");
    assert_eq!(counted[joined], Some(false), "{counted:?}");
    assert!(
        counted[joined + 1..].iter().all(|c| *c == Some(true)),
        "{counted:?}"
    );
    let _ = fs::remove_file(log);
}

/// The three scenarios above in Debian's 6.12 under qemu, whose bonding and 8021q are modules:
/// there a missing driver fails them instead of skipping.
#[test]
fn bond_and_vlan_in_a_debian_guest() {
    let kernel = kernels()
        .into_iter()
        .find(|k| k.release.starts_with("6.12"))
        .expect("no cached 6.12 kernel: run `cargo xtask kernels`");
    let me = std::env::current_exe().expect("this test binary");
    let out = Guest::new(&kernel)
        .scenario_tools()
        .executable("ethtool")
        .scenario_modules()
        .module("bonding")
        .module("8021q")
        .module("macvlan")
        .executable(netprobe_bin().display().to_string())
        .executable(me.display().to_string())
        .command(format!(
            "mkdir -p /run /var && {{ [ -e /var/run ] || ln -s /run /var/run; }} && \
             {NEED_DRIVERS}=1 NETPROBE_BIN=/usr/local/bin/netprobe {} \
             --test-threads=1 --skip debian_guest --nocapture 2>&1",
            me.file_name().unwrap().to_string_lossy()
        ))
        .timeout(Duration::from_secs(300))
        .run()
        .unwrap_or_else(|e| panic!("{}: {e}", kernel.release));
    eprintln!(
        "{}: guest ran {:.0?}\n{}",
        kernel.release, out.wall, out.stdout
    );
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("test result: ok. 3 passed"),
        "{}",
        out.stdout
    );
}
