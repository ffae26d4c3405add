//! What `netprobe trace` streams: NDJSON objects (serde types built from the typed events of
//! `model::event`, never the model itself) and one-line text renderings for people.

use std::{
    borrow::Cow,
    cell::RefCell,
    io::{self, Write},
    net::IpAddr,
};

use netprobe_common::vocab::{ip_proto, RetransmitOutcome, TcpState};
use serde::Serialize;

use super::ndjson;
use crate::{
    kernel::loader::HookStatus,
    model::{
        event::{Drop, IfName, NetEvent, Receive, Retransmit},
        owners::Owner,
    },
};

/// `{"type":"hooks"}`: first line of the stream, once every hook is attached or known absent.
#[derive(Debug, Serialize)]
pub struct HooksJson<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub hooks: &'a [HookStatus],
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RetransmitJson<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts_ns: u64,
    pub cpu: u32,
    pub netns: u32,
    pub family: &'static str,
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    pub state: &'static str,
    /// `rto`, `fast`, `tlp`, `syn`, `synack` or `other`.
    #[serde(rename = "kind")]
    pub retransmit_kind: &'static str,
    /// `timer` (TIMER softirq), `other` (ACK processing, process context…) or `unknown`.
    pub trigger: &'static str,
    /// `sent`, `failed_after_counted` (in RetransSegs and TCPRetransFail, never on the wire),
    /// `aborted` (given up before counting) or `unclassified`.
    pub outcome: &'static str,
    /// 0 when sent, else the kernel's error: a negative errno, or 1 (`NET_XMIT_DROP`).
    pub err: i32,
    pub segs: u16,
    pub bytes: u32,
    pub seq: u32,
    /// The process that owns the socket (not the task on the CPU), when it can be named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<&'a str>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct DropJson<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts_ns: u64,
    pub cpu: u32,
    /// 0 when the packet had neither a socket nor a device.
    pub netns: u32,
    /// `null` when the packet carried no parsable IP header.
    pub family: Option<&'static str>,
    pub saddr: Option<IpAddr>,
    pub sport: Option<u16>,
    pub daddr: Option<IpAddr>,
    pub dport: Option<u16>,
    pub reason: &'a str,
    pub reason_code: u32,
    /// `ingress`, `egress`, `local` or `unknown` (see `model::classify`).
    pub direction: &'static str,
    /// `nic`, `qdisc`, `backlog`, `netfilter`, `ip`, `tcp`, `udp`, `socket` or `unknown`.
    pub layer: &'static str,
    pub location: &'a str,
    /// Ethertype: `ipv4`, `ipv6`, `arp` or `0x....`.
    pub protocol: Cow<'static, str>,
    /// IP protocol (`tcp`, `udp`, `icmp`, … or the number) when the IP header was parsed;
    /// `null` otherwise (ARP, vsock…): the key is in every drop, as the contract lists it.
    pub ip_proto: Option<Cow<'static, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
    /// State of the socket the packet belonged to, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// Present, and true, on a segment with data from before its socket's `rcv_nxt` whose
    /// reason does not say so (Linux 6.1's TCP_INVALID_SEQUENCE): a duplicate the kernel
    /// counted in DelayedACKLost.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub old_sequence: bool,
    /// The process that owns that socket, when it can be named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<&'a str>,
}

/// `{"type":"peer_retransmit"}` or `{"type":"ooo"}`: a data segment out of sequence on an
/// established socket's receive path.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ReceiveJson<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts_ns: u64,
    pub cpu: u32,
    pub netns: u32,
    pub family: &'static str,
    /// The receiving socket's end.
    pub saddr: IpAddr,
    pub sport: u16,
    /// The peer that sent the segment.
    pub daddr: IpAddr,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<&'a str>,
}

