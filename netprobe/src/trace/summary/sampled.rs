//! The summary's account of storm sampling: which drop sites streamed only a sample, with
//! their exact counts (the per-reason totals already hold every drop).

use std::fmt::Write;

use serde::Serialize;

use crate::model::storms::Sampling;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct SampledSummary<'a> {
    /// Drops counted but not streamed, all sites.
    pub sampled_out: u64,
    /// Most sampled first.
    pub sites: Vec<SampledSiteJson<'a>>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct SampledSiteJson<'a> {
    pub reason: &'a str,
    pub code: u32,
    /// `symbol+0xoff` of the freeing function.
    pub location: &'a str,
    pub netns: u32,
    /// 0: the packet had no device.
    pub ifindex: u32,
    /// Every drop at the site (exact).
    pub drops: u64,
    pub streamed_or_lost: u64,
    pub sampled_out: u64,
}

impl<'a> SampledSummary<'a> {
    pub fn new(s: &'a Sampling) -> Self {
        SampledSummary {
            sampled_out: s.sampled_out,
            sites: s
                .sites
                .iter()
                .map(|site| SampledSiteJson {
                    reason: &site.reason,
                    code: site.code,
                    location: &site.location,
                    netns: site.netns,
                    ifindex: site.ifindex,
                    drops: site.drops,
                    streamed_or_lost: site.drops.saturating_sub(site.sampled_out),
                    sampled_out: site.sampled_out,
                })
                .collect(),
        }
    }
}

/// The text summary's lines for the sampled sites (none when nothing was sampled).
pub fn text(out: &mut String, s: &Sampling, top: usize) {
    if s.sampled_out == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "storm sampling: {} drops counted but not streamed (the drop totals above include them):",
        s.sampled_out
    );
    for site in s.sites.iter().take(top) {
        let _ = writeln!(
            out,
            "  {} at {} (netns {}, ifindex {}): {} drops, {} streamed, {} counted only",
            site.reason,
            site.location,
            site.netns,
            site.ifindex,
            site.drops,
            site.drops.saturating_sub(site.sampled_out),
            site.sampled_out
        );
    }
    if s.sites.len() > top {
        let _ = writeln!(out, "  … and {} more sites", s.sites.len() - top);
    }
}
