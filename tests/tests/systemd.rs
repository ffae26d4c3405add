//! `netprobe monitor` under systemd: the shipped unit passes `systemd-analyze verify` (no
//! error, no warning) and keeps what eBPF needs; the notify protocol, spoken to a socket the
//! test listens on as systemd would. Run as root with `--test-threads=1`.

use std::{
    fs,
    io::{BufRead, BufReader},
    os::fd::AsRawFd,
    process::{Child, Stdio},
    time::Duration,
};

use netprobe_integration::*;

/// The unit as installed for an interface: `systemd-analyze verify` prints nothing at all
/// and exits 0. The same check on a copy with one unknown key fails, so it can fail.
#[test]
fn the_unit_verifies_without_a_warning() {
    let dir = TestDir::new("unit");
    let unit = unit_for_test(&dir, "veth0", "");
    let (ok, printed) = systemd_verify(&unit);
    assert!(ok && printed.trim().is_empty(), "{printed}");

    let broken = unit_for_test(&dir, "veth1", "\n[Service]\nNoSuchSetting=1\n");
    let (_, printed) = systemd_verify(&broken);
    assert!(
        printed.contains("NoSuchSetting"),
        "a warning is seen: {printed:?}"
    );
}

/// The settings the service depends on, and none that would break eBPF or netlink; the
/// offline security assessment stays "OK" or better.
#[test]
fn the_unit_is_a_hardened_notify_service_that_can_still_load_ebpf() {
    let text = fs::read_to_string(repo_file("contrib/systemd/netprobe-monitor@.service")).unwrap();
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .collect();
    let value = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    };
    assert_eq!(value("Type"), ["notify"]);
    assert_eq!(value("Restart"), ["on-failure"]);
    assert_eq!(value("LogsDirectory"), ["netprobe"]);
    assert_eq!(
        value("ExecStart"),
        ["/usr/local/bin/netprobe monitor %I 5 /var/log/netprobe/%I.csv"]
    );
    assert_eq!(value("WatchdogSec").len(), 1);
    for (key, expected) in [("ProtectSystem", "strict"), ("NoNewPrivileges", "yes")] {
        assert_eq!(value(key), [expected], "{key}");
    }
    let capabilities = value("CapabilityBoundingSet").join(" ");
    for capability in [
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_NET_ADMIN",
        "CAP_SYS_ADMIN",
        "CAP_SYSLOG",
    ] {
        assert!(capabilities.contains(capability), "{capability}");
    }
    let filter = value("SystemCallFilter").join(" ");
    assert!(
        filter.split(' ').any(|s| s == "bpf"),
        "bpf() allowed: {filter}"
    );
    let families = value("RestrictAddressFamilies").join(" ");
    for family in ["AF_NETLINK", "AF_UNIX"] {
        assert!(families.contains(family), "{family}: {families}");
    }
    for breaks_it in [
        "PrivateNetwork",
        "ProcSubset",
        "ProtectProc",
        "PrivateUsers",
    ] {
        assert!(value(breaks_it).is_empty(), "{breaks_it} is set");
    }

    let dir = TestDir::new("unit-security");
    let unit = unit_for_test(&dir, "eth0", "");
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{report}"));
    eprintln!("{overall}");
    let exposure: f64 = overall
        .rsplit(": ")
        .next()
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{overall}"));
    assert!(exposure < 4.0, "{overall}");
}

