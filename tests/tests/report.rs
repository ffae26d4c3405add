//! `netprobe report` scenarios: each creates one real condition in its own namespaces and
//! checks that the report names it with the right id, severity, evidence and fix.

use std::{
    net::{TcpStream, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use netprobe_integration::*;
use serde_json::Value;

const HOLDER: &str = env!("CARGO_BIN_EXE_np-holder");

fn ids(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}:{}",
                f["id"].as_str().unwrap(),
                f["severity"].as_str().unwrap()
            )
        })
        .collect()
}

/// A namespace where nothing is wrong: traffic flows, nothing is lost, nothing is found.
#[test]
fn clean_namespace_has_no_findings() {
    let link = Link::new("rclean", 21);
    let server = link.b_port(7000);
    let (a, b) = (link.a.shared(), link.b.shared());
    // Both ends on one CPU: otherwise packets sent from two CPUs can overtake each other over
    // veth, and the spurious fast retransmits that follow are real retransmits the report
    // would rightly flag.
    let (report, _) = report_in(&link.a, "1", move || {
        bulk_transfer_pinned(&a, &b, server, 4 << 20, 0)
    });
    assert_eq!(
        ids(&report),
        Vec::<String>::new(),
        "{:#}",
        report["findings"]
    );
    // The transfer is visible: the report did sample this namespace's counters.
    assert!(
        report["protocols"]["Tcp"]["OutSegs"]["rate"]
            .as_f64()
            .unwrap()
            > 100.0
    );
    let veth = report["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "veth0")
        .unwrap_or_else(|| panic!("no veth0: {:#}", report["interfaces"]));
    assert!(veth["counters"]["tx_bytes"]["rate"].as_f64().unwrap() > 1e6);
}

/// A server that never closes: CLOSE_WAIT sockets, owner named.
#[test]
fn close_wait_leak_names_the_process() {
    let link = Link::new("rcw", 22);
    let server = link.b_port(7000);
    let holder = Holder::start(&link.b, HOLDER, &["close-wait", &server.to_string(), "5"]);
    link.a.run(move || {
        for _ in 0..5 {
            let s = TcpStream::connect(server).unwrap();
            drop(s); // FIN: the holder's end goes to CLOSE_WAIT and stays there.
        }
    });
    thread::sleep(Duration::from_millis(300));
    let (report, _) = report_in(&link.b, "0.3", || ());
    let f = findings(&report, "tcp_closewait");
    assert_eq!(f.len(), 1, "{:#}", report["findings"]);
    assert_eq!(f[0]["severity"], "warning");
    assert_eq!(f[0]["evidence"]["close_wait"], 5);
    let holder_row = &f[0]["evidence"]["holders"][0];
    assert_eq!(holder_row["comm"], "np-holder");
    assert_eq!(holder_row["pid"].as_u64(), Some(holder.pid() as u64));
    assert_eq!(holder_row["local_ports"], serde_json::json!([7000]));
    assert!(f[0]["fix"]
        .as_str()
        .unwrap()
        .contains(&format!("np-holder (pid {})", holder.pid())));
    assert_eq!(report["sockets"]["tcp_states"]["CLOSE_WAIT"], 5);
}

/// A listener that never accepts: its accept queue fills and handshakes overflow.
#[test]
fn accept_queue_overflow() {
    let link = Link::new("racc", 23);
    let server = link.b_port(7001);
    let holder = Holder::start(&link.b, HOLDER, &["no-accept", &server.to_string(), "4"]);
    let ns = link.a.shared();
    let overflows_before = link.b.netstat("TcpExt", "ListenOverflows");
    let (report, _) = report_in(&link.b, "1.5", move || {
        // Many clients at once: the first five fill the queue (backlog 4 allows 5), the rest
        // are refused at the SYN and counted as ListenOverflows.
        let clients: Vec<_> = (0..40)
            .map(|_| {
                ns.spawn(move || {
                    TcpStream::connect_timeout(&server, Duration::from_millis(1200)).ok()
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    let overflows_after = link.b.netstat("TcpExt", "ListenOverflows");
    let full = findings(&report, "accept_queue_full");
    assert_eq!(full.len(), 1, "{:#}", report["findings"]);
    assert_eq!(full[0]["severity"], "critical");
    assert_eq!(full[0]["evidence"]["port"], 7001);
    assert_eq!(full[0]["evidence"]["accept_queue_max"], 4);
    assert_eq!(
        full[0]["evidence"]["owners"][0]["pid"].as_u64(),
        Some(holder.pid() as u64)
    );
    let overflows = findings(&report, "listen_overflows");
    assert_eq!(overflows.len(), 1, "{:#}", report["findings"]);
    assert!(
        overflows[0]["evidence"]["listen_overflows_per_s"]
            .as_f64()
            .unwrap()
            >= 1.0
    );
    // The report's end value lies between the kernel's counter before and after the run.
    let reported = report["protocols"]["TcpExt"]["ListenOverflows"]["value"]
        .as_u64()
        .unwrap();
    assert!(
        reported > overflows_before && reported <= overflows_after,
        "{overflows_before} < {reported} <= {overflows_after}"
    );
}

/// A UDP socket nobody reads: receive-buffer errors, critical at this rate, socket named.
#[test]
fn udp_receive_buffer_errors() {
    let link = Link::new("rudp", 24);
    let sink = link.b_port(7002);
    let holder = Holder::start(&link.b, HOLDER, &["udp-sink", &sink.to_string(), "4096"]);
    let ns = link.a.shared();
    let before = link.b.snmp("Udp", "RcvbufErrors");
    let (report, _) = report_in(&link.b, "1", move || {
        send_udp(&ns, sink, &[0u8; 512], 3000);
    });
    let after = link.b.snmp("Udp", "RcvbufErrors");
    let f = findings(&report, "udp_rcvbuf_errors");
    assert_eq!(f.len(), 1, "{:#}", report["findings"]);
    assert_eq!(f[0]["severity"], "critical");
    let rate = f[0]["evidence"]["udp_rcvbuf_errors_per_s"]
        .as_f64()
        .unwrap();
    let window = report["interval_s"].as_f64().unwrap();
    // The report's count over its window is what the kernel counted (all sent inside it).
    assert!(
        (rate * window - (after - before) as f64).abs() < 1.0,
        "rate {rate} × {window} vs delta {}",
        after - before
    );
    let fullest = &f[0]["evidence"]["fullest_sockets"][0];
    assert_eq!(fullest["port"], 7002);
    assert_eq!(
        fullest["owners"][0]["pid"].as_u64(),
        Some(holder.pid() as u64)
    );
    // The holder's own SO_RCVBUF (4096) is the limit, far below rmem_max: the fix names it
    // (issue 12, item 4), never "raise rmem_max".
    assert_eq!(fullest["limited_by"], "so_rcvbuf", "{fullest:#}");
    let fix = f[0]["fix"].as_str().unwrap();
    assert!(
        fix.contains("sets SO_RCVBUF 4096") && fix.contains(&format!("(pid {})", holder.pid())),
        "{fix}"
    );
    assert!(!fix.contains("rmem_max="), "{fix}");
}

/// A tiny tbf shaper: qdisc drops on the sender's veth, with the qdisc named.
#[test]
fn qdisc_drops_from_a_tiny_tbf() {
    let link = Link::new("rtbf", 25);
    add_tiny_tbf(&link.a, "veth0");
    let to = link.b_port(9);
    let ns = link.a.shared();
    let (report, _) = report_in(&link.a, "1", move || {
        send_udp(&ns, to, &[0u8; 1000], 2000);
    });
    let f = findings(&report, "qdisc_drops");
    assert_eq!(f.len(), 1, "{:#}", report["findings"]);
    assert_eq!(f[0]["severity"], "critical");
    assert_eq!(f[0]["evidence"]["interface"], "veth0");
    assert_eq!(f[0]["evidence"]["qdisc"], "tbf");
    assert!(f[0]["fix"]
        .as_str()
        .unwrap()
        .contains("tc qdisc change dev veth0 root tbf"));
    let q = report["qdiscs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["kind"] == "tbf")
        .unwrap();
    assert!(q["drops"].as_u64().unwrap() > 100);
    assert_eq!(q["parent"], "root");
}

/// NIC level on veth: driver facts from the ethtool ioctl, and transmit drops when the peer
/// is down, reported as network errors with the right advice.
#[test]
fn veth_nic_counters_and_tx_drops() {
    let link = Link::new("rnic", 26);
    // Static neighbour so packets reach the device even with the peer down.
    link.static_neighbour_of_b_in_a();
    sh("ip", &["-n", &link.b.name, "link", "set", "veth0", "down"]);
    let to = link.b_port(9);
    let ns = link.a.shared();
    let (report, _) = report_in(&link.a, "1", move || {
        send_udp(&ns, to, b"x", 500);
    });
    let nic = report["nics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["ifname"] == "veth0")
        .expect("veth0 answered ethtool");
    assert_eq!(nic["driver"], "veth");
    assert!(nic["stats"].get("peer_ifindex").is_some(), "{nic:#}");
    let f = findings(&report, "network_errors");
    assert_eq!(f.len(), 1, "{:#}", report["findings"]);
    assert_eq!(f[0]["evidence"]["interface"], "veth0");
    assert!(
        f[0]["evidence"]["tx_drop_per_s"].as_f64().unwrap() >= 100.0,
        "{:#}",
        f[0]
    );
    assert_eq!(f[0]["severity"], "critical");
    assert!(
        f[0]["fix"].as_str().unwrap().contains("no carrier"),
        "{}",
        f[0]["fix"]
    );
}

/// Run inside a namespace, the report knows the host-wide sysctls (read in the initial
/// namespace, which a child's /proc/sys does not list), and a veth's tx drops — its peer's
/// input backlog refusing packets — get the backlog fix with the live value, never a
/// txqueuelen for a device that has no queue (issue 12, items 5 and 6).
#[test]
fn veth_backlog_drops_inside_a_namespace_get_the_backlog_fix() {
    let link = Link::new("rvb", 36);
    link.static_neighbours();
    steer_rx_to_cpu1(&link.b);
    let _backlog = SysctlGuard::set("net.core.netdev_max_backlog", "8");
    let (ns, to) = (link.a.shared(), link.b_port(9));
    let (report, ()) = report_in(&link.a, "1", move || {
        ns.run(move || {
            pin_to_cpu(0);
            let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
            let until = Instant::now() + Duration::from_millis(600);
            while Instant::now() < until {
                let _ = udp.send_to(b"rps", to);
            }
        })
    });
    assert_eq!(
        report["sysctls"]["net.core.netdev_max_backlog"], "8",
        "{:#}",
        report["sysctls"]
    );
    assert!(
        report["sysctls_from_initial_netns"]
            .as_array()
            .is_some_and(|names| names.iter().any(|n| n == "net.core.netdev_max_backlog")),
        "{:#}",
        report["sysctls_from_initial_netns"]
    );
    let f = findings(&report, "network_errors");
    let veth = f
        .iter()
        .find(|f| f["evidence"]["interface"] == "veth0")
        .unwrap_or_else(|| panic!("no veth0 finding: {:#}", report["findings"]));
    assert!(
        veth["evidence"]["tx_drop_per_s"].as_f64().unwrap() > 0.0,
        "{veth:#}"
    );
    let fix = veth["fix"].as_str().unwrap();
    assert!(!fix.contains("txqueuelen"), "{fix}");
    // Computed from the live 8: doubled, but never below the kernel's default of 1000.
    assert!(fix.contains("net.core.netdev_max_backlog=1000"), "{fix}");
    assert!(
        !fix.contains('‹'),
        "a placeholder instead of a value: {fix}"
    );
    // Nothing in the report proposes a queue length for the veth.
    let all = report["findings"].to_string();
    assert!(!all.contains("veth0 txqueuelen"), "{all}");
}

/// Unprivileged: the same binary succeeds and says what it skipped.
#[test]
fn unprivileged_report_lists_what_it_skipped() {
    let out = netprobe_unprivileged(&["report", "--json", "--interval", "0.2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let skipped = report["skipped"].as_array().unwrap();
    assert!(
        skipped.iter().any(|s| s["source"] == "socket owners"),
        "{skipped:#?}"
    );
    // What is readable is still there.
    assert!(report["protocols"]["Tcp"].is_object());
    assert!(!report["cpus"].as_array().unwrap().is_empty());
}

#[test]
fn unknown_interface_is_one_clear_line() {
    let (ok, stdout, stderr) = netprobe_once(&["report", "--interface", "np-nope0"]);
    assert!(!ok);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("--interface np-nope0: no such interface"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let (ok, _, stderr) = netprobe_once(&["report", "--interval", "0"]);
    assert!(!ok && stderr.contains("--interval 0"), "{stderr}");
}
