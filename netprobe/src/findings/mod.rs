//! The findings bundle: the eBPF attribution (who lost what, which direction, which CPU)
//! merged with the counter report over the same window, each finding with the evidence from
//! both sides and the fix; and the reconciliation of every number both sides count.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

mod reconcile;

use reconcile::reconcile;
pub use reconcile::{Reconciliation, Relation};

use crate::{
    model::classify::{Direction, Layer},
    model::owners::Owner,
    report::{model::Report, procfs::Counters, rules::cpu_mask},
    trace::output::{endpoint, DropJson},
    trace::summary::SummaryJson,
};

/// Drops tallied from the stream (classification needs each event's location and device,
/// which the kernel's per-reason table does not keep).
#[derive(Debug, Default, Clone)]
pub struct DropTally {
    /// (direction, layer, reason) → count, CPUs, flows as on the wire, namespaces.
    pub groups: BTreeMap<(Direction, Layer, String), DropGroup>,
}

#[derive(Debug, Default, Clone)]
pub struct DropGroup {
    pub count: u64,
    /// Of which TCP segments, by the namespace they were dropped in.
    pub tcp_by_netns: BTreeMap<u32, u64>,
    pub cpus: BTreeMap<u32, u64>,
    /// `src > dst` (with ports when known) → count.
    pub flows: BTreeMap<String, u64>,
    pub netns: BTreeMap<u32, u64>,
}

impl DropTally {
    /// Counts one classified drop event.
    pub fn add(&mut self, drop: &DropJson) {
        let group = self
            .groups
            .entry((drop.direction, drop.layer, drop.reason.clone()))
            .or_default();
        group.count += 1;
        if drop.ip_proto.as_deref() == Some("tcp") {
            *group.tcp_by_netns.entry(drop.netns).or_default() += 1;
        }
        *group.cpus.entry(drop.cpu).or_default() += 1;
        let flow = drop.saddr.as_ref().zip(drop.daddr.as_ref()).map(|(s, d)| {
            match (drop.sport, drop.dport) {
                // The same notation as the flow rows, so that the two can be matched.
                (Some(sp), Some(dp)) => format!("{} > {}", endpoint(s, sp), endpoint(d, dp)),
                _ => format!("{s} > {d}"),
            }
        });
        if let Some(flow) = flow {
            *group.flows.entry(flow).or_default() += 1;
        }
        *group.netns.entry(drop.netns).or_default() += 1;
    }
}

/// `{"type":"findings"}`.
#[derive(Debug, Serialize)]
pub struct FindingsJson {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// False for the interim bundles of `--report-every`; true for the one at the end.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Both sides cover the same window: from the start of the trace to this bundle.
    pub window_s: f64,
    /// The network namespace whose counters the report read (netprobe's own).
    pub netns: u32,
    pub report: Report,
    pub findings: Vec<BundleFinding>,
    pub cpus: Vec<CpuRow>,
    pub flows: Vec<FlowRow>,
    pub steering: Vec<Steering>,
    pub reconciliation: Vec<Reconciliation>,
}

/// One finding: where (direction, layer, CPUs, flows), the evidence from each side, the fix.
#[derive(Debug, Serialize, Clone)]
pub struct BundleFinding {
    pub id: String,
    pub severity: &'static str,
    /// The network namespace the finding is about (0: host-wide, e.g. per-CPU backlogs).
    pub netns: u32,
    /// `events`, `counters`, or `events+counters`.
    pub source: &'static str,
    pub direction: Direction,
    pub layer: Layer,
    pub cpus: Vec<usize>,
    pub flows: Vec<String>,
    pub summary: String,
    pub evidence: Value,
    pub fix: String,
}

#[derive(Debug, Serialize, Default, Clone)]
pub struct CpuRow {
    pub cpu: usize,
    pub net_rx_runs: u64,
    pub net_rx_ms: f64,
    pub napi_polls: u64,
    pub napi_full_budget: u64,
    pub time_squeeze: u64,
    /// softnet_stat: packets dropped because this CPU's backlog was full.
    pub backlog_overflowed: u64,
    /// Backlog drops that this CPU tried to enqueue (drop events fired here).
    pub backlog_enqueue_drops: u64,
    /// All drop events that fired on this CPU.
    pub drops: u64,
    pub nic_irq_rate: f64,
    /// NIC IRQ lines that interrupted this CPU during the window.
    pub nic_irqs: Vec<String>,
    /// Receive queues whose RPS mask includes this CPU (`eth0/rx-0`).
    pub rps_from: Vec<String>,
}

#[derive(Debug, Serialize, Clone)]
pub struct FlowRow {
    pub netns: u32,
    /// This host's end, then the peer's.
    pub local: String,
    pub remote: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// What we sent again (by kind) and the segments.
    pub retransmits: BTreeMap<&'static str, u64>,
    pub retransmitted_segs: u64,
    /// What the peer sent again, and holes, as this host received it.
    pub peer_duplicate: u64,
    pub peer_fills_hole: u64,
    pub holes: u64,
    /// The direction that loses packets, as far as this flow shows.
    pub losing_direction: &'static str,
}

/// How receive work is spread: which CPUs take an interface's interrupts, where RPS steers.
#[derive(Debug, Serialize, Clone)]
pub struct Steering {
    pub interface: String,
    /// CPUs that took the interface's interrupts during the window.
    pub irq_cpus: Vec<usize>,
    /// Receive IRQ lines (all but transmit-only ones) and the CPUs they are routed to.
    pub rx_irqs: Vec<IrqLine>,
    /// `rx-N` → CPU mask.
    pub rps: BTreeMap<String, String>,
    pub summary: String,
}

#[derive(Debug, Serialize, Clone)]
pub struct IrqLine {
    pub irq: String,
    pub name: String,
    pub affinity: Vec<usize>,
}

/// Transmit-only queue interrupts (`virtio0-output.0`, `eth0-tx-3`); combined `TxRx` lines
/// and receive lines carry receive work.
fn is_tx_only(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    (name.contains("output") || name.contains("-tx")) && !name.contains("rx")
}

/// Everything the bundle is made from.
pub struct Inputs<'a> {
    pub summary: &'a SummaryJson,
    pub drops: &'a DropTally,
    pub report: Report,
    /// snmp/netstat at the start and now, in netprobe's namespace.
    pub counters_before: &'a Counters,
    pub counters_now: &'a Counters,
    /// NET_RX per CPU (from /proc/softirqs) at the start and now.
    pub net_rx_before: &'a [u64],
    pub net_rx_now: &'a [u64],
    pub own_netns: u32,
    pub filtered: bool,
    pub is_final: bool,
    pub window_s: f64,
    pub top: usize,
}

