//! The monitor's Prometheus/OpenMetrics export (`--listen`): counters since netprobe started,
//! fed from each interval the monitor has already built (its columns, its eBPF attribution,
//! its two samples' softnet_stat), so there is one collection path. A scrape only encodes
//! what is here (`server`): it never reads a counter or a kernel map, and never waits for a
//! sample, which is taken on another thread.
//!
//! Cardinality is bounded by design: interfaces (`--metrics-interface`), columns, the
//! kernel's own drop reasons, layers, directions, CPUs and retransmit kinds; never a flow, a
//! port or a pod. docs/monitor.md counts the series of a 64-CPU host.

pub mod server;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use netprobe_common::vocab::RetransmitKind;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};
use regex::Regex;

use super::{
    columns::Column, counters::Sample, delta::counter_delta, interval::Interval,
    kernel_side::Attribution,
};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("--metrics-interface {0:?}: {1}")]
    Regex(String, regex::Error),
    #[error(transparent)]
    Server(#[from] server::ServerError),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StackLabels {
    interface: String,
    category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: String,
    layer: String,
    direction: String,
    /// `own` (the monitor's network namespace, the scope of its counters) or `other`.
    netns: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BacklogLabels {
    cpu: String,
    side: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CpuLabels {
    cpu: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    kernel: String,
}

/// The classes of `netprobe_tcp_peer_retransmitted_segments_total`.
pub const PEER_CLASSES: [&str; 2] = ["duplicate", "fills_hole"];

/// What is known at start, beside the options.
pub struct Start<'a> {
    pub interface: &'a str,
    /// `None`: every interface; else only those whose name it matches.
    pub interface_filter: Option<&'a str>,
    /// (hook, active) of the eBPF side; empty without it.
    pub hooks: Vec<(String, bool)>,
    pub kernel_release: String,
}

/// The families, shared (each clone is the same series) between the exporter and the registry.
#[derive(Default)]
struct Families {
    stack_drops: Family<StackLabels, Counter>,
    drops: Family<DropLabels, Counter>,
    backlog: Family<BacklogLabels, Counter>,
    squeezed: Family<CpuLabels, Counter>,
    net_rx_seconds: Family<CpuLabels, Counter<f64>>,
    retransmitted: Family<KindLabels, Counter>,
    events_lost: Counter,
    peer_retransmitted: Family<ClassLabels, Counter>,
}

/// The metrics, updated once per interval; clones of the families share their values with
/// the registry the server encodes.
pub struct Exporter {
    registry: Arc<Registry>,
    /// The stack-drop label of the monitored interface; `None`: filtered out.
    interface: Option<String>,
    m: Families,
    /// With the eBPF side: its per-CPU series are created with the others.
    ebpf: bool,
    /// CPUs whose per-CPU series exist (created at 0 on first sight, so that a first drop is
    /// an increase, not a new series).
    cpus_seen: BTreeSet<u32>,
}

impl Exporter {
    pub fn new(start: &Start) -> Result<Self, ExportError> {
        let interface = match start.interface_filter {
            Some(pattern) => {
                // Anchored: `eth.*` means whole names starting with eth, as one would read it.
                let regex = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| ExportError::Regex(pattern.to_string(), e))?;
                regex
                    .is_match(start.interface)
                    .then(|| start.interface.to_string())
            }
            None => Some(start.interface.to_string()),
        };
        let m = Families::default();
        let mut registry = Registry::with_prefix("netprobe");
        register(&m, &mut registry, start);
        if let Some(interface) = &interface {
            for column in Column::ALL {
                let _ = m.stack_drops.get_or_create(&StackLabels {
                    interface: interface.clone(),
                    category: column.name().to_string(),
                });
            }
        }
        if !start.hooks.is_empty() {
            for class in PEER_CLASSES {
                let _ = m.peer_retransmitted.get_or_create(&ClassLabels {
                    class: class.to_string(),
                });
            }
            for kind in RetransmitKind::ALL {
                let _ = m.retransmitted.get_or_create(&KindLabels {
                    kind: kind.name().to_string(),
                });
            }
        }
        Ok(Self {
            registry: Arc::new(registry),
            interface,
            m,
            ebpf: !start.hooks.is_empty(),
            cpus_seen: BTreeSet::new(),
        })
    }

    /// What the server encodes.
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    /// The baseline sample's CPUs: their series exist at 0 before the first interval ends,
    /// so that a drop in it is an increase Prometheus sees.
    pub fn baseline(&mut self, sample: &Sample) {
        for &cpu in sample.time_squeeze.keys() {
            self.see_cpu(cpu);
        }
    }

    /// Adds one interval's growth: its columns, the two samples' softnet_stat time_squeeze,
    /// and with root its eBPF attribution.
    pub fn record(&mut self, interval: &Interval, before: &Sample, after: &Sample) {
        if let Some(interface) = &self.interface {
            for (column, value) in interval.drops.non_zero() {
                self.m
                    .stack_drops
                    .get_or_create(&StackLabels {
                        interface: interface.clone(),
                        category: column.name().to_string(),
                    })
                    .inc_by(value);
            }
        }
        for (cpu, (dropped, squeezed)) in softnet_growth(before, after) {
            self.see_cpu(cpu);
            let labels = cpu_labels(cpu);
            self.m.squeezed.get_or_create(&labels).inc_by(squeezed);
            self.m
                .backlog
                .get_or_create(&BacklogLabels {
                    cpu: labels.cpu,
                    side: "overflowed".into(),
                })
                .inc_by(dropped);
        }
        if let Some(kernel) = &interval.kernel {
            self.record_kernel(kernel);
        }
    }

    /// Creates a CPU's series at 0 the first time it is seen.
    fn see_cpu(&mut self, cpu: u32) {
        if !self.cpus_seen.insert(cpu) {
            return;
        }
        let labels = cpu_labels(cpu);
        // Created at 0 (the guard returned is not needed).
        let _ = self.m.squeezed.get_or_create(&labels);
        for side in ["overflowed", "enqueued"] {
            let _ = self.m.backlog.get_or_create(&BacklogLabels {
                cpu: labels.cpu.clone(),
                side: side.to_string(),
            });
        }
        if self.ebpf {
            let _ = self.m.net_rx_seconds.get_or_create(&labels);
        }
    }

    fn record_kernel(&mut self, kernel: &Attribution) {
        for row in &kernel.drops {
            self.m
                .drops
                .get_or_create(&DropLabels {
                    reason: row.reason.clone(),
                    layer: row.layer.name().to_string(),
                    direction: row.direction.name().to_string(),
                    netns: if row.own_netns { "own" } else { "other" }.to_string(),
                })
                .inc_by(row.count);
        }
        for (kind, segs) in &kernel.by_kind {
            self.m
                .retransmitted
                .get_or_create(&KindLabels {
                    kind: kind.name().to_string(),
                })
                .inc_by(*segs);
        }
        // The overflowed side is softnet_stat's, read with the counters (root or not).
        for c in kernel.backlog.iter().flat_map(|b| &b.enqueued) {
            self.m
                .backlog
                .get_or_create(&BacklogLabels {
                    cpu: c.cpu.to_string(),
                    side: "enqueued".into(),
                })
                .inc_by(c.count);
        }
        for cpu in &kernel.net_rx {
            self.m
                .net_rx_seconds
                .get_or_create(&cpu_labels(cpu.cpu))
                .inc_by(cpu.ms / 1e3);
        }
        self.m.events_lost.inc_by(kernel.events_lost);
        let (duplicate, fills_hole) = kernel.peer_retransmits;
        for (class, segs) in PEER_CLASSES.into_iter().zip([duplicate, fills_hole]) {
            self.m
                .peer_retransmitted
                .get_or_create(&ClassLabels {
                    class: class.to_string(),
                })
                .inc_by(segs);
        }
    }
}

