//! Duplicates that arrive after the receiver has closed its side (FIN-WAIT-2): `tcp_probe` does
//! not see them (it fires on established sockets only), TCP drops them as old data and counts
//! each in DelayedACKLost. Made on purpose rather than by chance: the receiver shuts down its
//! side, then every segment it sends back (its ACKs) is dropped while the sender sends, so the
//! sender's timers re-send data the receiver has. Run as root with `--test-threads=1`.

use netprobe_integration::*;

const PORT: u16 = 5301;

#[test]
fn duplicates_after_the_receivers_fin_are_counted_exactly() {
    let mut scenario = AfterFin::new("afin", 34, PORT);
    let host = Tracer::start(&["--port", &PORT.to_string()]);
    let at_b = Tracer::start_in(&scenario.link.b, &[]);
    // ftrace beside netprobe: a drop this host's sandbox kernel ran no program for (its PID 1
    // agent's context, see `witness`) is counted, not guessed.
    let witness = Ftrace::start(&["skb/kfree_skb"]);
    scenario.run();
    let withheld = Withheld::from_lines(witness.map(Ftrace::stop).unwrap_or_default());
    let withheld = withheld.count("kfree_skb:", "TCP_OLD_DATA")
        + withheld.count("kfree_skb:", "TCP_OLD_SEQUENCE");
    let host = host.stop();
    let at_b = at_b.stop();
    assert!(
        host.success && at_b.success,
        "{}{}",
        host.stderr,
        at_b.stderr
    );
    let (b_ns, delayed_ack_lost) = (scenario.link.b.inode(), scenario.delayed_ack_lost);

    // Every duplicate arrived after the FIN: TCP_OLD_DATA drops of the closing socket.
    let received = &host.summary()["received"];
    let after_fin = received["duplicate_after_fin"].as_u64().unwrap();
    assert!(after_fin >= 2, "{received}");
    assert_eq!(
        received["duplicate"].as_u64().unwrap() + after_fin + withheld,
        delayed_ack_lost,
        "duplicates vs DelayedACKLost (withheld by the kernel {withheld}): {received}"
    );
    // Old data (tcp_data_queue) and old sequences (tcp_validate_incoming's dupack), each
    // counted in DelayedACKLost as it is dropped, all on the receiver's closing socket.
    let old: Vec<_> = ["TCP_OLD_DATA", "TCP_OLD_SEQUENCE"]
        .iter()
        .flat_map(|reason| host.drops_with_reason(reason))
        .filter(|d| d["netns"].as_u64() == Some(b_ns))
        .collect();
    assert_eq!(old.len() as u64, after_fin, "{old:?}");
    assert!(old.iter().all(|d| d["state"] == "FIN_WAIT2"), "{old:?}");
    // The receiver's own bundle holds the same row, guaranteed and equal.
    let bundle = at_b
        .of_type("findings")
        .into_iter()
        .find(|b| b["final"] == true)
        .expect("final bundle")
        .clone();
    let row = reconciliation_row(&bundle, "TcpExt DelayedACKLost");
    assert_eq!(row["must_match"], true, "{row}");
    // netprobe cannot know what the kernel withheld from its programs: the row then says it
    // does not match, and the witness accounts for the difference.
    assert_eq!(row["matches"], withheld == 0, "{row}");
    assert_eq!(
        row["events"].as_u64().unwrap() + withheld,
        row["counters"].as_u64().unwrap(),
        "withheld by the kernel {withheld}: {row}"
    );
    assert_eq!(row["counters"].as_u64(), Some(delayed_ack_lost), "{row}");
    eprintln!(
        "after FIN: {after_fin} duplicates, DelayedACKLost {delayed_ack_lost}, {} on established sockets",
        received["duplicate"]
    );
}
