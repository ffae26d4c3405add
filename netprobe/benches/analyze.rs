//! `netprobe analyze` on 30 days of 5 s intervals (518 400 rows): read, parse, summarise,
//! render, plain and gzip-compressed, and with the SVG chart. The goal (issue 8): under a
//! second.

use std::{fmt::Write as _, fs, io::Write as _, path::PathBuf, time::Instant};

use flate2::{write::GzEncoder, Compression};
use netprobe::{
    analyze::{self, AnalyzeOptions},
    monitor::csv_log::Layout,
};

const DAYS: u64 = 30;
const INTERVAL_S: u64 = 5;
const ROUNDS: u32 = 5;

/// A month of the monitor's log in January 2026: mostly quiet, a drop every 13th interval,
/// a burst every 997th, a note with a comma now and then (quoted, as the monitor writes it).
fn month_log() -> String {
    let rows = DAYS * 86_400 / INTERVAL_S;
    let mut text = Layout::Netprobe.header() + "\n";
    for i in 0..rows {
        let t = i * INTERVAL_S;
        let (day, hour, minute, second) = (1 + t / 86_400, t / 3600 % 24, t / 60 % 60, t % 60);
        let softirq = if i % 13 == 0 { i % 40 } else { 0 };
        let udp = if i % 997 == 0 { 250 } else { 0 };
        let total = softirq + udp;
        let severity = match total {
            0 => "OK",
            1..=99 => "WARN",
            _ => "CRIT",
        };
        let notes = if i % 5000 == 0 {
            "\"late by 1.3 s, one row\""
        } else {
            ""
        };
        let _ = writeln!(
            text,
            "2026-01-{day:02} {hour:02}:{minute:02}:{second:02},{},eth0,{total},0,0,0,0,{softirq},0,0,0,0,{udp},0,{severity},5.000,{notes}",
            i + 1
        );
    }
    text
}

fn time(label: &str, options: &AnalyzeOptions) -> f64 {
    let mut best = f64::MAX;
    let mut output = 0;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        output = analyze::run(options).expect("analyze").len();
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "{label:<44} {:>8.0} ms  (best of {ROUNDS}; {output} bytes out)",
        best * 1e3
    );
    best
}

fn main() {
    let dir = std::env::temp_dir().join(format!("netprobe-bench-analyze-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let text = month_log();
    let plain = dir.join("network_drops.log");
    let gzipped = dir.join("network_drops.log.1.gz");
    fs::write(&plain, &text).unwrap();
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    fs::write(&gzipped, encoder.finish().unwrap()).unwrap();
    let rows = text.lines().count() - 1;
    println!(
        "netprobe analyze, {rows} rows ({DAYS} days of {INTERVAL_S} s intervals, {:.1} MB of CSV):",
        text.len() as f64 / 1e6
    );
    let options = |files: Vec<PathBuf>, json: bool, chart: Option<PathBuf>| AnalyzeOptions {
        files,
        json,
        chart,
        threshold: 100,
    };
    let worst = [
        time(
            "plain log, text report",
            &options(vec![plain.clone()], false, None),
        ),
        time(
            "plain log, --json",
            &options(vec![plain.clone()], true, None),
        ),
        time(
            "gzip log, text report",
            &options(vec![gzipped.clone()], false, None),
        ),
        time(
            "plain log, text report and --chart",
            &options(vec![plain.clone()], false, Some(dir.join("chart.svg"))),
        ),
    ]
    .into_iter()
    .fold(0f64, f64::max);
    println!(
        "slowest: {:.0} ms for {rows} rows ({:.0} ns per row); goal: under 1000 ms",
        worst * 1e3,
        worst * 1e9 / rows as f64
    );
    let _ = fs::remove_dir_all(dir);
}
