//! `netprobe analyze` end to end: the built binary on a generated monitor log, rotated with
//! its oldest part gzip-compressed, checked through its JSON; and bad input (a missing file,
//! another header, a PNG chart) as one line and a non-zero exit. Userspace only: no root, no
//! lock needed.

use std::{fs, io::Write, path::PathBuf, process::Command};

use flate2::{write::GzEncoder, Compression};
use netprobe_integration::netprobe_bin;
use serde_json::Value;

const HEADER: &str = "timestamp,iteration,interface,total_drops,nic_rx,nic_tx,nic_missed,qdisc,softirq,syn_queue,accept_queue,tcp_pruned,tcp_collapsed,udp_rcvbuf,udp_sndbuf,severity,interval_s,notes";

/// Intervals `first..=last` of the known log: 5 per hour from 00:00, `softirq = i` on
/// multiples of 4, `udp_rcvbuf = 1` on multiples of 10, `tcp_collapsed = 7` (not a loss) on
/// multiples of 5.
fn rows(first: u64, last: u64) -> String {
    let mut text = format!("{HEADER}\n");
    for i in first..=last {
        let softirq = if i % 4 == 0 { i } else { 0 };
        let udp = u64::from(i % 10 == 0);
        let collapsed = if i % 5 == 0 { 7 } else { 0 };
        let total = softirq + udp;
        let severity = match total {
            0 => "OK",
            1..=99 => "WARN",
            _ => "CRIT",
        };
        let (hour, minute) = ((i - 1) / 5, (i - 1) % 5);
        text += &format!(
            "2026-02-03 {hour:02}:{minute:02}:00,{i},eth0,{total},0,0,0,0,{softirq},0,0,0,{collapsed},{udp},0,{severity},5.000,\n"
        );
    }
    text
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "netprobe-e2e-analyze-{}-{name}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn analyze(args: &[&str]) -> std::process::Output {
    Command::new(netprobe_bin())
        .arg("analyze")
        .args(args)
        .output()
        .expect("running netprobe analyze")
}

#[test]
fn analyze_reads_a_rotated_gzip_log_and_reports_every_section() {
    let dir = temp_dir("rotated");
    let oldest = dir.join("network_drops.log.2.gz");
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(rows(1, 40).as_bytes()).unwrap();
    fs::write(&oldest, gz.finish().unwrap()).unwrap();
    let older = dir.join("network_drops.log.1");
    // A torn line, as a crash leaves: line 32 of this file (header, rows 41–70, torn line).
    fs::write(&older, rows(41, 70) + "2026-02-03 13:5\n").unwrap();
    let current = dir.join("network_drops.log");
    fs::write(&current, rows(71, 100)).unwrap();
    let chart = dir.join("drops.svg");
    let paths: Vec<String> = [&oldest, &older, &current]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let chart_arg = chart.display().to_string();
    args.extend(["--json", "--chart", &chart_arg]);
    let out = analyze(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    let json: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");

    assert_eq!(json["kind"], "monitor_analysis");
    let files: Vec<(bool, u64)> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["gzip"].as_bool().unwrap(), f["rows"].as_u64().unwrap()))
        .collect();
    assert_eq!(files, vec![(true, 40), (false, 30), (false, 30)]);
    assert_eq!(json["intervals"], 100);
    assert_eq!(json["intervals_with_drops"], 30);
    assert_eq!(json["intervals_with_drops_percent"], 30.0);
    assert_eq!(json["total_drops"], 1310);
    assert_eq!(json["drops_by_category"]["softirq"], 1300);
    assert_eq!(json["drops_by_category"]["udp_rcvbuf"], 10);
    assert_eq!(json["drops_by_category"]["tcp_collapsed"], 140);
    assert_eq!(json["drops_by_category"]["qdisc"], 0);
    assert_eq!(json["severity"]["OK"], 70);
    assert_eq!(json["severity"]["WARN"], 29);
    assert_eq!(json["severity"]["CRIT"], 1);
    let worst = json["worst_intervals"].as_array().unwrap();
    let worst: Vec<(u64, u64)> = worst
        .iter()
        .map(|w| {
            (
                w["iteration"].as_u64().unwrap(),
                w["total_drops"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        worst,
        [
            (100, 101),
            (96, 96),
            (92, 92),
            (88, 88),
            (84, 84),
            (80, 81),
            (76, 76),
            (72, 72),
            (68, 68),
            (64, 64)
        ]
    );
    assert_eq!(json["worst_intervals"][0]["severity"], "CRIT");
    assert_eq!(json["worst_intervals"][0]["biggest_category"], "softirq");
    assert_eq!(
        json["worst_intervals"][0]["timestamp"],
        "2026-02-03 19:04:00"
    );
    let hours = json["by_hour"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    assert_eq!(hours[19]["drops"], 197);
    assert_eq!(hours[19]["intervals_with_drops"], 2);
    assert_eq!(hours[0]["drops"], 4);
    assert_eq!(hours[23]["intervals"], 0);
    let last: Vec<u64> = json["last_intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(last, (81..=100).collect::<Vec<_>>());
    assert_eq!(json["malformed"]["count"], 1);
    assert_eq!(json["malformed"]["first"][0]["line"], 32);
    assert_eq!(json["malformed"]["first"][0]["file"], paths[1].as_str());

    let svg = fs::read_to_string(&chart).expect("the chart was written");
    assert!(svg.starts_with("<?xml") && svg.ends_with("</svg>\n"));
    assert_eq!(
        svg.matches("<path ").count(),
        10,
        "one path per loss column"
    );
    assert!(svg.contains("class=\"threshold\"") && svg.contains("CRIT ≥ 100"));
    let _ = fs::remove_dir_all(dir);
}

/// One line on stderr naming the problem, exit status 1, nothing on stdout.
fn assert_one_line_error(args: &[&str], expected: &str) {
    let out = analyze(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("netprobe: error: "), "{stderr}");
    assert!(
        stderr.contains(expected),
        "{args:?}: {stderr} lacks {expected:?}"
    );
    assert!(out.stdout.is_empty(), "{args:?} printed a report anyway");
}

#[test]
fn analyze_bad_input_is_one_line_and_a_non_zero_exit() {
    let dir = temp_dir("bad");
    let good = dir.join("good.log");
    fs::write(&good, rows(1, 10)).unwrap();
    let good = good.display().to_string();
    let missing = dir.join("missing.log").display().to_string();
    assert_one_line_error(&[&good, &missing], "missing.log");
    let other = dir.join("other.csv");
    fs::write(&other, "time,host,drops\n2026-02-03 10:00:00,a,5\n").unwrap();
    let other = other.display().to_string();
    assert_one_line_error(&[&good, &other], "another header");
    let png = dir.join("chart.png").display().to_string();
    assert_one_line_error(&[&good, "--chart", &png], "only .svg");
    assert!(!dir.join("chart.png").exists());
    // And the good log alone is fine: the failures above were the bad input's.
    assert!(analyze(&[&good]).status.success());
    let _ = fs::remove_dir_all(dir);
}
