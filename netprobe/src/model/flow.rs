//! Flows as typed keys: aggregations join on these, never on their printed form.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netprobe_common::{Flow as RawFlow, AF_INET, AF_INET6};

/// One end of a flow. The port is absent when the packet's protocol has none (ICMP) or its
/// transport header was not parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: Option<u16>,
}

impl fmt::Display for Endpoint {
    /// `198.18.0.1:80`, `[2001:db8::1]:80`, or the bare address without a port.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.port) {
            (IpAddr::V6(a), Some(port)) => write!(f, "[{a}]:{port}"),
            (IpAddr::V4(a), Some(port)) => write!(f, "{a}:{port}"),
            (addr, None) => write!(f, "{addr}"),
        }
    }
}

/// A flow in one network namespace, in the direction its packets travel (`src > dst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    pub netns: u32,
    pub src: Endpoint,
    pub dst: Endpoint,
}

impl Flow {
    /// The flow of a record whose family is known (`AF_INET` or `AF_INET6`).
    pub fn from_raw(netns: u32, raw: &RawFlow, with_ports: bool) -> Self {
        let end = |bytes: &[u8; 16], port: u16| Endpoint {
            addr: addr(raw.family, bytes),
            port: with_ports.then_some(port),
        };
        Self {
            netns,
            src: end(&raw.saddr, raw.sport),
            dst: end(&raw.daddr, raw.dport),
        }
    }

    /// The same flow the other way: the packets the peer sends back.
    pub fn reversed(self) -> Self {
        Self {
            netns: self.netns,
            src: self.dst,
            dst: self.src,
        }
    }

    pub fn family(&self) -> Family {
        match self.src.addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} > {}", self.src, self.dst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn from_raw(family: u16) -> Option<Self> {
        match family {
            AF_INET => Some(Self::Ipv4),
            AF_INET6 => Some(Self::Ipv6),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }
}

/// The address in a record: IPv4 in the first four bytes, otherwise IPv6.
pub fn addr(family: u16, bytes: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_as_on_the_wire_and_joins_on_the_typed_key() {
        let raw = RawFlow::ipv4([198, 18, 0, 1], 40000, [198, 18, 0, 2], 5001);
        let flow = Flow::from_raw(7, &raw, true);
        assert_eq!(flow.to_string(), "198.18.0.1:40000 > 198.18.0.2:5001");
        assert_eq!(flow.reversed().reversed(), flow);
        assert_ne!(flow.reversed(), flow);
        assert_eq!(
            Flow::from_raw(7, &raw, false).to_string(),
            "198.18.0.1 > 198.18.0.2"
        );
        let mut v6 = raw;
        v6.family = AF_INET6;
        v6.saddr = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        v6.daddr = "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets();
        let v6 = Flow::from_raw(7, &v6, true);
        assert_eq!(v6.to_string(), "[2001:db8::1]:40000 > [2001:db8::2]:5001");
        assert_eq!(v6.family(), Family::Ipv6);
    }
}
