//! The kernel matrix's scenario set, run on the kernel under test (inside a qemu guest, or on
//! this host): one `netprobe trace` attached once, host-wide, while each scenario runs in its
//! own pair of namespaces created after the hooks are attached. Every namespace is new, so its
//! counters start at zero inside the trace's window and the final reading is the window's
//! delta. What comes back is measurements only; `super::check` judges them on the host.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{
    bulk_transfer, drop_reason_filter, netprobe_once, sh, steer_rx_to_cpu1, udp_flood_from_cpu0,
    wait_no_programs, AfterFin, Ftrace, Link, NftTable, SinkOptions, SysctlGuard, TcpSink,
    TraceOutput, Tracer, Withheld,
};

/// Everything the host needs to judge one kernel.
pub fn run_all() -> Value {
    let started = Instant::now();
    let tracer = Tracer::start(&[]);
    let attach_s = started.elapsed().as_secs_f64();
    let witness = Ftrace::start(&[
        "tcp/tcp_retransmit_skb",
        "tcp/tcp_retransmit_synack",
        "tcp/tcp_probe",
    ]);
    let lossy = Lossy::run();
    let spurious = super::spurious::Spurious::run();
    backlog_overflow();
    let syn = Handshake::run(Side::Client);
    let synack = Handshake::run(Side::Server);
    let tail = TailLoss::run(63, Dark::Data);
    let acks = TailLoss::run(65, Dark::Acks);
    let after_fin = after_fin();
    let (report_ok, report_err) = report();
    let udp_socket = super::sockets::overflowing_udp_socket();
    let monitor = super::monitor::monitored_udp_overflow();
    let storm = super::storm::sampled_udp_storm();
    let cost = super::cost::drop_cost();
    let count = super::count::counted_udp_storm();
    let (reasons_ok, reasons_out, reasons_err) = netprobe_once(&["reasons"]);
    let out = tracer.stop();
    let witnessed = witness.is_some();
    let withheld = Withheld::from_lines(witness.map(Ftrace::stop).unwrap_or_default());
    let left = wait_no_programs(Duration::from_secs(20));
    // The other way to hook the timer functions, where fentry is preferred: kprobes.
    let kprobe_tracer = Tracer::start(&["--function-hooks", "kprobe"]);
    let kprobe_tail = TailLoss::run(64, Dark::Data);
    let kprobe_out = kprobe_tracer.stop();
    // A netprobe that cannot clean up (kill -9) must leave nothing either: every attachment,
    // kprobes included, belongs to a file descriptor the kernel closes.
    Tracer::start(&["--function-hooks", "kprobe"]).kill();
    let left_after_kill = wait_no_programs(Duration::from_secs(20));
    json!({
        "kernel": sh("uname", &["-r"]).trim(),
        "attach_s": attach_s,
        "success": out.success,
        "stderr_tail": tail_of(&out.stderr, 4000),
        "hooks": out.records.first().map(|h| h["hooks"].clone()).unwrap_or(Value::Null),
        "events": out.summary()["events"].clone(),
        "kernel_skipped": out.summary()["kernel_skipped"].clone(),
        "lossy": lossy.measure(&out, &withheld),
        "spurious": spurious.measure(&out),
        "backlog": out.summary()["backlog"].clone(),
        "syn": syn.measure(&out, &withheld),
        "synack": synack.measure(&out, &withheld),
        "tail": tail.measure(&out, &withheld),
        "ack_loss": acks.measure(&out, &withheld),
        "after_fin": measure_after_fin(&after_fin.0, &out, after_fin.1.as_ref()),
        "kprobe": {
            "success": kprobe_out.success,
            "hooks": kprobe_out.records.first().map(|h| h["hooks"].clone()).unwrap_or(Value::Null),
            "tail": kprobe_tail.measure(&kprobe_out, &Withheld::default()),
        },
        "report": { "ok": report_ok, "error": report_err },
        "udp_socket": udp_socket,
        "monitor": monitor,
        "storm": storm,
        "cost": cost,
        "count": count,
        "reasons": {
            "ok": reasons_ok,
            "netfilter_drop": reasons_out.contains("NETFILTER_DROP"),
            "stderr": tail_of(&reasons_err, 500),
        },
        // Firings ftrace saw that the kernel ran no program for (see `witness`), or null
        // without a witness.
        "withheld": if witnessed { json!(withheld.total()) } else { Value::Null },
        "programs_left": left,
        "programs_left_after_kill": left_after_kill,
    })
}

