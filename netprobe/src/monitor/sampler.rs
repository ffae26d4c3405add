//! One sample of everything the monitor reads: the counters, and with root the in-kernel
//! counts of the eBPF side (loaded once, in count mode). Taken back to back, so that both
//! cover the same interval.

use netprobe_common::vocab::DropColumn as Column;

use super::{
    counters::{self, Sample},
    kernel_side::{
        attribution::{self, Attribution, CpuCount},
        KernelSample, KernelSide,
    },
    MonitorOptions,
};
use crate::{fixes::LiveValues, model::cpuset::CpuSet, report::sample::sysctl_number};

/// Why the eBPF side runs or not, as said once at start.
pub enum EbpfState {
    /// (hooks active, hooks planned, the inactive ones with why).
    Active(usize, usize, Vec<String>),
    NotRoot,
    CountersOnly,
    /// Loading failed: counters only, and why.
    Failed(String),
}

impl EbpfState {
    pub fn describe(&self) -> String {
        match self {
            EbpfState::Active(active, all, _) => format!(
                "eBPF count mode, {active} of {all} hooks active: drop reasons, CPUs and retransmits by kind"
            ),
            EbpfState::NotRoot => {
                "not root: counters only (drop reasons, CPUs and retransmits need root)".into()
            }
            EbpfState::CountersOnly => "counters only (--counters-only)".into(),
            EbpfState::Failed(why) => format!("eBPF side unavailable ({why}): counters only"),
        }
    }

    /// The hooks this kernel could not give, one line each.
    pub fn inactive(&self) -> &[String] {
        match self {
            EbpfState::Active(_, _, inactive) => inactive,
            _ => &[],
        }
    }
}

/// Both halves of one sample.
pub struct Snapshot {
    pub counters: Sample,
    /// `None`: counters only, or the kernel maps could not be read this time.
    pub kernel: Option<KernelSample>,
}

pub struct Sampler {
    interface: String,
    known_ifindex: Option<u32>,
    kernel: Option<KernelSide>,
}

impl Sampler {
    pub fn start(options: &MonitorOptions) -> (Self, EbpfState) {
        let root = crate::trace::is_root();
        let (kernel, state) = if options.counters_only {
            (None, EbpfState::CountersOnly)
        } else if !root {
            (None, EbpfState::NotRoot)
        } else {
            match KernelSide::start(&options.btf, options.listen.is_some()) {
                Ok(side) => {
                    let hooks = side.hooks();
                    let active = hooks.iter().filter(|h| h.active).count();
                    let inactive = hooks
                        .iter()
                        .filter(|h| !h.active)
                        .map(|h| format!("{} inactive: {}", h.hook, h.detail))
                        .collect();
                    let state = EbpfState::Active(active, hooks.len(), inactive);
                    (Some(side), state)
                }
                Err(e) => (None, EbpfState::Failed(e.to_string())),
            }
        };
        let sampler = Self {
            interface: options.interface.clone(),
            known_ifindex: None,
            kernel,
        };
        (sampler, state)
    }

    /// (hook, active) of the eBPF side; empty without it.
    pub fn hooks(&self) -> Vec<(String, bool)> {
        self.kernel
            .iter()
            .flat_map(|side| side.hooks())
            .map(|h| (h.hook.clone(), h.active))
            .collect()
    }

    pub fn take(&mut self) -> Snapshot {
        let counters = counters::take(&self.interface, self.known_ifindex);
        self.known_ifindex = counters.link.ifindex.or(self.known_ifindex);
        let kernel = self.kernel.as_mut().and_then(|side| side.sample().ok());
        Snapshot { counters, kernel }
    }

    /// The eBPF side's interval between two snapshots; `None` when counting only (or a
    /// snapshot lacks its kernel half, which the interval's notes then say).
    pub fn attribute(&mut self, before: &Snapshot, after: &Snapshot) -> Option<Attribution> {
        let side = self.kernel.as_mut()?;
        let (Some(then), Some(now)) = (&before.kernel, &after.kernel) else {
            return Some(Attribution {
                notes: vec!["kernel maps unreadable in this interval".into()],
                ..Attribution::default()
            });
        };
        let softnet_dropped = softnet_dropped(&before.counters, &after.counters);
        let live = live_values(&after.counters, !softnet_dropped.is_empty());
        let own_netns = side.own_netns();
        Some(attribution::between(
            then,
            now,
            side.names(),
            &attribution::Context {
                own_netns,
                softnet_dropped: &softnet_dropped,
                live: &live,
            },
        ))
    }
}

/// softnet_stat `dropped` growth per CPU (the counters' `cpuN` readings of `softirq`).
fn softnet_dropped(before: &Sample, after: &Sample) -> Vec<CpuCount> {
    let (Some(then), Some(now)) = (
        before.readings.counters.get(&Column::Softirq),
        after.readings.counters.get(&Column::Softirq),
    ) else {
        return Vec::new();
    };
    now.iter()
        .filter_map(|(key, value)| {
            let cpu = key.strip_prefix("cpu")?.parse().ok()?;
            let grew = super::delta::counter_delta(*then.get(key)?, *value).0;
            (grew > 0).then_some(CpuCount { cpu, count: grew })
        })
        .collect()
}

/// What the backlog fix needs: netdev_max_backlog (read only when the backlog dropped) and
/// the CPUs.
fn live_values(sample: &Sample, backlog_dropped: bool) -> LiveValues {
    let cpus = sample
        .readings
        .counters
        .get(&Column::Softirq)
        .map(|per_cpu| per_cpu.len())
        .unwrap_or(0);
    LiveValues {
        netdev_max_backlog: backlog_dropped
            .then(|| sysctl_number("net.core.netdev_max_backlog"))
            .flatten(),
        cpus: CpuSet::first(cpus),
        ..LiveValues::default()
    }
}