pub(crate) fn delta(before: &Counters, now: &Counters, group: &str, field: &str) -> u64 {
    let get = |c: &Counters| {
        c.get(group)
            .and_then(|g| g.get(field))
            .copied()
            .unwrap_or(0)
    };
    // Counters that went backwards (reset) read as no growth.
    get(now).saturating_sub(get(before)).max(0) as u64
}

impl FindingsJson {
    /// The bundle for people: findings with their fixes, then the reconciliation.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n== netprobe findings ({}, {:.1} s; counters of netns {}) ==",
            if self.is_final { "final" } else { "so far" },
            self.window_s,
            self.netns
        );
        if self.findings.is_empty() {
            let _ = writeln!(out, "no loss found");
        }
        for f in &self.findings {
            let where_ = format!("{}/{}", f.direction.name(), f.layer.name());
            let _ = writeln!(
                out,
                "[{}] {} ({where_}, {}): {}",
                f.severity, f.id, f.source, f.summary
            );
            if !f.cpus.is_empty() {
                let _ = writeln!(out, "    cpus: {:?}", f.cpus);
            }
            for flow in &f.flows {
                let _ = writeln!(out, "    flow: {flow}");
            }
            let _ = writeln!(out, "    fix: {}", f.fix);
        }
        for st in &self.steering {
            let _ = writeln!(out, "steering: {}", st.summary);
        }
        let _ = writeln!(out, "reconciliation (events vs counters, same window):");
        for r in &self.reconciliation {
            let relation = match r.relation {
                Relation::Equal => "equal",
                Relation::AtMost => "within the bound",
            };
            let verdict = match (r.must_match, r.matches) {
                (true, true) => relation.to_string(),
                (true, false) => "MISMATCH".to_string(),
                (false, true) => format!("{relation} (not required)"),
                (false, false) => "differ (allowed)".to_string(),
            };
            let sign = match r.relation {
                Relation::Equal => "vs",
                Relation::AtMost => "≤?",
            };
            let why = r.not_exact_because.as_deref().unwrap_or(&r.note);
            let _ = writeln!(
                out,
                "  {:<48} {:>8} {sign} {:>8} {}: {verdict} ({why})",
                r.what, r.events, r.counters, r.counter
            );
        }
        out
    }
}

pub fn build(inputs: Inputs) -> FindingsJson {
    let s = inputs.summary;
    let reconciliation = reconcile(&inputs);
    let flows = flow_rows(s, inputs.top);
    let steering = steering(&inputs.report);
    let cpus = cpu_rows(&inputs, &steering);
    let mut findings = event_findings(&inputs, &flows, &steering);
    for f in &inputs.report.findings {
        let cpu = f.evidence.get("cpu").and_then(|c| c.as_u64());
        findings.push(BundleFinding {
            id: f.id.to_string(),
            severity: f.severity,
            netns: inputs.own_netns,
            source: "counters",
            direction: counter_direction(f.layer),
            layer: counter_layer(f.layer),
            cpus: cpu.map(|c| vec![c as usize]).unwrap_or_default(),
            flows: Vec::new(),
            summary: f.summary.clone(),
            evidence: json!({ "counters": f.evidence }),
            fix: f.fix.clone(),
        });
    }
    findings.sort_by_key(|f| f.severity != "critical");
    FindingsJson {
        kind: "findings",
        is_final: inputs.is_final,
        window_s: inputs.window_s,
        netns: inputs.own_netns,
        report: inputs.report,
        findings,
        cpus,
        flows,
        steering,
        reconciliation,
    }
}

/// The counter report's layers, mapped onto the drop layers.
fn counter_layer(layer: &str) -> Layer {
    match layer {
        "nic" | "driver" => Layer::Nic,
        "qdisc" => Layer::Qdisc,
        "cpu" => Layer::Backlog,
        "ip" => Layer::Ip,
        "tcp" => Layer::Tcp,
        "udp" => Layer::Udp,
        "sockets" => Layer::Socket,
        "conntrack" => Layer::Netfilter,
        _ => Layer::Unknown,
    }
}

fn counter_direction(layer: &str) -> Direction {
    match layer {
        "nic" | "driver" | "cpu" | "udp" | "sockets" => Direction::Ingress,
        "qdisc" => Direction::Egress,
        _ => Direction::Unknown,
    }
}

fn flow_rows(s: &SummaryJson, top: usize) -> Vec<FlowRow> {
    let mut rows: BTreeMap<(u32, String, String), FlowRow> = BTreeMap::new();
    for f in &s.retransmits.flows {
        let (local, remote) = (endpoint(&f.saddr, f.sport), endpoint(&f.daddr, f.dport));
        let row = rows
            .entry((f.netns, local.clone(), remote.clone()))
            .or_insert_with(|| empty_row(f.netns, local, remote, f.owner.clone()));
        for (kind, n) in &f.kinds {
            *row.retransmits.entry(kind).or_default() += n;
        }
        row.retransmitted_segs += f.segs;
    }
    for f in &s.received.flows {
        let (local, remote) = (endpoint(&f.saddr, f.sport), endpoint(&f.daddr, f.dport));
        let row = rows
            .entry((f.netns, local.clone(), remote.clone()))
            .or_insert_with(|| empty_row(f.netns, local, remote, f.owner.clone()));
        row.peer_duplicate += f.counts.duplicate + f.counts.duplicate_partial;
        row.peer_fills_hole += f.counts.fills_hole;
        row.holes += f.counts.holes;
    }
    let mut out: Vec<FlowRow> = rows
        .into_values()
        .map(|mut r| {
            let out_loss = r
                .retransmits
                .iter()
                .filter(|(k, _)| matches!(**k, "fast" | "rto" | "tlp"))
                .map(|(_, n)| n)
                .sum::<u64>()
                > 0;
            let in_loss = r.peer_fills_hole + r.holes > 0;
            r.losing_direction = match (out_loss, in_loss) {
                (true, true) => "both",
                (true, false) => "outbound",
                (false, true) => "inbound",
                (false, false) if r.peer_duplicate > 0 => "outbound (our ACKs) or spurious",
                _ => "none",
            };
            r
        })
        .collect();
    let weight =
        |r: &FlowRow| r.retransmitted_segs + r.peer_duplicate + r.peer_fills_hole + r.holes;
    out.sort_by_key(|r| std::cmp::Reverse(weight(r)));
    out.truncate(top);
    out
}

