//! Decoding of ring-buffer records (agent side), tied to the memory layout the kernel writes.
//!
//! A kernel program reserves a record of exactly `size_of::<T>()` bytes for its event struct
//! (`RingBuf::reserve::<T>`) and fills the struct in place. The agent reads the record back as
//! that same struct with zerocopy: one copy of exactly those bytes, so there is no second,
//! hand-written description of the layout to drift from the definition the kernel compiled.
//! Every field is an integer or an integer array, so any bit pattern is a valid value.
//!
//! The ring buffer hands the reader the length the program reserved (the 8-byte rounding only
//! advances the consumer position), so a record of any other length, shorter or longer, means
//! the two sides disagree about the struct: it is an error, never truncated or padded.

use core::mem::size_of;
use std::{string::String, vec::Vec};

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::event::*;

// Records hold the kernel's integers in the BPF target's byte order (bpfel); the agent reads
// them in its own, so it must be little-endian too (x86_64, aarch64).
const _: () = assert!(
    cfg!(target_endian = "little"),
    "the agent reads the little-endian records of bpfel programs in native byte order"
);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The record ends before its header, or before its kind's struct does.
    #[error("record of {len} bytes is shorter than the {need}-byte {what}")]
    Short {
        what: &'static str,
        len: usize,
        need: usize,
    },
    /// The record runs past its kind's struct: the kernel was built with another definition.
    #[error("record of {len} bytes is longer than the {size}-byte {what}")]
    Long {
        what: &'static str,
        len: usize,
        size: usize,
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
        let (header, _) = EventHeader::read_from_prefix(bytes).map_err(|_| DecodeError::Short {
            what: "event header",
            len: bytes.len(),
            need: size_of::<EventHeader>(),
        })?;
        match EventKind::try_from(header.kind) {
            Ok(EventKind::Retransmit) => {
                read_exact(bytes, "retransmit event").map(Event::Retransmit)
            }
            Ok(EventKind::Drop) => read_exact(bytes, "drop event").map(Event::Drop),
            Ok(EventKind::PeerRetransmit) => {
                read_exact(bytes, "peer-retransmit event").map(Event::Receive)
            }
            Ok(EventKind::OutOfOrder) => {
                read_exact(bytes, "out-of-order event").map(Event::Receive)
            }
            Err(kind) => Err(DecodeError::UnknownKind(kind)),
        }
    }
}

/// Reads a record as the struct `T` the kernel wrote into it. zerocopy copies the bytes out
/// (no alignment needed) only when the record is exactly `size_of::<T>()` bytes long.
fn read_exact<T: FromBytes>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    T::read_from_bytes(bytes).map_err(|_| {
        let (len, size) = (bytes.len(), size_of::<T>());
        if len < size {
            DecodeError::Short {
                what,
                len,
                need: size,
            }
        } else {
            DecodeError::Long { what, len, size }
        }
    })
}

