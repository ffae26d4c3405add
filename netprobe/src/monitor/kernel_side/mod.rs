//! The monitor's eBPF side (root only): the kernel programs loaded in count mode
//! (`MODE_COUNT`: no event stream, nothing per packet crosses to userspace), read once per
//! interval. Each interval's growth of the in-kernel counts says what the counters cannot:
//! which drop reason, on which CPU, at which layer, on which interface; the retransmitted
//! segments by kind; the CPU whose backlog overflowed and the CPUs that enqueued to it; the
//! NET_RX time per CPU. See `attribution` for what an interval carries.

pub mod attribution;
pub mod json;

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};

use netprobe_common::{DropSiteKey, FlowKey, NetRxTotals, ReceiveTotals, RetransmitTotals};

use crate::model::sites::SiteNames;
use crate::{
    cli::{FunctionHooks, TracepointHooks},
    kernel::{
        btf::{BtfError, DropReasons, KernelBtf},
        loader::{self, HookStatus, LoadError, LoadOptions, Probe},
    },
};
pub use attribution::Attribution;

#[derive(Debug, thiserror::Error)]
pub enum KernelSideError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// A flow's entry in the kernel's retransmit table is forgotten once it has not changed for
/// this long (its counts already taken): a monitor running for days keeps the table, and its
/// own memory, bounded by the flows that retransmitted in the last few minutes.
const FLOW_IDLE_FORGOTTEN_AFTER: Duration = Duration::from_secs(600);

/// The in-kernel counts at one instant.
#[derive(Debug, Clone, Default)]
pub struct KernelSample {
    /// Drops by site, per CPU.
    pub sites: HashMap<DropSiteKey, Vec<u64>>,
    /// Drops counted by reason only (their site did not fit the table), per CPU.
    pub reasons_only: HashMap<u32, Vec<u64>>,
    pub flows: HashMap<FlowKey, RetransmitTotals>,
    /// Received segments by flow (only with the receive hook: `--listen`).
    pub receive: HashMap<FlowKey, ReceiveTotals>,
    /// Indexed by CPU.
    pub net_rx: Vec<NetRxTotals>,
    /// Sites that did not fit `DROP_SITES`, and flows that did not fit `RETRANSMIT_FLOWS`.
    pub site_table_full: u64,
    pub flow_table_full: u64,
    /// Events no count holds: queued events lost, and flows or reasons that did not fit their
    /// tables (`netprobe_events_lost_total`).
    pub events_lost: u64,
}

/// The loaded programs, and what names their numbers.
pub struct KernelSide {
    probe: Probe,
    names: SiteNames,
    own_netns: u32,
    /// When each flow's totals last changed (for forgetting idle flows).
    flow_seen: Idle<RetransmitTotals>,
    receive_seen: Idle<ReceiveTotals>,
}

impl KernelSide {
    /// Loads the programs in count mode: drops, retransmits (with their outcomes and kinds)
    /// and the per-CPU NET_RX hooks; the receive-path hook (every segment received) only with
    /// `receive` (the Prometheus export's peer retransmits: its cost is paid only when asked
    /// for), its per-flow detail being `netprobe trace`'s.
    pub fn start(btf_path: &Path, receive: bool) -> Result<Self, KernelSideError> {
        let btf = KernelBtf::load(btf_path)?;
        let reasons = DropReasons::from_btf(&btf)?;
        let probe = loader::load(&LoadOptions {
            btf: &btf,
            filter: netprobe_common::Filter::default(),
            ring_size: 4096,
            without_cpu_hooks: false,
            without_receive_hook: !receive,
            function_hooks: FunctionHooks::Auto,
            tracepoint_hooks: TracepointHooks::Auto,
            counting_only: true,
            max_rate: 0,
        })?;
        drop(btf);
        // Parsing BTF (ours and aya's) left tens of MB freed but still mapped: hand them back,
        // so that a monitor running for days holds only what it uses.
        release_freed_memory();
        Ok(Self {
            probe,
            // Without kallsyms a site is its hex address; the layer then comes from the reason.
            names: SiteNames::new(reasons, Path::new("/proc/kallsyms")),
            own_netns: crate::trace::own_netns(),
            flow_seen: Idle::default(),
            receive_seen: Idle::default(),
        })
    }

    pub fn hooks(&self) -> &[HookStatus] {
        &self.probe.hooks
    }

    pub fn own_netns(&self) -> u32 {
        self.own_netns
    }

    pub fn names(&mut self) -> &mut SiteNames {
        &mut self.names
    }

    /// Reads every table once; then forgets the flows idle for long.
    pub fn sample(&mut self) -> Result<KernelSample, KernelSideError> {
        let totals = self.probe.kernel_totals()?;
        let site_table_full = totals.counter(netprobe_common::COUNTER_DROP_SITE_TABLE_FULL);
        let flow_table_full = totals.counter(netprobe_common::COUNTER_FLOW_TABLE_FULL);
        let events_lost = [
            netprobe_common::COUNTER_DROP_LOST,
            netprobe_common::COUNTER_RETRANSMIT_LOST,
            netprobe_common::COUNTER_FLOW_TABLE_FULL,
            netprobe_common::COUNTER_REASON_TABLE_FULL,
        ]
        .into_iter()
        .map(|c| totals.counter(c))
        .sum();
        let mut sample = KernelSample {
            sites: totals.sites.into_iter().collect(),
            reasons_only: totals.reasons_only.into_iter().collect(),
            flows: totals.flows.into_iter().collect(),
            receive: totals.receive_flows.into_iter().collect(),
            net_rx: totals.net_rx,
            site_table_full,
            flow_table_full,
            events_lost,
        };
        let now = Instant::now();
        let idle = self.flow_seen.idle(&sample.flows, now);
        if !idle.is_empty() {
            self.probe.forget_retransmit_flows(&idle)?;
            // Taken out of this sample as well: the next one no longer has them, and an
            // entry present in one sample and not the other counts nothing.
            for key in &idle {
                sample.flows.remove(key);
                self.flow_seen.forget(key);
            }
        }
        let idle = self.receive_seen.idle(&sample.receive, now);
        if !idle.is_empty() {
            self.probe.forget_receive_flows(&idle)?;
            for key in &idle {
                sample.receive.remove(key);
                self.receive_seen.forget(key);
            }
        }
        Ok(sample)
    }
}

/// When each flow's totals last changed, to forget flows idle for
/// [`FLOW_IDLE_FORGOTTEN_AFTER`].
struct Idle<T> {
    seen: HashMap<FlowKey, (T, Instant)>,
}

impl<T> Default for Idle<T> {
    fn default() -> Self {
        Self {
            seen: HashMap::new(),
        }
    }
}

impl<T: Copy + PartialEq> Idle<T> {
    /// Flows whose totals have not changed for [`FLOW_IDLE_FORGOTTEN_AFTER`].
    fn idle(&mut self, flows: &HashMap<FlowKey, T>, now: Instant) -> Vec<FlowKey> {
        let present: HashSet<&FlowKey> = flows.keys().collect();
        self.seen.retain(|key, _| present.contains(key));
        let mut idle = Vec::new();
        for (key, totals) in flows {
            let seen = self.seen.entry(*key).or_insert((*totals, now));
            if seen.0 != *totals {
                *seen = (*totals, now);
            } else if now.duration_since(seen.1) >= FLOW_IDLE_FORGOTTEN_AFTER {
                idle.push(*key);
            }
        }
        idle
    }

    fn forget(&mut self, key: &FlowKey) {
        self.seen.remove(key);
    }
}

/// Returns the heap's free pages to the kernel (glibc keeps them mapped otherwise).
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
