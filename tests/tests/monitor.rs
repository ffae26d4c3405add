//! `netprobe monitor`: each scenario causes one kind of drop in namespaces, runs the monitor
//! inside the namespace with a 1 s interval and `--count`, and checks its CSV rows against
//! the kernel counters over the same intervals: the right column moved by exactly the
//! counter's delta, and the others did not. Run as root with `--test-threads=1`.

use std::{
    fs,
    net::TcpStream,
    time::{Duration, Instant},
};

use netprobe_integration::*;
use serde_json::Value;

const HOLDER: &str = env!("CARGO_BIN_EXE_np-holder");

/// A listener that never accepts (backlog 4): the SYNs beyond its full accept queue are
/// ListenOverflows, in `accept_queue` and nowhere else (not `syn_queue`: with syncookies on,
/// a full SYN queue sends cookies instead of dropping). The JSON rows equal the CSV rows and
/// say that a veth has no hardware ring.
#[test]
fn accept_queue_overflow_is_listen_overflows() {
    let link = Link::new("macc", 40);
    let server = link.b_port(7101);
    let _holder = Holder::start(&link.b, HOLDER, &["no-accept", &server.to_string(), "4"]);
    let log = fresh_log("accept");
    let before = link.b.monitor_counters();
    let monitor = Monitor::start(
        &link.b,
        &[
            "veth0",
            "1",
            log.to_str().unwrap(),
            "--count",
            "4",
            "--json",
        ],
    );
    let clients: Vec<_> = (0..40)
        .map(|_| {
            link.a.spawn(move || {
                TcpStream::connect_timeout(&server, Duration::from_millis(1200)).ok()
            })
        })
        .collect();
    for c in clients {
        let _ = c.join().unwrap();
    }
    let (run, rows, kernel) = finish(monitor, &link.b, &before, &log, 4);
    eprintln!("kernel deltas {kernel:?}");
    let overflows = column_sum(&rows, "accept_queue");
    assert!(overflows > 0, "no overflow: {rows:#?}");
    assert_eq!(overflows, kernel["accept_queue"], "ListenOverflows delta");
    assert_eq!(kernel["syn_queue"], 0);
    check_only_moved(&rows, "accept_queue", &[]);

    let objects: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    assert_eq!(objects.len(), rows.len());
    for (object, row) in objects.iter().zip(&rows) {
        assert_eq!(object["iteration"].as_u64(), Some(cell(row, "iteration")));
        assert_eq!(
            object["drops"]["accept_queue"].as_u64(),
            Some(cell(row, "accept_queue"))
        );
        assert_eq!(object["severity"], row["severity"].as_str());
        let unavailable: Vec<&str> = object["unavailable"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["column"].as_str().unwrap())
            .collect();
        // A veth has per-queue receive drops, no transmit drop statistic and no ring.
        assert_eq!(unavailable, ["nic_tx", "nic_missed"], "{object}");
    }
    let _ = fs::remove_file(log);
}

/// Syncookies off (in this namespace only) and the listener's SYN-ACKs dropped on their way
/// into the clients: no handshake completes, the SYN queue of a backlog-4 listener fills, and
/// every further SYN is TCPReqQFullDrop, in `syn_queue` only. The accept queue never fills,
/// so `accept_queue` stays 0: the drop is never counted twice.
#[test]
fn syn_queue_full_is_reqq_full_drop_never_accept_queue() {
    let link = Link::new("msyn", 46);
    link.b.sysctl("net.ipv4.tcp_syncookies", "0");
    let server = link.b_port(7103);
    let _holder = Holder::start(&link.b, HOLDER, &["no-accept", &server.to_string(), "4"]);
    let _no_synack = NftTable::input(&link.a, "np_synack", "tcp sport 7103 drop");
    let log = fresh_log("syn");
    let before = link.b.monitor_counters();
    let monitor = Monitor::start(
        &link.b,
        &["veth0", "1", log.to_str().unwrap(), "--count", "4"],
    );
    let clients: Vec<_> = (0..20)
        .map(|_| {
            link.a.spawn(move || {
                TcpStream::connect_timeout(&server, Duration::from_millis(1500)).ok()
            })
        })
        .collect();
    for c in clients {
        assert!(c.join().unwrap().is_none(), "a handshake completed");
    }
    let (_, rows, kernel) = finish(monitor, &link.b, &before, &log, 4);
    eprintln!("kernel deltas {kernel:?}");
    let dropped = column_sum(&rows, "syn_queue");
    assert!(dropped > 0, "the SYN queue must fill: {rows:#?}");
    assert_eq!(dropped, kernel["syn_queue"], "TCPReqQFullDrop delta");
    assert_eq!(kernel["accept_queue"], 0);
    check_only_moved(&rows, "syn_queue", &[]);
    let _ = fs::remove_file(log);
}

