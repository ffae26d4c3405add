//! Cost of one full `netprobe report` sample (every source: procfs, sysfs, ethtool ioctl,
//! rtnetlink qdiscs, sock_diag sockets with owners, conntrack, sysctls), beside the shell
//! tools an engineer runs for the same data, in the same run.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use netprobe::report::{
    netlink, sample,
    sample::{Scope, SYS_CLASS_NET},
    sockets,
};

fn full_sample() -> usize {
    let mut skipped = Vec::new();
    // The sample holds the sock_diag dump (with SK_MEMINFO) since sockets are compared
    // across the window.
    let snap = sample::take(&Scope { interface: None }, &mut skipped);
    let socks = snap.sockets.clone().unwrap_or_default();
    let window = sockets::SocketWindow::new(None, &socks);
    let (owners, complete) = sockets::socket_owners(&sockets::inodes_of_interest(&window));
    let (sysctls, _) = sample::sysctls(&mut skipped);
    let summary = sockets::summarize(&window, &owners, complete, &Default::default());
    snap.net_dev.len() + summary.tcp_total + sysctls.len()
}

/// Where one sample's time goes (printed once, for the closing note).
fn breakdown() {
    let mut skipped = Vec::new();
    let t = Instant::now();
    let _ = sample::take(&Scope { interface: None }, &mut skipped);
    let counters = t.elapsed();
    let t = Instant::now();
    let socks = netlink::inet_sockets().unwrap_or_default();
    let dump = t.elapsed();
    let t = Instant::now();
    let window = sockets::SocketWindow::new(None, &socks);
    let (owners, _) = sockets::socket_owners(&sockets::inodes_of_interest(&window));
    let scan = t.elapsed();
    let t = Instant::now();
    let _ = sample::sysctls(&mut skipped);
    let sysctl = t.elapsed();
    println!(
        "  breakdown: counters/sysfs/ethtool/qdiscs/sock_diag {:.0} µs, of which sock_diag {:.0} µs ({} sockets), owner scan {:.0} µs ({} inodes), sysctls {:.0} µs",
        counters.as_secs_f64() * 1e6,
        dump.as_secs_f64() * 1e6,
        socks.len(),
        scan.as_secs_f64() * 1e6,
        owners.len(),
        sysctl.as_secs_f64() * 1e6
    );
}

fn first_nic() -> Option<String> {
    std::fs::read_dir(SYS_CLASS_NET)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n != "lo" && Path::new(SYS_CLASS_NET).join(n).join("device").exists())
}

fn main() {
    const SAMPLES: u32 = 200;
    for _ in 0..5 {
        std::hint::black_box(full_sample());
    }
    let start = Instant::now();
    for _ in 0..SAMPLES {
        std::hint::black_box(full_sample());
    }
    let ours = start.elapsed().as_secs_f64() * 1e6 / SAMPLES as f64;

    let nic = first_nic().unwrap_or_else(|| "lo".into());
    let commands: Vec<(&str, Vec<String>)> = vec![
        ("netstat", vec!["-s".into()]),
        ("netstat", vec!["-su".into()]),
        ("ss", vec!["-s".into()]),
        (
            "ss",
            vec!["-tnp".into(), "state".into(), "close-wait".into()],
        ),
        ("ethtool", vec!["-S".into(), nic.clone()]),
        ("ethtool", vec!["-g".into(), nic.clone()]),
        ("ethtool", vec!["-i".into(), nic.clone()]),
        ("tc", vec!["-s".into(), "qdisc".into()]),
        ("cat", vec!["/proc/net/softnet_stat".into()]),
    ];
    const ROUNDS: u32 = 20;
    let mut per_tool = vec![0f64; commands.len()];
    let start = Instant::now();
    for _ in 0..ROUNDS {
        for (i, (cmd, args)) in commands.iter().enumerate() {
            let t = Instant::now();
            let status = Command::new(cmd)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if status.is_err() {
                eprintln!("{cmd} is not installed: run `cargo xtask setup`");
                std::process::exit(1);
            }
            per_tool[i] += t.elapsed().as_secs_f64();
        }
    }
    let tools = start.elapsed().as_secs_f64() * 1e6 / ROUNDS as f64;

    println!("one full netprobe report sample (all sources):  {ours:>9.0} µs  (mean of {SAMPLES})");
    breakdown();
    println!(
        "the shell tools for the same data, in sequence:  {tools:>9.0} µs  (mean of {ROUNDS})"
    );
    for (i, (cmd, args)) in commands.iter().enumerate() {
        println!(
            "    {:<40} {:>9.0} µs",
            format!("{cmd} {}", args.join(" ")),
            per_tool[i] * 1e6 / ROUNDS as f64
        );
    }
    println!(
        "ratio: the shell tools cost {:.1}× one netprobe sample",
        tools / ours
    );
}
