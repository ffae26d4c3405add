//! What `netprobe trace` prints: NDJSON objects (serde types built from the ABI types, never
//! the ABI types themselves) and one-line text renderings for people.

use std::{
    cell::RefCell,
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netprobe_common::{
    decode::Event, DropEvent, EventKind, Flow, ReceiveEvent, RetransmitEvent, AF_INET, AF_INET6,
    DROP_HAS_DEV, DROP_HAS_FLOW, DROP_HAS_PORTS, DROP_HAS_SOCK, KIND_NAMES, RX_DUPLICATE,
    RX_DUPLICATE_PARTIAL, RX_FILLS_HOLE, RX_HAD_OOO, RX_OPENS_HOLE, TRIGGER_OTHER, TRIGGER_TIMER,
};
use serde::Serialize;

use crate::{
    kernel::btf::DropReasons,
    kernel::kallsyms::Symbolizer,
    kernel::loader::HookStatus,
    model::classify::{classify_at, classify_site, Direction, DropContext, Layer, SiteClass},
    model::owners::Owner,
};

/// `{"type":"hooks"}`: first line of the stream, once every hook is attached or known absent.
#[derive(Debug, Serialize)]
pub struct HooksJson<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub hooks: &'a [HookStatus],
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RetransmitJson {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts_ns: u64,
    pub cpu: u32,
    pub netns: u32,
    pub family: &'static str,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    pub state: &'static str,
    /// `rto`, `fast`, `tlp`, `syn`, `synack` or `other`.
    #[serde(rename = "kind")]
    pub retransmit_kind: &'static str,
    /// `timer` (TIMER softirq), `other` (ACK processing, process context…) or `unknown`.
    pub trigger: &'static str,
    pub err: i32,
    pub segs: u16,
    pub bytes: u32,
    pub seq: u32,
    /// The process that owns the socket (not the task on the CPU), when it can be named.
    #[serde(flatten)]
    pub owner: Option<Owner>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct DropJson {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts_ns: u64,
    pub cpu: u32,
    /// 0 when the packet had neither a socket nor a device.
    pub netns: u32,
    /// `null` when the packet carried no parsable IP header.
    pub family: Option<&'static str>,
    pub saddr: Option<String>,
    pub sport: Option<u16>,
    pub daddr: Option<String>,
    pub dport: Option<u16>,
    pub reason: String,
    pub reason_code: u32,
    /// `ingress`, `egress`, `local` or `unknown` (see `dropclass`).
    pub direction: Direction,
    /// `nic`, `qdisc`, `backlog`, `netfilter`, `ip`, `tcp`, `udp`, `socket` or `unknown`.
    pub layer: Layer,
    pub location: String,
    /// Ethertype: `ipv4`, `ipv6`, `arp` or `0x....`.
    pub protocol: String,
    /// IP protocol (`tcp`, `udp`, `icmp`, … or the number) when the IP header was parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
    /// State of the socket the packet belonged to, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// The process that owns that socket, when it can be named.
    #[serde(flatten)]
    pub owner: Option<Owner>,
}

/// `{"type":"peer_retransmit"}` or `{"type":"ooo"}`: a data segment out of sequence on an
/// established socket's receive path.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ReceiveJson {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts_ns: u64,
    pub cpu: u32,
    pub netns: u32,
    pub family: &'static str,
    /// The receiving socket's end.
    pub saddr: String,
    pub sport: u16,
    /// The peer that sent the segment.
    pub daddr: String,
    pub dport: u16,
    /// `duplicate`, `fills_hole` (peer_retransmit) or `opens_hole` (ooo).
    pub class: &'static str,
    /// Duplicates: the segment also carried new data after the old.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    pub seq: u32,
    /// Sequence space of the segment (payload bytes, plus one for a FIN).
    pub len: u32,
    /// The next byte the socket expected when the segment arrived.
    pub rcv_nxt: u32,
    /// End of the data queued out of order at that moment, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ooo_end: Option<u32>,
    /// Bytes received twice (duplicate) or missing in front of the segment (ooo).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_bytes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hole_bytes: Option<u32>,
    /// The process that owns the receiving socket (`pid`, `comm`), when it can be named.
    #[serde(flatten)]
    pub owner: Option<Owner>,
}

/// The JSON name of a receive class.
pub fn receive_class_name(class: u8) -> &'static str {
    match class {
        RX_DUPLICATE | RX_DUPLICATE_PARTIAL => "duplicate",
        RX_FILLS_HOLE => "fills_hole",
        RX_OPENS_HOLE => "opens_hole",
        _ => "other",
    }
}

