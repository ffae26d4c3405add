//! Checked decoding of ring-buffer records (agent side).
//!
//! Records are decoded field by field from little-endian bytes: a short record, an unknown
//! kind or a kind/length mismatch is an error, never undefined behaviour.

use core::mem::size_of;
use std::vec::Vec;

use crate::event::*;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {need}-byte {what}")]
    Short {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("unknown event kind {0}")]
    UnknownKind(u16),
}

/// One decoded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Retransmit(RetransmitEvent),
    Drop(DropEvent),
    Receive(ReceiveEvent),
}

impl TryFrom<&[u8]> for Event {
    type Error = DecodeError;

    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        let header = EventHeader::try_from(bytes)?;
        match EventKind::try_from(header.kind) {
            Ok(EventKind::Retransmit) => RetransmitEvent::try_from(bytes).map(Event::Retransmit),
            Ok(EventKind::Drop) => DropEvent::try_from(bytes).map(Event::Drop),
            Ok(EventKind::PeerRetransmit | EventKind::OutOfOrder) => {
                ReceiveEvent::try_from(bytes).map(Event::Receive)
            }
            Err(kind) => Err(DecodeError::UnknownKind(kind)),
        }
    }
}

/// A bounds-checked little-endian reader over one record.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str, need: usize) -> Result<Self, DecodeError> {
        if bytes.len() < need {
            return Err(DecodeError::Short {
                what,
                len: bytes.len(),
                need,
            });
        }
        Ok(Self { bytes, pos: 0 })
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.pos..self.pos + N]);
        self.pos += N;
        out
    }
    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
    fn header(&mut self) -> EventHeader {
        EventHeader {
            kind: self.u16(),
            _pad0: self.u16(),
            cpu: self.u32(),
            ts_ns: self.u64(),
        }
    }
    fn flow(&mut self) -> Flow {
        Flow {
            saddr: self.array(),
            daddr: self.array(),
            sport: self.u16(),
            dport: self.u16(),
            family: self.u16(),
            _pad0: self.u16(),
        }
    }
}

impl TryFrom<&[u8]> for EventHeader {
    type Error = DecodeError;
    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(Reader::new(bytes, "event header", size_of::<EventHeader>())?.header())
    }
}

impl TryFrom<&[u8]> for RetransmitEvent {
    type Error = DecodeError;
    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "retransmit event", size_of::<RetransmitEvent>())?;
        Ok(RetransmitEvent {
            header: r.header(),
            flow: r.flow(),
            netns: r.u32(),
            err: r.i32(),
            seq: r.u32(),
            bytes: r.u32(),
            segs: r.u16(),
            state: r.u8(),
            kind: r.u8(),
            trigger: r.u8(),
            _pad1: r.array(),
            sock_ino: r.u64(),
        })
    }
}

impl TryFrom<&[u8]> for DropEvent {
    type Error = DecodeError;
    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "drop event", size_of::<DropEvent>())?;
        Ok(DropEvent {
            header: r.header(),
            flow: r.flow(),
            location: r.u64(),
            netns: r.u32(),
            reason: r.u32(),
            ifindex: r.u32(),
            protocol: r.u16(),
            ip_proto: r.u8(),
            flags: r.u8(),
            ifname: r.array(),
            sk_state: r.u8(),
            _pad0: r.array(),
            skb_iif: r.u32(),
            sock_ino: r.u64(),
        })
    }
}

impl TryFrom<&[u8]> for ReceiveEvent {
    type Error = DecodeError;
    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "receive event", size_of::<ReceiveEvent>())?;
        Ok(ReceiveEvent {
            header: r.header(),
            flow: r.flow(),
            netns: r.u32(),
            seq: r.u32(),
            len: r.u32(),
            rcv_nxt: r.u32(),
            ooo_end: r.u32(),
            gap: r.u32(),
            class: r.u8(),
            flags: r.u8(),
            _pad0: r.array(),
            sock_ino: r.u64(),
        })
    }
}

/// Encoding, the inverse of decoding: used by tests and fixtures to build records exactly as
/// the kernel writes them.
pub trait Encode {
    fn encode(&self) -> Vec<u8>;
}

fn put_header(out: &mut Vec<u8>, h: &EventHeader) {
    out.extend_from_slice(&h.kind.to_le_bytes());
    out.extend_from_slice(&h._pad0.to_le_bytes());
    out.extend_from_slice(&h.cpu.to_le_bytes());
    out.extend_from_slice(&h.ts_ns.to_le_bytes());
}

