//! `netprobe monitor` as root: the kernel programs in count mode beside the counters. Each
//! scenario causes one kind of loss in namespaces and checks what the eBPF side says of it
//! against the kernel's own counter over the same intervals (drops of the right reason equal
//! the counter's delta; retransmitted segments equal RetransSegs' delta), names the right
//! reason, CPU and interface, and does not name a wrong one. ftrace beside it counts what
//! this host's sandbox kernel runs no program for (see `witness`). Run as root with
//! `--test-threads=1`.

use std::{fs, thread, time::Duration};

use netprobe_integration::*;
use serde_json::Value;

const HOLDER: &str = env!("CARGO_BIN_EXE_np-holder");

fn ndjson(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The `kernel.drop_sites` rows of every interval that match `keep`, summed.
fn site_drops(objects: &[Value], keep: impl Fn(&Value) -> bool) -> u64 {
    objects
        .iter()
        .flat_map(|o| {
            o["kernel"]["drop_sites"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|site| keep(site))
        .map(|site| site["count"].as_u64().unwrap())
        .sum()
}

/// A UDP socket with a 4 KB buffer nobody reads: the eBPF side's SOCKET_RCVBUFF drops in the
/// monitor's namespace equal RcvbufErrors' delta and the `udp_rcvbuf` column (plus any the
/// kernel ran no program for), on veth0, ingress, at the socket layer; the CSV's headline
/// names SOCKET_RCVBUFF and a CPU, and never another reason.
#[test]
fn udp_rcvbuf_drops_are_named_with_reason_cpu_and_interface() {
    let link = Link::new("meu", 53);
    let sink = link.b_port(7201);
    let _holder = Holder::start(&link.b, HOLDER, &["udp-sink", &sink.to_string(), "4096"]);
    let log = fresh_log("ebpf-udp");
    let before = link.b.monitor_counters();
    let witness = Ftrace::start(&["skb/kfree_skb"]);
    let monitor = Monitor::start(
        &link.b,
        &[
            "veth0",
            "1",
            log.to_str().unwrap(),
            "--count",
            "3",
            "--json",
        ],
    );
    assert!(
        monitor.started.contains("eBPF count mode"),
        "{}",
        monitor.started
    );
    send_udp(&link.a, sink, &[0u8; 512], 3000);
    let (run, rows, kernel) = finish(monitor, &link.b, &before, &log, 3);
    let withheld = Withheld::from_lines(witness.map(Ftrace::stop).unwrap_or_default())
        .count("kfree_skb:", "SOCKET_RCVBUFF");
    let objects = ndjson(&run.stdout);
    let seen = site_drops(&objects, |s| {
        s["own_netns"] == true && s["reason"] == "SOCKET_RCVBUFF"
    });
    eprintln!(
        "RcvbufErrors +{}, column {}, eBPF {seen}, withheld {withheld}",
        kernel["udp_rcvbuf"],
        column_sum(&rows, "udp_rcvbuf")
    );
    assert!(kernel["udp_rcvbuf"] > 100, "a 4 KB buffer must overflow");
    assert_eq!(column_sum(&rows, "udp_rcvbuf"), kernel["udp_rcvbuf"]);
    assert_eq!(
        seen + withheld,
        kernel["udp_rcvbuf"],
        "SOCKET_RCVBUFF drops"
    );
    for site in objects
        .iter()
        .flat_map(|o| {
            o["kernel"]["drop_sites"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|s| s["reason"] == "SOCKET_RCVBUFF" && s["own_netns"] == true)
    {
        assert_eq!(
            (
                &site["interface"],
                &site["direction"],
                &site["layer"],
                &site["role"]
            ),
            (
                &Value::from("veth0"),
                &Value::from("ingress"),
                &Value::from("socket"),
                &Value::from("loss")
            ),
            "{site}"
        );
    }
    for (row, object) in rows.iter().zip(&objects) {
        if cell(row, "udp_rcvbuf") > 0 {
            assert_eq!(row["top_drop_reason"], "SOCKET_RCVBUFF", "{row:?}");
            let cpu: u64 = row["top_drop_cpu"].parse().expect("a CPU number");
            assert_eq!(object["kernel"]["top_drop_cpu"].as_u64(), Some(cpu));
        } else {
            // Never named where it did not happen (a fresh link's IPv6 multicast for groups
            // nobody joined is dropped too, and may be named: it is a real drop).
            assert_ne!(row["top_drop_reason"], "SOCKET_RCVBUFF", "{row:?}");
        }
        assert_eq!(row["retrans_segs"], "0", "{row:?}");
    }
    let _ = fs::remove_file(log);
}

/// RPS steers b's input to CPU 1 while a floods from CPU 0 with netdev_max_backlog 8: the
/// console's softirq line says CPU 1's backlog was full and CPU 0 enqueued, with the fix
/// (the backlog and the steering), never the other way round.
#[test]
fn backlog_overflow_names_the_overflowing_and_the_enqueuing_cpu() {
    let (link, _backlog) = backlog_overflow_link("meb", 54);
    let log = fresh_log("ebpf-rps");
    let before = link.b.monitor_counters();
    let monitor = Monitor::start(
        &link.b,
        &["veth0", "1", log.to_str().unwrap(), "--count", "3"],
    );
    udp_flood_from_cpu0(&link, 20_000);
    let (run, rows, kernel) = finish(monitor, &link.b, &before, &log, 3);
    eprintln!("{}", run.stdout);
    assert!(kernel["softirq"] > 0 || column_sum(&rows, "softirq") > 0);
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("Softirq Dropped: "))
        .collect();
    assert!(!lines.is_empty(), "{}", run.stdout);
    for line in &lines {
        assert!(
            // CPU 0 enqueued most (the kernel may name a few more from CPU 1).
            line.contains("— CPU 1 backlog full, enqueued from CPU 0")
                && line.contains("; fix: sysctl -w net.core.netdev_max_backlog=1000")
                && line.contains("and spread the steering"),
            "{line}"
        );
        assert!(
            !line.contains("enqueued from CPU 1") && !line.contains("CPU 0 backlog full"),
            "{line}"
        );
    }
    // What got through the backlog found no socket on port 9: far more drops than the
    // backlog's, and the headline says so, dropped on CPU 1 where RPS steered them.
    for row in rows.iter().filter(|r| cell(r, "softirq") > 0) {
        assert_eq!(
            (
                row["top_drop_reason"].as_str(),
                row["top_drop_cpu"].as_str()
            ),
            ("NO_SOCKET", "1"),
            "{row:?}"
        );
    }
    let _ = fs::remove_file(log);
}

/// A bulk transfer losing 3 % of its segments on the way into b, monitored from the sender's
/// namespace: `retrans_segs` is RetransSegs' delta there, the kinds add up to it, and the
/// busiest flow is the transfer's. The drops are NETFILTER_DROP in b (another namespace):
/// listed with `own_netns` false, never as this namespace's.
#[test]
fn retransmitted_segments_equal_retrans_segs_with_their_kinds_and_flow() {
    let link = Link::new("mer", 55);
    let port = 7203;
    let _loss = NftTable::input_loss(&link.b, "np_mer", port, 3);
    let log = fresh_log("ebpf-rtx");
    let retrans_before = link.a.snmp("Tcp", "RetransSegs");
    let witness = Ftrace::start(&["tcp/tcp_retransmit_skb"]);
    let monitor = Monitor::start(&link.a, &["veth0", "0.5", log.to_str().unwrap(), "--json"]);
    bulk_transfer(&link.a, &link.b, link.b_port(port), 8 << 20);
    thread::sleep(Duration::from_millis(700));
    signal(monitor.pid(), libc::SIGTERM);
    let run = monitor.wait();
    let retrans = link.a.snmp("Tcp", "RetransSegs") - retrans_before;
    let withheld = Withheld::from_lines(witness.map(Ftrace::stop).unwrap_or_default())
        .count("tcp_retransmit_skb:", "saddr=198.18.55.1 ");
    assert!(run.status.success(), "{}", run.stderr);
    let rows = log_rows(&log);
    let objects = ndjson(&run.stdout);
    assert_eq!(rows.len(), objects.len());
    let column: u64 = rows.iter().map(|r| cell(r, "retrans_segs")).sum();
    eprintln!("RetransSegs +{retrans}, column {column}, withheld firings {withheld}");
    assert!(retrans > 0, "3 % loss must retransmit");
    if withheld == 0 {
        assert_eq!(column, retrans, "retrans_segs = RetransSegs' delta");
    } else {
        // A withheld firing hides its segments (one or more) from the programs.
        assert!(
            column < retrans && column + withheld * 64 >= retrans,
            "{column} {retrans}"
        );
    }
    for (row, object) in rows.iter().zip(&objects) {
        let kernel = &object["kernel"];
        assert_eq!(
            kernel["retrans_segs"].as_u64(),
            Some(cell(row, "retrans_segs"))
        );
        let kinds: u64 = kernel["retrans_segs_by_kind"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["segs"].as_u64().unwrap())
            .sum();
        // Kinds are the sent segments; RetransSegs adds those refused after counting.
        assert!(kinds <= cell(row, "retrans_segs"), "{kernel}");
        if let Some(top) = kernel["retransmitting_flows"]
            .as_array()
            .and_then(|f| f.first())
        {
            let flow = top["flow"].as_str().unwrap();
            assert!(
                flow.starts_with("198.18.55.1:")
                    && flow.ends_with(&format!("> 198.18.55.2:{port}")),
                "{flow}"
            );
        }
    }
    let nft_drops = site_drops(&objects, |s| s["reason"] == "NETFILTER_DROP");
    let own_nft = site_drops(&objects, |s| {
        s["reason"] == "NETFILTER_DROP" && s["own_netns"] == true
    });
    assert!(nft_drops > 0, "the peer's firewall drops are the host's");
    assert_eq!(own_nft, 0, "not this namespace's");
    let _ = fs::remove_file(log);
}

/// `--counters-only` as root loads nothing and says so; the headline columns stay empty.
#[test]
fn counters_only_loads_no_program() {
    let ns = Netns::new("meo");
    let log = fresh_log("ebpf-off");
    let monitor = Monitor::start(
        &ns,
        &[
            "lo",
            "0.2",
            log.to_str().unwrap(),
            "--count",
            "2",
            "--counters-only",
        ],
    );
    assert!(
        monitor.started.contains("counters only (--counters-only)"),
        "{}",
        monitor.started
    );
    let run = monitor.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let rows = log_rows(&log);
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(
            (
                row["retrans_segs"].as_str(),
                row["top_drop_reason"].as_str()
            ),
            ("", "")
        );
    }
    let _ = fs::remove_file(log);
}
