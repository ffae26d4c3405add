//! The kernel's frees that are not network drops: skbs that are neither IP/IPv6/ARP packets
//! nor an IP socket's (a unix-domain socket's queue purged on close or on a refused connect,
//! a netlink message nobody took). The kernel counts them apart, by reason and location,
//! after the same filters as drops; here they are named, to be shown beside the drops, never
//! among them, and never judged by the findings.

use netprobe_common::NonNetworkKey;

use crate::kernel::{btf::DropReasons, kallsyms::Symbolizer};

/// The non-network frees at one (reason, location).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonNetworkSite {
    pub reason: String,
    pub code: u32,
    /// `symbol+0xoff` of the freeing function.
    pub location: String,
    pub count: u64,
}

/// All non-network frees of the window (exact, from the kernel's table).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NonNetwork {
    pub total: u64,
    /// Most frees first.
    pub by_site: Vec<NonNetworkSite>,
}

impl NonNetwork {
    /// Names the kernel's (reason, location) counts: reasons as the drops' are, locations as
    /// the drop events' are.
    pub fn build(
        sites: &[(NonNetworkKey, u64)],
        reasons: &DropReasons,
        symbols: &Symbolizer,
    ) -> Self {
        let mut by_site: Vec<NonNetworkSite> = sites
            .iter()
            .map(|(key, count)| NonNetworkSite {
                reason: reasons.name(key.reason),
                code: key.reason,
                location: symbols.resolve(key.location),
                count: *count,
            })
            .collect();
        by_site.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.code.cmp(&b.code))
                .then_with(|| a.location.cmp(&b.location))
        });
        NonNetwork {
            total: by_site.iter().map(|s| s.count).sum(),
            by_site,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: u32, location: u64) -> NonNetworkKey {
        NonNetworkKey {
            reason,
            _pad0: 0,
            location,
        }
    }

    #[test]
    fn sites_are_named_and_the_most_frequent_come_first() {
        let reasons = DropReasons::from_pairs(&[(2, "NOT_SPECIFIED"), (4, "SOCKET_CLOSE")], &[]);
        let symbols = Symbolizer::parse(
            "ffffffff8212cbe0 t unix_release_sock\nffffffff8212fb50 t unix_stream_connect\n",
        );
        let non_network = NonNetwork::build(
            &[
                (key(2, 0xffff_ffff_8212_fb90), 3),
                (key(4, 0xffff_ffff_8212_cc10), 20),
                // Tied with the first: the lower reason code first.
                (key(4, 0xffff_ffff_8212_cc40), 3),
                // An address below every symbol stays hex rather than naming a wrong one.
                (key(2, 0x1000), 1),
            ],
            &reasons,
            &symbols,
        );
        assert_eq!(non_network.total, 27);
        let rows: Vec<(&str, u32, &str, u64)> = non_network
            .by_site
            .iter()
            .map(|s| (s.reason.as_str(), s.code, s.location.as_str(), s.count))
            .collect();
        assert_eq!(
            rows,
            [
                ("SOCKET_CLOSE", 4, "unix_release_sock+0x30", 20),
                ("NOT_SPECIFIED", 2, "unix_stream_connect+0x40", 3),
                ("SOCKET_CLOSE", 4, "unix_release_sock+0x60", 3),
                ("NOT_SPECIFIED", 2, "0x1000", 1),
            ]
        );
    }

    #[test]
    fn no_frees_is_an_empty_table() {
        let none = NonNetwork::build(&[], &DropReasons::default(), &Symbolizer::default());
        assert_eq!(none, NonNetwork::default());
        assert_eq!(none.total, 0);
        assert!(none.by_site.is_empty());
    }
}