fn put_flow(out: &mut Vec<u8>, f: &Flow) {
    out.extend_from_slice(&f.saddr);
    out.extend_from_slice(&f.daddr);
    out.extend_from_slice(&f.sport.to_le_bytes());
    out.extend_from_slice(&f.dport.to_le_bytes());
    out.extend_from_slice(&f.family.to_le_bytes());
    out.extend_from_slice(&f._pad0.to_le_bytes());
}

impl Encode for RetransmitEvent {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(size_of::<Self>());
        put_header(&mut out, &self.header);
        put_flow(&mut out, &self.flow);
        out.extend_from_slice(&self.netns.to_le_bytes());
        out.extend_from_slice(&self.err.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out.extend_from_slice(&self.segs.to_le_bytes());
        out.push(self.state);
        out.push(self.kind);
        out.push(self.trigger);
        out.extend_from_slice(&self._pad1);
        out.extend_from_slice(&self.sock_ino.to_le_bytes());
        out
    }
}

impl Encode for DropEvent {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(size_of::<Self>());
        put_header(&mut out, &self.header);
        put_flow(&mut out, &self.flow);
        out.extend_from_slice(&self.location.to_le_bytes());
        out.extend_from_slice(&self.netns.to_le_bytes());
        out.extend_from_slice(&self.reason.to_le_bytes());
        out.extend_from_slice(&self.ifindex.to_le_bytes());
        out.extend_from_slice(&self.protocol.to_le_bytes());
        out.push(self.ip_proto);
        out.push(self.flags);
        out.extend_from_slice(&self.ifname);
        out.push(self.sk_state);
        out.extend_from_slice(&self._pad0);
        out.extend_from_slice(&self.skb_iif.to_le_bytes());
        out.extend_from_slice(&self.sock_ino.to_le_bytes());
        out
    }
}

impl Encode for ReceiveEvent {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(size_of::<Self>());
        put_header(&mut out, &self.header);
        put_flow(&mut out, &self.flow);
        for word in [
            self.netns,
            self.seq,
            self.len,
            self.rcv_nxt,
            self.ooo_end,
            self.gap,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.push(self.class);
        out.push(self.flags);
        out.extend_from_slice(&self._pad0);
        out.extend_from_slice(&self.sock_ino.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn sample_retransmit() -> RetransmitEvent {
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[198, 18, 0, 1]);
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[198, 18, 0, 2]);
        RetransmitEvent {
            header: EventHeader {
                kind: EventKind::Retransmit.id(),
                _pad0: 0,
                cpu: 1,
                ts_ns: 0x0102_0304_0506_0708,
            },
            flow: Flow {
                saddr,
                daddr,
                sport: 40000,
                dport: 5001,
                family: AF_INET,
                _pad0: 0,
            },
            netns: 4026531840,
            err: -16,
            seq: 0xdead_beef,
            bytes: 1448,
            segs: 2,
            state: 1,
            kind: KIND_TLP,
            trigger: TRIGGER_TIMER,
            _pad1: [0; 3],
            sock_ino: 0x1122_3344,
        }
    }

    /// The bytes the kernel program writes for [`sample_retransmit`], written out by hand.
    const RETRANSMIT_GOLDEN: [u8; 88] = [
        1, 0, 0, 0, 1, 0, 0, 0, // kind=1, pad, cpu=1
        8, 7, 6, 5, 4, 3, 2, 1, // ts_ns
        198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // saddr
        198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // daddr
        0x40, 0x9c, 0x89, 0x13, 2, 0, 0, 0, // sport=40000 dport=5001 family=2 pad
        0, 0, 0, 0xf0, // netns=0xf0000000
        0xf0, 0xff, 0xff, 0xff, // err=-16
        0xef, 0xbe, 0xad, 0xde, // seq
        0xa8, 0x05, 0, 0, // bytes=1448
        2, 0, 1, 3, // segs=2 state=1 kind=tlp
        1, 0, 0, 0, // trigger=timer, pad
        0x44, 0x33, 0x22, 0x11, 0, 0, 0, 0, // sock_ino
    ];

    #[test]
    fn retransmit_golden_bytes_round_trip() {
        let event = sample_retransmit();
        assert_eq!(event.encode(), RETRANSMIT_GOLDEN.to_vec());
        assert_eq!(
            Event::try_from(&RETRANSMIT_GOLDEN[..]),
            Ok(Event::Retransmit(event))
        );
    }

