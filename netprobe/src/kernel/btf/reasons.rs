//! Drop-reason names of the running kernel, from `enum skb_drop_reason` and the subsystem
//! enums beside it.

use std::collections::BTreeMap;

use super::{BtfError, KernelBtf};

/// Upper 16 bits of a drop reason name the subsystem (`SKB_DROP_REASON_SUBSYS_SHIFT`).
const SUBSYS_SHIFT: u32 = 16;
const REASON_PREFIX: &str = "SKB_DROP_REASON_";
const SUBSYS_PREFIX: &str = "SKB_DROP_REASON_SUBSYS_";

/// Drop-reason names of the running kernel (`enum skb_drop_reason`), with the subsystem
/// encoding of the upper 16 bits (`enum skb_drop_reason_subsys`).
#[derive(Debug, Clone)]
pub struct DropReasons {
    /// The kernel records drop reasons (`enum skb_drop_reason`, Linux ≥ 5.17). Before, every
    /// drop has reason 0 and is named [`UNRECORDED`]; its layer comes from the freeing function.
    recorded: bool,
    /// Raw value → short name (`NETFILTER_DROP`).
    names: BTreeMap<u32, String>,
    /// Subsystem id → short name (`MAC80211_UNUSABLE`).
    subsystems: BTreeMap<u32, String>,
}

/// The reason of every drop on a kernel that records none (before Linux 5.17).
pub const UNRECORDED: &str = "UNRECORDED";

impl Default for DropReasons {
    fn default() -> Self {
        Self {
            recorded: true,
            names: BTreeMap::new(),
            subsystems: BTreeMap::new(),
        }
    }
}

impl DropReasons {
    /// The running kernel's reasons; on a kernel without `enum skb_drop_reason` (before 5.17),
    /// an empty table that names every drop [`UNRECORDED`].
    pub fn from_btf(btf: &KernelBtf) -> Result<Self, BtfError> {
        let mut reasons = Self::default();
        let members = match btf.enum_members("skb_drop_reason") {
            Ok(members) => members,
            // Only a kernel without the enum (before 5.17) records none; other errors stand.
            Err(BtfError::Other(why)) if why.starts_with("no enum") => {
                reasons.recorded = false;
                return Ok(reasons);
            }
            Err(e) => return Err(e),
        };
        for (name, value) in members {
            let short = name.strip_prefix(REASON_PREFIX).unwrap_or(&name);
            reasons.names.insert(value as u32, short.to_string());
        }
        // Older kernels have no subsystems: then every reason is a core reason.
        if let Ok(subsystems) = btf.enum_members("skb_drop_reason_subsys") {
            for (name, value) in subsystems {
                let short = name.strip_prefix(SUBSYS_PREFIX).unwrap_or(&name);
                reasons.subsystems.insert(value as u32, short.to_string());
            }
        }
        // Subsystem reasons live in their own enums (mac80211_drop_reason, ovs_drop_reason…),
        // in vmlinux or module BTF; collect whatever is there.
        for (name, value) in subsystem_reason_members(btf) {
            reasons.names.entry(value).or_insert(name);
        }
        Ok(reasons)
    }

    /// The name of a raw reason value. Unknown core reasons print as `UNKNOWN_<n>`, unknown
    /// subsystem reasons as `<SUBSYS>:<n>`.
    pub fn name(&self, raw: u32) -> String {
        if !self.recorded {
            return UNRECORDED.to_string();
        }
        if let Some(name) = self.names.get(&raw) {
            return name.clone();
        }
        let subsystem = raw >> SUBSYS_SHIFT;
        let code = raw & ((1 << SUBSYS_SHIFT) - 1);
        if subsystem == 0 {
            return format!("UNKNOWN_{code}");
        }
        match self.subsystems.get(&subsystem) {
            Some(sub) => format!("{sub}:{code}"),
            None => format!("SUBSYS_{subsystem}:{code}"),
        }
    }

    /// The raw value of a reason given by name (`NETFILTER_DROP`, any case, with or without
    /// the `SKB_DROP_REASON_` prefix), or a number.
    pub fn value(&self, name: &str) -> Option<u32> {
        if let Ok(raw) = name.parse::<u32>() {
            return Some(raw);
        }
        let upper = name.to_ascii_uppercase();
        let short = upper.strip_prefix(REASON_PREFIX).unwrap_or(&upper);
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == short)
            .map(|(v, _)| *v)
    }

    /// False on kernels before 5.17, which record no drop reasons.
    pub fn recorded(&self) -> bool {
        self.recorded
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.names.iter().map(|(v, n)| (*v, n.as_str()))
    }

    #[cfg(test)]
    pub fn from_pairs(names: &[(u32, &str)], subsystems: &[(u32, &str)]) -> Self {
        Self {
            recorded: true,
            names: names.iter().map(|(v, n)| (*v, n.to_string())).collect(),
            subsystems: subsystems
                .iter()
                .map(|(v, n)| (*v, n.to_string()))
                .collect(),
        }
    }
}

/// Members with a nonzero subsystem in the upper bits from any `*_drop_reason` enum other
/// than the core one.
fn subsystem_reason_members(btf: &KernelBtf) -> Vec<(String, u32)> {
    btf.plain_enum_members(|name| name.ends_with("_drop_reason") && name != "skb_drop_reason")
        .into_iter()
        .filter(|(_, value)| value >> SUBSYS_SHIFT != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_btf::kernel_shaped;
    use super::*;

    #[test]
    fn drop_reason_names_with_subsystems() {
        let reasons = DropReasons::from_btf(&kernel_shaped()).unwrap();
        assert_eq!(reasons.name(12), "NETFILTER_DROP");
        assert_eq!(reasons.name(3), "NO_SOCKET");
        assert_eq!(reasons.name(999), "UNKNOWN_999");
        // Found in a subsystem enum.
        assert_eq!(reasons.name((3 << 16) | 1), "OVS_DROP_ACTION_ERROR");
        // Subsystem known, code not.
        assert_eq!(reasons.name((1 << 16) | 7), "MAC80211_UNUSABLE:7");
        assert_eq!(reasons.name((9 << 16) | 2), "SUBSYS_9:2");

        assert_eq!(reasons.value("NETFILTER_DROP"), Some(12));
        assert_eq!(reasons.value("skb_drop_reason_no_socket"), Some(3));
        assert_eq!(reasons.value("no_socket"), Some(3));
        assert_eq!(reasons.value("17"), Some(17));
        assert_eq!(reasons.value("NO_SUCH_REASON"), None);
    }
}
