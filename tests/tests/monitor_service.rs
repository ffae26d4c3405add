//! `netprobe monitor`'s log as a service keeps it: rotated by the real logrotate with the
//! shipped contrib/logrotate file, and written on a disk that fills up and is freed. Run as
//! root with `--test-threads=1`.

use std::{fs, io::Read, time::Duration};

use netprobe_integration::*;

/// The shipped logrotate file run twice against a running monitor (its paths moved into a
/// directory of the test's, its postrotate signalling this monitor instead of the units):
/// `create` (no copytruncate), `compress` with `delaycompress`, SIGHUP. Every iteration is in
/// exactly one of the three files, oldest first, and each file starts with the header.
#[test]
fn logrotate_with_the_shipped_file_loses_and_duplicates_no_row() {
    let ns = Netns::new("mrot");
    let dir = TestDir::new("logrotate");
    let log = dir.join("lo.csv");
    let monitor = Monitor::start(&ns, &["lo", "0.2", log.to_str().unwrap()]);
    let config = logrotate_config_for_test(&dir, monitor.pid());
    let state = dir.join("logrotate.state");
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1000));
        logrotate_now(&config, &state);
    }
    std::thread::sleep(Duration::from_millis(1000));
    signal(monitor.pid(), libc::SIGTERM);
    let run = monitor.wait();
    assert!(run.status.success(), "{:?} {}", run.status, run.stderr);
    assert!(!run.stderr.contains("not written"), "{}", run.stderr);

    assert!(!dir.join("lo.csv.1.gz").exists(), "delaycompress");
    let mut oldest = String::new();
    flate2::read::GzDecoder::new(fs::File::open(dir.join("lo.csv.2.gz")).unwrap())
        .read_to_string(&mut oldest)
        .expect("lo.csv.2.gz is gzip");
    let files = [
        oldest,
        fs::read_to_string(dir.join("lo.csv.1")).unwrap(),
        fs::read_to_string(&log).unwrap(),
    ];
    let mut iterations = Vec::new();
    for (i, text) in files.iter().enumerate() {
        let rows = log_text_rows(text);
        assert!(rows.len() >= 2, "file {i}: {text}");
        iterations.extend(rows.iter().map(|r| cell(r, "iteration")));
    }
    eprintln!("iterations over the three files: {iterations:?}");
    let expected: Vec<u64> = (1..=iterations.len() as u64).collect();
    assert_eq!(iterations, expected);
}

/// A log that already has `rows` rows and is `length` bytes long (the last row's notes pad
/// it), so that the next rows cross a page boundary of the tmpfs it is copied to.
fn seed_log(rows: u64, length: usize) -> String {
    let header = "timestamp,iteration,interface,total_drops,nic_rx,nic_tx,nic_missed,qdisc,softirq,syn_queue,accept_queue,tcp_pruned,tcp_collapsed,udp_rcvbuf,udp_sndbuf,severity,interval_s,notes";
    let row = |i: u64, notes: &str| {
        format!("2026-02-03 11:23:50,{i},lo,0,0,0,0,0,0,0,0,0,0,0,0,OK,0.100,{notes}\n")
    };
    let mut text = format!("{header}\n");
    for i in 1..rows {
        text.push_str(&row(i, "seed"));
    }
    let short = text.len() + row(rows, "").len();
    assert!(short < length);
    text.push_str(&row(rows, &"x".repeat(length - short)));
    assert_eq!(text.len(), length);
    text
}

/// The iteration numbers `#0012` in a line, in order.
fn iterations_in(line: &str) -> Vec<u64> {
    line.split('#')
        .skip(1)
        .filter_map(|s| s.get(..4)?.parse().ok())
        .collect()
}

