//! Who owns a flow: the process holding the socket, at both ends. Run as root with
//! `--test-threads=1`.

use std::time::Duration;

use netprobe_integration::*;
use serde_json::Value;

const HOLDER: &str = env!("CARGO_BIN_EXE_np-holder");

/// This process's name as /proc shows it to netprobe (the main thread's, which the test
/// harness does not rename).
fn our_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .expect("/proc/self/comm")
        .trim()
        .to_string()
}

/// The owner of a flow is the process holding the socket, named from the socket's inode, not
/// the task that happened to be on the CPU (retransmits mostly run from timers and softirqs).
#[test]
fn retransmits_and_drops_name_the_owning_process() {
    let link = Link::new("own", 17);
    NftTable::input_loss(&link.b, "netprobe_test", 5006, 3);
    let server = link.b_port(5006);
    // The receiving end is this process: its socket's inode leads netprobe to our pid.
    let sink = TcpSink::start(&link.b, server);
    let tracer = Tracer::start(&["--port", "5006"]);
    let holder = Holder::start(&link.a, HOLDER, &["send", &server.to_string(), "24"]);
    assert_eq!(sink.received(), 24 << 20);
    std::thread::sleep(Duration::from_millis(300));
    let out = tracer.stop();
    assert!(out.success, "{}", out.stderr);

    // The sender's retransmits name the holder. The sink's own (its FIN, when the holder's ACK
    // of it is one of the 3 % dropped) come from a socket the sink has already closed: an
    // orphan, which no process holds and which must name nobody.
    let (sent, from_sink): (Vec<&Value>, Vec<&Value>) = out
        .of_type("retransmit")
        .into_iter()
        .partition(|r| r["dport"] == 5006);
    assert!(!sent.is_empty(), "3% loss must retransmit");
    for r in &sent {
        assert_eq!(r["pid"].as_u64(), Some(holder.pid() as u64), "{r}");
        assert_eq!(r["comm"], "np-holder", "{r}");
    }
    for r in &from_sink {
        let orphan = matches!(
            r["state"].as_str(),
            Some("LAST_ACK" | "CLOSING" | "FIN_WAIT1")
        );
        assert!(orphan && r.get("pid").is_none(), "{r}");
    }
    let flows = out.summary()["retransmits"]["flows"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        flows[0]["owner"]["pid"].as_u64(),
        Some(holder.pid() as u64),
        "{flows:?}"
    );
    // Drops at the receiver that carry the established socket (early demux attaches it before
    // the input hook drops the segment) name the sink: this process. There must be some, or
    // nothing about drop owners was checked.
    let owned_drops: Vec<&Value> = out
        .of_type("drop")
        .into_iter()
        .filter(|d| d.get("pid").is_some())
        .collect();
    assert!(
        !owned_drops.is_empty(),
        "no drop named its owner: {} drops, summary {}, first {:?}",
        out.of_type("drop").len(),
        out.summary()["drops"],
        out.of_type("drop").first()
    );
    let comm = our_comm();
    for d in &owned_drops {
        assert_eq!(d["pid"].as_u64(), Some(std::process::id() as u64), "{d}");
        assert_eq!(d["comm"], comm.as_str(), "{d}");
    }
    eprintln!(
        "owner: {} retransmits all owned by np-holder pid {}; {} drops named the receiving process",
        sent.len(),
        holder.pid(),
        owned_drops.len()
    );
}