fn register(m: &Families, registry: &mut Registry, start: &Start) {
    registry.register(
        "stack_drops",
        "Drops by the monitor's columns (its counters' growth) since netprobe started",
        m.stack_drops.clone(),
    );
    registry.register(
        "drops",
        "Kernel drops by reason, layer and direction since netprobe started (eBPF, root)",
        m.drops.clone(),
    );
    registry.register(
        "cpu_backlog_drops",
        "Input-backlog drops per CPU: overflowed (softnet_stat dropped) or enqueued from (eBPF)",
        m.backlog.clone(),
    );
    registry.register(
        "softnet_times_squeezed",
        "NET_RX runs that ended with work left (softnet_stat time_squeeze), per CPU",
        m.squeezed.clone(),
    );
    registry.register_with_unit(
        "net_rx",
        "Time in the NET_RX softirq per CPU (eBPF, root)",
        Unit::Seconds,
        m.net_rx_seconds.clone(),
    );
    registry.register(
        "tcp_retransmitted_segments",
        "Sent TCP retransmitted segments by kind in the monitor's namespace (eBPF, root)",
        m.retransmitted.clone(),
    );
    registry.register(
        "tcp_peer_retransmitted_segments",
        "Received TCP segments sent before (duplicate) or filling a hole, in the monitor's namespace (eBPF, root)",
        m.peer_retransmitted.clone(),
    );
    registry.register(
        "events_lost",
        "Kernel events the in-kernel counts could not hold (tables full, events lost)",
        m.events_lost.clone(),
    );
    let hooks = Family::<HookLabels, Gauge>::default();
    for (hook, active) in &start.hooks {
        hooks
            .get_or_create(&HookLabels { hook: hook.clone() })
            .set(i64::from(*active));
    }
    registry.register(
        "hook_active",
        "1 for each eBPF hook attached, 0 for one this kernel could not give",
        hooks,
    );
    // A gauge at 1 rather than an OpenMetrics `info`: the classic text parsers (promtool
    // check metrics among them) know no `info` type; the series is the same.
    let build = Family::<BuildLabels, Gauge>::default();
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_string(),
            kernel: start.kernel_release.clone(),
        })
        .set(1);
    registry.register(
        "build_info",
        "netprobe's version and the running kernel's release",
        build,
    );
}

/// softnet_stat's growth per CPU between two samples: (dropped, time_squeeze). A CPU new in
/// `after` (brought online) counts from its first sample.
fn softnet_growth(before: &Sample, after: &Sample) -> BTreeMap<u32, (u64, u64)> {
    let grew = |then: Option<&u64>, now: u64| counter_delta(then.copied().unwrap_or(now), now).0;
    let mut out = BTreeMap::new();
    let dropped_now = after.readings.counters.get(&Column::Softirq);
    let dropped_then = before.readings.counters.get(&Column::Softirq);
    for (&cpu, &squeezed) in &after.time_squeeze {
        let key = format!("cpu{cpu}");
        let dropped = dropped_now
            .and_then(|m| m.get(&key))
            .map(|&now| grew(dropped_then.and_then(|m| m.get(&key)), now))
            .unwrap_or(0);
        out.insert(
            cpu,
            (dropped, grew(before.time_squeeze.get(&cpu), squeezed)),
        );
    }
    out
}

fn cpu_labels(cpu: u32) -> CpuLabels {
    CpuLabels {
        cpu: cpu.to_string(),
    }
}

#[cfg(test)]
mod tests;
