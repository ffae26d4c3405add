//! The demo behind `cargo xtask run`, and the benchmarks behind `cargo xtask bench` (the
//! monitor beside its shell script: bench/monitor.rs).
//!
//! Kernel-side cost is measured by the kernel itself: with `kernel.bpf_stats_enabled=1` every
//! program accumulates `run_time_ns` and `run_cnt`, read with bpftool. netprobe and a
//! bpftrace one-liner counting the same events are run over the same workloads, one after the
//! other, in the same run.

use std::{
    collections::HashSet,
    fs,
    io::{BufRead, BufReader},
    net::{SocketAddr, UdpSocket},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use netprobe_integration::{
    bulk_transfer, loaded_netprobe_programs, loaded_programs, signal, Link, NftTable,
};
use serde_json::Value;

use crate::{run, workspace_root};

mod hooks_cpu;
mod monitor;
mod startup;
pub use hooks_cpu::hooks_cpu;
pub use monitor::monitor_beside_script;
pub use startup::startup;

const PORT: u16 = 5001;
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

fn netprobe() -> Command {
    Command::new(workspace_root().join("target/release/netprobe"))
}

fn lossy_link(tag: &str, subnet: u8, percent: u32) -> Link {
    let link = Link::new(tag, subnet);
    NftTable::input_loss(&link.b, "lossy", PORT, percent);
    link
}

/// Waits until, for each of `expected`, a program whose name starts with it is loaded (the
/// drop hook is `netprobe_drop`, or `netprobe_drop_b` on tp_btf: the kernel keeps 15
/// characters of a name).
fn wait_attached(expected: &[&str]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let loaded = loaded_netprobe_programs();
        if expected
            .iter()
            .all(|p| loaded.iter().any(|l| l.starts_with(p)))
        {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("netprobe did not attach within 20 s")
}

/// `cargo xtask run`: a real TCP transfer over a path with 2% loss, traced live.
pub fn demo() -> Result<()> {
    let link = lossy_link("demo", 200, 2);
    let server = SocketAddr::new(link.addr(2, false), PORT);
    eprintln!(
        "demo: 198.18.200.1 -> {server} in two test namespaces, 2% of data segments dropped by \
         nftables on the way into the receiver; tracing with `ip netns exec {} netprobe trace \
         --duration 6` (inside the receiver, so its findings read the receiver's counters)",
        link.b.name
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", &link.b.name])
        .arg(workspace_root().join("target/release/netprobe"))
        .args(["trace", "--duration", "6"])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting netprobe")?;
    // netprobe reports its hooks (stderr) once attached and its counters' baseline is read:
    // the traffic starts after that, so that both sides see all of it.
    let stderr = child.stderr.take().expect("piped");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.contains(" active (") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .context("netprobe did not attach within 30 s")?;
    for _ in 0..3 {
        bulk_transfer(&link.a, &link.b, server, 16 << 20);
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("netprobe exited with {status}");
    }
    Ok(())
}

/// Restores `kernel.bpf_stats_enabled` when dropped.
struct StatsEnabled {
    previous: String,
}

impl StatsEnabled {
    fn enable() -> Result<Self> {
        let previous = fs::read_to_string(BPF_STATS)
            .context(BPF_STATS)?
            .trim()
            .to_string();
        fs::write(BPF_STATS, "1").context("enabling bpf_stats")?;
        Ok(Self { previous })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, &self.previous);
    }
}

/// (name, id, run_cnt, run_time_ns) of every tracepoint program (classic, raw or BTF-typed)
/// loaded now.
fn tracepoint_programs() -> Vec<(String, u64, u64, u64)> {
    loaded_programs()
        .into_iter()
        // tp_btf programs are of the `tracing` type.
        .filter(|p| matches!(p.kind.as_str(), "tracepoint" | "raw_tracepoint" | "tracing"))
        .map(|p| (p.name, p.id, p.runs, p.run_time_ns))
        .collect()
}

/// (run_cnt, run_time_ns) of the first program whose name starts with `prefix`.
fn run_stats(programs: &[(String, u64, u64, u64)], prefix: &str) -> (u64, u64) {
    programs
        .iter()
        .find(|p| p.0.starts_with(prefix))
        .map(|p| (p.2, p.3))
        .unwrap_or((0, 0))
}

/// The retransmit and drop hooks' (runs, ns) of the programs whose names start with the two
/// prefixes, as the table lists them.
fn hook_costs(
    programs: &[(String, u64, u64, u64)],
    retransmit: &str,
    drop: &str,
) -> Vec<(&'static str, u64, u64)> {
    let (rtx, drop) = (run_stats(programs, retransmit), run_stats(programs, drop));
    vec![
        ("tcp:tcp_retransmit_skb", rtx.0, rtx.1),
        ("skb:kfree_skb", drop.0, drop.1),
    ]
}

/// What the workloads produced.
#[derive(Default, Clone, Copy)]
struct Workload {
    udp_sent: u64,
    udp_secs: f64,
    tcp_secs: f64,
}

const STORM: Duration = Duration::from_secs(3);
const TCP_BYTES: u64 = 64 << 20;

/// A drop storm (UDP to a closed port) and a lossy TCP transfer.
fn workload(link: &Link) -> Workload {
    let to = SocketAddr::new(link.addr(2, false), 9);
    let start = Instant::now();
    let udp_sent = link.a.run(move || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        let begin = Instant::now();
        let mut sent = 0u64;
        while begin.elapsed() < STORM {
            for _ in 0..256 {
                if sock.send_to(b"storm", to).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    });
    let udp_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    bulk_transfer(
        &link.a,
        &link.b,
        SocketAddr::new(link.addr(2, false), PORT),
        TCP_BYTES,
    );
    Workload {
        udp_sent,
        udp_secs,
        tcp_secs: start.elapsed().as_secs_f64(),
    }
}

struct Measured {
    tool: &'static str,
    /// (hook, runs, ns total)
    hooks: Vec<(&'static str, u64, u64)>,
    work: Workload,
    note: String,
}

/// `netprobe trace --json` with `extra` arguments (`--max-rate 100`: a storm sampled).
fn measure_netprobe(link: &Link, tool: &'static str, extra: &[&str]) -> Result<Measured> {
    let mut child = netprobe()
        .args(["trace", "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut lines = 0u64;
        let mut last = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines += 1;
            // The summary (the findings bundle follows it).
            if line.starts_with("{\"type\":\"summary\"") {
                last = line;
            }
        }
        (lines, last)
    });
    wait_attached(&["netprobe_rtx", "netprobe_drop"])?;
    let work = workload(link);
    let programs = tracepoint_programs();
    let hooks = hook_costs(&programs, "netprobe_rtx", "netprobe_drop");
    // The per-CPU programs have no bpftrace twin here; their own cost is printed as is.
    for (program, hook) in [
        ("netprobe_sirq_in", "irq:softirq_entry (all vectors)"),
        ("netprobe_sirq_out", "irq:softirq_exit (all vectors)"),
        ("netprobe_napi", "napi:napi_poll"),
        ("netprobe_rcv", "tcp_probe (every segment received)"),
    ] {
        let (runs, ns) = run_stats(&programs, program);
        println!(
            "{tool:<22} {hook:<34} {:>6} ns/event over {runs} runs",
            per_event(runs, ns)
        );
    }
    stop(&mut child);
    let (lines, last) = reader.join().unwrap();
    let summary: Value = serde_json::from_str(&last).unwrap_or(Value::Null);
    Ok(Measured {
        tool,
        hooks,
        work,
        note: format!(
            "{lines} NDJSON lines streamed, events_lost={}",
            summary["events_lost"]
        ),
    })
}

/// `netprobe monitor` as root: the kernel programs in count mode (no event stream, one map
/// update per drop), the kernel cost of the monitor's eBPF side.
fn measure_monitor(link: &Link) -> Result<Measured> {
    let mut child = netprobe()
        .args(["monitor", "lo", "1", "--no-log"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_attached(&["netprobe_rtx", "netprobe_drop"])?;
    let work = workload(link);
    let hooks = hook_costs(&tracepoint_programs(), "netprobe_rtx", "netprobe_drop");
    stop(&mut child);
    Ok(Measured {
        tool: "monitor",
        hooks,
        work,
        note: "netprobe monitor: count mode, nothing streamed".into(),
    })
}

/// bpftrace's `tracepoint:` probes need tracefs, which netprobe itself no longer does: mounted
/// for the measurement when absent, and unmounted after it.
struct TracefsMounted(bool);

impl TracefsMounted {
    fn ensure() -> Result<Self> {
        const TRACEFS: &str = "/sys/kernel/tracing";
        if std::path::Path::new(TRACEFS).join("events").exists() {
            return Ok(TracefsMounted(false));
        }
        run(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]))?;
        Ok(TracefsMounted(true))
    }
}

impl Drop for TracefsMounted {
    fn drop(&mut self) {
        if self.0 {
            let _ = Command::new("umount").arg("/sys/kernel/tracing").status();
        }
    }
}

fn measure_bpftrace(link: &Link) -> Result<Measured> {
    let _tracefs = TracefsMounted::ensure()?;
    let before: HashSet<u64> = tracepoint_programs().iter().map(|p| p.1).collect();
    let mut child = Command::new("bpftrace")
        .args([
            "-e",
            "tracepoint:skb:kfree_skb { @drops[cpu, args->reason] = count(); } \
             tracepoint:tcp:tcp_retransmit_skb { @rtx[args->sport, args->dport] = count(); }",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting bpftrace")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_programs = || -> Vec<(String, u64, u64, u64)> {
        tracepoint_programs()
            .into_iter()
            .filter(|p| !before.contains(&p.1))
            .collect()
    };
    while new_programs().len() < 2 {
        if Instant::now() > deadline {
            stop(&mut child);
            bail!("bpftrace did not attach");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let work = workload(link);
    // bpftool shows names cut to 15 bytes ("tcp_retransmit_").
    let hooks = hook_costs(&new_programs(), "tcp_retransmit", "kfree_skb");
    stop(&mut child);
    Ok(Measured {
        tool: "bpftrace",
        hooks,
        work,
        note: "counts in BPF maps only, nothing streamed".into(),
    })
}

fn stop(child: &mut Child) {
    signal(child.id() as i32, libc::SIGINT);
    let _ = child.wait();
}

fn per_event(runs: u64, ns: u64) -> String {
    if runs == 0 {
        "-".into()
    } else {
        format!("{:.0}", ns as f64 / runs as f64)
    }
}

/// Throughput in Gbit/s of one loss-free 1 GiB veth transfer.
fn veth_transfer_gbps(link: &Link) -> f64 {
    const BYTES: u64 = 1 << 30;
    let start = Instant::now();
    bulk_transfer(
        &link.a,
        &link.b,
        SocketAddr::new(link.addr(2, false), 5004),
        BYTES,
    );
    BYTES as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// veth TCP throughput without and with `netprobe trace` running (all hooks, no filter).
/// The two conditions alternate round by round after a warm-up, so that drift (autotuning,
/// caches, the other tenant of this VM) hits both alike.
pub fn throughput_with_and_without() -> Result<()> {
    const ROUNDS: usize = 15;
    // netprobe's configurations, each measured against the round's own run without it.
    const CONFIGS: [(&str, &[&str], &[&str]); 3] = [
        (
            "all hooks",
            &[],
            &[
                "netprobe_rtx",
                "netprobe_drop",
                "netprobe_napi",
                "netprobe_rcv",
            ],
        ),
        (
            "--without-cpu-hooks",
            &["--without-cpu-hooks"],
            &["netprobe_rtx", "netprobe_drop", "netprobe_rcv"],
        ),
        (
            "--without-cpu-hooks --without-receive-hook",
            &["--without-cpu-hooks", "--without-receive-hook"],
            &["netprobe_rtx", "netprobe_drop"],
        ),
    ];
    let link = Link::new("tput", 202);
    for _ in 0..2 {
        veth_transfer_gbps(&link);
    }
    let mut without = Vec::new();
    let mut with: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
    for _ in 0..ROUNDS {
        without.push(veth_transfer_gbps(&link));
        for (i, (_, args, programs)) in CONFIGS.iter().enumerate() {
            let mut child = netprobe()
                .args(["trace", "--json"])
                .args(*args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            wait_attached(programs)?;
            // Past the baseline sampling that follows attaching.
            thread::sleep(Duration::from_millis(100));
            with[i].push(veth_transfer_gbps(&link));
            stop(&mut child);
        }
    }
    let baseline = median(without.clone());
    println!(
        "veth TCP bulk throughput, {ROUNDS} rounds of 1 GiB transfers (each round: without netprobe, then each configuration): without netprobe {baseline:.2} Gbit/s (median)"
    );
    for (i, (name, _, _)) in CONFIGS.iter().enumerate() {
        // Each round's change against the same round's run without netprobe, so that the
        // spread (this VM's noise) shows beside the median.
        let changes: Vec<f64> = without
            .iter()
            .zip(&with[i])
            .map(|(a, b)| (b - a) / a * 100.0)
            .collect();
        let (low, high) = changes
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), c| (l.min(*c), h.max(*c)));
        println!(
            "  netprobe {name:<44} {:.2} Gbit/s: per round median {:+.1}%, from {low:+.1}% to {high:+.1}%",
            median(with[i].clone()),
            median(changes.clone())
        );
    }
    Ok(())
}

pub fn run_all() -> Result<()> {
    println!("== userspace: decode + render per event ==");
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args([
            "bench",
            "-p",
            "netprobe",
            "--bench",
            "userspace",
        ]),
    )?;

    println!("\n== start-up: exec to the hooks line (goal: under 150 ms) ==");
    startup()?;

    println!("\n== report: one full sample vs the shell tools ==");
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["bench", "-p", "netprobe", "--bench", "report"]),
    )?;

    println!("\n== analyze: 30 days of 5 s monitor intervals (goal: under 1 s) ==");
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["bench", "-p", "netprobe", "--bench", "analyze"]),
    )?;

    println!("\n== monitor --listen: one scrape with 2 and 64 CPUs' series ==");
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["bench", "-p", "netprobe", "--bench", "metrics"]),
    )?;

    println!("\n== monitor: per interval beside the script it replaces ==");
    monitor_beside_script()?;

    println!("\n== throughput: veth TCP with and without netprobe ==");
    throughput_with_and_without()?;

    hooks_cpu()?;

    kernel_cost()
}

