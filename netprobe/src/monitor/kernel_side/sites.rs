//! Names for what the kernel counts by number: a drop site's reason (from BTF), freeing
//! function (kallsyms), layer and direction (the trace's own classification), and the
//! interface behind an ifindex. Cached: the sites are few and the same every interval.

use std::collections::HashMap;

use netprobe_common::{DropSiteKey, DROP_HAS_DEV, DROP_HAS_SOCK};

use crate::{
    kernel::{btf::DropReasons, kallsyms::Symbolizer},
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
    symbols: Symbolizer,
    classes: HashMap<(u32, u64), (String, String, SiteClass)>,
    interfaces: HashMap<u32, String>,
}

impl SiteNames {
    pub fn new(reasons: DropReasons, symbols: Symbolizer) -> Self {
        Self {
            reasons,
            symbols,
            classes: HashMap::new(),
            interfaces: HashMap::new(),
        }
    }

    pub fn reason(&self, raw: u32) -> String {
        self.reasons.name(raw)
    }

    /// The site's reason, function, layer, direction and role.
    pub fn site(&mut self, key: &DropSiteKey) -> SiteName {
        let (reasons, symbols) = (&self.reasons, &self.symbols);
        let (reason, location, class) = self
            .classes
            .entry((key.reason, key.location))
            .or_insert_with(|| {
                let reason = reasons.name(key.reason);
                let location = symbols.resolve(key.location);
                let class = classify::classify_site(&reason, &location);
                (reason, location, class)
            });
        let (direction, layer) = classify::classify_at(
            *class,
            DropContext {
                location,
                skb_iif: key.skb_iif,
                ifindex: (key.flags & DROP_HAS_DEV != 0).then_some(key.ifindex),
                has_socket: key.flags & DROP_HAS_SOCK != 0,
            },
        );
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
