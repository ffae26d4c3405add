//! Typed events: each ring-buffer record becomes one of these exactly once, with its flow
//! as a key, its kind and state as the shared vocabulary, and a drop classified (reason,
//! layer, direction, site). Every view (the NDJSON line, the text line, the findings' tally)
//! reads these, never the raw record.

use std::{collections::HashMap, sync::Arc};

use netprobe_common::{
    decode::Event,
    vocab::{Direction, Layer, ReceiveClass, RetransmitKind, RetransmitOutcome, TcpState, Trigger},
    DropEvent, DropSiteKey, EventKind, ReceiveEvent, RetransmitEvent, DROP_HAS_DEV, DROP_HAS_FLOW,
    DROP_HAS_PORTS, DROP_HAS_SOCK, DROP_OLD_SEQUENCE, RX_HAD_OOO,
};

use super::{
    classify::{classify_at, classify_site, DropContext, SiteClass},
    flow::{Family, Flow},
};
use crate::kernel::{
    btf::DropReasons,
    kallsyms::{Symbolizer, SymbolsLoading},
};

/// Where and when an event happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// CLOCK_MONOTONIC, nanoseconds since boot.
    pub ts_ns: u64,
    pub cpu: u32,
}

/// One TCP segment (or SYN/SYN-ACK) sent again, or an attempt that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retransmit {
    pub at: Stamp,
    /// The socket's view: this host first.
    pub flow: Flow,
    pub family: Option<Family>,
    pub state: Option<TcpState>,
    pub kind: RetransmitKind,
    pub trigger: Trigger,
    /// 0 when sent, else the kernel's error (a negative errno, or `NET_XMIT_DROP`).
    pub err: i32,
    /// Sent, failed after the kernel counted it, or given up before.
    pub outcome: RetransmitOutcome,
    pub segs: u16,
    pub bytes: u32,
    pub seq: u32,
    pub sock_ino: u64,
}

/// The network device a dropped packet was on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub ifindex: u32,
    /// Empty names (a device that went away) are absent.
    pub name: Option<IfName>,
}

/// An interface name as the kernel keeps it (at most `IFNAMSIZ` − 1 bytes), held inline: a
/// drop event names its device without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IfName {
    bytes: [u8; 16],
    len: u8,
}

impl IfName {
    /// The name in a kernel `char[16]`, up to its first NUL; `None` when empty or not UTF-8.
    pub fn from_kernel(raw: &[u8; 16]) -> Option<Self> {
        let len = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
        std::str::from_utf8(&raw[..len]).ok()?;
        (len > 0).then_some(Self {
            bytes: *raw,
            len: len as u8,
        })
    }

    pub fn as_str(&self) -> &str {
        // Checked to be UTF-8 when made.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl std::fmt::Debug for IfName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// One packet dropped, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drop {
    pub at: Stamp,
    /// 0 when the packet had neither a socket nor a device.
    pub netns: u32,
    /// As the packet travelled; absent without a parsable IP header, ports only when parsed.
    pub flow: Option<Flow>,
    /// The IP protocol, when the IP header was parsed.
    pub ip_proto: Option<u8>,
    pub reason_code: u32,
    pub reason: Arc<str>,
    /// `symbol+0xoff` of the freeing function.
    pub location: Arc<str>,
    pub direction: Direction,
    pub layer: Layer,
    /// The ethertype (`skb->protocol`, host order).
    pub ethertype: u16,
    pub device: Option<Device>,
    /// The state of the socket the packet belonged to, when it had one.
    pub socket_state: Option<u8>,
    pub sock_ino: u64,
    /// A segment with data from before its socket's `rcv_nxt`, found so by the kernel side
    /// where the reason alone does not say it (`DROP_OLD_SEQUENCE`).
    pub old_sequence: bool,
}

impl Drop {
    pub fn is_tcp(&self) -> bool {
        self.ip_proto == Some(netprobe_common::vocab::ip_proto::TCP)
    }

    /// Dropped by a socket that has sent or received a FIN but still takes data.
    pub fn on_a_closing_socket(&self) -> bool {
        self.socket_state
            .and_then(TcpState::from_raw)
            .is_some_and(TcpState::after_established)
    }
}

/// Out-of-sequence data on a socket's receive path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receive {
    pub at: Stamp,
    /// The socket's view: this host's end first, the peer that sent the segment second.
    pub flow: Flow,
    pub family: Option<Family>,
    /// `ooo` (a hole opened) rather than `peer_retransmit`.
    pub out_of_order: bool,
    /// Absent for a class this agent does not know (a newer kernel program).
    pub class: Option<ReceiveClass>,
    pub seq: u32,
    pub len: u32,
    pub rcv_nxt: u32,
    pub ooo_end: Option<u32>,
    /// Bytes received twice (duplicates) or missing in front of the segment (holes).
    pub gap: u32,
    pub sock_ino: u64,
}

impl Receive {
    pub fn old_bytes(&self) -> Option<u32> {
        self.class
            .is_some_and(ReceiveClass::is_duplicate)
            .then_some(self.gap)
    }

