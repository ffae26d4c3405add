//! `netprobe trace --count`: the programs loaded in count mode (nothing per event crosses to
//! userspace), and the same summary and findings as a streaming trace, built from the kernel's
//! maps alone. Drops come from `DROP_SITES` (one per-CPU count per reason, freeing function,
//! device and namespace), named and classified by `model::sites` as the monitor names them,
//! and tallied into the `DropTally` the findings read; retransmits and received segments from
//! their per-flow tables, as in a streaming trace.
//!
//! What count mode cannot say, it says (`notes`): a site has no packet headers, so drops are
//! not linked to the flows that lost them, and nothing is streamed, so nothing is lost either.

use std::path::Path;

use crate::{
    kernel::{btf::DropReasons, loader::KernelTotals},
    model::{
        sites::{SiteDrops, SiteNames},
        tally::DropTally,
        window::{Mode, Window},
    },
};

/// Count mode's state across reads: the site names, cached (the sites repeat every read).
pub struct CountMode {
    names: SiteNames,
    own_netns: u32,
}

/// One read of the kernel's drop counts, ready for `Window::build` and the findings.
pub struct SiteRead {
    /// Busiest first.
    pub sites: Vec<SiteDrops>,
    pub tally: DropTally,
}

impl CountMode {
    pub fn new(reasons: DropReasons, own_netns: u32) -> Self {
        Self {
            // Without kallsyms a site is its hex address; the layer then comes from the reason.
            names: SiteNames::new(reasons, Path::new("/proc/kallsyms")),
            own_netns,
        }
    }

    /// Names and tallies the drop sites of `totals`. (Its per-reason counts already hold
    /// the sites' counts, and those counted by reason alone: `kernel_totals` folds them.)
    pub fn read(&mut self, totals: &KernelTotals) -> SiteRead {
        let sites = self.names.name_all(&totals.sites, self.own_netns);
        SiteRead {
            tally: DropTally::from_sites(&sites),
            sites,
        }
    }
}

/// What a count-mode window cannot say, in words, for the summary and the bundle (nothing in
/// stream mode).
pub fn notes(window: &Window) -> Vec<String> {
    if window.mode != Mode::Count {
        return Vec::new();
    }
    let mut notes = vec![
        "count mode: nothing is streamed, by design, so nothing is lost; every number is the kernel maps' exact count".to_string(),
        "drops are counted per site (reason, function, device, namespace, CPU) without their packets' headers: linking drops to the flows that lost them (flows' drops, the cause named in a loss finding) needs streaming mode (netprobe trace without --count)".to_string(),
    ];
    let unsited = window.events.drop_site_table_full;
    if unsited > 0 {
        notes.push(format!("{unsited} drops did not fit the kernel's drop-site table: counted by reason only (in drops.by_reason, not in drops.by_site)"));
    }
    notes
}

#[cfg(test)]
#[path = "count_tests.rs"]
mod tests;