fn empty_row(netns: u32, local: String, remote: String, owner: Option<Owner>) -> FlowRow {
    FlowRow {
        netns,
        local,
        remote,
        owner,
        retransmits: BTreeMap::new(),
        retransmitted_segs: 0,
        peer_duplicate: 0,
        peer_fills_hole: 0,
        holes: 0,
        losing_direction: "none",
    }
}

fn mask_cpus(mask: &str) -> Vec<usize> {
    // sysfs masks are comma-separated 32-bit hex words, most significant first.
    let hex: String = mask.chars().filter(|c| *c != ',').collect();
    let mut cpus = Vec::new();
    for (i, digit) in hex.chars().rev().enumerate() {
        let v = digit.to_digit(16).unwrap_or(0);
        for bit in 0..4 {
            if v & (1 << bit) != 0 {
                cpus.push(i * 4 + bit);
            }
        }
    }
    cpus
}

fn steering(report: &Report) -> Vec<Steering> {
    let mut out = Vec::new();
    for i in &report.interfaces {
        if i.info.name == "lo" {
            continue;
        }
        let mut irq_cpus: Vec<usize> = report
            .irqs
            .iter()
            .filter(|q| q.ifname == i.info.name)
            .flat_map(|q| {
                q.per_cpu_rate
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| **r > 0.0)
                    .map(|(cpu, _)| cpu)
            })
            .collect();
        irq_cpus.sort_unstable();
        irq_cpus.dedup();
        let rps = i.info.rps_cpus.clone();
        let rps_cpus: Vec<usize> = {
            let mut all: Vec<usize> = rps.values().flat_map(|m| mask_cpus(m)).collect();
            all.sort_unstable();
            all.dedup();
            all
        };
        let rx_irqs: Vec<IrqLine> = report
            .irqs
            .iter()
            .filter(|q| q.ifname == i.info.name && !is_tx_only(&q.name))
            .map(|q| IrqLine {
                irq: q.irq.clone(),
                name: q.name.clone(),
                affinity: q.affinity.clone(),
            })
            .collect();
        let mut rx_affinity: Vec<usize> = rx_irqs.iter().flat_map(|q| q.affinity.clone()).collect();
        rx_affinity.sort_unstable();
        rx_affinity.dedup();
        let routed = match (rx_irqs.len(), rx_affinity.as_slice()) {
            (0, _) => "no receive IRQ lines found".to_string(),
            (_, []) => format!("{} receive IRQ lines, affinity unreadable", rx_irqs.len()),
            (_, [one]) => format!("all RX interrupts routed to CPU {one}"),
            (n, many) => format!("{n} receive IRQ lines routed to CPUs {many:?}"),
        };
        let irq_text = match irq_cpus.as_slice() {
            [] => format!("{routed} (no NIC interrupts during the window)"),
            [one] => format!("{routed}; interrupts during the window all on CPU {one}"),
            many => format!("{routed}; interrupts during the window on CPUs {many:?}"),
        };
        let rps_text = match rps_cpus.as_slice() {
            [] => "RPS off".to_string(),
            [one] => format!("RPS steers everything to CPU {one}"),
            many => format!("RPS spreads over CPUs {many:?}"),
        };
        out.push(Steering {
            interface: i.info.name.clone(),
            irq_cpus,
            rx_irqs,
            rps,
            summary: format!("{}: {irq_text}, {rps_text}", i.info.name),
        });
    }
    out
}

fn cpu_rows(inputs: &Inputs, steering: &[Steering]) -> Vec<CpuRow> {
    let s = inputs.summary;
    let mut rows: BTreeMap<usize, CpuRow> = BTreeMap::new();
    fn row(rows: &mut BTreeMap<usize, CpuRow>, cpu: usize) -> &mut CpuRow {
        rows.entry(cpu).or_insert_with(|| CpuRow {
            cpu,
            ..Default::default()
        })
    }
    for c in &s.cpus {
        let r = row(&mut rows, c.cpu);
        r.net_rx_runs = c.net_rx_runs;
        r.net_rx_ms = c.net_rx_total_ns as f64 / 1e6;
        r.napi_polls = c.napi_polls;
        r.napi_full_budget = c.napi_full_budget;
        r.time_squeeze = c.time_squeeze;
        r.backlog_overflowed = c.backlog_dropped;
    }
    for c in &s.backlog.enqueuing_cpus {
        let r = row(&mut rows, c.cpu);
        r.backlog_enqueue_drops = c.count;
    }
    for c in &s.drops.by_cpu {
        let r = row(&mut rows, c.cpu);
        r.drops = c.count;
    }
    for c in &inputs.report.cpus {
        if c.nic_irq_rate > 0.0 {
            let r = row(&mut rows, c.cpu);
            r.nic_irq_rate = c.nic_irq_rate;
        }
    }
    for irq in &inputs.report.irqs {
        for (cpu, rate) in irq.per_cpu_rate.iter().enumerate() {
            if *rate > 0.0 {
                let r = row(&mut rows, cpu);
                r.nic_irqs.push(format!("{} ({})", irq.irq, irq.name));
            }
        }
    }
    for st in steering {
        for (queue, mask) in &st.rps {
            for cpu in mask_cpus(mask) {
                let r = row(&mut rows, cpu);
                r.rps_from.push(format!("{}/{queue}", st.interface));
            }
        }
    }
    rows.into_values().collect()
}

/// The fix for drops at a layer, by direction.
fn layer_fix(layer: Layer, reason: &str, inputs: &Inputs) -> String {
    match layer {
        Layer::Netfilter => "a firewall rule drops them: find it with `nft list ruleset` (or `iptables-save -c`) and compare its counters".into(),
        Layer::Qdisc => "the egress qdisc drops them: `tc -s qdisc show`; raise its limit or rate, or fix the shaper".into(),
        Layer::Backlog => {
            let current = inputs.report.sysctl_number("net.core.netdev_max_backlog").unwrap_or(1000);
            format!("sysctl -w net.core.netdev_max_backlog={}", (current * 4).max(4096))
        }
        Layer::Nic => "the NIC/driver drops them: `ethtool -S <dev>`; raise the RX ring (`ethtool -G <dev> rx <max>`)".into(),
        Layer::Socket if reason.contains("RCVBUFF") => "a socket's receive buffer is full: the application reads too slowly; raise SO_RCVBUF / net.core.rmem_max".into(),
        Layer::Socket | Layer::Udp if reason.contains("NO_SOCKET") => "nothing listens on the destination port".into(),
        _ => format!("dropped by the kernel's {} code ({reason})", layer.name()),
    }
}

fn top_flows(flows: impl Iterator<Item = (String, u64)>, top: usize) -> Vec<String> {
    let mut v: Vec<(String, u64)> = flows.collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().take(top).map(|(f, _)| f).collect()
}

