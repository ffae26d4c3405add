//! How `netprobe trace` starts and ends: signals, --duration, bad input, no root, hooks
//! turned off, and text mode for people. Run as root with `--test-threads=1`: the
//! leftover-program checks look at the whole kernel.

use std::time::Duration;

use netprobe_integration::*;

/// Killed with SIGKILL, netprobe cannot clean up: the kernel must drop its programs because
/// every attachment is tied to a file descriptor of the process.
#[test]
fn sigkill_leaves_nothing_attached() {
    let tracer = Tracer::start(&[]);
    let loaded = loaded_netprobe_programs();
    // `netprobe_rtx` or its BTF-typed twin (whose name bpftool may show cut to 15 characters).
    assert!(
        loaded.iter().any(|p| p.starts_with("netprobe_rtx")),
        "{loaded:?}"
    );
    assert!(
        loaded.iter().any(|p| p.starts_with("netprobe_drop")),
        "{loaded:?}"
    );
    tracer.kill();
    assert_eq!(
        wait_no_programs(Duration::from_secs(5)),
        Vec::<String>::new()
    );
}

/// SIGTERM and --duration end with a summary and a clean detach.
#[test]
fn sigterm_and_duration_exit_cleanly() {
    let mut tracer = Tracer::start(&[]);
    signal(tracer.pid(), libc::SIGTERM);
    let out = tracer.wait();
    assert!(out.success, "{}", out.stderr);
    out.summary();
    assert_eq!(
        wait_no_programs(Duration::from_secs(5)),
        Vec::<String>::new()
    );

    let mut timed = Tracer::start(&["--duration", "0.5"]);
    let out = timed.wait();
    assert!(out.success, "{}", out.stderr);
    let ms = out.summary()["duration_ms"].as_u64().unwrap();
    assert!((400..5000).contains(&ms), "duration_ms {ms}");
    assert_eq!(
        wait_no_programs(Duration::from_secs(5)),
        Vec::<String>::new()
    );
}

fn assert_one_line_failure(args: &[&str], needle: &str) {
    let (ok, stdout, stderr) = netprobe_once(args);
    assert!(!ok, "{args:?} should fail");
    assert!(stdout.is_empty(), "{args:?} printed to stdout: {stdout}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.iter().any(|l| l.contains(needle)),
        "{args:?}: expected {needle:?} in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
}

/// Bad input and a missing BTF: one clear line, non-zero exit, nothing attached.
#[test]
fn clear_failures() {
    assert_one_line_failure(
        &["trace", "--btf", "/nonexistent/vmlinux"],
        "no kernel BTF at /nonexistent/vmlinux",
    );
    assert_one_line_failure(&["trace", "--port", "0"], "not a port number");
    assert_one_line_failure(&["trace", "--port", "http"], "not a port number");
    assert_one_line_failure(
        &["trace", "--addr", "198.18.0.300"],
        "not an IPv4 or IPv6 address",
    );
    assert_one_line_failure(
        &["trace", "--netns", "np-no-such-namespace"],
        "no network namespace",
    );
    assert_one_line_failure(&["trace", "--reason", "NOT_A_REASON"], "no drop reason");
    assert_one_line_failure(&["trace", "--duration", "0"], "positive number");
    assert_one_line_failure(&["trace", "--report-every", "0"], "positive number");
    assert_one_line_failure(&["trace", "--report-every", "nan"], "positive number");
    assert_one_line_failure(&["trace", "--ring-size", "5000"], "power of two");
    assert_eq!(
        wait_no_programs(Duration::from_secs(5)),
        Vec::<String>::new()
    );
}

/// Not root: refused with one line, before touching the kernel.
#[test]
fn refuses_without_root() {
    let out = netprobe_unprivileged(&["trace", "--duration", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("must run as root"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// Text mode, for people: interim findings every --report-every, one final bundle after the
/// summary, each naming the loss it saw with its fix.
#[test]
fn text_mode_prints_findings_so_far_and_at_the_end() {
    let link = Link::new("txt", 30);
    let udp_to = link.b_port(7301);
    // Closed port in b: NO_SOCKET drops, named in the findings, sent once netprobe traces.
    let (ok, stdout, stderr) = netprobe_traced(
        &[
            "--duration",
            "1.6",
            "--report-every",
            "0.5",
            "--port",
            "7301",
        ],
        || assert_eq!(send_udp(&link.a, udp_to, b"x", 20), 20),
    );
    assert!(ok, "{stderr}");
    let interim = stdout.matches("== netprobe findings (so far").count();
    assert!(interim >= 2, "--report-every 0.5 over 1.6 s: {stdout}");
    assert_eq!(
        stdout.matches("== netprobe findings (final").count(),
        1,
        "{stdout}"
    );
    let last = stdout.rsplit("== netprobe findings (final").next().unwrap();
    assert!(
        last.contains("drops_udp_no_socket") || last.contains("drops_socket_no_socket"),
        "{last}"
    );
    assert!(
        last.contains("nothing listens on the destination port"),
        "{last}"
    );
    assert!(
        last.contains("reconciliation (events vs counters, same window):"),
        "{last}"
    );
    // The summary comes before the final bundle.
    assert!(
        stdout.find("== netprobe summary").unwrap()
            < stdout.find("== netprobe findings (final").unwrap()
    );
}

/// Hooks turned off by the user are reported inactive with the flag that turned them off,
/// and never loaded.
#[test]
fn hooks_turned_off_are_reported_and_not_loaded() {
    let tracer = Tracer::start(&["--without-cpu-hooks", "--without-receive-hook"]);
    let loaded = loaded_netprobe_programs();
    let out = tracer.stop();
    assert!(out.success, "{}", out.stderr);
    let hooks = out.hooks();
    for (name, flag) in [
        ("irq:softirq_entry", "--without-cpu-hooks"),
        ("irq:softirq_exit", "--without-cpu-hooks"),
        ("napi:napi_poll", "--without-cpu-hooks"),
        ("tcp:tcp_probe", "--without-receive-hook"),
    ] {
        let hook = hooks.iter().find(|h| h["hook"] == name).unwrap();
        assert_eq!(hook["active"], false, "{hook}");
        assert!(hook["detail"].as_str().unwrap().contains(flag), "{hook}");
    }
    for program in [
        "netprobe_sirq_in",
        "netprobe_sirq_out",
        "netprobe_napi",
        "netprobe_rcv",
    ] {
        assert!(
            !loaded.iter().any(|l| l.starts_with(program)),
            "{program} loaded: {loaded:?}"
        );
    }
    assert!(
        loaded.iter().any(|p| p.starts_with("netprobe_drop")),
        "{loaded:?}"
    );
    let rtx = hooks
        .iter()
        .find(|h| h["hook"] == "tcp:tcp_retransmit_skb")
        .unwrap();
    assert!(
        rtx["detail"]
            .as_str()
            .unwrap()
            .contains("softirq hooks inactive"),
        "{rtx}"
    );
}
