//! Drop storms: sites whose drops were not all streamed.
//!
//! In stream mode every drop is counted in the kernel's drop-site table, and a site streams
//! at most a limit per second on each CPU (`--max-rate`, or the storm rate while the reader
//! is behind); the rest are counted there as sampled out. Two views of that table:
//! [`Sampling`], the window's exact totals for the summary, and [`StormTracker`], which
//! compares one look at the table with the previous one, second by second, so that the
//! stream says when a storm is being sampled and when it is over.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use netprobe_common::DropSiteKey;

use crate::kernel::{btf::DropReasons, kallsyms::Symbolizer};

/// One drop site that was sampled in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampledSite {
    pub key: DropSiteKey,
    pub reason: String,
    pub code: u32,
    /// `symbol+0xoff` of the freeing function.
    pub location: String,
    pub netns: u32,
    pub ifindex: u32,
    /// Every drop at the site (exact).
    pub drops: u64,
    /// Of which counted only, not streamed.
    pub sampled_out: u64,
}

/// The window's sampled sites, most sampled first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sampling {
    pub sampled_out: u64,
    pub sites: Vec<SampledSite>,
}

impl Sampling {
    pub fn build(
        sites: &[(DropSiteKey, Vec<u64>)],
        sampled_out: &[(DropSiteKey, u64)],
        reasons: &DropReasons,
        symbols: &Symbolizer,
    ) -> Self {
        let drops_at = |key: &DropSiteKey| -> u64 {
            sites
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, per_cpu)| per_cpu.iter().sum())
                .unwrap_or(0)
        };
        let mut out: Vec<SampledSite> = sampled_out
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(key, n)| SampledSite {
                key: *key,
                reason: reasons.name(key.reason),
                code: key.reason,
                location: symbols.resolve(key.location),
                netns: key.netns,
                ifindex: key.ifindex,
                drops: drops_at(key),
                sampled_out: *n,
            })
            .collect();
        out.sort_by(|a, b| {
            b.sampled_out
                .cmp(&a.sampled_out)
                .then(a.code.cmp(&b.code))
                .then_with(|| a.location.cmp(&b.location))
        });
        Sampling {
            sampled_out: out.iter().map(|s| s.sampled_out).sum(),
            sites: out,
        }
    }
}

/// What changed at one site since the previous look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StormNote {
    /// The site dropped `drops` in `over`, of which `sampled_out` were counted only.
    Sampling {
        key: DropSiteKey,
        drops: u64,
        sampled_out: u64,
        over: Duration,
    },
    /// The site was sampled at the previous look and is no longer: its storm lasted `lasted`,
    /// with `drops` drops of which `sampled_out` counted only.
    Over {
        key: DropSiteKey,
        lasted: Duration,
        drops: u64,
        sampled_out: u64,
    },
}

/// A site being sampled: when that began and its counts then.
#[derive(Debug, Clone, Copy)]
struct Storm {
    since: Instant,
    drops_before: u64,
    sampled_before: u64,
}

/// Compares looks at the drop-site table.
#[derive(Debug)]
pub struct StormTracker {
    /// Each site's (drops, sampled out) at the previous look.
    previous: HashMap<DropSiteKey, (u64, u64)>,
    previous_at: Option<Instant>,
    storming: HashMap<DropSiteKey, Storm>,
}

impl StormTracker {
    /// A tracker whose first look covers the drops since `start` (the table is empty then).
    pub fn new(start: Instant) -> Self {
        StormTracker {
            previous: HashMap::new(),
            previous_at: Some(start),
            storming: HashMap::new(),
        }
    }

    /// Takes one look (`sites`: drops per CPU; `sampled`: sampled out, sites with none left
    /// out) made at `now`; returns the sites being sampled since the previous look (most
    /// dropped first) and the storms that ended.
    pub fn look(
        &mut self,
        sites: &[(DropSiteKey, Vec<u64>)],
        sampled: &[(DropSiteKey, u64)],
        now: Instant,
    ) -> Vec<StormNote> {
        let over = self
            .previous_at
            .map(|at| now.saturating_duration_since(at))
            .unwrap_or_default();
        let sampled: HashMap<DropSiteKey, u64> = sampled.iter().copied().collect();
        let mut current = HashMap::with_capacity(sites.len());
        let mut notes = Vec::new();
        for (key, per_cpu) in sites {
            let drops: u64 = per_cpu.iter().sum();
            let sampled_out = sampled.get(key).copied().unwrap_or(0);
            current.insert(*key, (drops, sampled_out));
            let (drops_before, sampled_before) =
                self.previous.get(key).copied().unwrap_or_default();
            if sampled_out > sampled_before {
                self.storming.entry(*key).or_insert(Storm {
                    since: self.previous_at.unwrap_or(now),
                    drops_before,
                    sampled_before,
                });
                notes.push(StormNote::Sampling {
                    key: *key,
                    drops: drops - drops_before,
                    sampled_out: sampled_out - sampled_before,
                    over,
                });
            }
        }
        notes.sort_by_key(|note| match note {
            StormNote::Sampling { drops, .. } => std::cmp::Reverse(*drops),
            StormNote::Over { .. } => std::cmp::Reverse(0),
        });
        let ended: Vec<DropSiteKey> = self
            .storming
            .keys()
            .filter(|key| {
                let now_sampled = current.get(key).map(|c| c.1).unwrap_or(0);
                let before = self.previous.get(key).map(|p| p.1).unwrap_or(0);
                now_sampled <= before
            })
            .copied()
            .collect();
        for key in ended {
            let storm = self.storming.remove(&key).expect("listed above");
            let (drops, sampled_out) = self.previous.get(&key).copied().unwrap_or_default();
            notes.push(StormNote::Over {
                key,
                // Up to the previous look: the last second it was still sampled.
                lasted: self
                    .previous_at
                    .unwrap_or(now)
                    .saturating_duration_since(storm.since),
                drops: drops.saturating_sub(storm.drops_before),
                sampled_out: sampled_out.saturating_sub(storm.sampled_before),
            });
        }
        self.previous = current;
        self.previous_at = Some(now);
        notes
    }

