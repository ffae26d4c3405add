//! `netprobe trace`: load, stream, detach, drain, summarize.
//!
//! Each record is decoded (`kernel::reader`), turned into a typed event once
//! (`model::event`), tallied (`model::tally`) and written as a line (`output`). The summary
//! and the findings are views of the window's totals (`model::window`).

pub mod count;
mod ndjson;
pub mod output;
pub mod storm;
pub mod summary;

use std::{
    io::{self, Write},
    path::Path,
    time::{Duration, Instant},
};

use netprobe_common::decode::Event;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::{
    cli::TraceArgs,
    findings::{self, FindingsJson},
    kernel::{
        btf::{BtfError, DropReasons, KernelBtf},
        filter::{FilterError, FilterSpec},
        kallsyms::SymbolsLoading,
        loader::{self, LoadError, LoadOptions, Probe},
        reader::{EventReader, ReaderError},
    },
    model::{
        event::{EventModel, NetEvent},
        owners::OwnerCache,
        tally::{DropKey, DropTally},
        window::{Mode, SoftnetDeltas, Streamed, Window, WindowInputs},
    },
    report::{
        self,
        procfs::Softnet,
        sample::{self, Scope, Snapshot},
    },
    trace::{
        count::CountMode,
        output::{realtime_offset_ns, HooksJson, Renderer},
        storm::{StormWatch, STORM_LOOK_INTERVAL},
        summary::SummaryJson,
    },
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
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn positive_seconds(value: Option<f64>, max: f64) -> Result<Option<Duration>, f64> {
    match value {
        Some(d) if d.is_finite() && d > 0.0 && d <= max => Ok(Some(Duration::from_secs_f64(d))),
        Some(d) => Err(d),
        None => Ok(None),
    }
}

/// The running trace: the attached programs, the event pipeline, and the counter baseline.
struct Session<'a> {
    args: &'a TraceArgs,
    probe: Probe,
    model: EventModel,
    renderer: Renderer,
    owners: OwnerCache,
    /// Stream mode: the streamed drops; count mode: the sites' counts at the last read.
    tally: DropTally,
    storms: StormWatch,
    /// `--count`: the drop sites' names.
    count: Option<CountMode>,
    streamed: Streamed,
    filtered: bool,
    started: Instant,
    /// The counter side's baseline, read once the programs are attached.
    counters_at_start: Snapshot,
    /// NET_RX runs per CPU, read before the hooks were attached.
    net_rx_before_attach: Vec<u64>,
    own_netns: u32,
    out: io::BufWriter<io::StdoutLock<'static>>,
    /// stdout is gone (e.g. `| head`): stop writing, stop tracing.
    output_closed: bool,
}

pub async fn run(args: &TraceArgs, btf_path: &Path) -> Result<(), TraceError> {
    if !is_root() {
        return Err(TraceError::NotRoot);
    }
    let duration = positive_seconds(args.duration, f64::MAX).map_err(TraceError::Duration)?;
    let report_every =
        positive_seconds(args.report_every, 86400.0).map_err(TraceError::ReportEvery)?;
    // Signal handlers first, so that a signal during loading still ends in a clean detach.
    let mut sigint = signal(SignalKind::interrupt()).map_err(TraceError::Signal)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(TraceError::Signal)?;
    let mut session = Session::start(args, btf_path)?;
    let mut reader = EventReader::new(session.probe.take_events().ok_or(TraceError::NoRing)?)?;
    let result = session
        .stream(
            &mut reader,
            (&mut sigint, &mut sigterm),
            duration,
            report_every,
        )
        .await;
    // Detach first, then drain: every event the programs queued is then either streamed or
    // counted as lost, and the kernel totals are final.
    session.probe.detach();
    let mut batch = Vec::new();
    reader.drain(&mut batch);
    session.emit(&mut batch);
    session.streamed.decode_errors = reader.decode_errors;
    if let Some(e) = &reader.last_decode_error {
        eprintln!(
            "netprobe: {} records did not decode, last: {e}",
            reader.decode_errors
        );
    }
    session.finish()?;
    result
}