/// Drops of TCP segments on this host in a direction, busiest first, leaving out TCP's own
/// discards (duplicates, out-of-window), which are the consequence of loss, not loss.
fn tcp_drops_in(
    drops: &DropTally,
    direction: Direction,
    netns: u32,
) -> Vec<(&(Direction, Layer, String), u64, &DropGroup)> {
    let mut groups: Vec<_> = drops
        .groups
        .iter()
        .filter(|((d, layer, _), _)| *d == direction && *layer != Layer::Tcp)
        .filter_map(|(key, g)| {
            let tcp = g.tcp_by_netns.get(&netns).copied().unwrap_or(0);
            (tcp > 0).then_some((key, tcp, g))
        })
        .collect();
    groups.sort_by_key(|(_, tcp, _)| std::cmp::Reverse(*tcp));
    groups
}

fn cpus_of(groups: &[(&(Direction, Layer, String), u64, &DropGroup)]) -> Vec<usize> {
    let mut cpus: Vec<usize> = groups
        .iter()
        .flat_map(|(_, _, g)| g.cpus.keys().map(|c| *c as usize))
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

fn event_findings(inputs: &Inputs, flows: &[FlowRow], steering: &[Steering]) -> Vec<BundleFinding> {
    let s = inputs.summary;
    let (before, now) = (inputs.counters_before, inputs.counters_now);
    let mut out = Vec::new();
    let steering_text: Vec<String> = steering.iter().map(|st| st.summary.clone()).collect();

    // Flow findings, one per network namespace: "this host" is a namespace, and only
    // netprobe's own has its counters beside the events.
    let mut namespaces: Vec<u32> = flows.iter().map(|f| f.netns).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for ns in namespaces {
        let here = if ns == inputs.own_netns {
            "this namespace".to_string()
        } else {
            format!("netns {ns}")
        };
        let counters = |fields: &[(&str, &str)]| -> Value {
            if ns != inputs.own_netns {
                return json!(format!(
                    "not read: netns {ns} is not netprobe's own (run netprobe inside it for its counters)"
                ));
            }
            let mut map = serde_json::Map::new();
            for (group, field) in fields {
                map.insert(
                    format!("{group}.{field}"),
                    json!(delta(before, now, group, field)),
                );
            }
            Value::Object(map)
        };
        let in_ns: Vec<&FlowRow> = flows.iter().filter(|f| f.netns == ns).collect();

        // Inbound loss: holes in what peers sent, filled by their retransmits.
        let inbound: Vec<&&FlowRow> = in_ns
            .iter()
            .filter(|f| f.peer_fills_hole + f.holes > 0)
            .collect();
        if !inbound.is_empty() {
            let local = tcp_drops_in(inputs.drops, Direction::Ingress, ns);
            let dropped_here: u64 = local.iter().map(|(_, tcp, _)| tcp).sum();
            let (where_, fix) = match local.first() {
                Some(((_, layer, reason), tcp, _)) => (
                    format!(
                        "dropped in {here} at the {} layer ({reason}, {tcp} TCP drops)",
                        layer.name()
                    ),
                    layer_fix(*layer, reason, inputs),
                ),
                None => (
                    format!("not dropped in {here}: lost before it arrived (path, or the peer's egress)"),
                    "check the path in: the peer's egress drops and qdisc, switch/NIC counters upstream (`ethtool -S` on both ends)".to_string(),
                ),
            };
            let fills: u64 = inbound.iter().map(|f| f.peer_fills_hole).sum();
            let holes: u64 = inbound.iter().map(|f| f.holes).sum();
            out.push(BundleFinding {
                id: "inbound_loss".into(),
                severity: "warning",
                netns: ns,
                source: "events+counters",
                direction: Direction::Ingress,
                layer: local.first().map(|((_, l, _), _, _)| *l).unwrap_or(Layer::Unknown),
                cpus: cpus_of(&local),
                flows: inbound.iter().take(inputs.top).map(|f| format!("{} > {}", f.remote, f.local)).collect(),
                summary: format!(
                    "packets on their way into {here} are lost: {holes} holes opened and {fills} re-sent segments filled them; {where_}"
                ),
                evidence: json!({
                    "events": {"fills_hole": fills, "holes": holes, "dropped_here_ingress": dropped_here},
                    "counters": counters(&[("TcpExt", "TCPOFOQueue")]),
                    "steering": steering_text,
                }),
                fix,
            });
        }

        // Outbound loss: what it sends is lost (its retransmits, by kind).
        let outbound: Vec<&&FlowRow> = in_ns
            .iter()
            .filter(|f| {
                f.retransmits
                    .iter()
                    .any(|(k, n)| matches!(*k, "fast" | "rto" | "tlp") && *n > 0)
            })
            .collect();
        if !outbound.is_empty() {
            let local = tcp_drops_in(inputs.drops, Direction::Egress, ns);
            // The peer's ACKs for these flows, dropped on their way in here: the timers then
            // re-send data the peer may well have.
            let reverse: Vec<String> = outbound
                .iter()
                .map(|f| format!("{} > {}", f.remote, f.local))
                .collect();
            let ack_drops: Vec<(&(Direction, Layer, String), u64)> =
                tcp_drops_in(inputs.drops, Direction::Ingress, ns)
                    .into_iter()
                    .map(|(key, _, g)| {
                        (
                            key,
                            reverse.iter().filter_map(|r| g.flows.get(r)).sum::<u64>(),
                        )
                    })
                    .filter(|(_, n)| *n > 0)
                    .collect();
            // Fast retransmits mean the peer's SACKs arrived: then data was lost on the way
            // out, whatever else was dropped on the way in.
            let fast = outbound
                .iter()
                .any(|f| f.retransmits.get("fast").is_some_and(|n| *n > 0));
            let ack_loss = local.is_empty() && !ack_drops.is_empty() && !fast;
            let (where_, fix) = match (local.first(), ack_drops.first().filter(|_| ack_loss)) {
                (Some(((_, layer, reason), tcp, _)), _) => (
                    format!("dropped in {here} at the {} layer ({reason}, {tcp} TCP drops)", layer.name()),
                    layer_fix(*layer, reason, inputs),
                ),
                (None, Some(((_, layer, reason), n))) => (
                    format!(
                        "the peer's ACKs are dropped on their way into {here} at the {} layer ({reason}, {n} drops): the timers re-send what the peer may already have",
                        layer.name()
                    ),
                    layer_fix(*layer, reason, inputs),
                ),
                (None, None) => (
                    format!("not dropped in {here} on the way out: lost on the path or at the peer's input"),
                    "run netprobe on the peer: its drops (direction ingress) and its holes name where the segments die; check the path's links for errors".to_string(),
                ),
            };
            let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
            for f in &outbound {
                for (k, n) in &f.retransmits {
                    *kinds.entry(k).or_default() += n;
                }
            }
            out.push(BundleFinding {
                id: if ack_loss { "inbound_ack_loss" } else { "outbound_loss" }.into(),
                severity: "warning",
                netns: ns,
                source: "events+counters",
                direction: if ack_loss { Direction::Ingress } else { Direction::Egress },
                layer: match (local.first(), ack_drops.first().filter(|_| ack_loss)) {
                    (Some(((_, l, _), _, _)), _) | (None, Some(((_, l, _), _))) => *l,
                    (None, None) => Layer::Unknown,
                },
                cpus: cpus_of(&local),
                flows: outbound.iter().take(inputs.top).map(|f| format!("{} > {}", f.local, f.remote)).collect(),
                summary: format!(
                    "segments sent from {here} {}: {} retransmitted segments ({}); {where_}",
                    if ack_loss { "are sent again" } else { "are lost" },
                    outbound.iter().map(|f| f.retransmitted_segs).sum::<u64>(),
                    kinds.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
                ),
                evidence: json!({
                    "events": {"retransmits_by_kind": kinds},
                    "counters": counters(&[("Tcp", "RetransSegs"), ("TcpExt", "TCPTimeouts"),
                                           ("TcpExt", "TCPFastRetrans"), ("TcpExt", "TCPLossProbes")]),
                }),
                fix,
            });
        }

        // Duplicates: the peer re-sent data already received, so the ACKs did not reach it
        // (or it was too quick to re-send).
        let dup_flows: Vec<&&FlowRow> = in_ns.iter().filter(|f| f.peer_duplicate > 0).collect();
        if !dup_flows.is_empty() {
            let duplicates: u64 = dup_flows.iter().map(|f| f.peer_duplicate).sum();
            out.push(BundleFinding {
                id: "ack_loss_or_spurious_retransmits".into(),
                severity: "warning",
                netns: ns,
                source: "events+counters",
                direction: Direction::Egress,
                layer: Layer::Tcp,
                cpus: Vec::new(),
                flows: dup_flows.iter().take(inputs.top).map(|f| format!("{} > {}", f.remote, f.local)).collect(),
                summary: format!(
                    "peers re-sent {duplicates} segments {here} already had: its ACKs are lost on the way out, or the peer retransmits too early"
                ),
                evidence: json!({
                    "events": {"duplicate": duplicates},
                    "counters": counters(&[("TcpExt", "DelayedACKLost")]),
                }),
                fix: "check the path back to the peer for loss of ACKs (egress qdisc, firewall, links); on the peer, spurious retransmits show as TCPSpuriousRTOs / DSACKs received".into(),
            });
        }
    }

    // Backlog overflow: the CPU that overflowed, the CPUs that enqueued, and the steering.
    let b = &s.backlog;
    if b.drop_events + b.softnet_dropped > 0 {
        let overflowing: Vec<usize> = b.overflowing_cpus.iter().map(|c| c.cpu).collect();
        let current = inputs.report.sysctl_number("net.core.netdev_max_backlog");
        let all_cpus = cpu_mask(inputs.report.cpus.len().max(1));
        out.push(BundleFinding {
            id: "backlog_overflow".into(),
            severity: "critical",
            netns: 0,
            source: "events+counters",
            direction: Direction::Ingress,
            layer: Layer::Backlog,
            cpus: overflowing.clone(),
            flows: top_flows(
                inputs
                    .drops
                    .groups
                    .iter()
                    .filter(|((_, l, _), _)| *l == Layer::Backlog)
                    .flat_map(|(_, g)| g.flows.iter().map(|(f, n)| (f.clone(), *n))),
                inputs.top,
            ),
            summary: format!(
                "CPU {overflowing:?}'s input backlog overflowed ({} drops, softnet_stat {}), enqueued from CPUs {:?}; netdev_max_backlog is {}",
                b.drop_events,
                b.softnet_dropped,
                b.enqueuing_cpus.iter().map(|c| c.cpu).collect::<Vec<_>>(),
                current.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into())
            ),
            evidence: json!({
                "events": {"backlog_drops": b.drop_events, "enqueuing_cpus": b.enqueuing_cpus},
                "counters": {"softnet_dropped": b.softnet_dropped, "overflowing_cpus": b.overflowing_cpus,
                             "net.core.netdev_max_backlog": current},
                "steering": steering_text,
            }),
            fix: format!(
                "sysctl -w net.core.netdev_max_backlog={}; and spread the steering: for q in /sys/class/net/<dev>/queues/rx-*/rps_cpus; do echo {all_cpus} > $q; done",
                (current.unwrap_or(1000) * 4).max(4096)
            ),
        });
    }

    // Every other layer that dropped packets (host-wide; the namespaces are in the evidence).
    for ((direction, layer, reason), g) in &inputs.drops.groups {
        if *layer == Layer::Backlog || reason == "TCP_OLD_DATA" || reason == "NOT_SPECIFIED" {
            continue;
        }
        let mut netns: Vec<u32> = g.netns.keys().copied().collect();
        netns.sort_unstable();
        out.push(BundleFinding {
            id: format!("drops_{}_{}", layer.name(), reason.to_lowercase()),
            severity: "warning",
            netns: if netns.len() == 1 { netns[0] } else { 0 },
            source: "events",
            direction: *direction,
            layer: *layer,
            cpus: g.cpus.keys().map(|c| *c as usize).collect(),
            flows: top_flows(g.flows.iter().map(|(f, n)| (f.clone(), *n)), inputs.top),
            summary: format!(
                "{} packets dropped ({reason}) at the {} layer",
                g.count,
                layer.name()
            ),
            evidence: json!({"events": {"drops": g.count, "reason": reason, "netns": netns}}),
            fix: layer_fix(*layer, reason, inputs),
        });
    }

    // NAPI polls out of budget beside softnet's time_squeeze.
    let squeezed: Vec<&crate::trace::summary::CpuSummary> = s
        .cpus
        .iter()
        .filter(|c| c.time_squeeze > 0 && c.napi_full_budget > 0)
        .collect();
    if !squeezed.is_empty() {
        out.push(BundleFinding {
            id: "napi_budget_exhausted".into(),
            severity: "warning",
            netns: 0,
            source: "events+counters",
            direction: Direction::Ingress,
            layer: Layer::Backlog,
            cpus: squeezed.iter().map(|c| c.cpu).collect(),
            flows: Vec::new(),
            summary: "receive processing ran out of budget: NAPI polls used their whole budget and softnet_stat counted time squeezes".into(),
            evidence: json!({
                "events": squeezed.iter().map(|c| json!({"cpu": c.cpu, "napi_full_budget": c.napi_full_budget})).collect::<Vec<_>>(),
                "counters": squeezed.iter().map(|c| json!({"cpu": c.cpu, "time_squeeze": c.time_squeeze})).collect::<Vec<_>>(),
            }),
            fix: "sysctl -w net.core.netdev_budget=600 net.core.netdev_budget_usecs=4000 (and spread RX over more CPUs)".into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use netprobe_common::{Flow, FlowKey, ReceiveTotals, RetransmitTotals, AF_INET};

    use super::*;
    use crate::{
        kernel::btf::DropReasons,
        kernel::loader::catalogue::{
            DROP_HOOK, RECEIVE_HOOK, RETRANSMIT_HOOK, RTO_TIMER_HOOK, SOFTIRQ_ENTRY_HOOK,
            SOFTIRQ_EXIT_HOOK, SYNACK_HOOK,
        },
        kernel::loader::KernelTotals,
        report::{model, sample::Snapshot},
        trace::summary::{self, SoftnetDeltas, Streamed},
    };

    fn snapshot(at: Instant, counters: &[(&str, &str, i64)]) -> Snapshot {
        let mut c = Counters::new();
        for (group, field, value) in counters {
            c.entry(group.to_string())
                .or_default()
                .insert(field.to_string(), *value);
        }
        Snapshot {
            at,
            net_dev: Vec::new(),
            interfaces: Vec::new(),
            nics: BTreeMap::new(),
            qdiscs: Vec::new(),
            counters: c,
            softnet: Vec::new(),
            softirq_cpus: vec![0, 1],
            net_rx: vec![10, 10],
            net_tx: vec![0, 0],
            irq_cpus: vec![0, 1],
            irqs: Vec::new(),
            conntrack: None,
        }
    }

    fn flow(local: u8, sport: u16, remote: u8, dport: u16) -> Flow {
        let mut f = Flow {
            family: AF_INET,
            sport,
            dport,
            ..Default::default()
        };
        f.saddr[..4].copy_from_slice(&[198, 18, 0, local]);
        f.daddr[..4].copy_from_slice(&[198, 18, 0, remote]);
        f
    }

    /// netprobe's own namespace in these fixtures.
    const OWN: u32 = 7;

    /// Every hook a reconciliation row can depend on, active (or the one named, inactive).
    fn hooks_with_inactive(inactive: Option<&str>) -> Vec<crate::kernel::loader::HookStatus> {
        [
            RETRANSMIT_HOOK.id,
            SYNACK_HOOK.id,
            DROP_HOOK.id,
            RECEIVE_HOOK.id,
            SOFTIRQ_ENTRY_HOOK.id,
            SOFTIRQ_EXIT_HOOK.id,
            RTO_TIMER_HOOK.id,
        ]
        .into_iter()
        .map(|hook| crate::kernel::loader::HookStatus {
            hook: hook.to_string(),
            attach: "raw_tracepoint",
            program: "netprobe_x",
            active: Some(hook) != inactive,
            detail: if Some(hook) == inactive {
                "turned off (--without-receive-hook)".into()
            } else {
                "attached".into()
            },
            verified_insns: None,
            load_ms: None,
        })
        .collect()
    }

    fn summary_of(
        totals: &KernelTotals,
        reasons: &DropReasons,
        softnet: &SoftnetDeltas,
    ) -> SummaryJson {
        summary::build(
            totals,
            summary::Window {
                streamed: Streamed::default(),
                hooks: hooks_with_inactive(None),
                reasons,
                softnet,
                filtered: false,
                duration_ms: 1000,
                kernel_skipped: Vec::new(),
            },
            &mut |_| None,
        )
    }

    /// A drop in `OWN`, on the way in, as the trace renders it (`src`/`dst`: address, port).
    fn ingress_drop(
        src: (&str, u16),
        dst: (&str, u16),
        reason: &str,
        layer: Layer,
        cpu: u32,
        proto: &str,
    ) -> DropJson {
        DropJson {
            kind: "drop",
            ts_ns: 0,
            cpu,
            netns: OWN,
            family: Some("ipv4"),
            saddr: Some(src.0.into()),
            sport: Some(src.1),
            daddr: Some(dst.0.into()),
            dport: Some(dst.1),
            reason: reason.into(),
            reason_code: 0,
            direction: Direction::Ingress,
            layer,
            location: "nft_do_chain+0x10".into(),
            protocol: "ipv4".into(),
            ip_proto: Some(proto.into()),
            ifname: None,
            ifindex: None,
            state: None,
            owner: None,
        }
    }

    /// The final bundle of a one-second window in `OWN`.
    fn bundle_of(
        summary: &SummaryJson,
        drops: &DropTally,
        before: &Snapshot,
        after: &Snapshot,
    ) -> FindingsJson {
        build(Inputs {
            summary,
            drops,
            report: model::build(before, after, "test".into()),
            counters_before: &before.counters,
            counters_now: &after.counters,
            net_rx_before: &before.net_rx,
            net_rx_now: &after.net_rx,
            own_netns: OWN,
            filtered: false,
            is_final: true,
            window_s: 1.0,
            top: 5,
        })
    }

    #[test]
    fn steering_names_irq_routing_and_rps() {
        use crate::report::{sample::NicIrq, sysfs::InterfaceInfo};
        let now = Instant::now();
        let mut before = snapshot(now, &[]);
        let iface = |name: &str, rps: &[(&str, &str)]| InterfaceInfo {
            name: name.into(),
            rps_cpus: rps
                .iter()
                .map(|(q, m)| (q.to_string(), m.to_string()))
                .collect(),
            ..Default::default()
        };
        before.interfaces = vec![iface("eth0", &[]), iface("eth1", &[("rx-0", "2")])];
        let irq =
            |n: &str, ifname: &str, name: &str, per_cpu: Vec<u64>, affinity: Vec<usize>| NicIrq {
                irq: n.into(),
                ifname: ifname.into(),
                name: name.into(),
                per_cpu,
                affinity,
            };
        before.irqs = vec![
            irq("38", "eth0", "virtio2-input.0", vec![0, 100], vec![1]),
            irq("39", "eth0", "virtio2-output.0", vec![50, 0], vec![0]),
            irq("40", "eth1", "eth1-TxRx-0", vec![7, 7], vec![0]),
            irq("41", "eth1", "eth1-TxRx-1", vec![7, 7], vec![1]),
        ];
        let mut after = snapshot(now + Duration::from_secs(1), &[]);
        after.interfaces = before.interfaces.clone();
        after.irqs = before.irqs.clone();
        after.irqs[0].per_cpu = vec![0, 180];
        let report = model::build(&before, &after, "test".into());
        let st = steering(&report);
        assert_eq!(
            st[0].summary,
            "eth0: all RX interrupts routed to CPU 1; interrupts during the window all on CPU 1, RPS off"
        );
        assert_eq!(
            st[0].rx_irqs.len(),
            1,
            "the output queue's line carries no receive work"
        );
        assert_eq!(
            st[1].summary,
            "eth1: 2 receive IRQ lines routed to CPUs [0, 1] (no NIC interrupts during the window), RPS steers everything to CPU 1"
        );
    }

    /// Only timer-driven retransmits, and the peer's segments for the flow dropped on the way
    /// in: the ACKs are lost, not the data.
    #[test]
    fn timer_retransmits_with_acks_dropped_on_the_way_in_are_ack_loss() {
        let totals = KernelTotals {
            flows: vec![(
                FlowKey {
                    flow: flow(1, 40000, 2, 5001),
                    netns: OWN,
                    _pad0: 0,
                },
                RetransmitTotals {
                    sent: 3,
                    segs: 3,
                    kinds: [0, 2, 0, 1, 0, 0, 0, 0],
                    ..Default::default()
                },
            )],
            ..Default::default()
        };
        let summary = summary_of(&totals, &DropReasons::default(), &SoftnetDeltas::new());
        let mut drops = DropTally::default();
        for _ in 0..6 {
            drops.add(&ingress_drop(
                ("198.18.0.2", 5001),
                ("198.18.0.1", 40000),
                "NETFILTER_DROP",
                Layer::Netfilter,
                0,
                "tcp",
            ));
        }
        let now = Instant::now();
        let (before, after) = (
            snapshot(now, &[]),
            snapshot(now + Duration::from_secs(1), &[]),
        );
        let bundle = bundle_of(&summary, &drops, &before, &after);
        let f = bundle
            .findings
            .iter()
            .find(|f| f.id == "inbound_ack_loss")
            .unwrap();
        assert_eq!(
            (f.direction, f.layer),
            (Direction::Ingress, Layer::Netfilter)
        );
        assert!(
            f.summary
                .contains("ACKs are dropped on their way into this namespace"),
            "{}",
            f.summary
        );
        assert!(f.fix.contains("nft list ruleset"));
        assert!(!bundle.findings.iter().any(|f| f.id == "outbound_loss"));
    }

    #[test]
    fn rps_masks_name_their_cpus() {
        assert_eq!(mask_cpus("2"), vec![1]);
        assert_eq!(mask_cpus("f"), vec![0, 1, 2, 3]);
        assert_eq!(mask_cpus("00000001,00000000"), vec![32]);
        assert!(mask_cpus("0").is_empty());
    }

    /// Loss both ways on one flow, ACK loss, a backlog overflow and firewall drops: each named
    /// with its direction, layer and CPUs; every counted number reconciled.
    #[test]
    fn both_sides_merge_into_findings_and_reconcile() {
        let totals = KernelTotals {
            flows: vec![(
                FlowKey {
                    flow: flow(2, 5001, 1, 40000),
                    netns: OWN,
                    _pad0: 0,
                },
                RetransmitTotals {
                    sent: 5,
                    segs: 6,
                    kinds: [0, 1, 4, 0, 0, 0, 0, 0],
                    kind_segs: [0, 1, 5, 0, 0, 0, 0, 0],
                    timer_kinds: [0, 1, 0, 0, 0, 0, 0, 0],
                    timer_segs: [0, 1, 0, 0, 0, 0, 0, 0],
                    ..Default::default()
                },
            )],
            receive_flows: vec![
                (
                    FlowKey {
                        flow: flow(2, 5001, 1, 40000),
                        netns: OWN,
                        _pad0: 0,
                    },
                    ReceiveTotals {
                        duplicate: 1,
                        fills_hole: 3,
                        out_of_order: 4,
                        holes: 2,
                        ..Default::default()
                    },
                ),
                (
                    // Another namespace's flow: named as such, without counters of its own.
                    FlowKey {
                        flow: flow(3, 22, 1, 50000),
                        netns: 99,
                        _pad0: 0,
                    },
                    ReceiveTotals {
                        fills_hole: 1,
                        out_of_order: 1,
                        holes: 1,
                        ..Default::default()
                    },
                ),
            ],
            reasons: vec![(9, vec![4, 0])],
            ..Default::default()
        };
        let reasons = DropReasons::from_pairs(&[(9, "CPU_BACKLOG"), (12, "NETFILTER_DROP")], &[]);
        let softnet: SoftnetDeltas = [(0, (0, 0)), (1, (0, 4))].into();
        let summary = summary_of(&totals, &reasons, &softnet);
        let mut drops = DropTally::default();
        let drop = |reason: &str, layer, cpu, proto: &str| {
            ingress_drop(
                ("198.18.0.1", 40000),
                ("198.18.0.2", 5001),
                reason,
                layer,
                cpu,
                proto,
            )
        };
        for _ in 0..3 {
            drops.add(&drop("NETFILTER_DROP", Layer::Netfilter, 1, "tcp"));
        }
        drops.add(&drop("CPU_BACKLOG", Layer::Backlog, 0, "udp"));
        let now = Instant::now();
        let before = snapshot(
            now,
            &[
                ("Tcp", "RetransSegs", 100),
                ("TcpExt", "DelayedACKLost", 5),
                ("TcpExt", "TCPOFOQueue", 1),
                ("TcpExt", "TCPFastRetrans", 10),
                ("TcpExt", "TCPTimeouts", 3),
            ],
        );
        let after = snapshot(
            now + Duration::from_secs(1),
            &[
                ("Tcp", "RetransSegs", 106),
                ("TcpExt", "DelayedACKLost", 6),
                ("TcpExt", "TCPOFOQueue", 5),
                ("TcpExt", "TCPFastRetrans", 15),
                ("TcpExt", "TCPTimeouts", 5),
            ],
        );
        let bundle = bundle_of(&summary, &drops, &before, &after);

        let rows: BTreeMap<&str, (u64, u64, bool, bool)> = bundle
            .reconciliation
            .iter()
            .map(|r| (r.what, (r.events, r.counters, r.must_match, r.matches)))
            .collect();
        assert_eq!(
            rows["retransmitted segments (this namespace)"],
            (6, 6, true, true)
        );
        assert_eq!(
            rows["duplicate segments received (this namespace)"],
            (1, 1, true, true)
        );
        assert_eq!(
            rows["out-of-order segments received (this namespace)"],
            (4, 4, true, true)
        );
        assert_eq!(rows["input backlog drops (all CPUs)"], (4, 4, true, true));
        assert_eq!(
            rows["fast-retransmitted segments (Recovery)"],
            (5, 5, true, true)
        );
        assert_eq!(
            rows["slow-start retransmitted segments after an RTO"],
            (0, 0, true, true)
        );
        // TCPTimeouts also counts timeouts that sent nothing: a bound, and it holds.
        assert_eq!(rows["RTO timer retransmits"], (1, 2, true, true));
        let rto = bundle
            .reconciliation
            .iter()
            .find(|r| r.what == "RTO timer retransmits")
            .unwrap();
        assert_eq!(rto.relation, Relation::AtMost);
        assert_eq!(rto.not_exact_because, None);

        let by_id: BTreeMap<&str, &BundleFinding> = bundle
            .findings
            .iter()
            .filter(|f| f.netns != 99)
            .map(|f| (f.id.as_str(), f))
            .collect();
        let foreign = bundle
            .findings
            .iter()
            .find(|f| f.netns == 99)
            .expect("the other namespace's inbound loss");
        assert_eq!(foreign.id, "inbound_loss");
        assert!(
            foreign.summary.contains("into netns 99"),
            "{}",
            foreign.summary
        );
        assert!(foreign.evidence["counters"]
            .as_str()
            .unwrap()
            .starts_with("not read"));
        assert_eq!(foreign.flows, vec!["198.18.0.1:50000 > 198.18.0.3:22"]);
        let inbound = by_id["inbound_loss"];
        assert_eq!(
            (inbound.direction, inbound.layer),
            (Direction::Ingress, Layer::Netfilter)
        );
        assert_eq!(inbound.cpus, vec![1]);
        assert_eq!(inbound.flows, vec!["198.18.0.1:40000 > 198.18.0.2:5001"]);
        assert!(inbound.fix.contains("nft list ruleset"));
        let outbound = by_id["outbound_loss"];
        assert_eq!(outbound.direction, Direction::Egress);
        assert!(
            outbound.summary.contains("not dropped in this namespace"),
            "{}",
            outbound.summary
        );
        assert!(
            outbound.summary.contains("fast 4, rto 1"),
            "{}",
            outbound.summary
        );
        assert!(by_id.contains_key("ack_loss_or_spurious_retransmits"));
        let backlog = by_id["backlog_overflow"];
        assert_eq!(
            (backlog.cpus.clone(), backlog.severity),
            (vec![1], "critical")
        );
        assert!(
            backlog.fix.contains("net.core.netdev_max_backlog="),
            "{}",
            backlog.fix
        );
        assert!(by_id.contains_key("drops_netfilter_netfilter_drop"));
        assert_eq!(bundle.findings[0].severity, "critical", "critical first");

        assert_eq!(bundle.flows[0].losing_direction, "both");
        let cpu1 = bundle.cpus.iter().find(|c| c.cpu == 1).unwrap();
        assert_eq!((cpu1.backlog_overflowed, cpu1.drops), (4, 0));
        let cpu0 = bundle.cpus.iter().find(|c| c.cpu == 0).unwrap();
        assert_eq!(cpu0.backlog_enqueue_drops, 4);
        assert!(bundle.text().contains("[critical] backlog_overflow"));
    }

    /// A row whose hook is inactive says so instead of asserting; a bound that does not hold
    /// is reported as not holding.
    #[test]
    fn rows_name_their_missing_inputs_and_bounds_are_checked() {
        let now = Instant::now();
        let mut summary = summary_of(
            &KernelTotals::default(),
            &DropReasons::default(),
            &SoftnetDeltas::new(),
        );
        summary.hooks = hooks_with_inactive(Some(RECEIVE_HOOK.id));
        let before = snapshot(now, &[]);
        let after = snapshot(
            now + Duration::from_secs(1),
            &[
                ("TcpExt", "DelayedACKLost", 3),
                ("TcpExt", "TCPTimeouts", 0),
            ],
        );
        let bundle = bundle_of(&summary, &DropTally::default(), &before, &after);
        let row = |what: &str| {
            bundle
                .reconciliation
                .iter()
                .find(|r| r.what == what)
                .unwrap()
                .clone()
        };
        let dup = row("duplicate segments received (this namespace)");
        assert!(!dup.must_match && !dup.matches);
        assert_eq!(
            dup.not_exact_because.as_deref(),
            Some("hook tcp:tcp_probe is inactive: turned off (--without-receive-hook)")
        );
        let retrans = row("retransmitted segments (this namespace)");
        assert!(retrans.must_match && retrans.matches && retrans.not_exact_because.is_none());

        // Without the RTO timer hooked, which retransmits are the timer's own is inferred: the
        // slow-start row says so, the total stays exact.
        summary.hooks = hooks_with_inactive(Some(RTO_TIMER_HOOK.id));
        let bundle = bundle_of(&summary, &DropTally::default(), &before, &after);
        let split = bundle
            .reconciliation
            .iter()
            .find(|r| r.what == "slow-start retransmitted segments after an RTO")
            .unwrap();
        assert!(!split.must_match, "{split:?}");
        assert!(split
            .not_exact_because
            .as_deref()
            .unwrap()
            .starts_with("hook function:tcp_retransmit_timer is inactive"));
        assert!(
            bundle
                .reconciliation
                .iter()
                .find(|r| r.what == "retransmitted segments (this namespace)")
                .unwrap()
                .must_match
        );

        // 0 timer retransmits ≤ 0 timeouts holds; make the events exceed the counter.
        let mut totals = KernelTotals::default();
        let mut rto = RetransmitTotals::default();
        rto.kinds[netprobe_common::KIND_RTO as usize] = 1;
        rto.timer_kinds[netprobe_common::KIND_RTO as usize] = 1;
        totals.flows.push((
            FlowKey {
                flow: flow(1, 40000, 2, 5001),
                netns: OWN,
                _pad0: 0,
            },
            rto,
        ));
        let summary = summary_of(&totals, &DropReasons::default(), &SoftnetDeltas::new());
        let bundle = bundle_of(&summary, &DropTally::default(), &before, &after);
        let bound = bundle
            .reconciliation
            .iter()
            .find(|r| r.what == "RTO timer retransmits")
            .unwrap();
        assert_eq!((bound.events, bound.counters), (1, 0));
        assert!(bound.must_match && !bound.matches, "{bound:?}");
    }
}
