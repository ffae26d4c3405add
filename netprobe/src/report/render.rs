//! The report for people: findings first, then each layer from the wire up.

use std::fmt::Write as _;

use super::{
    model::{Report, Severity},
    sockets::SocketReport,
};

pub struct Style {
    pub color: bool,
}

impl Style {
    /// Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org).
    pub fn for_stdout() -> Self {
        use std::io::IsTerminal;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            color: !no_color && std::io::stdout().is_terminal(),
        }
    }
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn severity(&self, severity: Severity) -> String {
        match severity {
            Severity::Critical => self.paint("1;31", "CRITICAL"),
            Severity::Warning => self.paint("33", "WARNING "),
        }
    }
    fn heading(&self, text: &str) -> String {
        self.paint("1", text)
    }
}

fn nonzero_rates<'a>(items: impl Iterator<Item = (&'a String, f64)>) -> Vec<String> {
    items
        .filter(|(_, r)| *r > 0.0)
        .map(|(n, r)| format!("{n} {r:.1}/s"))
        .collect()
}

/// Sections in the order a reader follows a packet: what is wrong first, then the wire up to
/// the sockets, then the settings and what could not be read.
pub fn text(report: &Report, style: &Style) -> String {
    let mut o = String::new();
    title(&mut o, report, style);
    findings(&mut o, report, style);
    interfaces(&mut o, report, style);
    drivers(&mut o, report, style);
    qdiscs(&mut o, report);
    cpus(&mut o, report, style);
    protocols(&mut o, report, style);
    sockets(&mut o, report, style);
    conntrack(&mut o, report, style);
    sysctls(&mut o, report, style);
    skipped(&mut o, report, style);
    o
}

// Writing to a String cannot fail: the sections below ignore `writeln!`'s Ok.

fn title(o: &mut String, report: &Report, style: &Style) {
    let _ = writeln!(
        o,
        "{}",
        style.heading(&format!(
            "netprobe report — {:.1} s window, kernel {}",
            report.interval_s, report.kernel
        ))
    );
}

fn findings(o: &mut String, report: &Report, style: &Style) {
    if report.findings.is_empty() {
        let _ = writeln!(
            o,
            "\nNo findings: no rule crossed its threshold over this window."
        );
        return;
    }
    let _ = writeln!(
        o,
        "\n{}",
        style.heading(&format!("Findings ({})", report.findings.len()))
    );
    for f in &report.findings {
        let _ = writeln!(
            o,
            "{} [{}] {}: {}",
            style.severity(f.severity),
            f.layer,
            f.id,
            f.summary
        );
        let _ = writeln!(o, "         why: {}", f.explanation);
        let _ = writeln!(o, "         fix: {}", f.fix);
    }
}

/// One line per interface with its traffic, then the loss counters that moved.
fn interfaces(o: &mut String, report: &Report, style: &Style) {
    let _ = writeln!(o, "\n{}", style.heading("NIC"));
    for i in &report.interfaces {
        let c = |n: &str| i.counters.get(n).map(|c| c.rate).unwrap_or(0.0);
        let _ = writeln!(
            o,
            "  {:<14} {:<5} mtu {:<5} speed {:<7} qlen {:<5} rxq {} txq {}  rx {:.0} pkt/s  tx {:.0} pkt/s{}{}",
            i.info.name,
            i.info.operstate.as_deref().unwrap_or("?"),
            i.info.mtu.map(|m| m.to_string()).unwrap_or_default(),
            i.info.speed_mbps.map(|s| format!("{s}Mb")).unwrap_or_else(|| "-".into()),
            i.info.txqueuelen.map(|m| m.to_string()).unwrap_or_default(),
            i.info.rx_queues,
            i.info.tx_queues,
            c("rx_packets"),
            c("tx_packets"),
            i.info.master.as_ref().map(|m| format!("  master {m}")).unwrap_or_default(),
            if i.info.lower.is_empty() { String::new() } else { format!("  lower {}", i.info.lower.join(",")) },
        );
        let errs = nonzero_rates(
            i.counters
                .iter()
                .filter(|(n, _)| {
                    n.contains("err")
                        || n.contains("drop")
                        || n.contains("missed")
                        || n.contains("fifo")
                })
                .map(|(n, c)| (n, c.rate)),
        );
        if !errs.is_empty() {
            let _ = writeln!(o, "                 loss: {}", errs.join(", "));
        }
    }
}