/// Reads what is on `child`'s stderr right now, without waiting: the start line must already
/// be there when READY arrives, since the monitor writes it before notifying.
fn stderr_start_line_already_written(child: &mut Child) -> String {
    let stderr = child.stderr.as_mut().unwrap();
    let mut poll = libc::pollfd {
        fd: stderr.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, the count 1, a zero timeout.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    assert_eq!(ready, 1, "READY=1 came before the start line");
    let mut line = String::new();
    BufReader::new(stderr).read_line(&mut line).unwrap();
    line
}

/// READY=1 (with a STATUS) once the baseline is taken, then a STATUS per interval, WATCHDOG=1
/// at half of WATCHDOG_USEC from a timer (not once per interval), STOPPING=1 on SIGTERM, and
/// exit 0.
#[test]
fn notify_ready_watchdog_status_and_stopping() {
    let ns = Netns::new("snotify");
    let socket = NotifySocket::bind("notify");
    let watchdog = Duration::from_secs(2);
    let mut command = Monitor::command(&ns, &["lo", "0.2", "--no-log", "--json"]);
    command
        .env("NOTIFY_SOCKET", &socket.path)
        .env("WATCHDOG_USEC", watchdog.as_micros().to_string())
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let ready = socket
        .next(Duration::from_secs(10))
        .expect("a first message");
    let start_line = stderr_start_line_already_written(&mut child);
    assert!(
        start_line.starts_with("netprobe monitor: lo every 0.2 s"),
        "{start_line}"
    );
    assert!(ready.has("READY=1"), "{ready:?}");
    assert!(
        ready
            .status()
            .is_some_and(|s| s.starts_with("monitoring lo every 0.2 s")),
        "{ready:?}"
    );
    std::thread::sleep(Duration::from_millis(4500));
    signal(child.id() as i32, libc::SIGTERM);
    let status = child.wait().unwrap();
    let stdout = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    assert!(status.success(), "{status:?}");
    let messages = socket.rest();

    let pings: Vec<_> = messages.iter().filter(|m| m.has("WATCHDOG=1")).collect();
    let stopping = messages
        .iter()
        .position(|m| m.has("STOPPING=1"))
        .expect("STOPPING=1");
    let span = messages[stopping].at - ready.at;
    eprintln!("{} pings in {span:?}", pings.len());
    // Every half watchdog (1 s) from READY: 4 in 4.5 s. At least 2 under any load, never more
    // than the timer's period allows, and never as many as the 22 intervals.
    let most = (span.as_secs_f64() / (watchdog.as_secs_f64() / 2.0)) as usize + 1;
    assert!((2..=most).contains(&pings.len()), "{} pings", pings.len());
    // What systemd checks: no gap without a ping as long as WATCHDOG_USEC.
    let mut last = ready.at;
    for ping in &pings {
        assert!(
            ping.at - last < watchdog,
            "{:?} without a ping",
            ping.at - last
        );
        last = ping.at;
    }
    assert!(messages[stopping].at - last < watchdog);
    assert_eq!(
        messages[stopping].status(),
        Some("stopping: stopped by SIGTERM")
    );
    assert!(
        messages[stopping..].iter().all(|m| !m.has("WATCHDOG=1")),
        "no ping after STOPPING=1"
    );

    // One STATUS per interval, for the intervals printed, in order; the last after STOPPING.
    let statuses: Vec<&str> = messages
        .iter()
        .filter_map(|m| m.status())
        .filter(|s| s.starts_with('#'))
        .collect();
    let iterations: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|o| {
            let iteration = o["iteration"].as_u64().unwrap();
            format!("#{iteration:04} {}", o["severity"].as_str().unwrap())
        })
        .collect();
    assert!(iterations.len() >= 10, "{stdout}");
    assert_eq!(statuses.len(), iterations.len(), "{statuses:?}");
    for (status, interval) in statuses.iter().zip(&iterations) {
        assert!(
            status.starts_with(interval.as_str()),
            "{status} for {interval}"
        );
        assert!(
            status.ends_with(" drops") || status.ends_with(" drop"),
            "{status}"
        );
    }
    assert!(messages.last().unwrap().status().unwrap().starts_with('#'));
}