pub fn family_name(family: u16) -> Option<&'static str> {
    match family {
        AF_INET => Some("ipv4"),
        AF_INET6 => Some("ipv6"),
        _ => None,
    }
}

pub fn addr(family: u16, bytes: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

pub fn kind_name(kind: u8) -> &'static str {
    KIND_NAMES.get(kind as usize).copied().unwrap_or("other")
}

pub fn trigger_name(trigger: u8) -> &'static str {
    match trigger {
        TRIGGER_TIMER => "timer",
        TRIGGER_OTHER => "other",
        _ => "unknown",
    }
}

/// `TCP_ESTABLISHED` … from include/net/tcp_states.h (a stable user-visible ABI).
pub fn tcp_state(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

pub fn ethertype(protocol: u16) -> String {
    match protocol {
        0x0800 => "ipv4".into(),
        0x86dd => "ipv6".into(),
        0x0806 => "arp".into(),
        other => format!("{other:#06x}"),
    }
}

pub fn ip_proto(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        other => other.to_string(),
    }
}

fn ifname(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn errno_name(err: i32) -> String {
    let name = match -err {
        0 => return "sent".into(),
        libc::EBUSY => "EBUSY",
        libc::ENOMEM => "ENOMEM",
        libc::EAGAIN => "EAGAIN",
        libc::ENOBUFS => "ENOBUFS",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EPERM => "EPERM",
        _ => return format!("error {err}"),
    };
    format!("failed {name}")
}

/// Turns events into JSON objects or text lines.
pub struct Renderer {
    pub reasons: DropReasons,
    pub symbols: Symbolizer,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC at start-up, for wall-clock text timestamps.
    pub realtime_offset_ns: i128,
    /// Drop sites seen so far, by (reason, location): their names and the part of the
    /// classification that depends on nothing else. A drop storm repeats a few sites
    /// millions of times; naming and classifying each once halves the cost of a drop line.
    drop_sites: RefCell<HashMap<(u32, u64), DropSite>>,
    /// The last second rendered as `HH:MM:SS` local time.
    last_second: RefCell<(i64, String)>,
}

#[derive(Clone)]
struct DropSite {
    reason: String,
    location: String,
    class: SiteClass,
}

/// Beyond this many sites the cache stops growing (each site is still named, just not kept).
const MAX_DROP_SITES: usize = 4096;

impl Renderer {
    pub fn new(reasons: DropReasons, symbols: Symbolizer, realtime_offset_ns: i128) -> Self {
        Self {
            reasons,
            symbols,
            realtime_offset_ns,
            drop_sites: RefCell::new(HashMap::new()),
            last_second: RefCell::new((0, String::new())),
        }
    }

    fn drop_site(&self, reason: u32, location: u64) -> DropSite {
        if let Some(site) = self.drop_sites.borrow().get(&(reason, location)) {
            return site.clone();
        }
        let reason_name = self.reasons.name(reason);
        let location_name = self.symbols.resolve(location);
        let site = DropSite {
            class: classify_site(&reason_name, &location_name),
            reason: reason_name,
            location: location_name,
        };
        let mut sites = self.drop_sites.borrow_mut();
        if sites.len() < MAX_DROP_SITES {
            sites.insert((reason, location), site.clone());
        }
        site
    }

    pub fn retransmit_json(&self, e: &RetransmitEvent, owner: Option<&Owner>) -> RetransmitJson {
        RetransmitJson {
            kind: "retransmit",
            ts_ns: e.header.ts_ns,
            cpu: e.header.cpu,
            netns: e.netns,
            family: family_name(e.flow.family).unwrap_or("unknown"),
            saddr: addr(e.flow.family, &e.flow.saddr).to_string(),
            sport: e.flow.sport,
            daddr: addr(e.flow.family, &e.flow.daddr).to_string(),
            dport: e.flow.dport,
            state: tcp_state(e.state),
            retransmit_kind: kind_name(e.kind),
            trigger: trigger_name(e.trigger),
            err: e.err,
            segs: e.segs,
            bytes: e.bytes,
            seq: e.seq,
            owner: owner.cloned(),
        }
    }

    pub fn drop_json(&self, e: &DropEvent, owner: Option<&Owner>) -> DropJson {
        let has_flow = e.flags & DROP_HAS_FLOW != 0;
        let has_ports = e.flags & DROP_HAS_PORTS != 0;
        let has_dev = e.flags & DROP_HAS_DEV != 0;
        let flow_addr = |bytes: &[u8; 16]| has_flow.then(|| addr(e.flow.family, bytes).to_string());
        let DropSite {
            reason,
            location,
            class,
        } = self.drop_site(e.reason, e.location);
        let (direction, layer) = classify_at(
            class,
            DropContext {
                location: &location,
                skb_iif: e.skb_iif,
                ifindex: has_dev.then_some(e.ifindex),
                has_socket: e.flags & DROP_HAS_SOCK != 0,
            },
        );
        DropJson {
            kind: "drop",
            ts_ns: e.header.ts_ns,
            cpu: e.header.cpu,
            netns: e.netns,
            family: if has_flow {
                family_name(e.flow.family)
            } else {
                None
            },
            saddr: flow_addr(&e.flow.saddr),
            sport: has_ports.then_some(e.flow.sport),
            daddr: flow_addr(&e.flow.daddr),
            dport: has_ports.then_some(e.flow.dport),
            reason,
            reason_code: e.reason,
            direction,
            layer,
            location,
            protocol: ethertype(e.protocol),
            ip_proto: has_flow.then(|| ip_proto(e.ip_proto)),
            ifname: has_dev.then(|| ifname(&e.ifname)).filter(|n| !n.is_empty()),
            ifindex: has_dev.then_some(e.ifindex),
            state: (e.flags & DROP_HAS_SOCK != 0).then(|| tcp_state(e.sk_state)),
            owner: owner.cloned(),
        }
    }

    pub fn receive_json(&self, e: &ReceiveEvent, owner: Option<&Owner>) -> ReceiveJson {
        let ooo = e.header.kind == EventKind::OutOfOrder.id();
        let duplicate = matches!(e.class, RX_DUPLICATE | RX_DUPLICATE_PARTIAL);
        ReceiveJson {
            kind: if ooo { "ooo" } else { "peer_retransmit" },
            ts_ns: e.header.ts_ns,
            cpu: e.header.cpu,
            netns: e.netns,
            family: family_name(e.flow.family).unwrap_or("unknown"),
            saddr: addr(e.flow.family, &e.flow.saddr).to_string(),
            sport: e.flow.sport,
            daddr: addr(e.flow.family, &e.flow.daddr).to_string(),
            dport: e.flow.dport,
            class: receive_class_name(e.class),
            partial: e.class == RX_DUPLICATE_PARTIAL,
            seq: e.seq,
            len: e.len,
            rcv_nxt: e.rcv_nxt,
            ooo_end: (e.flags & RX_HAD_OOO != 0).then_some(e.ooo_end),
            old_bytes: duplicate.then_some(e.gap),
            hole_bytes: (e.class == RX_OPENS_HOLE).then_some(e.gap),
            owner: owner.cloned(),
        }
    }

    /// `owner`: the process owning the event's socket, when known.
    pub fn json_line(&self, event: &Event, owner: Option<&Owner>) -> String {
        let value = match event {
            Event::Retransmit(e) => serde_json::to_string(&self.retransmit_json(e, owner)),
            Event::Drop(e) => serde_json::to_string(&self.drop_json(e, owner)),
            Event::Receive(e) => serde_json::to_string(&self.receive_json(e, owner)),
        };
        value.expect("event JSON serializes")
    }

    pub fn text_line(&self, event: &Event, owner: Option<&Owner>) -> String {
        let line = match event {
            Event::Retransmit(e) => format!(
                "{} cpu{:<3} RETRANS {} {} {} segs={} bytes={} seq={} {} netns={}",
                self.wall_clock(e.header.ts_ns),
                e.header.cpu,
                kind_name(e.kind),
                flow_text(&e.flow, true),
                tcp_state(e.state),
                e.segs,
                e.bytes,
                e.seq,
                errno_name(e.err),
                e.netns
            ),
            Event::Receive(e) => {
                let j = self.receive_json(e, None);
                let detail = match (j.old_bytes, j.hole_bytes) {
                    (Some(old), _) => format!(" old={old}"),
                    (_, Some(hole)) => format!(" hole={hole}"),
                    _ => String::new(),
                };
                // As the data travelled: from the peer to this socket.
                let incoming = Flow {
                    saddr: e.flow.daddr,
                    daddr: e.flow.saddr,
                    sport: e.flow.dport,
                    dport: e.flow.sport,
                    ..e.flow
                };
                format!(
                    "{} cpu{:<3} {:<7} {}{} {} seq={} len={} rcv_nxt={}{detail} netns={}",
                    self.wall_clock(e.header.ts_ns),
                    e.header.cpu,
                    if j.kind == "ooo" { "OOO" } else { "PEERRTX" },
                    j.class,
                    if j.partial { "(partial)" } else { "" },
                    flow_text(&incoming, true),
                    e.seq,
                    e.len,
                    e.rcv_nxt,
                    e.netns
                )
            }
            Event::Drop(e) => {
                let j = self.drop_json(e, None);
                let what = match (&j.ip_proto, e.flags & DROP_HAS_FLOW != 0) {
                    (Some(p), true) => {
                        format!("{p} {}", flow_text(&e.flow, e.flags & DROP_HAS_PORTS != 0))
                    }
                    _ => j.protocol.clone(),
                };
                let dev = j
                    .ifname
                    .as_deref()
                    .map(|d| format!(" dev={d}"))
                    .unwrap_or_default();
                format!(
                    "{} cpu{:<3} DROP    {} {what}{dev} {}/{} at {} netns={}",
                    self.wall_clock(e.header.ts_ns),
                    e.header.cpu,
                    j.reason,
                    j.direction.name(),
                    j.layer.name(),
                    j.location,
                    e.netns
                )
            }
        };
        match owner {
            Some(o) => format!("{line} pid={} comm={}", o.pid, o.comm),
            None => line,
        }
    }

    /// Local wall-clock time `HH:MM:SS.micros` of a monotonic timestamp.
    pub fn wall_clock(&self, ts_ns: u64) -> String {
        let real = ts_ns as i128 + self.realtime_offset_ns;
        let secs = (real / 1_000_000_000) as libc::time_t;
        let micros = (real % 1_000_000_000) / 1000;
        // localtime_r costs more than the rest of a line; events come in bursts within a second.
        let mut last = self.last_second.borrow_mut();
        if last.0 != secs as i64 || last.1.is_empty() {
            // SAFETY: libc::tm is integers and a nullable pointer: all zeroes is a valid value.
            let mut tm: libc::tm = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are to locals that outlive the call; it writes only the tm.
            unsafe { libc::localtime_r(&secs, &mut tm) };
            *last = (
                secs as i64,
                format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec),
            );
        }
        format!("{}.{:06}", last.1, micros)
    }
}

