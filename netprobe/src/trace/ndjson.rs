//! The NDJSON line of each event, written by hand from the serde types of `output` (which stay
//! the contract: same fields, same order, same omissions; a test compares every byte with
//! serde_json's rendering of them).
//!
//! Why by hand: serde_json writes each field through its generic serializer, formats every
//! address through `Display` into a scratch buffer and scans every string for escapes; at a
//! few hundred ns per line that was most of an event's userspace cost. Here integers go
//! through `itoa`, IPv4 addresses are written octet by octet, and strings known to need no
//! escaping are copied as they are. Nothing is allocated: the line is built in a buffer the
//! renderer keeps, then written with one call.

use std::{
    io::{self, Write},
    net::IpAddr,
};

use super::output::{DropJson, ReceiveJson, RetransmitJson};

/// A JSON object being written into `buf`.
struct Object<'b> {
    buf: &'b mut Vec<u8>,
    first: bool,
}

impl<'b> Object<'b> {
    fn open(buf: &'b mut Vec<u8>) -> Self {
        buf.push(b'{');
        Self { buf, first: true }
    }

    /// `key` is one of this file's literals: plain ASCII, nothing to escape.
    fn key(&mut self, key: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    fn int(&mut self, key: &str, value: impl itoa::Integer) {
        self.key(key);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn opt_int(&mut self, key: &str, value: Option<impl itoa::Integer>) {
        match value {
            Some(v) => self.int(key, v),
            None => self.null(key),
        }
    }

    /// Present only when `Some` (`skip_serializing_if = "Option::is_none"`).
    fn some_int(&mut self, key: &str, value: Option<impl itoa::Integer>) {
        if let Some(v) = value {
            self.int(key, v);
        }
    }

    fn null(&mut self, key: &str) {
        self.key(key);
        self.buf.extend_from_slice(b"null");
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        string(self.buf, value);
    }

    fn opt_str(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    fn some_str(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.str(key, v);
        }
    }

    fn ip(&mut self, key: &str, addr: IpAddr) {
        self.key(key);
        self.buf.push(b'"');
        match addr {
            IpAddr::V4(v4) => {
                let mut digits = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b'.');
                    }
                    self.buf.extend_from_slice(digits.format(octet).as_bytes());
                }
            }
            // Display's own compression rules; written into the buffer, nothing allocated.
            IpAddr::V6(v6) => {
                let _ = write!(self.buf, "{v6}");
            }
        }
        self.buf.push(b'"');
    }

    fn opt_ip(&mut self, key: &str, addr: Option<IpAddr>) {
        match addr {
            Some(a) => self.ip(key, a),
            None => self.null(key),
        }
    }

    /// Closes the object and ends the line.
    fn close(self) {
        self.buf.extend_from_slice(b"}\n");
    }
}

/// A JSON string. Names from the kernel and process names are nearly always plain; the rare
/// one with a quote, backslash or control character goes through serde_json's escaping, so
/// both spell it alike.
fn string(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        serde_json::to_writer(&mut *buf, s).expect("writing to memory never fails");
    }
}

pub fn retransmit(buf: &mut Vec<u8>, j: &RetransmitJson) {
    let mut o = Object::open(buf);
    o.str("type", j.kind);
    o.int("ts_ns", j.ts_ns);
    o.int("cpu", j.cpu);
    o.int("netns", j.netns);
    o.str("family", j.family);
    o.ip("saddr", j.saddr);
    o.int("sport", j.sport);
    o.ip("daddr", j.daddr);
    o.int("dport", j.dport);
    o.str("state", j.state);
    o.str("kind", j.retransmit_kind);
    o.str("trigger", j.trigger);
    o.str("outcome", j.outcome);
    o.int("err", j.err);
    o.int("segs", j.segs);
    o.int("bytes", j.bytes);
    o.int("seq", j.seq);
    o.some_int("pid", j.pid);
    o.some_str("comm", j.comm);
    o.close();
}

pub fn drop(buf: &mut Vec<u8>, j: &DropJson) {
    let mut o = Object::open(buf);
    o.str("type", j.kind);
    o.int("ts_ns", j.ts_ns);
    o.int("cpu", j.cpu);
    o.int("netns", j.netns);
    o.opt_str("family", j.family);
    o.opt_ip("saddr", j.saddr);
    o.opt_int("sport", j.sport);
    o.opt_ip("daddr", j.daddr);
    o.opt_int("dport", j.dport);
    o.str("reason", j.reason);
    o.int("reason_code", j.reason_code);
    o.str("direction", j.direction);
    o.str("layer", j.layer);
    o.str("location", j.location);
    o.str("protocol", &j.protocol);
    o.opt_str("ip_proto", j.ip_proto.as_deref());
    o.some_str("ifname", j.ifname);
    o.some_int("ifindex", j.ifindex);
    o.some_str("state", j.state);
    if j.old_sequence {
        o.bool("old_sequence", true);
    }
    o.some_int("pid", j.pid);
    o.some_str("comm", j.comm);
    o.close();
}