/// WATCHDOG_PID naming another process: the watchdog is not this one's, no ping goes out,
/// and READY and the statuses still do.
#[test]
fn no_watchdog_pings_for_another_pid() {
    let ns = Netns::new("swdpid");
    let socket = NotifySocket::bind("notify-pid");
    let mut command = Monitor::command(&ns, &["lo", "0.1", "--no-log", "--count", "8"]);
    command
        .env("NOTIFY_SOCKET", &socket.path)
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", "1");
    let run = Monitor::spawn(command).wait();
    assert!(run.status.success(), "{}", run.stderr);
    let messages = socket.rest();
    assert!(messages[0].has("READY=1"), "{messages:?}");
    assert!(
        messages.iter().all(|m| !m.has("WATCHDOG=1")),
        "{messages:?}"
    );
    let statuses = messages.iter().filter_map(|m| m.status());
    assert_eq!(statuses.filter(|s| s.starts_with('#')).count(), 8);
    // --count ends the run: STOPPING=1 says so before the exit.
    assert!(messages
        .iter()
        .any(|m| m.has("STOPPING=1") && m.status() == Some("stopping: --count reached")));
}

/// A start that fails (the log's directory does not exist) exits 1 and never says READY.
#[test]
fn a_failed_start_is_never_ready() {
    let ns = Netns::new("sfail");
    let socket = NotifySocket::bind("notify-fail");
    let missing = std::env::temp_dir().join(format!("np-no-dir-{}/lo.csv", std::process::id()));
    let out = Monitor::command(&ns, &["lo", "0.1", missing.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &socket.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(socket.rest().is_empty(), "nothing is sent");
}

/// Without NOTIFY_SOCKET nothing is sent and nothing changes (WATCHDOG_USEC alone means
/// nothing); with a socket nobody listens on, the monitor says so once and goes on.
#[test]
fn without_a_listener_the_monitor_runs_as_ever() {
    let ns = Netns::new("snone");
    let mut command = Monitor::command(&ns, &["lo", "0.1", "--no-log", "--count", "5"]);
    command
        .env_remove("NOTIFY_SOCKET")
        .env("WATCHDOG_USEC", "100000");
    let run = Monitor::spawn(command).wait();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        run.stdout.lines().filter(|l| l.contains("] #000")).count(),
        5
    );
    assert!(!run.stderr.contains("notifying"), "{}", run.stderr);

    let dir = TestDir::new("notify-gone");
    let mut command = Monitor::command(&ns, &["lo", "0.1", "--no-log", "--count", "8"]);
    command
        .env("NOTIFY_SOCKET", dir.join("nobody-listens"))
        .env("WATCHDOG_USEC", "100000");
    let run = Monitor::spawn(command).wait();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        run.stdout.lines().filter(|l| l.contains("] #000")).count(),
        8
    );
    let said: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("notifying the service manager"))
        .collect();
    assert_eq!(said.len(), 1, "said once: {}", run.stderr);
    assert!(said[0].ends_with("; monitoring goes on"), "{}", said[0]);
}

/// The unit's capability bounding set is enough for the eBPF side: the monitor run with only
/// those capabilities (as systemd would bound it) loads its programs in count mode; with
/// CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN taken away it says why it cannot and goes on with
/// the counters. Proves the hardening, not only the unit's text.
#[test]
fn the_unit_s_capabilities_load_the_ebpf_side_and_fewer_do_not() {
    let text = fs::read_to_string(repo_file("contrib/systemd/netprobe-monitor@.service")).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("a capability bounding set");
    let caps: Vec<String> = line
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect();
    let start_line = |caps: &[String]| -> String {
        let bounding = format!("-all,+{}", caps.join(",+"));
        let out = std::process::Command::new("setpriv")
            .args(["--bounding-set", &bounding, "--inh-caps", "-all", "--"])
            .arg(netprobe_bin())
            .args(["monitor", "lo", "0.2", "--no-log", "--count", "1"])
            .output()
            .expect("setpriv (util-linux)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    let full = start_line(&caps);
    assert!(full.contains("; eBPF count mode, "), "{full}");
    let fewer: Vec<String> = caps
        .iter()
        .filter(|c| !["bpf", "perfmon", "sys_admin"].contains(&c.as_str()))
        .cloned()
        .collect();
    let without = start_line(&fewer);
    assert!(
        without.contains("; eBPF side unavailable (") && without.ends_with("): counters only"),
        "{without}"
    );
}