/// The ethtool view: driver, ring sizes against their maximum, the driver's loss counters.
fn drivers(o: &mut String, report: &Report, style: &Style) {
    let _ = writeln!(o, "\n{}", style.heading("Driver / rings"));
    if report.nics.is_empty() {
        let _ = writeln!(o, "  (no interface answered the ethtool ioctl)");
    }
    for n in &report.nics {
        let rings = n
            .rings
            .map(|r| {
                format!(
                    "rx ring {}/{} tx ring {}/{}",
                    r.rx, r.rx_max, r.tx, r.tx_max
                )
            })
            .unwrap_or_else(|| "no ring parameters".into());
        let _ = writeln!(
            o,
            "  {:<14} driver {} {}  {}  {} stats",
            n.ifname,
            n.driver,
            n.version,
            rings,
            n.stats.len()
        );
        let loss: Vec<String> = n
            .loss
            .iter()
            .filter(|l| l.rate > 0.0)
            .map(|l| format!("{} {:.1}/s", l.name, l.rate))
            .collect();
        if !loss.is_empty() {
            let _ = writeln!(o, "                 loss: {}", loss.join(", "));
        }
    }
}

/// Part of the driver section, without a heading of its own: the qdiscs sit just above the
/// driver's transmit rings.
fn qdiscs(o: &mut String, report: &Report) {
    if report.qdiscs.is_empty() {
        return;
    }
    let _ = writeln!(o, "  qdiscs:");
    for q in &report.qdiscs {
        let _ = writeln!(
            o,
            "    {:<12} {:<10} {:<8} parent {:<8} drops {} ({:.1}/s) overlimits {} requeues {} backlog {}b",
            q.qdisc.ifname, q.qdisc.kind, q.qdisc.handle, q.qdisc.parent, q.qdisc.drops, q.drops_rate, q.qdisc.overlimits, q.qdisc.requeues, q.qdisc.backlog
        );
    }
}

/// Per-CPU softirq and backlog work, how unevenly it is spread, and the RPS masks that spread it.
fn cpus(o: &mut String, report: &Report, style: &Style) {
    let _ = writeln!(o, "\n{}", style.heading("Softirq / CPU"));
    for c in &report.cpus {
        let _ = writeln!(
            o,
            "  cpu{:<3} NET_RX {:>8.0}/s NET_TX {:>7.0}/s  processed {:>8.0}/s  dropped {} ({:.1}/s)  squeezed {} ({:.1}/s)  rps {:.0}/s  nic irq {:.0}/s",
            c.cpu, c.net_rx_rate, c.net_tx_rate, c.processed_rate, c.dropped, c.dropped_rate, c.time_squeeze, c.time_squeeze_rate, c.received_rps_rate, c.nic_irq_rate
        );
    }
    let im = &report.imbalance;
    let _ = writeln!(
        o,
        "  NET_RX busiest/mean {:.1}×, NIC IRQ busiest/mean {:.1}×",
        im.net_rx_ratio, im.nic_irq_ratio
    );
    for i in &report.interfaces {
        if !i.info.rps_cpus.is_empty() {
            let masks: Vec<String> = i
                .info
                .rps_cpus
                .iter()
                .map(|(q, m)| format!("{q}={m}"))
                .collect();
            let _ = writeln!(o, "  RPS {}: {}", i.info.name, masks.join(" "));
        }
    }
}