impl<'a> RetransmitJson<'a> {
    pub fn new(e: &Retransmit, owner: Option<&'a Owner>) -> Self {
        RetransmitJson {
            kind: "retransmit",
            ts_ns: e.at.ts_ns,
            cpu: e.at.cpu,
            netns: e.flow.netns,
            family: e.family.map(|f| f.name()).unwrap_or("unknown"),
            saddr: e.flow.src.addr,
            sport: e.flow.src.port.unwrap_or(0),
            daddr: e.flow.dst.addr,
            dport: e.flow.dst.port.unwrap_or(0),
            state: e.state.map(TcpState::name).unwrap_or("UNKNOWN"),
            retransmit_kind: e.kind.name(),
            trigger: e.trigger.name(),
            outcome: e.outcome.name(),
            err: e.err,
            segs: e.segs,
            bytes: e.bytes,
            seq: e.seq,
            pid: owner.map(|o| o.pid),
            comm: owner.map(|o| o.comm.as_str()),
        }
    }
}

impl<'a> DropJson<'a> {
    pub fn new(e: &'a Drop, owner: Option<&'a Owner>) -> Self {
        DropJson {
            kind: "drop",
            ts_ns: e.at.ts_ns,
            cpu: e.at.cpu,
            netns: e.netns,
            family: e.flow.map(|f| f.family().name()),
            saddr: e.flow.map(|f| f.src.addr),
            sport: e.flow.and_then(|f| f.src.port),
            daddr: e.flow.map(|f| f.dst.addr),
            dport: e.flow.and_then(|f| f.dst.port),
            reason: &e.reason,
            reason_code: e.reason_code,
            direction: e.direction.name(),
            layer: e.layer.name(),
            location: &e.location,
            protocol: ethertype(e.ethertype),
            ip_proto: e.ip_proto.map(ip_proto_name),
            ifname: e
                .device
                .as_ref()
                .and_then(|d| d.name.as_ref().map(IfName::as_str)),
            ifindex: e.device.as_ref().map(|d| d.ifindex),
            state: e.socket_state.map(TcpState::name_of),
            old_sequence: e.old_sequence,
            pid: owner.map(|o| o.pid),
            comm: owner.map(|o| o.comm.as_str()),
        }
    }
}

impl<'a> ReceiveJson<'a> {
    pub fn new(e: &Receive, owner: Option<&'a Owner>) -> Self {
        ReceiveJson {
            kind: if e.out_of_order {
                "ooo"
            } else {
                "peer_retransmit"
            },
            ts_ns: e.at.ts_ns,
            cpu: e.at.cpu,
            netns: e.flow.netns,
            family: e.family.map(|f| f.name()).unwrap_or("unknown"),
            saddr: e.flow.src.addr,
            sport: e.flow.src.port.unwrap_or(0),
            daddr: e.flow.dst.addr,
            dport: e.flow.dst.port.unwrap_or(0),
            class: e.class.map(|c| c.name()).unwrap_or("other"),
            partial: e.class == Some(netprobe_common::vocab::ReceiveClass::DuplicatePartial),
            seq: e.seq,
            len: e.len,
            rcv_nxt: e.rcv_nxt,
            ooo_end: e.ooo_end,
            old_bytes: e.old_bytes(),
            hole_bytes: e.hole_bytes(),
            pid: owner.map(|o| o.pid),
            comm: owner.map(|o| o.comm.as_str()),
        }
    }
}

pub fn ethertype(protocol: u16) -> Cow<'static, str> {
    match protocol {
        0x0800 => "ipv4".into(),
        0x86dd => "ipv6".into(),
        0x0806 => "arp".into(),
        other => format!("{other:#06x}").into(),
    }
}

/// The protocol's name, or its number for the ones netprobe does not name.
pub fn ip_proto_name(proto: u8) -> Cow<'static, str> {
    ip_proto::name(proto)
        .map(Cow::Borrowed)
        .unwrap_or_else(|| proto.to_string().into())
}

/// `sent`, or `failed <error> (<outcome>)`.
fn outcome_text(err: i32, outcome: RetransmitOutcome) -> String {
    if err == 0 {
        return "sent".into();
    }
    format!("failed {} ({})", error_name(err), outcome.name())
}

fn error_name(err: i32) -> String {
    // What a qdisc's drop comes back as (net_xmit_eval passes it up unchanged).
    const NET_XMIT_DROP: i32 = 1;
    if err == NET_XMIT_DROP {
        return "NET_XMIT_DROP".into();
    }
    let name = match -err {
        libc::EBUSY => "EBUSY",
        libc::ENOMEM => "ENOMEM",
        libc::EAGAIN => "EAGAIN",
        libc::ENOBUFS => "ENOBUFS",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EPERM => "EPERM",
        _ => return format!("error {err}"),
    };
    name.into()
}