pub fn receive(buf: &mut Vec<u8>, j: &ReceiveJson) {
    let mut o = Object::open(buf);
    o.str("type", j.kind);
    o.int("ts_ns", j.ts_ns);
    o.int("cpu", j.cpu);
    o.int("netns", j.netns);
    o.str("family", j.family);
    o.ip("saddr", j.saddr);
    o.int("sport", j.sport);
    o.ip("daddr", j.daddr);
    o.int("dport", j.dport);
    o.str("class", j.class);
    if j.partial {
        o.bool("partial", true);
    }
    o.int("seq", j.seq);
    o.int("len", j.len);
    o.int("rcv_nxt", j.rcv_nxt);
    o.some_int("ooo_end", j.ooo_end);
    o.some_int("old_bytes", j.old_bytes);
    o.some_int("hole_bytes", j.hole_bytes);
    o.some_int("pid", j.pid);
    o.some_str("comm", j.comm);
    o.close();
}

/// Writes the line built in `buf` (then emptied, its capacity kept for the next line).
pub fn flush_line(out: &mut impl Write, buf: &mut Vec<u8>) -> io::Result<()> {
    let written = out.write_all(buf);
    buf.clear();
    written
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, net::Ipv6Addr};

    use super::*;

    fn serde_line(value: &impl serde::Serialize) -> String {
        let mut line = serde_json::to_string(value).unwrap();
        line.push('\n');
        line
    }

    fn ours(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut buf = Vec::new();
        write(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    const V4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 255));
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));

    /// Every optional field both ways, both families, and strings that need escaping.
    #[test]
    fn lines_are_serde_json_byte_for_byte() {
        let awkward = "a\"b\\c\td\u{1}é\u{7f}";
        for (owner, comm) in [
            (None, None),
            (Some(7), Some("nginx")),
            (Some(0), Some(awkward)),
        ] {
            for (addr, flags) in [(V4, (false, false)), (V6, (true, true))] {
                let r = RetransmitJson {
                    kind: "retransmit",
                    ts_ns: u64::MAX,
                    cpu: 3,
                    netns: 4026531840,
                    family: "ipv4",
                    saddr: addr,
                    sport: 0,
                    daddr: V4,
                    dport: 65535,
                    state: "ESTABLISHED",
                    retransmit_kind: "rto",
                    trigger: "timer",
                    outcome: "sent",
                    err: i32::MIN,
                    segs: 1,
                    bytes: 1448,
                    seq: u32::MAX,
                    pid: owner,
                    comm,
                };
                assert_eq!(ours(|b| retransmit(b, &r)), serde_line(&r));
                let d = DropJson {
                    kind: "drop",
                    ts_ns: 9,
                    cpu: 0,
                    netns: 0,
                    family: flags.0.then_some("ipv6"),
                    saddr: flags.0.then_some(addr),
                    sport: flags.0.then_some(1),
                    daddr: flags.0.then_some(V6),
                    dport: flags.1.then_some(5001),
                    reason: if flags.0 { awkward } else { "NO_SOCKET" },
                    reason_code: 2,
                    direction: "ingress",
                    layer: "tcp",
                    location: "tcp_v4_rcv+0x1a0 [mod]",
                    protocol: if flags.0 {
                        Cow::Borrowed("ipv6")
                    } else {
                        Cow::Owned("0x88cc".into())
                    },
                    ip_proto: flags.0.then_some(Cow::Owned("132".into())),
                    ifname: flags.1.then_some("veth0"),
                    ifindex: flags.1.then_some(4),
                    state: flags.0.then_some("FIN_WAIT1"),
                    old_sequence: flags.1,
                    pid: owner,
                    comm,
                };
                assert_eq!(ours(|b| drop(b, &d)), serde_line(&d));
                let rx = ReceiveJson {
                    kind: "ooo",
                    ts_ns: 1,
                    cpu: 1,
                    netns: 2,
                    family: "ipv6",
                    saddr: addr,
                    sport: 80,
                    daddr: V6,
                    dport: 443,
                    class: "duplicate",
                    partial: flags.0,
                    seq: 0,
                    len: 1,
                    rcv_nxt: 2,
                    ooo_end: flags.0.then_some(3),
                    old_bytes: flags.1.then_some(4),
                    hole_bytes: flags.0.then_some(0),
                    pid: owner,
                    comm,
                };
                assert_eq!(ours(|b| receive(b, &rx)), serde_line(&rx));
            }
        }
    }
}