/// A UDP socket with a 4 KB receive buffer that nobody reads: `udp_rcvbuf` is exactly
/// RcvbufErrors' delta (Udp + Udp6), and no other column moves.
#[test]
fn udp_receive_buffer_overflow_is_rcvbuf_errors() {
    let link = Link::new("mudp", 41);
    let sink = link.b_port(7102);
    let _holder = Holder::start(&link.b, HOLDER, &["udp-sink", &sink.to_string(), "4096"]);
    let log = fresh_log("udp");
    let before = link.b.monitor_counters();
    let monitor = Monitor::start(
        &link.b,
        &["veth0", "1", log.to_str().unwrap(), "--count", "3"],
    );
    let sent = send_udp(&link.a, sink, &[0u8; 512], 3000);
    let (run, rows, kernel) = finish(monitor, &link.b, &before, &log, 3);
    assert_eq!(sent, 3000);
    eprintln!("kernel deltas {kernel:?}");
    let errors = column_sum(&rows, "udp_rcvbuf");
    assert!(errors > 100, "a 4 KB buffer must overflow: {rows:#?}");
    assert_eq!(errors, kernel["udp_rcvbuf"]);
    check_only_moved(&rows, "udp_rcvbuf", &[]);
    // The console lines name the column.
    assert!(
        run.stdout.contains("UDP Rcvbuf Errors: ") && run.stdout.contains("| ✗ CRIT | Drops: "),
        "{}",
        run.stdout
    );
    let _ = fs::remove_file(log);
}

/// A tiny tbf on the sender's veth: `qdisc` is the root qdisc's drops as tc counts them.
/// UDP's SndbufErrors rises with them (ip_send_skb turns the qdisc's NET_XMIT_DROP into
/// ENOBUFS, which udp_send_skb counts): `udp_sndbuf` equals its own counter, and no other
/// column moves.
#[test]
fn qdisc_drops_from_a_tiny_tbf() {
    let link = Link::new("mtbf", 42);
    add_tiny_tbf(&link.a, "veth0");
    let log = fresh_log("tbf");
    let before = link.a.monitor_counters();
    let tc_before = tbf_drops(&link.a);
    let monitor = Monitor::start(
        &link.a,
        &["veth0", "1", log.to_str().unwrap(), "--count", "3"],
    );
    send_udp(&link.a, link.b_port(9), &[0u8; 1000], 2000);
    let (_, rows, kernel) = finish(monitor, &link.a, &before, &log, 3);
    let tc_delta = tbf_drops(&link.a) - tc_before;
    eprintln!("kernel deltas {kernel:?}, tbf drops {tc_delta}");
    let qdisc = column_sum(&rows, "qdisc");
    assert!(qdisc > 100, "{rows:#?}");
    assert_eq!(qdisc, tc_delta, "tc's drops of the root tbf");
    assert_eq!(column_sum(&rows, "udp_sndbuf"), kernel["udp_sndbuf"]);
    assert!(kernel["udp_sndbuf"] <= qdisc);
    check_only_moved(&rows, "qdisc", &["udp_sndbuf"]);
    let _ = fs::remove_file(log);
}