/// The snmp/netstat groups a reader looks at, under two headings; only counters that moved.
/// Snmp6 is left to the JSON.
fn protocols(o: &mut String, report: &Report, style: &Style) {
    for (title, groups) in [
        ("IP", &["Ip", "IpExt", "Icmp"][..]),
        (
            "TCP / UDP",
            &["Tcp", "TcpExt", "Udp", "UdpLite", "MPTcpExt"][..],
        ),
    ] {
        let _ = writeln!(o, "\n{}", style.heading(title));
        for g in groups {
            if let Some(fields) = report.protocols.get(*g) {
                let active = nonzero_rates(fields.iter().map(|(n, c)| (n, c.rate)));
                if !active.is_empty() {
                    let _ = writeln!(o, "  {g}: {}", active.join(", "));
                }
            }
        }
    }
}

fn sockets(o: &mut String, report: &Report, style: &Style) {
    let _ = writeln!(o, "\n{}", style.heading("Sockets"));
    let Some(s) = &report.sockets else {
        let _ = writeln!(o, "  (not available)");
        return;
    };
    let states: Vec<String> = s
        .tcp_states
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        o,
        "  tcp {} ({}), udp {}",
        s.tcp_total,
        states.join(", "),
        s.udp_total
    );
    if s.close_wait > 0 {
        for h in &s.close_wait_owners {
            let _ = writeln!(
                o,
                "  CLOSE_WAIT {} held by {} (pid {}) on ports {:?}",
                h.count, h.comm, h.pid, h.local_ports
            );
        }
    }
    socket_queues(o, s);
}

/// Listeners (fullest accept queue first, ten at most), UDP sockets with unread data, and the
/// sockets that dropped in the window, with their buffers and limits.
fn socket_queues(o: &mut String, s: &SocketReport) {
    for l in s.listeners.iter().take(10) {
        let owners: Vec<String> = l
            .owners
            .iter()
            .map(|o| format!("{}({})", o.comm, o.pid))
            .collect();
        let drops = match l.drops {
            Some(d) if d > 0 => format!(", {d} refused in the window"),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "  listen {}:{} accept queue {}/{} (limited by {}{drops}) {}",
            l.addr,
            l.port,
            l.accept_queue,
            l.accept_queue_max,
            l.limited_by.unwrap_or("unknown"),
            owners.join(",")
        );
    }
    for u in &s.udp_backlogs {
        let _ = writeln!(
            o,
            "  udp {}:{} {} bytes unread",
            u.addr, u.port, u.recv_queue_bytes
        );
    }
    for row in &s.overflowing_sockets {
        let _ = writeln!(
            o,
            "  {} dropped {} in the window (rcvbuf {}, limited by {} {})",
            row.who(),
            row.drops.unwrap_or(0),
            row.rcvbuf.map_or("?".into(), |b| b.to_string()),
            row.limited_by.unwrap_or("unknown"),
            row.limit.map_or("?".into(), |v| v.to_string()),
        );
    }
}

fn conntrack(o: &mut String, report: &Report, style: &Style) {
    let _ = writeln!(o, "\n{}", style.heading("Conntrack"));
    match &report.conntrack {
        Some(c) => {
            let rates = nonzero_rates(c.stats.iter().map(|(n, v)| (n, v.rate)));
            let _ = writeln!(
                o,
                "  {}/{} ({:.1}%) {}",
                c.count,
                c.max,
                c.usage_pct,
                rates.join(", ")
            );
        }
        None => {
            let _ = writeln!(o, "  not loaded");
        }
    }
}

fn sysctls(o: &mut String, report: &Report, style: &Style) {
    let _ = writeln!(o, "\n{}", style.heading("Sysctls"));
    for (k, v) in &report.sysctls {
        let host = if report.sysctls_from_initial_netns.contains(k) {
            "  (the host's: read in the initial network namespace)"
        } else {
            ""
        };
        let _ = writeln!(o, "  {k} = {v}{host}");
    }
}

/// Only when something could not be read, so a complete report ends with its sysctls.
fn skipped(o: &mut String, report: &Report, style: &Style) {
    if report.skipped.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n{}", style.heading("Skipped"));
    for s in &report.skipped {
        let _ = writeln!(o, "  {}: {}", s.source, s.reason);
    }
}