/// Turns typed events into JSON objects or text lines.
pub struct Renderer {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC at start-up, for wall-clock text timestamps.
    pub realtime_offset_ns: i128,
    /// The last second rendered as `HH:MM:SS` local time.
    last_second: RefCell<(i64, String)>,
    /// The NDJSON line being built, kept for the next one.
    line: RefCell<Vec<u8>>,
}

impl Renderer {
    pub fn new(realtime_offset_ns: i128) -> Self {
        Self {
            realtime_offset_ns,
            last_second: RefCell::new((0, String::new())),
            line: RefCell::new(Vec::with_capacity(512)),
        }
    }

    /// `owner`: the process owning the event's socket, when known.
    pub fn json_line(&self, event: &NetEvent, owner: Option<&Owner>) -> String {
        let mut line = Vec::new();
        self.write_json(&mut line, event, owner)
            .expect("writing to memory never fails");
        line.pop();
        String::from_utf8(line).expect("serde_json writes UTF-8")
    }

    /// The event's NDJSON line, newline included, built in the renderer's own buffer (no
    /// allocation once it has grown to a line's size) and written to `out` in one call.
    pub fn write_json(
        &self,
        out: &mut impl Write,
        event: &NetEvent,
        owner: Option<&Owner>,
    ) -> io::Result<()> {
        let mut line = self.line.borrow_mut();
        match event {
            NetEvent::Retransmit(e) => {
                ndjson::retransmit(&mut line, &RetransmitJson::new(e, owner))
            }
            NetEvent::Drop(e) => ndjson::drop(&mut line, &DropJson::new(e, owner)),
            NetEvent::Receive(e) => ndjson::receive(&mut line, &ReceiveJson::new(e, owner)),
        }
        ndjson::flush_line(out, &mut line)
    }

    pub fn text_line(&self, event: &NetEvent, owner: Option<&Owner>) -> String {
        let line = match event {
            NetEvent::Retransmit(e) => format!(
                "{} cpu{:<3} RETRANS {} {} {} segs={} bytes={} seq={} {} netns={}",
                self.wall_clock(e.at.ts_ns),
                e.at.cpu,
                e.kind.name(),
                e.flow,
                e.state.map(TcpState::name).unwrap_or("UNKNOWN"),
                e.segs,
                e.bytes,
                e.seq,
                outcome_text(e.err, e.outcome),
                e.flow.netns
            ),
            NetEvent::Receive(e) => self.receive_text(e),
            NetEvent::Drop(e) => self.drop_text(e),
        };
        match owner {
            Some(o) => format!("{line} pid={} comm={}", o.pid, o.comm),
            None => line,
        }
    }

    fn receive_text(&self, e: &Receive) -> String {
        let detail = match (e.old_bytes(), e.hole_bytes()) {
            (Some(old), _) => format!(" old={old}"),
            (_, Some(hole)) => format!(" hole={hole}"),
            _ => String::new(),
        };
        let partial = e.class == Some(netprobe_common::vocab::ReceiveClass::DuplicatePartial);
        format!(
            "{} cpu{:<3} {:<7} {}{} {} seq={} len={} rcv_nxt={}{detail} netns={}",
            self.wall_clock(e.at.ts_ns),
            e.at.cpu,
            if e.out_of_order { "OOO" } else { "PEERRTX" },
            e.class.map(|c| c.name()).unwrap_or("other"),
            if partial { "(partial)" } else { "" },
            // As the data travelled: from the peer to this socket.
            e.flow.reversed(),
            e.seq,
            e.len,
            e.rcv_nxt,
            e.flow.netns
        )
    }

