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

/// Trace's hook configurations, the cheapest last; each with the raw tracepoints beside it
/// (the fallback where tp_btf is refused), measured in the same rounds.
const CONFIGS: [(&str, &[&str]); 5] = [
    ("all hooks", &[]),
    (
        "all hooks, --tracepoint-hooks raw",
        &["--tracepoint-hooks", "raw"],
    ),
    ("--without-cpu-hooks", &["--without-cpu-hooks"]),
    (
        "--without-cpu-hooks --tracepoint-hooks raw",
        &["--without-cpu-hooks", "--tracepoint-hooks", "raw"],
    ),
    (
        "--without-cpu-hooks --without-receive-hook",
        &["--without-cpu-hooks", "--without-receive-hook"],
    ),
];

/// Rounds over all configurations: a transfer's per-run costs move with how GRO batched it,
/// so each configuration's figure is its median over rounds that interleave them.
const ROUNDS: usize = 3;

/// One configuration's transfer: % of a core, and per program (runs, ns).
struct Measured {
    percent: f64,
    programs: Vec<(String, u64, u64)>,
}

pub fn hooks_cpu() -> Result<()> {
    println!("\n== hooks' CPU on a clean 3 GiB veth transfer (bpf_stats; goal < 1 % of a core) ==");
    let _stats = StatsEnabled::enable()?;
    let link = Link::new("hcpu", 203);
    let to = SocketAddr::new(link.addr(2, false), 5005);
    // Warm-up: autotuning and caches, before anything is measured.
    bulk_transfer(&link.a, &link.b, to, 256 << 20);
    let mut all: Vec<Vec<Measured>> = CONFIGS.iter().map(|_| Vec::new()).collect();
    for round in 1..=ROUNDS {
        for (i, (name, args)) in CONFIGS.iter().enumerate() {
            let m = measure(&link, to, args)?;
            println!("round {round}: {name}: {:.2} %", m.percent);
            all[i].push(m);
        }
    }
    println!("median of {ROUNDS} rounds (per program: median ns/run, runs of that round):");
    for ((name, _), rounds) in CONFIGS.iter().zip(&all) {
        print_median(name, rounds);
    }
    Ok(())
}

fn print_median(name: &str, rounds: &[Measured]) {
    let mut percents: Vec<f64> = rounds.iter().map(|m| m.percent).collect();
    percents.sort_by(f64::total_cmp);
    println!("{name}: {:.2} % of a core", percents[percents.len() / 2]);
    let mut names: Vec<&String> = rounds
        .iter()
        .flat_map(|m| m.programs.iter().map(|p| &p.0))
        .collect();
    names.sort();
    names.dedup();
    for program in names {
        let mut per_run: Vec<(f64, u64)> = rounds
            .iter()
            .filter_map(|m| m.programs.iter().find(|p| &p.0 == program))
            .map(|(_, runs, ns)| (*ns as f64 / *runs as f64, *runs))
            .collect();
        per_run.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ns, runs) = per_run[per_run.len() / 2];
        println!("  {program:<20} {ns:>7.0} ns/run ({runs} runs)");
    }
}

fn measure(link: &Link, to: SocketAddr, args: &[&str]) -> Result<Measured> {
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
    let programs: Vec<(String, u64, u64)> = after
        .iter()
        .map(|(program, (runs, ns))| {
            let (runs0, ns0) = before.get(program).copied().unwrap_or((0, 0));
            (program.clone(), runs - runs0, ns - ns0)
        })
        .filter(|(_, runs, _)| *runs > 0)
        .collect();
    let total_ns: u64 = programs.iter().map(|r| r.2).sum();
    Ok(Measured {
        percent: total_ns as f64 / wall.as_nanos() as f64 * 100.0,
        programs,
    })
}
