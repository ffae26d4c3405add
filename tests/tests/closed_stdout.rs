//! Every subcommand into a reader that stopped reading (`| head -c1`, a closed pipe): exit
//! status 0, no panic. The trace cases load programs: run as root with `--test-threads=1`.

use std::{
    process::ExitStatus,
    time::{Duration, Instant},
};

use netprobe_integration::*;

/// The commands that print and end by themselves.
const ONE_SHOT: &[&[&str]] = &[
    &["reasons"],
    &["report", "--interval", "0.2"],
    &["report", "--json", "--interval", "0.2"],
    &["--help"],
    &["--version"],
    &["report", "--help"],
];

fn assert_clean_exit(args: &[&str], how: &str, status: ExitStatus, stderr: &str) {
    assert!(
        !stderr.contains("panicked"),
        "{args:?} into {how} panicked: {stderr}"
    );
    assert_eq!(
        status.code(),
        Some(0),
        "{args:?} into {how}: {status}; stderr: {stderr}"
    );
}

/// A reader that stopped reading is not a failure of the command that wrote for it.
#[test]
fn one_shot_commands_exit_0_when_the_reader_goes_away() {
    for args in ONE_SHOT {
        let (status, stderr) = netprobe_into_closed_pipe(args);
        assert_clean_exit(args, "a closed pipe", status, &stderr);
        let (status, byte, stderr) = netprobe_into_one_byte_reader(args);
        assert_eq!(byte.len(), 1, "{args:?} printed nothing; stderr: {stderr}");
        assert_clean_exit(args, "head -c1", status, &stderr);
    }
}

/// `netprobe trace` (text, then JSON) with its stdout closed: it stops at the first line it
/// cannot write, long before --duration, exits 0 and leaves nothing loaded.
#[test]
fn trace_stops_cleanly_on_a_closed_stdout() {
    const DURATION_S: u64 = 30;
    let link = Link::new("pipe", 31);
    let duration = DURATION_S.to_string();
    for json in [false, true] {
        let mut args = vec![
            "--duration",
            &duration,
            "--netns",
            &link.b.name,
            "--port",
            "7401",
        ];
        if json {
            args.push("--json");
        }
        let started = Instant::now();
        let (status, stderr) = netprobe_traced_into_closed_pipe(&args, |netprobe| {
            // Drops to write (nothing listens on b's port 7401) until netprobe gives up on
            // its stdout.
            while netprobe.try_wait().expect("netprobe").is_none()
                && started.elapsed() < Duration::from_secs(DURATION_S / 2)
            {
                send_udp(&link.a, link.b_port(7401), b"x", 10);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let how = if json { "trace --json" } else { "trace" };
        assert_clean_exit(&args, how, status, &stderr);
        assert!(
            started.elapsed() < Duration::from_secs(DURATION_S / 2),
            "{how} kept tracing with nobody reading: {:?}; stderr: {stderr}",
            started.elapsed()
        );
        assert_eq!(
            wait_no_programs(Duration::from_secs(5)),
            Vec::<String>::new()
        );
    }
}

/// A trace that has nothing to write (a port nobody uses) still notices that nobody reads
/// its stdout, and stops long before --duration.
#[test]
fn quiet_trace_stops_when_its_reader_goes_away() {
    const DURATION_S: u64 = 30;
    let duration = DURATION_S.to_string();
    let args = ["--duration", &duration, "--port", "7402"];
    let started = Instant::now();
    let (status, stderr) = netprobe_traced_into_closed_pipe(&args, |_| {});
    assert_clean_exit(&args, "a closed pipe (quiet trace)", status, &stderr);
    assert!(
        started.elapsed() < Duration::from_secs(DURATION_S / 3),
        "a quiet trace kept running with nobody reading: {:?}; stderr: {stderr}",
        started.elapsed()
    );
    assert_eq!(
        wait_no_programs(Duration::from_secs(5)),
        Vec::<String>::new()
    );
}