    #[test]
    fn drop_golden_bytes_round_trip() {
        let mut ifname = [0u8; 16];
        ifname[..4].copy_from_slice(b"veth");
        let mut saddr = [0u8; 16];
        saddr[..2].copy_from_slice(&[0x20, 0x01]);
        let event = DropEvent {
            header: EventHeader {
                kind: EventKind::Drop.id(),
                _pad0: 0,
                cpu: 3,
                ts_ns: 42,
            },
            flow: Flow {
                saddr,
                daddr: [0xff; 16],
                sport: 53,
                dport: 9,
                family: AF_INET6,
                _pad0: 0,
            },
            location: 0xffff_ffff_8100_0010,
            netns: 7,
            reason: 0x0001_0002,
            ifindex: 5,
            protocol: 0x86dd,
            ip_proto: 17,
            flags: DROP_HAS_FLOW | DROP_HAS_DEV | DROP_HAS_PORTS,
            ifname,
            sk_state: 10,
            _pad0: [0; 3],
            skb_iif: 0x0102_0304,
            sock_ino: 77,
        };
        let mut golden = vec![2, 0, 0, 0, 3, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0];
        golden.extend_from_slice(&saddr);
        golden.extend_from_slice(&[0xff; 16]);
        golden.extend_from_slice(&[53, 0, 9, 0, 10, 0, 0, 0]);
        golden.extend_from_slice(&[0x10, 0, 0, 0x81, 0xff, 0xff, 0xff, 0xff]);
        golden.extend_from_slice(&[7, 0, 0, 0, 2, 0, 1, 0, 5, 0, 0, 0]);
        golden.extend_from_slice(&[0xdd, 0x86, 17, 0b1011]);
        golden.extend_from_slice(&ifname);
        golden.extend_from_slice(&[10, 0, 0, 0, 4, 3, 2, 1]);
        golden.extend_from_slice(&[77, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(golden.len(), 112);
        assert_eq!(event.encode(), golden);
        assert_eq!(Event::try_from(&golden[..]), Ok(Event::Drop(event)));
    }

    #[test]
    fn receive_golden_bytes_round_trip() {
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[198, 18, 0, 2]);
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[198, 18, 0, 1]);
        let event = ReceiveEvent {
            header: EventHeader {
                kind: EventKind::OutOfOrder.id(),
                _pad0: 0,
                cpu: 1,
                ts_ns: 9,
            },
            flow: Flow {
                saddr,
                daddr,
                sport: 5001,
                dport: 40000,
                family: AF_INET,
                _pad0: 0,
            },
            netns: 3,
            seq: 0x0100_0000,
            len: 1448,
            rcv_nxt: 0x00ff_fa50,
            ooo_end: 0,
            gap: 1456,
            class: RX_OPENS_HOLE,
            flags: 0,
            _pad0: [0; 6],
            sock_ino: 0x55,
        };
        let mut golden = vec![4, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0];
        golden.extend_from_slice(&saddr);
        golden.extend_from_slice(&daddr);
        golden.extend_from_slice(&[0x89, 0x13, 0x40, 0x9c, 2, 0, 0, 0]);
        golden.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 1, 0xa8, 5, 0, 0]);
        golden.extend_from_slice(&[0x50, 0xfa, 0xff, 0, 0, 0, 0, 0, 0xb0, 5, 0, 0]);
        golden.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0, 0]);
        golden.extend_from_slice(&[0x55, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(golden.len(), 96);
        assert_eq!(event.encode(), golden);
        assert_eq!(Event::try_from(&golden[..]), Ok(Event::Receive(event)));
        // The same layout under the peer-retransmit kind.
        golden[0] = 3;
        let Ok(Event::Receive(peer)) = Event::try_from(&golden[..]) else {
            panic!("kind 3 decodes as a receive event");
        };
        assert_eq!(peer.header.kind, EventKind::PeerRetransmit.id());
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert!(matches!(
            Event::try_from(&RETRANSMIT_GOLDEN[..87]),
            Err(DecodeError::Short { need: 88, .. })
        ));
        assert!(matches!(
            Event::try_from(&RETRANSMIT_GOLDEN[..3]),
            Err(DecodeError::Short { need: 16, .. })
        ));
        let mut unknown = RETRANSMIT_GOLDEN;
        unknown[0] = 99;
        assert_eq!(
            Event::try_from(&unknown[..]),
            Err(DecodeError::UnknownKind(99))
        );
        // A drop header on a record too short for a drop event.
        let mut truncated = RETRANSMIT_GOLDEN;
        truncated[0] = 2;
        assert!(matches!(
            Event::try_from(&truncated[..]),
            Err(DecodeError::Short { need: 112, .. })
        ));
    }
}