    /// Sites being sampled as of the last look.
    pub fn storming(&self) -> usize {
        self.storming.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(reason: u32) -> DropSiteKey {
        DropSiteKey {
            reason,
            netns: 7,
            location: 0xffff_ffff_8100_0000,
            ifindex: 3,
            ..DropSiteKey::default()
        }
    }

    #[test]
    fn a_storm_is_said_each_second_it_is_sampled_then_once_over() {
        let (storm, quiet) = (site(3), site(5));
        let t0 = Instant::now();
        let mut tracker = StormTracker::new(t0 - Duration::from_secs(1));
        // Before: both sites known, nothing sampled.
        let first = tracker.look(&[(storm, vec![10, 0]), (quiet, vec![1, 0])], &[], t0);
        assert!(first.is_empty());
        // One second of storm: 150k drops, 149.8k counted only; the quiet site drops 2.
        let t1 = t0 + Duration::from_secs(1);
        let notes = tracker.look(
            &[(storm, vec![100_010, 50_000]), (quiet, vec![3, 0])],
            &[(storm, 149_800)],
            t1,
        );
        assert_eq!(
            notes,
            vec![StormNote::Sampling {
                key: storm,
                drops: 150_000,
                sampled_out: 149_800,
                over: Duration::from_secs(1),
            }]
        );
        assert_eq!(tracker.storming(), 1);
        // Another second, then quiet again: the storm is over, with its whole count.
        let t2 = t1 + Duration::from_secs(1);
        let notes = tracker.look(&[(storm, vec![200_010, 100_000])], &[(storm, 299_600)], t2);
        assert!(matches!(
            notes[..],
            [StormNote::Sampling { drops: 150_000, .. }]
        ));
        let t3 = t2 + Duration::from_secs(1);
        let notes = tracker.look(&[(storm, vec![200_020, 100_000])], &[(storm, 299_600)], t3);
        assert_eq!(
            notes,
            vec![StormNote::Over {
                key: storm,
                lasted: Duration::from_secs(2),
                drops: 300_000,
                sampled_out: 299_600,
            }]
        );
        assert_eq!(tracker.storming(), 0);
        // Quiet stays quiet.
        assert!(tracker
            .look(
                &[(storm, vec![200_021, 100_000])],
                &[(storm, 299_600)],
                t3 + Duration::from_secs(1)
            )
            .is_empty());
    }

    #[test]
    fn a_storm_at_the_first_look_covers_the_time_since_the_start() {
        let start = Instant::now();
        let mut tracker = StormTracker::new(start);
        let notes = tracker.look(
            &[(site(3), vec![5000])],
            &[(site(3), 4990)],
            start + Duration::from_millis(1500),
        );
        assert_eq!(
            notes,
            vec![StormNote::Sampling {
                key: site(3),
                drops: 5000,
                sampled_out: 4990,
                over: Duration::from_millis(1500),
            }]
        );
    }

    #[test]
    fn sampling_totals_are_the_tables_with_names() {
        let reasons = DropReasons::from_pairs(&[(3, "NO_SOCKET"), (5, "NETFILTER_DROP")], &[]);
        let (storm, quiet) = (site(3), site(5));
        let sampling = Sampling::build(
            &[(storm, vec![900, 100]), (quiet, vec![4, 0])],
            &[(storm, 980)],
            &reasons,
            &Symbolizer::default(),
        );
        assert_eq!(sampling.sampled_out, 980);
        assert_eq!(sampling.sites.len(), 1, "only sampled sites are listed");
        let only = &sampling.sites[0];
        assert_eq!(
            (
                only.reason.as_str(),
                only.drops,
                only.sampled_out,
                only.ifindex
            ),
            ("NO_SOCKET", 1000, 980, 3)
        );
    }
}
