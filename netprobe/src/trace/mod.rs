//! `netprobe trace`: load, stream, detach, drain, summarize.

pub mod output;
pub mod summary;

use std::{
    io::{self, Write},
    path::Path,
    time::{Duration, Instant},
};

use netprobe_common::decode::Event;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    cli::TraceArgs,
    findings::{self, DropTally},
    kernel::btf::{BtfError, DropReasons, KernelBtf},
    kernel::filter::{FilterError, FilterSpec},
    kernel::kallsyms::Symbolizer,
    kernel::loader::{self, LoadError, LoadOptions},
    kernel::reader::{EventReader, ReaderError},
    model::owners::OwnerCache,
    report::{
        self,
        procfs::Softnet,
        sample::{self, Scope, Snapshot},
    },
    trace::output::{realtime_offset_ns, HooksJson, Renderer},
    trace::summary::{SoftnetDeltas, Streamed, SummaryJson},
};

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("netprobe trace must run as root: it loads eBPF programs into the kernel")]
    NotRoot,
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Reader(#[from] ReaderError),
    #[error("--duration {0}: must be a positive number of seconds")]
    Duration(f64),
    #[error("--report-every {0}: must be a positive number of seconds")]
    ReportEvery(f64),
    #[error("the ring buffer map is missing from the eBPF object")]
    NoRing,
    #[error("signal handling: {0}")]
    Signal(io::Error),
    #[error("reading events: {0}")]
    Io(io::Error),
}

/// Longest time an event can sit in the ring after a burst before it is printed.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub async fn run(args: &TraceArgs, btf_path: &Path) -> Result<(), TraceError> {
    if !is_root() {
        return Err(TraceError::NotRoot);
    }
    let duration = match args.duration {
        Some(d) if d.is_finite() && d > 0.0 => Some(Duration::from_secs_f64(d)),
        Some(d) => return Err(TraceError::Duration(d)),
        None => None,
    };
    let report_every = match args.report_every {
        Some(d) if d.is_finite() && d > 0.0 && d <= 86400.0 => Some(Duration::from_secs_f64(d)),
        Some(d) => return Err(TraceError::ReportEvery(d)),
        None => None,
    };
    let btf = KernelBtf::load(btf_path)?;
    let reasons = DropReasons::from_btf(&btf)?;
    let filter = FilterSpec {
        port: args.port,
        addr: args.addr,
        netns: args.netns.clone(),
        reason: args.reason.clone(),
    }
    .resolve(&reasons)?;
    // Without kallsyms, locations print as hex addresses; that is worth a warning, not a stop.
    let symbols = Symbolizer::load(Path::new("/proc/kallsyms")).unwrap_or_else(|e| {
        eprintln!("netprobe: {e}; drop locations will be hex addresses");
        Symbolizer::default()
    });

    // Signal handlers first, so that a signal during loading still ends in a clean detach.
    let mut sigint = signal(SignalKind::interrupt()).map_err(TraceError::Signal)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(TraceError::Signal)?;

    let mut probe = loader::load(&LoadOptions {
        btf: &btf,
        filter,
        ring_size: args.ring_size,
        without_cpu_hooks: args.without_cpu_hooks,
        without_receive_hook: args.without_receive_hook,
        function_hooks: args.function_hooks,
    })?;
    // Parsed once for reasons, layouts and function hooks; not needed while tracing.
    drop(btf);
    let started = Instant::now();
    let renderer = Renderer::new(reasons, symbols, realtime_offset_ns());

    // The counter side's baseline, read as soon as the programs are attached and before the
    // hooks line tells anyone the trace is running, so both sides cover the same window.
    let counters_at_start = sample::take(&Scope { interface: None }, &mut Vec::new());
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if probe.mounted_tracefs {
        eprintln!("netprobe: mounted tracefs at /sys/kernel/tracing");
    }
    if args.json {
        let hooks = HooksJson {
            kind: "hooks",
            hooks: &probe.hooks,
        };
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(&hooks).expect("hooks serialize")
        );
        let _ = out.flush();
    }
    for hook in &probe.hooks {
        let state = if hook.active { "active" } else { "INACTIVE" };
        eprintln!(
            "netprobe: {} {} ({}): {}",
            hook.hook, state, hook.attach, hook.detail
        );
    }
    // The moment events start to count, for people and for scripts that wait for it.
    eprintln!(
        "netprobe: tracing ({} of {} hooks active)",
        probe.hooks.iter().filter(|h| h.active).count(),
        probe.hooks.len()
    );

    let own_netns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m) as u32)
        .unwrap_or(0);
    let mut tally = DropTally::default();
    let mut reader = EventReader::new(probe.take_events().ok_or(TraceError::NoRing)?)?;
    let mut streamed = Streamed::default();
    let mut owners = OwnerCache::new();
    let mut batch = Vec::new();
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut output_closed = false;
    // The kernel batches wakeups (at most one per WAKEUP_INTERVAL under load), so the last
    // events of a burst may wait for the next event's wakeup; this tick bounds that wait.
    let mut flush = tokio::time::interval(FLUSH_INTERVAL);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut bundle_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + report_every.unwrap_or(Duration::from_secs(3600)),
        report_every.unwrap_or(Duration::from_secs(3600)),
    );
    bundle_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let window = |probe: &loader::Probe,
                  streamed: Streamed,
                  owners: &mut OwnerCache|
     -> Result<(SummaryJson, Snapshot), TraceError> {
        let totals = probe.kernel_totals()?;
        let now = sample::take(&Scope { interface: None }, &mut Vec::new());
        let softnet = softnet_deltas(&counters_at_start.softnet, &now.softnet);
        let summary = summary::build(
            &totals,
            summary::Window {
                streamed,
                hooks: probe.hooks.clone(),
                reasons: &renderer.reasons,
                softnet: &softnet,
                filtered: filter.flags != 0,
                duration_ms: started.elapsed().as_millis() as u64,
                kernel_skipped: probe.recursion_misses(),
            },
            &mut |inode| owners.lookup(inode),
        );
        Ok((summary, now))
    };
    // The findings over the window so far: the counters from the baseline to `now`.
    let bundle = |summary: &SummaryJson, tally: &DropTally, now: &Snapshot, is_final: bool| {
        findings::build(findings::Inputs {
            summary,
            drops: tally,
            report: report::between(&counters_at_start, now),
            counters_before: &counters_at_start.counters,
            counters_now: &now.counters,
            net_rx_before: &counters_at_start.net_rx,
            net_rx_now: &now.net_rx,
            own_netns,
            filtered: filter.flags != 0,
            is_final,
            window_s: started.elapsed().as_secs_f64(),
            top: args.top,
        })
    };

    let result = loop {
        tokio::select! {
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = &mut deadline, if duration.is_some() => break Ok(()),
            _ = bundle_tick.tick(), if report_every.is_some() => {
                reader.drain(&mut batch);
                if !emit(&mut out, &renderer, &mut owners, &mut tally, &mut batch, &mut streamed, args.json) {
                    output_closed = true;
                    break Ok(());
                }
                // Reading the maps while attached: a syscall map read holds off tracepoint
                // programs on its CPU for its duration, so an invocation may be skipped; the
                // summary reports any (kernel_skipped).
                let (summary, now) = window(&probe, streamed, &mut owners)?;
                let so_far = bundle(&summary, &tally, &now, false);
                if !print_bundle(&mut out, &so_far, args.json) {
                    output_closed = true;
                    break Ok(());
                }
            }
            _ = flush.tick() => {
                reader.drain(&mut batch);
                if !emit(&mut out, &renderer, &mut owners, &mut tally, &mut batch, &mut streamed, args.json) {
                    output_closed = true;
                    break Ok(());
                }
            }
            read = reader.read_batch(&mut batch) => {
                if let Err(e) = read {
                    break Err(TraceError::Io(e));
                }
                if !emit(&mut out, &renderer, &mut owners, &mut tally, &mut batch, &mut streamed, args.json) {
                    output_closed = true;
                    break Ok(());
                }
            }
        }
    };

    // Detach first, then drain: every event the programs queued is then either streamed or
    // counted as lost, and the kernel totals are final.
    probe.detach();
    reader.drain(&mut batch);
    if !output_closed {
        emit(
            &mut out,
            &renderer,
            &mut owners,
            &mut tally,
            &mut batch,
            &mut streamed,
            args.json,
        );
    }
    streamed.decode_errors = reader.decode_errors;
    if let Some(e) = &reader.last_decode_error {
        eprintln!(
            "netprobe: {} records did not decode, last: {e}",
            reader.decode_errors
        );
    }
    let (summary, now) = window(&probe, streamed, &mut owners)?;
    if !output_closed {
        if args.json {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(&summary).expect("summary serializes")
            );
        } else {
            let _ = write!(out, "{}", summary.text(args.top));
        }
        let _ = out.flush();
        let at_end = bundle(&summary, &tally, &now, true);
        print_bundle(&mut out, &at_end, args.json);
    }
    result
}