/// A C string in a fixed-size field (a device name, `NapiKey::dev`, an ethtool string):
/// the bytes up to the first NUL, or all of them; invalid UTF-8 replaced, not refused.
pub fn nul_terminated(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// A record exactly as the kernel writes it: the struct's own bytes. For tests, fixtures and
/// benchmarks.
pub trait Encode: IntoBytes + Immutable {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl Encode for RetransmitEvent {}
impl Encode for DropEvent {}
impl Encode for ReceiveEvent {}

/// Golden bytes written out by hand at the offsets `assert_layout!` pins in `event.rs`. Every
/// field of each sample holds a value no other field of its size holds, so two fields swapped
/// in a struct definition (which the kernel would then write in each other's place) fail the
/// comparison with the struct's own memory and the decode of the hand-written bytes.
#[cfg(test)]
mod tests {
    use super::*;
    use std::{format, string::ToString, vec::Vec};

    fn ipv4(octets: [u8; 4]) -> [u8; 16] {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&octets);
        addr
    }

    fn sample_retransmit() -> RetransmitEvent {
        RetransmitEvent {
            header: EventHeader {
                kind: EventKind::Retransmit.id(),
                _pad0: 0,
                cpu: 6,
                ts_ns: 0x0102_0304_0506_0708,
            },
            flow: Flow {
                saddr: ipv4([198, 18, 0, 1]),
                daddr: ipv4([198, 18, 0, 2]),
                sport: 40000,
                dport: 5001,
                family: AF_INET,
                _pad0: 0,
            },
            netns: 0xf000_0011,
            err: -16,
            seq: 0xdead_beef,
            bytes: 1448,
            segs: 5,
            state: 1,
            kind: KIND_TLP,
            trigger: TRIGGER_OTHER,
            outcome: OUTCOME_FAILED_COUNTED,
            _pad1: [0; 2],
            sock_ino: 0x0000_0001_1122_3344,
        }
    }

    #[rustfmt::skip]
    const RETRANSMIT_GOLDEN: [u8; 88] = [
        /* 0 kind */ 1, 0, /* 2 pad */ 0, 0, /* 4 cpu */ 6, 0, 0, 0,
        /* 8 ts_ns */ 8, 7, 6, 5, 4, 3, 2, 1,
        /* 16 saddr */ 198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        /* 32 daddr */ 198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        /* 48 sport */ 0x40, 0x9c, /* 50 dport */ 0x89, 0x13,
        /* 52 family */ 2, 0, /* 54 pad */ 0, 0,
        /* 56 netns */ 0x11, 0, 0, 0xf0,
        /* 60 err */ 0xf0, 0xff, 0xff, 0xff,
        /* 64 seq */ 0xef, 0xbe, 0xad, 0xde,
        /* 68 bytes */ 0xa8, 0x05, 0, 0,
        /* 72 segs */ 5, 0, /* 74 state */ 1, /* 75 kind */ 3,
        /* 76 trigger */ 2, /* 77 outcome */ 1, /* 78 pad */ 0, 0,
        /* 80 sock_ino */ 0x44, 0x33, 0x22, 0x11, 1, 0, 0, 0,
    ];

    fn sample_drop() -> DropEvent {
        let mut ifname = [0u8; 16];
        ifname[..5].copy_from_slice(b"veth0");
        let ipv6 = |last| {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            addr[15] = last;
            addr
        };
        DropEvent {
            header: EventHeader {
                kind: EventKind::Drop.id(),
                _pad0: 0,
                cpu: 3,
                ts_ns: 0x0000_0123_4567_89ab,
            },
            flow: Flow {
                saddr: ipv6(1),
                daddr: ipv6(2),
                sport: 53,
                dport: 9,
                family: AF_INET6,
                _pad0: 0,
            },
            location: 0xffff_ffff_8100_0010,
            netns: 0xf000_0007,
            reason: 0x0001_0002,
            ifindex: 5,
            protocol: 0x86dd,
            ip_proto: 17,
            flags: DROP_HAS_FLOW | DROP_HAS_DEV | DROP_HAS_PORTS,
            ifname,
            sk_state: 7,
            _pad0: [0; 3],
            skb_iif: 4,
            sock_ino: 77,
        }
    }

    #[rustfmt::skip]
    const DROP_GOLDEN: [u8; 112] = [
        /* 0 kind */ 2, 0, /* 2 pad */ 0, 0, /* 4 cpu */ 3, 0, 0, 0,
        /* 8 ts_ns */ 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0, 0,
        /* 16 saddr */ 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        /* 32 daddr */ 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
        /* 48 sport */ 53, 0, /* 50 dport */ 9, 0, /* 52 family */ 10, 0, /* 54 pad */ 0, 0,
        /* 56 location */ 0x10, 0, 0, 0x81, 0xff, 0xff, 0xff, 0xff,
        /* 64 netns */ 7, 0, 0, 0xf0,
        /* 68 reason */ 2, 0, 1, 0,
        /* 72 ifindex */ 5, 0, 0, 0,
        /* 76 protocol */ 0xdd, 0x86, /* 78 ip_proto */ 17, /* 79 flags */ 0b1011,
        /* 80 ifname */ b'v', b'e', b't', b'h', b'0', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        /* 96 sk_state */ 7, /* 97 pad */ 0, 0, 0,
        /* 100 skb_iif */ 4, 0, 0, 0,
        /* 104 sock_ino */ 77, 0, 0, 0, 0, 0, 0, 0,
    ];

    fn sample_receive() -> ReceiveEvent {
        ReceiveEvent {
            header: EventHeader {
                kind: EventKind::PeerRetransmit.id(),
                _pad0: 0,
                cpu: 1,
                ts_ns: 9,
            },
            flow: Flow {
                saddr: ipv4([198, 18, 0, 2]),
                daddr: ipv4([198, 18, 0, 1]),
                sport: 5001,
                dport: 40000,
                family: AF_INET,
                _pad0: 0,
            },
            netns: 3,
            seq: 0x0100_0000,
            len: 1448,
            rcv_nxt: 0x0100_0064,
            ooo_end: 0x0100_2000,
            gap: 100,
            class: RX_DUPLICATE_PARTIAL,
            flags: RX_HAD_OOO,
            _pad0: [0; 6],
            sock_ino: 0x55,
        }
    }

    #[rustfmt::skip]
    const RECEIVE_GOLDEN: [u8; 96] = [
        /* 0 kind */ 3, 0, /* 2 pad */ 0, 0, /* 4 cpu */ 1, 0, 0, 0,
        /* 8 ts_ns */ 9, 0, 0, 0, 0, 0, 0, 0,
        /* 16 saddr */ 198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        /* 32 daddr */ 198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        /* 48 sport */ 0x89, 0x13, /* 50 dport */ 0x40, 0x9c,
        /* 52 family */ 2, 0, /* 54 pad */ 0, 0,
        /* 56 netns */ 3, 0, 0, 0,
        /* 60 seq */ 0, 0, 0, 1,
        /* 64 len */ 0xa8, 0x05, 0, 0,
        /* 68 rcv_nxt */ 0x64, 0, 0, 1,
        /* 72 ooo_end */ 0, 0x20, 0, 1,
        /* 76 gap */ 100, 0, 0, 0,
        /* 80 class */ 2, /* 81 flags */ 1, /* 82 pad */ 0, 0, 0, 0, 0, 0,
        /* 88 sock_ino */ 0x55, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn fixed_size_c_strings_end_at_the_first_nul() {
        let mut dev = [0u8; 16];
        dev[..5].copy_from_slice(b"veth0");
        assert_eq!(nul_terminated(&dev), "veth0");
        assert_eq!(nul_terminated(&[0u8; 16]), "");
        assert_eq!(nul_terminated(b"no-nul-at-all"), "no-nul-at-all");
        assert_eq!(nul_terminated(&[0xff, b'x', 0, b'y']), "\u{fffd}x");
    }

    #[test]
    fn retransmit_struct_memory_is_the_golden_bytes_and_back() {
        let event = sample_retransmit();
        assert_eq!(event.as_bytes(), &RETRANSMIT_GOLDEN[..]);
        assert_eq!(event.encode(), RETRANSMIT_GOLDEN.to_vec());
        assert_eq!(
            Event::try_from(&RETRANSMIT_GOLDEN[..]),
            Ok(Event::Retransmit(event))
        );
    }

    #[test]
    fn drop_struct_memory_is_the_golden_bytes_and_back() {
        let event = sample_drop();
        assert_eq!(event.as_bytes(), &DROP_GOLDEN[..]);
        assert_eq!(event.encode(), DROP_GOLDEN.to_vec());
        assert_eq!(Event::try_from(&DROP_GOLDEN[..]), Ok(Event::Drop(event)));
    }

    #[test]
    fn receive_struct_memory_is_the_golden_bytes_and_back() {
        let event = sample_receive();
        assert_eq!(event.as_bytes(), &RECEIVE_GOLDEN[..]);
        assert_eq!(event.encode(), RECEIVE_GOLDEN.to_vec());
        assert_eq!(
            Event::try_from(&RECEIVE_GOLDEN[..]),
            Ok(Event::Receive(event))
        );
        // Both receive kinds share the layout.
        let mut out_of_order = RECEIVE_GOLDEN;
        out_of_order[0] = 4;
        let expected = ReceiveEvent {
            header: EventHeader {
                kind: EventKind::OutOfOrder.id(),
                ..event.header
            },
            ..event
        };
        assert_eq!(
            Event::try_from(&out_of_order[..]),
            Ok(Event::Receive(expected))
        );
    }

    /// A per-flow retransmit table value as the kernel writes it: the handshake counters are
    /// the last two u32s (bytes 264..272), behind `failed_causes`.
    #[test]
    fn retransmit_totals_golden_bytes() {
        let mut golden = [0u8; 288];
        golden[..8].copy_from_slice(&7u64.to_le_bytes());
        golden[248..252].copy_from_slice(&2u32.to_le_bytes());
        golden[264..268].copy_from_slice(&3u32.to_le_bytes());
        golden[268..272].copy_from_slice(&5u32.to_le_bytes());
        golden[272..276].copy_from_slice(&100u32.to_le_bytes());
        golden[276..280].copy_from_slice(&190u32.to_le_bytes());
        golden[280..284].copy_from_slice(&4u32.to_le_bytes());
        golden[284..288].copy_from_slice(&11u32.to_le_bytes());
        let totals = crate::RetransmitTotals::read_from_bytes(&golden[..]).unwrap();
        let mut expected = crate::RetransmitTotals {
            sent: 7,
            handshakes_completed: 3,
            handshakes_failed: 5,
            dsack_dups_first: 100,
            dsack_dups_latest: 190,
            reord_seen_first: 4,
            reord_seen_latest: 11,
            ..Default::default()
        };
        assert_eq!((totals.dsacked_segs(), totals.reordering_seen()), (90, 7));
        expected.failed_causes[0] = 2;
        assert_eq!(totals, expected);
        assert_eq!(expected.as_bytes(), &golden[..]);
    }

    /// Each kind's golden record with the name its errors carry.
    fn goldens() -> [(&'static [u8], &'static str); 3] {
        [
            (&RETRANSMIT_GOLDEN, "retransmit event"),
            (&DROP_GOLDEN, "drop event"),
            (&RECEIVE_GOLDEN, "peer-retransmit event"),
        ]
    }

    #[test]
    fn a_record_shorter_than_its_kind_is_an_error() {
        for (golden, what) in goldens() {
            let need = golden.len();
            for len in [need - 1, need - 8, size_of::<EventHeader>()] {
                assert_eq!(
                    Event::try_from(&golden[..len]),
                    Err(DecodeError::Short { what, len, need }),
                    "{what}"
                );
            }
        }
    }

    #[test]
    fn a_record_longer_than_its_kind_is_an_error() {
        for (golden, what) in goldens() {
            let size = golden.len();
            // One byte more, and what an 8-byte rounding of the record would hand over.
            for extra in [1, 8] {
                let mut record = golden.to_vec();
                record.resize(size + extra, 0);
                let error = Event::try_from(&record[..]).unwrap_err();
                assert_eq!(
                    error,
                    DecodeError::Long {
                        what,
                        len: size + extra,
                        size
                    }
                );
                assert_eq!(
                    error.to_string(),
                    format!(
                        "record of {} bytes is longer than the {size}-byte {what}",
                        size + extra
                    )
                );
            }
        }
    }

    #[test]
    fn a_short_header_and_unknown_kinds_are_errors() {
        assert_eq!(
            Event::try_from(&RETRANSMIT_GOLDEN[..3]),
            Err(DecodeError::Short {
                what: "event header",
                len: 3,
                need: 16
            })
        );
        for kind in [0u16, 5, 99, u16::MAX] {
            let mut record = RETRANSMIT_GOLDEN;
            record[..2].copy_from_slice(&kind.to_le_bytes());
            assert_eq!(
                Event::try_from(&record[..]),
                Err(DecodeError::UnknownKind(kind))
            );
        }
        // A drop header on a record of a retransmit's size.
        let mut mislabelled = RETRANSMIT_GOLDEN;
        mislabelled[0] = 2;
        assert_eq!(
            Event::try_from(&mislabelled[..]),
            Err(DecodeError::Short {
                what: "drop event",
                len: 88,
                need: 112
            })
        );
    }

    /// Flag and enum-like fields are plain integers: a record of any bit pattern decodes, and
    /// the agent sees exactly the values the kernel wrote.
    #[test]
    fn any_bit_pattern_of_the_right_length_decodes() {
        for (golden, _) in goldens() {
            let mut record: Vec<u8> = std::vec![0xff; golden.len()];
            record[..2].copy_from_slice(&golden[..2]);
            let event = Event::try_from(&record[..]).expect("all-ones record");
            let bytes = match &event {
                Event::Retransmit(e) => e.as_bytes(),
                Event::Drop(e) => e.as_bytes(),
                Event::Receive(e) => e.as_bytes(),
            };
            assert_eq!(bytes, &record[..]);
        }
    }
}
