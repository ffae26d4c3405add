//! Names for what count mode's kernel side counts by number (`DROP_SITES`, read by `netprobe
//! monitor` and `netprobe trace --count`): a drop site's reason (from BTF), freeing function
//! (kallsyms), layer and direction (the trace's own classification), and the interface behind
//! an ifindex. Cached: the sites are few and the same every interval. The
//! freeing functions are looked up in /proc/kallsyms only for sites not seen before, in one
//! streaming pass, instead of holding the whole symbol table for days (tens of MB).

use std::{
    collections::HashMap,
    io::BufReader,
    path::{Path, PathBuf},
};

use netprobe_common::{DropSiteKey, DROP_HAS_DEV};

use crate::{
    kernel::{btf::DropReasons, kallsyms},
    model::classify::{self, Direction, DropContext, DropRole, Layer, SiteClass},
    report::sample::SYS_CLASS_NET,
};

/// What one drop site is, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteName {
    pub reason: String,
    /// `function+0xoff`.
    pub location: String,
    pub layer: Layer,
    pub direction: Direction,
    pub role: DropRole,
}

pub struct SiteNames {
    reasons: DropReasons,
    /// /proc/kallsyms (a test's file in tests).
    kallsyms: PathBuf,
    /// Freeing functions already looked up (`0x…` when kallsyms hides or lacks them).
    locations: HashMap<u64, String>,
    classes: HashMap<(u32, u64), (String, String, SiteClass)>,
    interfaces: HashMap<u32, String>,
}

impl SiteNames {
    pub fn new(reasons: DropReasons, kallsyms: &Path) -> Self {
        Self {
            reasons,
            kallsyms: kallsyms.to_path_buf(),
            locations: HashMap::new(),
            classes: HashMap::new(),
            interfaces: HashMap::new(),
        }
    }

    /// Looks up, in one pass over kallsyms, the freeing functions not seen before.
    pub fn prepare<'a>(&mut self, keys: impl Iterator<Item = &'a DropSiteKey>) {
        let new: Vec<u64> = keys
            .map(|k| k.location)
            .filter(|l| !self.locations.contains_key(l))
            .collect();
        if new.is_empty() {
            return;
        }
        let found = std::fs::File::open(&self.kallsyms)
            .map(|f| kallsyms::resolve_batch(BufReader::new(f), &new))
            .unwrap_or_default();
        for addr in new {
            let name = found
                .get(&addr)
                .cloned()
                .unwrap_or_else(|| format!("{addr:#x}"));
            self.locations.insert(addr, name);
        }
    }

    pub fn reason(&self, raw: u32) -> String {
        self.reasons.name(raw)
    }

    /// The site's reason, function, layer, direction and role.
    pub fn site(&mut self, key: &DropSiteKey) -> SiteName {
        let (reasons, locations) = (&self.reasons, &self.locations);
        let (reason, location, class) = self
            .classes
            .entry((key.reason, key.location))
            .or_insert_with(|| {
                let reason = reasons.name(key.reason);
                let location = locations
                    .get(&key.location)
                    .cloned()
                    .unwrap_or_else(|| format!("{:#x}", key.location));
                let class = classify::classify_site(&reason, &location);
                (reason, location, class)
            });
        let (direction, layer) = classify::classify_at(*class, DropContext::at_site(location, key));
        SiteName {
            role: classify::role_of(reason),
            reason: reason.clone(),
            location: location.clone(),
            layer,
            direction,
        }
    }

    /// The interface a drop happened on: its name when it is in the monitor's namespace
    /// (`own`), else `ifindex N` (another namespace's indexes are not ours to resolve).
    pub fn interface(&mut self, key: &DropSiteKey, own: bool) -> Option<String> {
        if key.flags & DROP_HAS_DEV == 0 {
            return None;
        }
        if !own {
            return Some(format!("ifindex {}", key.ifindex));
        }
        if !self.interfaces.contains_key(&key.ifindex) {
            self.interfaces = interfaces_by_index();
        }
        Some(
            self.interfaces
                .get(&key.ifindex)
                .cloned()
                .unwrap_or_else(|| format!("ifindex {}", key.ifindex)),
        )
    }
}

/// One drop site's counts, named and classified: count mode's unit of drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteDrops {
    pub site: SiteName,
    /// Where it was dropped: the device's namespace, else the socket's (0: neither).
    pub netns: u32,
    /// Its name in netprobe's own namespace, else `ifindex N`; `None` without a device.
    pub interface: Option<String>,
    /// Drops per CPU, indexed by CPU.
    pub per_cpu: Vec<u64>,
}

impl SiteDrops {
    pub fn total(&self) -> u64 {
        self.per_cpu.iter().sum()
    }
}

impl SiteNames {
    /// Every site that dropped, named (each looked up once), busiest first.
    pub fn name_all(
        &mut self,
        sites: &[(DropSiteKey, Vec<u64>)],
        own_netns: u32,
    ) -> Vec<SiteDrops> {
        let dropped: Vec<&(DropSiteKey, Vec<u64>)> = sites
            .iter()
            .filter(|(_, per_cpu)| per_cpu.iter().any(|n| *n > 0))
            .collect();
        self.prepare(dropped.iter().map(|(key, _)| key));
        let mut named: Vec<SiteDrops> = dropped
            .into_iter()
            .map(|(key, per_cpu)| SiteDrops {
                site: self.site(key),
                netns: key.netns,
                interface: self.interface(key, key.netns == own_netns),
                per_cpu: per_cpu.clone(),
            })
            .collect();
        named.sort_by(|a, b| {
            b.total()
                .cmp(&a.total())
                .then_with(|| a.site.reason.cmp(&b.site.reason))
                .then_with(|| a.site.location.cmp(&b.site.location))
                .then(a.netns.cmp(&b.netns))
        });
        named
    }
}

/// ifindex → name in this namespace, from sysfs.
fn interfaces_by_index() -> HashMap<u32, String> {
    let Ok(entries) = std::fs::read_dir(SYS_CLASS_NET) else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let index = std::fs::read_to_string(entry.path().join("ifindex")).ok()?;
            Some((index.trim().parse().ok()?, name))
        })
        .collect()
}