/// The root tbf's drops in `ns`, from `tc -s -j`.
fn tbf_drops(ns: &Netns) -> u64 {
    let json = ns.exec("tc", &["-s", "-j", "qdisc", "show", "dev", "veth0"]);
    let qdiscs: Value = serde_json::from_str(&json).expect("tc -j");
    qdiscs
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["kind"] == "tbf")
        .and_then(|q| q["drops"].as_u64())
        .expect("a tbf with drops")
}

/// RPS steers b's input to CPU 1 while a floods from CPU 0, with netdev_max_backlog 8: the
/// backlog overflows, `softirq` is softnet_stat's dropped (all CPUs) over the same
/// intervals, and no other column of b's moves (a veth's per-queue drops stay 0: they count
/// the XDP path only).
#[test]
fn backlog_overflow_with_rps_is_softnet_dropped() {
    let (link, _backlog) = backlog_overflow_link("mrps", 43);
    let log = fresh_log("rps");
    let before = link.b.monitor_counters();
    let monitor = Monitor::start(
        &link.b,
        &["veth0", "1", log.to_str().unwrap(), "--count", "3"],
    );
    udp_flood_from_cpu0(&link, 20_000);
    let (_, rows, kernel) = finish(monitor, &link.b, &before, &log, 3);
    eprintln!("kernel deltas {kernel:?}");
    let dropped = column_sum(&rows, "softirq");
    assert!(dropped > 0, "a backlog of 8 must overflow: {rows:#?}");
    assert_eq!(dropped, kernel["softirq"], "softnet_stat dropped delta");
    check_only_moved(&rows, "softirq", &[]);
    let _ = fs::remove_file(log);
}

