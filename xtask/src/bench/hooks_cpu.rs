//! The CPU all of netprobe's hooks take during a clean, fast transfer: `netprobe trace` with
//! every hook attached, a loss-free 3 GiB TCP transfer over veth, and the kernel's own
//! account of the programs' run time (`bpf_stats`) over the transfer's wall time. The goal is
//! under 1 % of a core, so that a trace can stay on during a throughput problem.

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use netprobe_integration::{bulk_transfer, loaded_programs, Link};

use super::{netprobe, stop, wait_attached, StatsEnabled};

const BYTES: u64 = 3 << 30;

/// (name → (run_cnt, run_time_ns)) of every netprobe program loaded now, of any type.
fn netprobe_program_stats() -> HashMap<String, (u64, u64)> {
    let mut stats = HashMap::new();
    for p in loaded_programs() {
        if p.name.starts_with("netprobe") {
            let entry = stats.entry(p.name).or_insert((0, 0));
            entry.0 += p.runs;
            entry.1 += p.run_time_ns;
        }
    }
    stats
}

/// Trace's hook configurations, the cheapest last.
const CONFIGS: [(&str, &[&str]); 3] = [
    ("all hooks", &[]),
    ("--without-cpu-hooks", &["--without-cpu-hooks"]),
    (
        "--without-cpu-hooks --without-receive-hook",
        &["--without-cpu-hooks", "--without-receive-hook"],
    ),
];

pub fn hooks_cpu() -> Result<()> {
    println!("\n== hooks' CPU on a clean 3 GiB veth transfer (bpf_stats; goal < 1 % of a core) ==");
    let _stats = StatsEnabled::enable()?;
    let link = Link::new("hcpu", 203);
    let to = SocketAddr::new(link.addr(2, false), 5005);
    // Warm-up: autotuning and caches, before anything is measured.
    bulk_transfer(&link.a, &link.b, to, 256 << 20);
    for (name, args) in CONFIGS {
        measure(&link, to, name, args)?;
    }
    Ok(())
}

fn measure(link: &Link, to: SocketAddr, name: &str, args: &[&str]) -> Result<()> {
    let mut child = netprobe()
        .args(["trace", "--json"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_attached(&["netprobe_rtx", "netprobe_drop"])?;
    // Past the baseline sampling that follows attaching.
    thread::sleep(Duration::from_millis(200));
    let before = netprobe_program_stats();
    let start = Instant::now();
    bulk_transfer(&link.a, &link.b, to, BYTES);
    let wall = start.elapsed();
    let after = netprobe_program_stats();
    stop(&mut child);
    let mut rows: Vec<(String, u64, u64)> = after
        .iter()
        .map(|(program, (runs, ns))| {
            let (runs0, ns0) = before.get(program).copied().unwrap_or((0, 0));
            (program.clone(), runs - runs0, ns - ns0)
        })
        .filter(|(_, runs, _)| *runs > 0)
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.2));
    let total_ns: u64 = rows.iter().map(|r| r.2).sum();
    let total_runs: u64 = rows.iter().map(|r| r.1).sum();
    let wall_ns = wall.as_nanos() as f64;
    println!(
        "{name}: {:.2} Gbit/s over {:.2} s; {:.2} % of a core ({:.1} ms of program time, {total_runs} runs)",
        BYTES as f64 * 8.0 / wall.as_secs_f64() / 1e9,
        wall.as_secs_f64(),
        total_ns as f64 / wall_ns * 100.0,
        total_ns as f64 / 1e6
    );
    for (program, runs, ns) in rows {
        println!(
            "  {program:<20} {runs:>10} runs {:>7.0} ns/run {:>6.2} %",
            ns as f64 / runs as f64,
            ns as f64 / wall_ns * 100.0
        );
    }
    Ok(())
}