/// Kernel ns per event of `netprobe trace`, `netprobe monitor`'s count mode and a bpftrace
/// one-liner counting the same, over the same workloads, and the storm's throughput under each.
pub fn kernel_cost() -> Result<()> {
    println!("\n== kernel: ns per event (kernel.bpf_stats_enabled), same workloads ==");
    let _stats = StatsEnabled::enable()?;
    let link = lossy_link("bench", 201, 5);
    let before = workload(&link);
    let netprobe = measure_netprobe(&link, "trace", &[])?;
    // The raw tracepoints (helper reads) where tp_btf twins exist, in the same run.
    let raw = measure_netprobe(
        &link,
        "trace, raw tracepoints",
        &["--tracepoint-hooks", "raw"],
    )?;
    let sampled = measure_netprobe(&link, "trace --max-rate 100", &["--max-rate", "100"])?;
    let monitor = measure_monitor(&link)?;
    let bpftrace = measure_bpftrace(&link)?;
    // Untraced again at the end: the storm's rate drifts on this VM; the two runs' mean is the
    // baseline each tracer's rate is set against.
    let after = workload(&link);
    let rate = |w: &Workload| w.udp_sent as f64 / w.udp_secs;
    let untraced = (rate(&before) + rate(&after)) / 2.0;

    println!(
        "workload: UDP drop storm {:.1} s to a closed port + {} MiB TCP over 5% loss",
        STORM.as_secs_f64(),
        TCP_BYTES >> 20
    );
    let tools = [&netprobe, &raw, &sampled, &monitor, &bpftrace];
    print!("{:<24}", "hook: ns/event (runs)");
    for t in tools {
        print!(" {:>26}", t.tool);
    }
    println!();
    for i in 0..netprobe.hooks.len() {
        print!("{:<24}", netprobe.hooks[i].0);
        for t in tools {
            let (_, runs, ns) = t.hooks[i];
            print!(" {:>26}", format!("{} ({runs})", per_event(runs, ns)));
        }
        println!();
    }
    println!(
        "\n{:<22} {:>12} {:>10} {:>8}  note",
        "tracer", "UDP pkts/s", "x untraced", "TCP s"
    );
    println!(
        "{:<22} {:>12.0} {:>10} {:>8.2}  untraced before {:.0}, after {:.0}",
        "none",
        untraced,
        "1.00",
        before.tcp_secs,
        rate(&before),
        rate(&after)
    );
    for t in tools {
        println!(
            "{:<22} {:>12.0} {:>10.2} {:>8.2}  {}",
            t.tool,
            rate(&t.work),
            rate(&t.work) / untraced,
            t.work.tcp_secs,
            t.note
        );
    }
    Ok(())
}