    pub fn hole_bytes(&self) -> Option<u32> {
        (self.class == Some(ReceiveClass::OpensHole)).then_some(self.gap)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    Retransmit(Retransmit),
    Drop(Drop),
    Receive(Receive),
}

impl NetEvent {
    /// The socket inode, 0 when the event had no socket.
    pub fn sock_ino(&self) -> u64 {
        match self {
            NetEvent::Retransmit(e) => e.sock_ino,
            NetEvent::Drop(e) => e.sock_ino,
            NetEvent::Receive(e) => e.sock_ino,
        }
    }
}

#[derive(Clone)]
struct DropSite {
    reason: Arc<str>,
    location: Arc<str>,
    class: SiteClass,
}

/// Beyond this many sites the cache stops growing (each site is still named, just not kept).
const MAX_DROP_SITES: usize = 4096;

/// Builds the typed events: names reasons and locations, classifies drops.
pub struct EventModel {
    pub reasons: DropReasons,
    symbols: SymbolsLoading,
    /// Drop sites seen so far, by (reason, location): their names and the part of the
    /// classification that depends on nothing else. A drop storm repeats a few sites
    /// millions of times; naming and classifying each once halves the cost of a drop.
    sites: HashMap<(u32, u64), DropSite>,
}

impl EventModel {
    pub fn new(reasons: DropReasons, symbols: SymbolsLoading) -> Self {
        Self {
            reasons,
            symbols,
            sites: HashMap::new(),
        }
    }

    /// The kernel's symbols, which name drop locations (also those of the non-network frees).
    pub fn symbols(&mut self) -> &Symbolizer {
        self.symbols.get()
    }

    /// The reasons and the symbols together (the symbols loaded first, if still loading).
    pub fn names(&mut self) -> (&DropReasons, &Symbolizer) {
        (&self.reasons, self.symbols.get())
    }

    pub fn build(&mut self, event: &Event) -> NetEvent {
        match event {
            Event::Retransmit(e) => NetEvent::Retransmit(retransmit(e)),
            Event::Drop(e) => NetEvent::Drop(self.drop(e)),
            Event::Receive(e) => NetEvent::Receive(receive(e)),
        }
    }

    fn site(&mut self, reason: u32, location: u64) -> DropSite {
        if let Some(site) = self.sites.get(&(reason, location)) {
            return site.clone();
        }
        let reason_name = self.reasons.name(reason);
        let location_name = self.symbols.get().resolve(location);
        let site = DropSite {
            class: classify_site(&reason_name, &location_name),
            reason: reason_name.into(),
            location: location_name.into(),
        };
        if self.sites.len() < MAX_DROP_SITES {
            self.sites.insert((reason, location), site.clone());
        }
        site
    }

    /// The reason, direction and layer of the drops counted at a drop-site key, classified
    /// as a drop event from that site would be.
    pub fn classify_site_key(&mut self, key: &DropSiteKey) -> (Arc<str>, Direction, Layer) {
        let site = self.site(key.reason, key.location);
        let (direction, layer) = classify_at(site.class, DropContext::at_site(&site.location, key));
        (site.reason, direction, layer)
    }

    fn drop(&mut self, e: &DropEvent) -> Drop {
        let has_flow = e.flags & DROP_HAS_FLOW != 0;
        let has_dev = e.flags & DROP_HAS_DEV != 0;
        let has_socket = e.flags & DROP_HAS_SOCK != 0;
        let site = self.site(e.reason, e.location);
        let (direction, layer) = classify_at(
            site.class,
            DropContext {
                location: &site.location,
                skb_iif: e.skb_iif,
                ifindex: has_dev.then_some(e.ifindex),
                has_socket,
            },
        );
        // A flow needs a family this agent knows; the kernel side sets DROP_HAS_FLOW only then.
        let flow = (has_flow && Family::from_raw(e.flow.family).is_some())
            .then(|| Flow::from_raw(e.netns, &e.flow, e.flags & DROP_HAS_PORTS != 0));
        Drop {
            at: stamp(&e.header),
            netns: e.netns,
            flow,
            ip_proto: flow.is_some().then_some(e.ip_proto),
            reason_code: e.reason,
            reason: site.reason,
            location: site.location,
            direction,
            layer,
            ethertype: e.protocol,
            device: has_dev.then(|| Device {
                ifindex: e.ifindex,
                name: IfName::from_kernel(&e.ifname),
            }),
            socket_state: has_socket.then_some(e.sk_state),
            sock_ino: e.sock_ino,
            old_sequence: e.flags & DROP_OLD_SEQUENCE != 0,
        }
    }
}

fn stamp(header: &netprobe_common::EventHeader) -> Stamp {
    Stamp {
        ts_ns: header.ts_ns,
        cpu: header.cpu,
    }
}

fn retransmit(e: &RetransmitEvent) -> Retransmit {
    Retransmit {
        at: stamp(&e.header),
        flow: Flow::from_raw(e.netns, &e.flow, true),
        family: Family::from_raw(e.flow.family),
        state: TcpState::from_raw(e.state),
        kind: RetransmitKind::from_id(e.kind),
        trigger: Trigger::from_id(e.trigger),
        err: e.err,
        outcome: RetransmitOutcome::from_id(e.outcome),
        segs: e.segs,
        bytes: e.bytes,
        seq: e.seq,
        sock_ino: e.sock_ino,
    }
}

fn receive(e: &ReceiveEvent) -> Receive {
    Receive {
        at: stamp(&e.header),
        flow: Flow::from_raw(e.netns, &e.flow, true),
        family: Family::from_raw(e.flow.family),
        out_of_order: e.header.kind == EventKind::OutOfOrder.id(),
        class: ReceiveClass::from_id(e.class),
        seq: e.seq,
        len: e.len,
        rcv_nxt: e.rcv_nxt,
        ooo_end: (e.flags & RX_HAD_OOO != 0).then_some(e.ooo_end),
        gap: e.gap,
        sock_ino: e.sock_ino,
    }
}