impl<'a> Session<'a> {
    fn start(args: &'a TraceArgs, btf_path: &Path) -> Result<Self, TraceError> {
        // aya's own BTF parse starts now, on the second core, beside ours and the planning.
        let preload = loader::Preload::start(btf_path, args.function_hooks);
        // Read beside the loading, not before the hooks line: nothing needs a symbol until
        // the first drop is named. Not later either: the first drops wait in the ring until
        // their functions can be named, and the owner of a short-lived socket must be looked
        // up while it still has one (a lookup after its process closed it names nobody).
        let symbols = SymbolsLoading::start(Path::new("/proc/kallsyms"));
        let btf = KernelBtf::load(btf_path)?;
        let reasons = DropReasons::from_btf(&btf)?;
        let filter = FilterSpec {
            port: args.port,
            addr: args.addr,
            netns: args.netns.clone(),
            reason: args.reason.clone(),
        }
        .resolve(&reasons)?;
        // Before attaching: every NET_RX run the hooks see then began after this read.
        let net_rx_before_attach = sample::net_rx_runs();
        let probe = loader::load_preloaded(
            &LoadOptions {
                btf: &btf,
                filter,
                ring_size: args.ring_size,
                without_cpu_hooks: args.without_cpu_hooks,
                without_receive_hook: args.without_receive_hook,
                function_hooks: args.function_hooks,
                tracepoint_hooks: args.tracepoint_hooks,
                counting_only: args.count,
                max_rate: args.max_rate.unwrap_or(0),
            },
            preload,
        )?;
        // Parsed once for reasons, layouts and function hooks; not needed while tracing.
        drop(btf);
        // Read before the hooks line tells anyone the trace is running, so both sides cover
        // the same window.
        let counters_at_start = sample::take(&Scope { interface: None }, &mut Vec::new());
        let own_netns = own_netns();
        let mut session = Session {
            count: args
                .count
                .then(|| CountMode::new(reasons.clone(), own_netns)),
            args,
            probe,
            model: EventModel::new(reasons, symbols),
            renderer: Renderer::new(realtime_offset_ns()),
            owners: OwnerCache::new(),
            tally: DropTally::default(),
            storms: StormWatch::new(args.max_rate),
            streamed: Streamed::default(),
            filtered: filter.flags != 0,
            started: Instant::now(),
            counters_at_start,
            net_rx_before_attach,
            own_netns,
            out: io::BufWriter::new(io::stdout().lock()),
            output_closed: false,
        };
        session.announce();
        Ok(session)
    }

    /// The hooks, on stderr for people and as the stream's first line with `--json`.
    fn announce(&mut self) {
        if self.args.json {
            let hooks = HooksJson {
                kind: "hooks",
                hooks: &self.probe.hooks,
            };
            let line = serde_json::to_string(&hooks).expect("hooks serialize");
            self.write(|out| writeln!(out, "{line}"));
        }
        for hook in &self.probe.hooks {
            let state = if hook.active { "active" } else { "INACTIVE" };
            eprintln!(
                "netprobe: {} {} ({}): {}",
                hook.hook, state, hook.attach, hook.detail
            );
        }
        // The moment events start to count, for people and for scripts that wait for it.
        eprintln!(
            "netprobe: tracing ({} of {} hooks active){}",
            self.probe.hooks.iter().filter(|h| h.active).count(),
            self.probe.hooks.len(),
            if self.count.is_some() {
                "; count mode: no event lines, a summary and findings from the kernel's counts"
            } else {
                ""
            }
        );
    }