fn tail_of(s: &str, n: usize) -> String {
    s.chars()
        .rev()
        .take(n)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

/// `netprobe report --json` parses and names its sections.
fn report() -> (bool, String) {
    let (ok, stdout, stderr) = netprobe_once(&["report", "--json", "--interval", "0.5"]);
    let parsed: Option<Value> = serde_json::from_str(&stdout).ok();
    let good = ok && parsed.as_ref().is_some_and(|v| v["findings"].is_array());
    (
        good,
        if good {
            String::new()
        } else {
            tail_of(&stderr, 500)
        },
    )
}

/// The summary's retransmit flows of a namespace.
fn retransmit_flows(out: &TraceOutput, netns: u64) -> Vec<&Value> {
    out.summary()["retransmits"]["flows"]
        .as_array()
        .map(|flows| flows.iter().filter(|f| f["netns"] == netns).collect())
        .unwrap_or_default()
}

fn sum(flows: &[&Value], get: impl Fn(&Value) -> u64) -> u64 {
    flows.iter().map(|f| get(f)).sum()
}

/// Retransmit totals of a namespace, by kind, beside its own Tcp/TcpExt counters.
fn retransmits_of(out: &TraceOutput, link: &Link, host: u8, withheld: &Withheld) -> Value {
    let ns = if host == 1 { &link.a } else { &link.b };
    let flows = retransmit_flows(out, ns.inode());
    let local = link.addr(host, false);
    // What the kernel counted: what was sent, and the attempts (6.17+) that failed after being
    // counted (RetransSegs counts their segments, TCPSynRetrans their SYNs).
    let failed = |f: &Value| f["outcomes"]["failed_after_counted"].clone();
    let kind = |k: &str| {
        sum(&flows, |f| {
            f["kinds"][k].as_u64().unwrap_or(0) + failed(f)["by_kind"][k].as_u64().unwrap_or(0)
        })
    };
    let timer = |k: &str| {
        sum(&flows, |f| {
            f["kind_detail"][k]["timer"].as_u64().unwrap_or(0)
        })
    };
    json!({
        "netns": ns.inode(),
        "segs": sum(&flows, |f| {
            f["segs"].as_u64().unwrap_or(0) + failed(f)["segs"].as_u64().unwrap_or(0)
        }),
        "failed": sum(&flows, |f| f["failed"].as_u64().unwrap_or(0)),
        "dsacked": sum(&flows, |f| f["dsacked_segs"].as_u64().unwrap_or(0)),
        "kinds": {
            "fast": kind("fast"), "rto": kind("rto"), "tlp": kind("tlp"), "syn": kind("syn"),
            "synack": kind("synack"), "other": kind("other"),
        },
        "rto_timer": timer("rto"),
        // Retransmits of this namespace the kernel ran no program for (see `witness`).
        "withheld": withheld.count("tcp_retransmit_skb:", &format!("saddr={local} "))
            + withheld.count("tcp_retransmit_synack:", &format!("saddr={local} ")),
        // Kept whole for the failure message: which flow, outcome and kind an attempt went to.
        "flows": flows,
        "counters": {
            "RetransSegs": ns.snmp("Tcp", "RetransSegs"),
            "TCPSynRetrans": ns.netstat("TcpExt", "TCPSynRetrans"),
            "TCPLossProbes": ns.netstat("TcpExt", "TCPLossProbes"),
            "TCPTimeouts": ns.netstat("TcpExt", "TCPTimeouts"),
            "TCPFastRetrans": ns.netstat("TcpExt", "TCPFastRetrans"),
        },
    })
}

/// A UDP flood from CPU 0 that RPS steers onto CPU 1, whose input backlog holds 8 packets:
/// per-CPU backlog drops, counted by softnet_stat on the overflowing CPU.
fn backlog_overflow() {
    let link = Link::new("mxb", 66);
    link.static_neighbours();
    steer_rx_to_cpu1(&link.b);
    let _backlog = SysctlGuard::set("net.core.netdev_max_backlog", "8");
    udp_flood_from_cpu0(&link, 5_000);
    thread::sleep(Duration::from_millis(300));
}

/// A bulk transfer a → b with 3 % of the segments dropped at b's INPUT hook.
struct Lossy {
    link: Link,
    rule: NftTable,
}

const LOSSY_PORT: u16 = 5001;

impl Lossy {
    fn run() -> Lossy {
        let link = Link::new("mxl", 60);
        link.static_neighbours();
        // Data segments only (`meta length`): a lost handshake ACK would make the first data
        // segments reach the socket in SYN-RECV, where tcp_probe does not fire, yet the kernel
        // counts their out-of-order arrival (see README: what the receive hook misses).
        let rule = NftTable::input(
            &link.b,
            "mxl",
            &format!(
                "tcp dport {LOSSY_PORT} meta length > 200 numgen random mod 100 < 3 counter drop"
            ),
        );
        // A transfer whose few losses all fall at the end of a burst opens no hole (seen once
        // on 6.1 under qemu: TCPOFOQueue 0, and netprobe 0). The checks need holes, so the
        // transfer is repeated on the same link, whose counters add up, until one opened (at
        // most three times).
        for _ in 0..3 {
            bulk_transfer(&link.a, &link.b, link.b_port(LOSSY_PORT), 8 << 20);
            if link.b.netstat("TcpExt", "TCPOFOQueue") > 0 {
                break;
            }
        }
        Lossy { link, rule }
    }

    fn measure(&self, out: &TraceOutput, withheld: &Withheld) -> Value {
        let receiver = self.link.b.inode();
        let received: Vec<&Value> = out.summary()["received"]["flows"]
            .as_array()
            .map(|flows| flows.iter().filter(|f| f["netns"] == receiver).collect())
            .unwrap_or_default();
        // The flow's drops at the receiver: the firewall's, and TCP's own of duplicates that
        // spurious retransmits bring (TCP_OLD_DATA…), which are real drops of another layer.
        let flow_drops: Vec<&Value> = out
            .of_type("drop")
            .into_iter()
            .filter(|d| d["netns"] == receiver && d["dport"] == LOSSY_PORT)
            .collect();
        let (netfilter_drops, other_drops): (Vec<&Value>, Vec<&Value>) =
            flow_drops.iter().partition(|d| d["layer"] == "netfilter");
        let reasons = |drops: &[&Value]| {
            drops
                .iter()
                .map(|d| d["reason"].as_str().unwrap_or("").to_string())
                .collect::<std::collections::BTreeSet<_>>()
        };
        // Duplicates that reached the receiver after its peer's FIN: tcp_probe (established
        // sockets) never sees them; the kernel counts each in DelayedACKLost as it drops it.
        // Where drops name no socket (before 6.3) they have no state and count as none.
        let after_fin = flow_drops
            .iter()
            .filter(|d| is_old_data(d))
            .filter(|d| {
                matches!(
                    d["state"].as_str(),
                    Some("FIN_WAIT1" | "FIN_WAIT2" | "CLOSE_WAIT" | "CLOSING" | "LAST_ACK")
                )
            })
            .count();
        let b = &self.link.b;
        json!({
            "sender": retransmits_of(out, &self.link, 1, withheld),
            "receiver": {
                "netns": receiver,
                "duplicate": sum(&received, |f| f["duplicate"].as_u64().unwrap_or(0)),
                "duplicate_after_fin": after_fin,
                "fills_hole": sum(&received, |f| f["fills_hole"].as_u64().unwrap_or(0)),
                "out_of_order": sum(&received, |f| f["out_of_order"].as_u64().unwrap_or(0)),
                "DelayedACKLost": b.netstat("TcpExt", "DelayedACKLost"),
                // Segments tcp_probe fired for here that the kernel ran no program for.
                "withheld": withheld.count("tcp_probe:", &format!("src={}:{LOSSY_PORT} ", self.link.addr(2, false))),
                "TCPOFOQueue": b.netstat("TcpExt", "TCPOFOQueue"),
                "TCPOFODrop": b.netstat("TcpExt", "TCPOFODrop"),
            },
            "drops": {
                "events": netfilter_drops.len(),
                "netfilter_ingress": netfilter_drops.iter()
                    .filter(|d| d["direction"] == "ingress").count(),
                "reasons": reasons(&netfilter_drops),
                "other_layers": other_drops.iter().map(|d| format!("{}/{}", d["layer"].as_str().unwrap_or(""), d["reason"].as_str().unwrap_or(""))).collect::<std::collections::BTreeSet<_>>(),
                "other_reasons": reasons(&other_drops),
                "nft_counter": self.rule.packets(),
            },
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The server never sees the SYNs: the client retransmits them.
    Client,
    /// The client never sees the SYN-ACKs: the server retransmits them (and the client its SYNs).
    Server,
}

/// A handshake that cannot complete for 2.5 s.
struct Handshake {
    link: Link,
}

impl Handshake {
    fn run(side: Side) -> Handshake {
        let (tag, subnet, port) = match side {
            Side::Client => ("mxs", 61, 5002u16),
            Side::Server => ("mxa", 62, 5003u16),
        };
        let link = Link::new(tag, subnet);
        link.static_neighbours();
        let (ns, rule) = match side {
            Side::Client => (
                &link.b,
                format!("tcp dport {port} tcp flags & (syn|ack) == syn drop"),
            ),
            Side::Server => (
                &link.a,
                format!("tcp sport {port} tcp flags & (syn|ack) == syn|ack drop"),
            ),
        };
        NftTable::input(ns, tag, &rule);
        let listener = link
            .b
            .run(move || TcpListener::bind(("0.0.0.0", port)).expect("bind"));
        let to = link.b_port(port);
        let attempt = link
            .a
            .run(move || TcpStream::connect_timeout(&to, Duration::from_millis(2500)).is_ok());
        assert!(!attempt, "the handshake was blocked, yet it completed");
        // The server's request socket keeps retransmitting its SYN-ACK after the client gave
        // up; the listener goes away before the counters are read, which ends them.
        drop(listener);
        thread::sleep(Duration::from_millis(200));
        Handshake { link }
    }

    fn measure(&self, out: &TraceOutput, withheld: &Withheld) -> Value {
        json!({
            "client": retransmits_of(out, &self.link, 1, withheld),
            "server": retransmits_of(out, &self.link, 2, withheld),
        })
    }
}

/// A request/response connection that goes dark for a second while the client sends: the
/// tail-loss probe fires first, then the RTO timer, backing off.
struct TailLoss {
    link: Link,
    dark: Dark,
}

/// Which packets the blackout drops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dark {
    /// The client's segments, at the server's input: its data is lost.
    Data,
    /// The server's segments, at the client's input: its ACKs are lost, so every segment the
    /// client sends again is a duplicate the server's TCP drops (inside tcp_rcv_established).
    Acks,
}

const TAIL_PORT: u16 = 5004;

impl TailLoss {
    fn run(subnet: u8, dark: Dark) -> TailLoss {
        let link = Link::new(&format!("mxt{subnet}"), subnet);
        link.static_neighbours();
        let to = link.b_port(TAIL_PORT);
        let server = TcpSink::with(
            &link.b,
            to,
            SinkOptions {
                reply: true,
                ..SinkOptions::default()
            },
        );
        let (blackout, rule) = match dark {
            Dark::Data => (link.b.shared(), format!("tcp dport {TAIL_PORT} drop")),
            Dark::Acks => (link.a.shared(), format!("tcp sport {TAIL_PORT} drop")),
        };
        let sent = link.a.run(move || {
            let mut conn = TcpStream::connect(to).expect("connect");
            conn.set_nodelay(true).unwrap();
            let mut one = [0u8; 1];
            // A few round trips first, so that the probe timeout comes from a measured RTT.
            for _ in 0..20 {
                conn.write_all(b"x").unwrap();
                conn.read_exact(&mut one).unwrap();
            }
            let table = NftTable::input(&blackout, "mxt", &rule);
            conn.write_all(&[0x61; 1000]).unwrap();
            thread::sleep(Duration::from_millis(1000));
            table.delete();
            conn.read_exact(&mut one)
                .expect("the reply once the blackout ends");
            conn.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest);
            20 + 1000
        });
        assert_eq!(server.received(), sent);
        TailLoss { link, dark }
    }

    fn measure(&self, out: &TraceOutput, withheld: &Withheld) -> Value {
        if self.dark == Dark::Data {
            return json!({ "client": retransmits_of(out, &self.link, 1, withheld) });
        }
        let server = &self.link.b;
        let tcp_drops: Vec<&Value> = out
            .of_type("drop")
            .into_iter()
            .filter(|d| d["dport"] == TAIL_PORT && d["layer"] == "tcp")
            .collect();
        let duplicates: u64 = out.summary()["received"]["flows"]
            .as_array()
            .map(|flows| {
                flows
                    .iter()
                    .filter(|f| f["netns"] == server.inode())
                    .map(|f| f["duplicate"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        // Duplicates past the server's FIN never reach tcp_probe: their TCP_OLD_DATA drops are
        // the rest of DelayedACKLost, as the trace's own reconciliation row counts them.
        let late: Vec<String> = out
            .of_type("drop")
            .into_iter()
            .filter(|d| d["netns"] == server.inode() && is_old_data(d))
            .filter(|d| d["state"] != "ESTABLISHED")
            .map(|d| format!("{} {} seq {}", d["reason"], d["state"], d["seq"]))
            .collect();
        json!({
            "client": retransmits_of(out, &self.link, 1, withheld),
            "late_duplicates": late,
            // Segments tcp_probe fired for at the server that the kernel ran no program for.
            "withheld_at_server": withheld.count("tcp_probe:", &format!("src={}:{TAIL_PORT} ", self.link.addr(2, false))),
            "server_netns": server.inode(),
            "tcp_drops": tcp_drops.len(),
            "tcp_drops_in_server_netns": tcp_drops.iter().filter(|d| d["netns"] == server.inode()).count(),
            "tcp_drop_reasons": tcp_drops.iter().map(|d| d["reason"].as_str().unwrap_or("").to_string()).collect::<std::collections::BTreeSet<_>>(),
            "duplicates": duplicates,
            "DelayedACKLost": server.netstat("TcpExt", "DelayedACKLost"),
        })
    }
}

/// The drops that DelayedACKLost counts in the after-FIN scenario.
const OLD_DATA_REASONS: &[&str] = &["TCP_OLD_DATA", "TCP_OLD_SEQUENCE"];

/// The after-FIN scenario, with ftrace's witness of its drops of old data where the kernel has
/// drop reasons (see `witness`): `skb:kfree_skb` filtered to those reasons, recorded only
/// while the scenario runs (the other scenarios' drop storms would fill any buffer).
fn after_fin() -> (AfterFin, Option<Withheld>) {
    let mut scenario = AfterFin::new("mxf", 67, 5005);
    let witness = Ftrace::start_filtered("skb/kfree_skb", |format| {
        drop_reason_filter(format, OLD_DATA_REASONS)
    });
    scenario.run();
    let withheld = witness.map(|w| Withheld::from_lines(w.stop()));
    (scenario, withheld)
}

/// Duplicates after the receiver's FIN: the receiver's TCP drops of old data and sequences
/// (each counted in DelayedACKLost), which name its namespace and socket state only where the
/// drop carries the socket (`rx_sk`, or the hooked `tcp_rcv_state_process`). `witness`: the
/// IPv4 drops of old data ftrace saw host-wide while the scenario ran, `None` without one.
fn measure_after_fin(scenario: &AfterFin, out: &TraceOutput, witness: Option<&Withheld>) -> Value {
    let receiver = scenario.link.b.inode();
    let old: Vec<&Value> = out
        .of_type("drop")
        .into_iter()
        .filter(|d| d["netns"] == receiver && is_old_data(d))
        .collect();
    let established: Vec<&Value> = out.summary()["received"]["flows"]
        .as_array()
        .map(|flows| flows.iter().filter(|f| f["netns"] == receiver).collect())
        .unwrap_or_default();
    // Every drop of the flow, to show where one that does not fit went.
    let port = scenario.port;
    let flow_drops: Vec<String> = out
        .of_type("drop")
        .into_iter()
        .filter(|d| d["sport"] == port || d["dport"] == port)
        .map(|d| {
            format!(
                "{} {} {} netns {}",
                d["reason"], d["layer"], d["state"], d["netns"]
            )
        })
        .collect();
    json!({
        "flow_drops": flow_drops,
        "old_drops": old.len(),
        "in_fin_wait2": old.iter().filter(|d| d["state"] == "FIN_WAIT2").count(),
        "duplicate_established": sum(&established, |f| f["duplicate"].as_u64().unwrap_or(0)),
        "DelayedACKLost": scenario.delayed_ack_lost,
        // Drops of old data the kernel ran no program for (its PID 1's context, see
        // `witness`), and all ftrace saw; null without a witness.
        "withheld": witness.map(|w| w.count("kfree_skb:", "")),
        "witnessed": witness.map(|w| w.seen("kfree_skb:")),
        "withheld_lines": witness.map(|w| w.lines_of("kfree_skb:", "")),
    })
}

/// A TCP drop of data the socket already had, which DelayedACKLost counts: TCP_OLD_DATA,
/// TCP_OLD_SEQUENCE, or (Linux 6.1) a TCP_INVALID_SEQUENCE netprobe found stale.
fn is_old_data(drop: &Value) -> bool {
    matches!(
        drop["reason"].as_str(),
        Some("TCP_OLD_DATA" | "TCP_OLD_SEQUENCE")
    ) || drop["old_sequence"] == true
}