    fn drop_text(&self, e: &Drop) -> String {
        let what = match (e.ip_proto, e.flow) {
            (Some(p), Some(flow)) => format!("{} {flow}", ip_proto_name(p)),
            _ => ethertype(e.ethertype).into_owned(),
        };
        let dev = e
            .device
            .as_ref()
            .and_then(|d| d.name.as_ref().map(IfName::as_str))
            .map(|d| format!(" dev={d}"))
            .unwrap_or_default();
        format!(
            "{} cpu{:<3} DROP    {} {what}{dev} {}/{} at {} netns={}",
            self.wall_clock(e.at.ts_ns),
            e.at.cpu,
            e.reason,
            e.direction.name(),
            e.layer.name(),
            e.location,
            e.netns
        )
    }

    /// Local wall-clock time `HH:MM:SS.micros` of a monotonic timestamp.
    pub fn wall_clock(&self, ts_ns: u64) -> String {
        let real = ts_ns as i128 + self.realtime_offset_ns;
        let secs = (real / 1_000_000_000) as libc::time_t;
        let micros = (real % 1_000_000_000) / 1000;
        // localtime_r costs more than the rest of a line; events come in bursts within a second.
        let mut last = self.last_second.borrow_mut();
        if last.0 != secs as i64 || last.1.is_empty() {
            // SAFETY: an all-zero `tm` is a valid value of this plain C struct.
            let mut tm: libc::tm = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are to live locals; localtime_r writes only into `tm`.
            unsafe { libc::localtime_r(&secs, &mut tm) };
            *last = (
                secs as i64,
                format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec),
            );
        }
        format!("{}.{:06}", last.1, micros)
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
    use netprobe_common::{
        decode::Event, DropEvent, EventHeader, Flow, RetransmitEvent, AF_INET6, DROP_HAS_DEV,
        DROP_HAS_FLOW, DROP_HAS_PORTS, DROP_HAS_SOCK, TRIGGER_OTHER,
    };

    use super::*;
    use crate::{
        kernel::{
            btf::DropReasons,
            kallsyms::{Symbolizer, SymbolsLoading},
        },
        model::event::EventModel,
    };

    fn model() -> EventModel {
        EventModel::new(
            DropReasons::from_pairs(&[(12, "NETFILTER_DROP")], &[]),
            SymbolsLoading::loaded(Symbolizer::parse("ffffffff81234560 t nf_hook_slow\n")),
        )
    }

    fn json(event: &Event, owner: Option<&Owner>) -> String {
        Renderer::new(0).json_line(&model().build(event), owner)
    }

    fn text(event: &Event, owner: Option<&Owner>) -> String {
        Renderer::new(0).text_line(&model().build(event), owner)
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
            flow: Flow::ipv4([198, 18, 0, 1], 40000, [198, 18, 0, 2], 5001),
            netns: 99,
            err: -16,
            seq: 7,
            bytes: 1448,
            segs: 1,
            state: 1,
            kind: netprobe_common::KIND_FAST,
            trigger: TRIGGER_OTHER,
            outcome: netprobe_common::OUTCOME_ABORTED,
            ..Default::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(&json(&Event::Retransmit(e), None)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"retransmit","ts_ns":5,"cpu":1,"netns":99,"family":"ipv4",
                "saddr":"198.18.0.1","sport":40000,"daddr":"198.18.0.2","dport":5001,
                "state":"ESTABLISHED","kind":"fast","trigger":"other","outcome":"aborted","err":-16,"segs":1,"bytes":1448,"seq":7})
        );
        let text = text(
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
        assert!(text.contains("failed EBUSY (aborted)"), "{text}");
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
        let v: serde_json::Value = serde_json::from_str(&json(
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
        let v: serde_json::Value = serde_json::from_str(&json(&Event::Drop(bare), None)).unwrap();
        assert_eq!(v["family"], serde_json::Value::Null);
        assert_eq!(v["sport"], serde_json::Value::Null);
        assert_eq!(v["reason"], "UNKNOWN_77");
        assert_eq!(v["protocol"], "arp");
        assert_eq!(
            v.get("ip_proto"),
            Some(&serde_json::Value::Null),
            "every drop has the key, null without an IP header"
        );
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
        let text = text(&Event::Drop(bare), None);
        assert!(
            text.contains("DROP    UNKNOWN_77 arp unknown/netfilter at nf_hook_slow+0x3a"),
            "{text}"
        );
    }
}