    async fn stream(
        &mut self,
        reader: &mut EventReader,
        (sigint, sigterm): (&mut Signal, &mut Signal),
        duration: Option<Duration>,
        report_every: Option<Duration>,
    ) -> Result<(), TraceError> {
        let mut batch = Vec::new();
        let deadline = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
        tokio::pin!(deadline);
        // The kernel batches wakeups (at most one per WAKEUP_INTERVAL under load), so the last
        // events of a burst may wait for the next event's wakeup; this tick bounds that wait.
        let mut flush = tokio::time::interval(FLUSH_INTERVAL);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let every = report_every.unwrap_or(Duration::from_secs(3600));
        let mut bundle_tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        bundle_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut storm_tick = tokio::time::interval_at(
            tokio::time::Instant::now() + STORM_LOOK_INTERVAL,
            STORM_LOOK_INTERVAL,
        );
        storm_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.output_closed {
            tokio::select! {
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = &mut deadline, if duration.is_some() => break,
                _ = bundle_tick.tick(), if report_every.is_some() => {
                    reader.drain(&mut batch);
                    self.emit(&mut batch);
                    if !self.output_closed {
                        // Reading the maps while attached: a syscall map read holds off
                        // tracepoint programs on its CPU for its duration, so an invocation
                        // may be skipped; the summary reports any (kernel_skipped).
                        let (window, now) = self.window()?;
                        let so_far = self.bundle(&window, &now, false);
                        self.print_bundle(&so_far);
                    }
                }
                // Count mode streams nothing: no storm to say as it happens.
                _ = storm_tick.tick(), if self.count.is_none() => {
                    // What was streamed of the second first, then what was not.
                    reader.drain(&mut batch);
                    self.emit(&mut batch);
                    self.say_storms()?;
                }
                _ = flush.tick() => {
                    reader.drain(&mut batch);
                    self.emit(&mut batch);
                    // A quiet trace writes nothing, so a reader that went away would go
                    // unnoticed until the end; ask the pipe instead.
                    self.output_closed |= stdout_reader_gone();
                }
                read = reader.read_batch(&mut batch) => {
                    read.map_err(TraceError::Io)?;
                    self.emit(&mut batch);
                }
            }
        }
        Ok(())
    }

    /// The summary and the final bundle, unless nobody reads them any more.
    fn finish(&mut self) -> Result<(), TraceError> {
        let (window, now) = self.window()?;
        if self.output_closed {
            return Ok(());
        }
        if self.args.json {
            let line =
                serde_json::to_string(&SummaryJson::new(&window)).expect("summary serializes");
            self.write(|out| writeln!(out, "{line}"));
        } else {
            let text = summary::text(&window, self.args.top);
            self.write(|out| write!(out, "{text}"));
        }
        let at_end = self.bundle(&window, &now, true);
        self.print_bundle(&at_end);
        Ok(())
    }

    /// The window so far: the kernel's totals and the counters read now.
    fn window(&mut self) -> Result<(Window, Snapshot), TraceError> {
        let totals = self.probe.kernel_totals()?;
        let drop_sites = match self.count.as_mut() {
            Some(count) => {
                let read = count.read(&totals);
                self.tally = read.tally;
                read.sites
            }
            None => Vec::new(),
        };
        let now = sample::take(&Scope { interface: None }, &mut Vec::new());
        let softnet = softnet_deltas(&self.counters_at_start.softnet, &now.softnet);
        let owners = &mut self.owners;
        let (reasons, symbols) = self.model.names();
        let mut window = Window::build(
            &totals,
            WindowInputs {
                mode: if self.count.is_some() {
                    Mode::Count
                } else {
                    Mode::Stream
                },
                streamed: self.streamed,
                hooks: self.probe.hooks.clone(),
                reasons,
                symbols,
                softnet: &softnet,
                filtered: self.filtered,
                duration_ms: self.started.elapsed().as_millis() as u64,
                kernel_skipped: self.probe.recursion_misses(),
                duplicates_after_fin: self.tally.late_duplicates.values().sum(),
            },
            &mut |inode| owners.lookup(inode).cloned(),
        );
        window.drop_sites = drop_sites;
        Ok((window, now))
    }