/// `addr:port`, with the address in brackets for IPv6 (`[2001:db8::1]:80`).
pub fn endpoint(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

pub fn flow_text(flow: &Flow, with_ports: bool) -> String {
    let s = addr(flow.family, &flow.saddr);
    let d = addr(flow.family, &flow.daddr);
    if !with_ports {
        return format!("{s} > {d}");
    }
    match (s, d) {
        (IpAddr::V6(_), IpAddr::V6(_)) => format!("[{s}]:{} > [{d}]:{}", flow.sport, flow.dport),
        _ => format!("{s}:{} > {d}:{}", flow.sport, flow.dport),
    }
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC now.
pub fn realtime_offset_ns() -> i128 {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid clock id and out-pointer.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netprobe_common::EventHeader;

    fn renderer() -> Renderer {
        Renderer::new(
            DropReasons::from_pairs(&[(12, "NETFILTER_DROP")], &[]),
            Symbolizer::parse("ffffffff81234560 t nf_hook_slow\n"),
            0,
        )
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..4].copy_from_slice(&a);
        out
    }

    #[test]
    fn retransmit_json_contract() {
        let e = RetransmitEvent {
            header: EventHeader {
                kind: 1,
                _pad0: 0,
                cpu: 1,
                ts_ns: 5,
            },
            flow: Flow {
                saddr: v4([198, 18, 0, 1]),
                daddr: v4([198, 18, 0, 2]),
                sport: 40000,
                dport: 5001,
                family: AF_INET,
                _pad0: 0,
            },
            netns: 99,
            err: -16,
            seq: 7,
            bytes: 1448,
            segs: 1,
            state: 1,
            kind: netprobe_common::KIND_FAST,
            trigger: TRIGGER_OTHER,
            ..Default::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(&renderer().json_line(&Event::Retransmit(e), None)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"retransmit","ts_ns":5,"cpu":1,"netns":99,"family":"ipv4",
                "saddr":"198.18.0.1","sport":40000,"daddr":"198.18.0.2","dport":5001,
                "state":"ESTABLISHED","kind":"fast","trigger":"other","err":-16,"segs":1,"bytes":1448,"seq":7})
        );
        let text = renderer().text_line(
            &Event::Retransmit(e),
            Some(&Owner {
                pid: 42,
                comm: "iperf".into(),
            }),
        );
        assert!(
            text.contains("RETRANS fast 198.18.0.1:40000 > 198.18.0.2:5001 ESTABLISHED segs=1"),
            "{text}"
        );
        assert!(text.contains("failed EBUSY"), "{text}");
        assert!(text.ends_with(" pid=42 comm=iperf"), "{text}");
    }

    #[test]
    fn drop_json_contract_with_and_without_flow() {
        let mut ifname = [0u8; 16];
        ifname[..5].copy_from_slice(b"veth0");
        let mut daddr = [0u8; 16];
        daddr[..2].copy_from_slice(&[0x20, 0x01]);
        daddr[2..4].copy_from_slice(&[0x0d, 0xb8]);
        daddr[15] = 2;
        let e = DropEvent {
            header: EventHeader {
                kind: 2,
                _pad0: 0,
                cpu: 0,
                ts_ns: 9,
            },
            flow: Flow {
                saddr: daddr,
                daddr,
                sport: 1,
                dport: 5001,
                family: AF_INET6,
                _pad0: 0,
            },
            location: 0xffffffff8123459a,
            netns: 3,
            reason: 12,
            ifindex: 4,
            protocol: 0x86dd,
            ip_proto: 6,
            flags: DROP_HAS_FLOW | DROP_HAS_PORTS | DROP_HAS_DEV | DROP_HAS_SOCK,
            ifname,
            sk_state: 1,
            _pad0: [0; 3],
            skb_iif: 0,
            sock_ino: 0,
        };
        let v: serde_json::Value = serde_json::from_str(&renderer().json_line(
            &Event::Drop(e),
            Some(&Owner {
                pid: 7,
                comm: "nginx".into(),
            }),
        ))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"drop","ts_ns":9,"cpu":0,"netns":3,"family":"ipv6",
                "saddr":"2001:db8::2","sport":1,"daddr":"2001:db8::2","dport":5001,
                "reason":"NETFILTER_DROP","reason_code":12,"direction":"egress","layer":"netfilter",
                "location":"nf_hook_slow+0x3a",
                "protocol":"ipv6","ip_proto":"tcp","ifname":"veth0","ifindex":4,"state":"ESTABLISHED",
                "pid":7,"comm":"nginx"})
        );

        let bare = DropEvent {
            flags: 0,
            reason: 77,
            protocol: 0x0806,
            ..e
        };
        let v: serde_json::Value =
            serde_json::from_str(&renderer().json_line(&Event::Drop(bare), None)).unwrap();
        assert_eq!(v["family"], serde_json::Value::Null);
        assert_eq!(v["sport"], serde_json::Value::Null);
        assert_eq!(v["reason"], "UNKNOWN_77");
        assert_eq!(v["protocol"], "arp");
        assert!(v.get("ifname").is_none());
        assert!(v.get("state").is_none());
        assert_eq!(
            v["direction"], "unknown",
            "no socket, no device, no input interface"
        );
        assert_eq!(
            v["layer"], "netfilter",
            "unknown reason: the freeing function's layer"
        );
        let text = renderer().text_line(&Event::Drop(bare), None);
        assert!(
            text.contains("DROP    UNKNOWN_77 arp unknown/netfilter at nf_hook_slow+0x3a"),
            "{text}"
        );
    }
}