/// The log on a 16-page tmpfs that a filler file has filled (mounted in the monitor's own
/// mount namespace: it goes away with it), the log 100 bytes short of its page's end. The
/// monitor prints every interval all along, says the failure once (not once per interval)
/// and its end once when the filler is removed; the log resumes. Every line of the log is a
/// whole row (the row the full disk cut short at the page boundary was taken back), and the
/// iterations only go up, with a gap exactly the rows the recovery line names.
#[test]
fn a_full_disk_is_said_once_and_the_log_resumes_with_whole_rows() {
    let ns = Netns::new("mfull");
    let mount_point = TestDir::new("full-tmpfs");
    let outside = TestDir::new("full-out");
    let seed = outside.join("seed.csv");
    fs::write(&seed, seed_log(5, 4096 - 100)).unwrap();
    let copied = outside.join("lo.csv");
    let monitor = Monitor::spawn(monitor_on_full_tmpfs(
        &ns,
        &mount_point,
        16,
        &seed,
        &copied,
        "0.1",
    ));
    let shell = monitor.pid();
    let netprobe = only_child(shell);
    assert!(
        monitor.started.contains("(continuing at #0006)"),
        "{}",
        monitor.started
    );
    let failed = monitor
        .wait_for_stderr("No space left on device", Duration::from_secs(10))
        .expect("the full disk is said");
    // A second of rows that fail too, and say nothing.
    std::thread::sleep(Duration::from_millis(1000));
    let filler = format!("/proc/{shell}/root{}/filler", mount_point.0.display());
    fs::remove_file(&filler).expect("the filler, through the monitor's mount namespace");
    let back = monitor
        .wait_for_stderr("writing again from #", Duration::from_secs(10))
        .expect("the recovery is said");
    std::thread::sleep(Duration::from_millis(500));
    signal(netprobe, libc::SIGTERM);
    let run = monitor.wait();
    assert!(run.status.success(), "{:?} {}", run.status, run.stderr);
    eprintln!("{failed}\n{back}");

    // Each said once, and nothing else said but the start's lines ("always 0 here", the
    // hooks this kernel could not give the eBPF side).
    for (what, expected) in [("No space left", 1), ("writing again", 1)] {
        assert_eq!(run.stderr.matches(what).count(), expected, "{}", run.stderr);
    }
    let said: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.starts_with("netprobe monitor: "))
        .collect();
    assert_eq!(said.len(), 2, "{}", run.stderr);
    let first_lost = iterations_in(&failed)[0];
    let (resumed, gap) = match iterations_in(&back)[..] {
        [resumed, first, last] => (resumed, first..=last),
        [resumed, only] => (resumed, only..=only),
        ref other => panic!("{back}: {other:?}"),
    };
    assert_eq!(*gap.start(), first_lost, "{back}");
    assert_eq!(*gap.end() + 1, resumed, "{back}");
    assert!(
        gap.clone().count() >= 3,
        "an outage of several intervals: {back}"
    );

    // The console went on through the outage: every iteration printed once, in order.
    let printed: Vec<u64> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|l| iterations_in(l)[0])
        .collect();
    let expected: Vec<u64> = (6..6 + printed.len() as u64).collect();
    assert_eq!(printed, expected);
    assert!(printed.contains(&resumed) && printed.contains(gap.end()));

    // Whole rows only: log_text_rows checks every line has every column.
    let text = fs::read_to_string(&copied).expect("the log, copied out at exit");
    let rows = log_text_rows(&text);
    let written: Vec<u64> = rows.iter().map(|r| cell(r, "iteration")).collect();
    let missing: Vec<u64> = (1..=*printed.last().unwrap())
        .filter(|i| !written.contains(i))
        .collect();
    assert_eq!(missing, gap.collect::<Vec<_>>(), "{written:?}");
    assert!(written.windows(2).all(|w| w[0] < w[1]), "{written:?}");
    assert!(rows.last().unwrap()["notes"].contains("stopped by SIGTERM"));
    assert!(
        !mount_point.join("filler").exists(),
        "nothing mounted here on the host"
    );
}