/// Writes a findings bundle; false when stdout is gone.
fn print_bundle(out: &mut impl Write, bundle: &findings::FindingsJson, json: bool) -> bool {
    let written = if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(bundle).expect("findings serialize")
        )
    } else {
        write!(out, "{}", bundle.text())
    };
    written.is_ok() && out.flush().is_ok()
}

/// Per-CPU (time_squeeze, dropped) growth between two softnet_stat reads.
fn softnet_deltas(before: &[Softnet], after: &[Softnet]) -> SoftnetDeltas {
    after
        .iter()
        .map(|a| {
            let b = before
                .iter()
                .find(|b| b.cpu == a.cpu)
                .copied()
                .unwrap_or(*a);
            (
                a.cpu,
                (
                    a.time_squeeze.saturating_sub(b.time_squeeze),
                    a.dropped.saturating_sub(b.dropped),
                ),
            )
        })
        .collect()
}

/// Writes a batch; false when stdout is gone (e.g. `| head`).
fn emit(
    out: &mut impl Write,
    renderer: &Renderer,
    owners: &mut OwnerCache,
    tally: &mut DropTally,
    batch: &mut Vec<Event>,
    streamed: &mut Streamed,
    json: bool,
) -> bool {
    let mut ok = true;
    for event in batch.drain(..) {
        let sock_ino = match &event {
            Event::Retransmit(e) => {
                streamed.retransmits += 1;
                e.sock_ino
            }
            Event::Drop(e) => {
                streamed.drops += 1;
                e.sock_ino
            }
            Event::Receive(e) => {
                streamed.receives += 1;
                e.sock_ino
            }
        };
        let owner = owners.lookup(sock_ino);
        let drop = match &event {
            Event::Drop(e) => {
                // Classified once: for the findings' tally and for the line.
                let j = renderer.drop_json(e, owner.as_ref());
                tally.add(&j);
                Some(j)
            }
            _ => None,
        };
        if ok {
            let line = match (&drop, json) {
                (Some(j), true) => serde_json::to_string(j).expect("drop JSON serializes"),
                (_, true) => renderer.json_line(&event, owner.as_ref()),
                (_, false) => renderer.text_line(&event, owner.as_ref()),
            };
            ok = writeln!(out, "{line}").is_ok();
        }
    }
    ok && out.flush().is_ok()
}