    /// The streamed drops' tally, with the drops storm sampling counted but did not stream
    /// added to their groups: the findings' counts stay exact.
    fn drops_in(&mut self, window: &Window) -> DropTally {
        let mut drops = self.tally.clone();
        for site in &window.sampled.sites {
            let (reason, direction, layer) = self.model.classify_site_key(&site.key);
            let key = DropKey {
                direction,
                layer,
                reason,
            };
            drops.add_counted_only(key, site.key.netns, site.sampled_out);
        }
        drops
    }

    /// The findings over the window so far: the counters from the baseline to `now`.
    fn bundle(&mut self, window: &Window, now: &Snapshot, is_final: bool) -> FindingsJson {
        let drops = self.drops_in(window);
        let start = &self.counters_at_start;
        // Its socket section (from both snapshots' dumps) also names the listener that
        // connections of this namespace which never completed were sent to, when it is here.
        let report = report::between(start, now);
        findings::build(findings::Inputs {
            window,
            drops: &drops,
            report,
            counters_before: &start.counters,
            counters_now: &now.counters,
            net_rx_before: &self.net_rx_before_attach,
            net_rx_now: &now.net_rx,
            own_netns: self.own_netns,
            filtered: self.filtered,
            drops_name_their_socket: self.probe.drops_name_their_socket,
            is_final,
            window_s: self.started.elapsed().as_secs_f64(),
            top: self.args.top,
        })
    }

    fn print_bundle(&mut self, bundle: &FindingsJson) {
        if self.args.json {
            let line = serde_json::to_string(bundle).expect("findings serialize");
            self.write(|out| writeln!(out, "{line}"));
        } else {
            let text = bundle.text();
            self.write(|out| write!(out, "{text}"));
        }
    }

    /// Writes and flushes; a closed stdout ends the trace instead of failing it.
    fn write(&mut self, what: impl FnOnce(&mut dyn Write) -> io::Result<()>) {
        if self.output_closed {
            return;
        }
        if what(&mut self.out).and_then(|()| self.out.flush()).is_err() {
            self.output_closed = true;
        }
    }

    /// The storm lines of the last second, in the stream.
    fn say_storms(&mut self) -> Result<(), TraceError> {
        let (reasons, symbols) = self.model.names();
        let said = self.storms.look(&self.probe, reasons, symbols)?;
        let json = self.args.json;
        for line in said {
            let line = if json { line.json } else { line.text };
            self.write(|out| writeln!(out, "{line}"));
        }
        Ok(())
    }

    /// Models, tallies and writes a batch of records.
    fn emit(&mut self, batch: &mut Vec<Event>) {
        for record in batch.drain(..) {
            let event = self.model.build(&record);
            match &event {
                NetEvent::Retransmit(_) => self.streamed.retransmits += 1,
                NetEvent::Receive(_) => self.streamed.receives += 1,
                NetEvent::Drop(drop) => {
                    self.streamed.drops += 1;
                    self.tally.add(drop);
                    if let Some(device) = &drop.device {
                        if let Some(name) = device.name {
                            self.storms.learn_device(drop.netns, device.ifindex, name);
                        }
                    }
                }
            }
            if self.output_closed {
                continue;
            }
            let owner = self.owners.lookup(event.sock_ino());
            let written = if self.args.json {
                self.renderer.write_json(&mut self.out, &event, owner)
            } else {
                let line = self.renderer.text_line(&event, owner);
                writeln!(self.out, "{line}")
            };
            if written.is_err() {
                self.output_closed = true;
            }
        }
        self.write(|_| Ok(()));
    }
}

/// Whether stdout is a pipe or socket whose reading end is closed (`| head` exited): poll
/// reports POLLERR on such a write end without writing anything.
fn stdout_reader_gone() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd that outlives the call; a zero timeout never blocks.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// Inode of the network namespace this process runs in (0 when unreadable).
pub fn own_netns() -> u32 {
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m) as u32)
        .unwrap_or(0)
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
