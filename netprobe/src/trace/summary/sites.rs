//! Count mode's drops by site in the summary: what a streaming trace says one event at a time
//! (reason, freeing function, layer, direction, namespace, interface, CPU), as exact counts.

use serde::Serialize;

use super::CpuCount;
use crate::model::sites::SiteDrops;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct SiteJson<'a> {
    pub reason: &'a str,
    /// `symbol+0xoff` of the freeing function.
    pub location: &'a str,
    pub layer: &'static str,
    pub direction: &'static str,
    /// Where it was dropped (0: the packet had neither device nor socket).
    pub netns: u32,
    /// The device's name in netprobe's namespace, else `ifindex N`; absent without a device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<&'a str>,
    pub count: u64,
    /// CPUs that dropped here.
    pub cpus: Vec<CpuCount>,
}

impl<'a> SiteJson<'a> {
    pub fn new(s: &'a SiteDrops) -> Self {
        SiteJson {
            reason: &s.site.reason,
            location: &s.site.location,
            layer: s.site.layer.name(),
            direction: s.site.direction.name(),
            netns: s.netns,
            interface: s.interface.as_deref(),
            count: s.total(),
            cpus: s
                .per_cpu
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(cpu, n)| CpuCount { cpu, count: *n })
                .collect(),
        }
    }

    /// `3000 NO_SOCKET at __udp4_lib_rcv+0x… (socket/ingress) netns=… on veth0, cpu0=3000`.
    pub fn text(&self) -> String {
        let cpus: Vec<String> = self
            .cpus
            .iter()
            .map(|c| format!("cpu{}={}", c.cpu, c.count))
            .collect();
        format!(
            "{:>10}  {} at {} ({}/{}) netns={}{} {}",
            self.count,
            self.reason,
            self.location,
            self.layer,
            self.direction,
            self.netns,
            self.interface
                .map(|i| format!(" on {i}"))
                .unwrap_or_default(),
            cpus.join(" ")
        )
    }
}