/// logrotate without copytruncate: the log is moved away and SIGHUP makes the monitor open
/// the path anew. Every iteration is in exactly one of the two files, in order, and the new
/// file starts with the header; SIGTERM then ends the run with exit 0 after a last, partial
/// row that says so.
#[test]
fn sighup_rotation_loses_and_duplicates_no_interval() {
    let ns = Netns::new("mhup");
    let log = fresh_log("hup");
    let rotated = log.with_extension("csv.1");
    let monitor = Monitor::start(&ns, &["lo", "0.5", log.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(1300));
    fs::rename(&log, &rotated).unwrap();
    // Rows written between the move and the signal still go to the moved file.
    std::thread::sleep(Duration::from_millis(600));
    signal(monitor.pid(), libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(1600));
    signal(monitor.pid(), libc::SIGTERM);
    let run = monitor.wait();
    assert!(run.status.success(), "{:?} {}", run.status, run.stderr);
    let old = log_rows(&rotated);
    let new = log_rows(&log);
    let iterations: Vec<u64> = old
        .iter()
        .chain(&new)
        .map(|r| cell(r, "iteration"))
        .collect();
    eprintln!(
        "old {} rows, new {} rows: {iterations:?}",
        old.len(),
        new.len()
    );
    assert!(old.len() >= 3 && new.len() >= 2, "{iterations:?}");
    let expected: Vec<u64> = (1..=iterations.len() as u64).collect();
    assert_eq!(iterations, expected);
    let last = new.last().unwrap();
    assert!(
        last["notes"].contains("partial interval: stopped by SIGTERM"),
        "{last:?}"
    );
    assert!(
        new[..new.len() - 1]
            .iter()
            .all(|r| !r["notes"].contains("partial")),
        "{new:#?}"
    );
    let _ = fs::remove_file(log);
    let _ = fs::remove_file(rotated);
}

/// The monitored interface removed mid-run: the interval says so, its columns are 0 (never
/// negative), and the monitor goes on to its count and exits 0.
#[test]
fn interface_removal_is_said_and_survived() {
    let link = Link::new("mdel", 44);
    let log = fresh_log("del");
    let monitor = Monitor::start(
        &link.a,
        &["veth0", "0.5", log.to_str().unwrap(), "--count", "5"],
    );
    std::thread::sleep(Duration::from_millis(1200));
    sh("ip", &["-n", &link.a.name, "link", "del", "veth0"]);
    let run = monitor.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let rows = log_rows(&log);
    assert_eq!(rows.len(), 5);
    check_rows_consistent(&rows);
    let removed: Vec<_> = rows
        .iter()
        .filter(|r| r["notes"].contains("veth0 removed"))
        .collect();
    assert_eq!(removed.len(), 1, "{rows:#?}");
    assert!(
        rows.iter().any(|r| r["notes"].contains("veth0 absent")),
        "{rows:#?}"
    );
    let _ = fs::remove_file(log);
}

/// One clear line on stderr and a non-zero exit for each bad input; a log with another
/// header is left as it was.
#[test]
fn bad_input_is_one_clear_line() {
    let ns = Netns::new("mbad");
    let other = fresh_log("other");
    fs::write(&other, "time,drops\n1,2\n").unwrap();
    let missing_dir =
        std::env::temp_dir().join(format!("np-no-such-dir-{}/x.csv", std::process::id()));
    let cases: [(Vec<&str>, &str); 6] = [
        (
            vec!["eth0", "1", "--no-log"],
            "interface eth0: no such interface",
        ),
        (
            vec!["lo", "0", "--no-log"],
            "interval 0: must be a positive number",
        ),
        (
            vec!["lo", "-1", "--no-log"],
            "interval -1: must be a positive number",
        ),
        (
            vec!["lo", "1", missing_dir.to_str().unwrap()],
            "No such file or directory",
        ),
        (vec!["lo", "1", "/tmp"], "Is a directory"),
        (
            vec!["lo", "1", other.to_str().unwrap()],
            "another header (\"time,drops\")",
        ),
    ];
    for (args, expected) in cases {
        let started = Instant::now();
        let out = ns_monitor_once(&ns, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("netprobe: error: ") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{args:?} waited"
        );
    }
    assert_eq!(fs::read_to_string(&other).unwrap(), "time,drops\n1,2\n");
    let _ = fs::remove_file(other);
}

fn ns_monitor_once(ns: &Netns, args: &[&str]) -> std::process::Output {
    std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(netprobe_bin())
        .arg("monitor")
        .args(args)
        .arg("--count")
        .arg("1")
        .output()
        .expect("netprobe monitor")
}

/// A monitor stopped (SIGSTOP) across several deadlines: the row after it says how late it
/// was and how many intervals it spans, no iteration is skipped or repeated, and the rows
/// around it keep the period (the schedule does not drift).
#[test]
fn a_late_interval_is_reported_never_skipped() {
    let ns = Netns::new("mlate");
    let log = fresh_log("late");
    let monitor = Monitor::start(&ns, &["lo", "0.5", log.to_str().unwrap(), "--count", "6"]);
    std::thread::sleep(Duration::from_millis(700));
    signal(monitor.pid(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1700));
    signal(monitor.pid(), libc::SIGCONT);
    let run = monitor.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let rows = log_rows(&log);
    let iterations: Vec<u64> = rows.iter().map(|r| cell(r, "iteration")).collect();
    assert_eq!(iterations, [1, 2, 3, 4, 5, 6]);
    // One row spans the deadlines the stop went over (a loaded machine may make another
    // row a little late, never spanning).
    let spanning: Vec<_> = rows
        .iter()
        .filter(|r| r["notes"].contains("one row for"))
        .collect();
    assert_eq!(spanning.len(), 1, "{rows:#?}");
    assert!(
        spanning[0]["notes"].contains("late by"),
        "{:?}",
        spanning[0]
    );
    let seconds = |r: &std::collections::BTreeMap<String, String>| -> f64 {
        r["interval_s"].parse().unwrap()
    };
    assert!(seconds(spanning[0]) >= 1.5, "{:?}", spanning[0]);
    for row in rows.iter().filter(|r| !r["notes"].contains("one row for")) {
        let s = seconds(row);
        assert!(s > 0.0 && s < 1.0, "{row:?}");
    }
    let _ = fs::remove_file(log);
}

/// Down, renamed away, renamed back and up: each state is said in the interval that saw it,
/// and the monitor goes on.
#[test]
fn interface_down_rename_and_back_are_said() {
    let link = Link::new("mren", 45);
    let log = fresh_log("ren");
    let monitor = Monitor::start(
        &link.a,
        &["veth0", "0.5", log.to_str().unwrap(), "--count", "8"],
    );
    let ip = |args: &[&str]| {
        let mut all = vec!["-n", link.a.name.as_str(), "link", "set"];
        all.extend_from_slice(args);
        sh("ip", &all);
    };
    std::thread::sleep(Duration::from_millis(700));
    ip(&["veth0", "down"]);
    std::thread::sleep(Duration::from_millis(1100));
    ip(&["veth0", "name", "veth9"]);
    std::thread::sleep(Duration::from_millis(1100));
    ip(&["veth9", "name", "veth0"]);
    ip(&["veth0", "up"]);
    let run = monitor.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let rows = log_rows(&log);
    assert_eq!(rows.len(), 8);
    check_rows_consistent(&rows);
    let notes: Vec<&str> = rows.iter().map(|r| r["notes"].as_str()).collect();
    for expected in [
        "veth0 went down",
        "veth0 renamed to veth9",
        "veth0 appeared (ifindex",
    ] {
        assert_eq!(
            notes.iter().filter(|n| n.contains(expected)).count(),
            1,
            "{expected}: {notes:#?}"
        );
    }
    let _ = fs::remove_file(log);
}

/// A tun device has no driver statistics and no hardware ring: every NIC column is 0 and the
/// JSON says each is unavailable, with the reason.
#[test]
fn tun_has_no_nic_columns_and_says_so() {
    let ns = Netns::new("mtun");
    ns.exec("ip", &["tuntap", "add", "dev", "tun0", "mode", "tun"]);
    let monitor = Monitor::start(&ns, &["tun0", "0.3", "--no-log", "--count", "2", "--json"]);
    let run = monitor.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let objects: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    assert_eq!(objects.len(), 2);
    for object in &objects {
        let unavailable: Vec<&str> = object["unavailable"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["reason"].as_str().is_some_and(|r| !r.is_empty()))
            .map(|u| u["column"].as_str().unwrap())
            .collect();
        assert_eq!(unavailable, ["nic_rx", "nic_tx", "nic_missed"], "{object}");
        for column in ["nic_rx", "nic_tx", "nic_missed"] {
            assert_eq!(object["drops"][column], 0, "{object}");
        }
        assert_eq!(object["link"]["present"], true);
    }
    assert!(
        monitor_started_says_always_zero(&run.stderr),
        "{}",
        run.stderr
    );
}

/// The start line's companion names the columns this interface cannot have.
fn monitor_started_says_always_zero(stderr_after_start: &str) -> bool {
    stderr_after_start
        .lines()
        .next()
        .is_some_and(|l| l.starts_with("netprobe monitor: always 0 here: nic_rx: "))
}

/// Without root the monitor runs all the same, on counters, and says so once at start.
#[test]
fn unprivileged_monitor_says_counters_only() {
    let out = netprobe_unprivileged(&["monitor", "lo", "0.2", "--no-log", "--count", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr
            .matches("not root: counters only (drop reasons, CPUs and retransmits need root)")
            .count(),
        1,
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.contains("] #000")).count(),
        2,
        "{stdout}"
    );
    assert!(!stdout.contains("unreadable"), "{stdout}");
}
