//! Sets of CPUs, in the kernel's two spellings: lists (`0-3,8`, as in `smp_affinity_list`
//! and `/sys/devices/system/cpu/online`) and hex masks (`f,ffffffff`, as in `rps_cpus`).
//! Every parse and every rendering of either goes through here.

use std::{collections::BTreeSet, fmt, fmt::Write as _};

/// A list's range is cut at this many CPUs past its start: a corrupt `0-4294967295` must not
/// allocate gigabytes, and no machine has more CPUs than this.
const MAX_RANGE: usize = 4096;

/// The bits in one comma-separated group of a sysfs mask.
const GROUP_BITS: usize = 32;

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuSet(BTreeSet<usize>);

impl CpuSet {
    /// CPUs `0..n`.
    pub fn first(n: usize) -> Self {
        Self((0..n).collect())
    }

    /// A CPU list as the kernel writes it (`0-3,8,10-11`). Parts that do not parse are
    /// skipped: a half-readable list still names the CPUs it can.
    pub fn parse_list(text: &str) -> Self {
        let mut cpus = BTreeSet::new();
        for part in text.trim().split(',').filter(|p| !p.is_empty()) {
            match part.split_once('-') {
                Some((a, b)) => {
                    if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                        cpus.extend(a..=b.min(a + MAX_RANGE));
                    }
                }
                None => {
                    if let Ok(cpu) = part.trim().parse() {
                        cpus.insert(cpu);
                    }
                }
            }
        }
        Self(cpus)
    }

    /// A sysfs CPU mask (`00000001,00000000`): hex, comma-separated 32-bit groups, most
    /// significant first. Characters that are not hex digits count as zero bits.
    pub fn parse_mask(text: &str) -> Self {
        let mut cpus = BTreeSet::new();
        let digits = text.trim().chars().filter(|c| *c != ',').rev();
        for (nibble, digit) in digits.enumerate() {
            let value = digit.to_digit(16).unwrap_or(0);
            for bit in 0..4 {
                if value & (1 << bit) != 0 {
                    cpus.insert(nibble * 4 + bit);
                }
            }
        }
        Self(cpus)
    }

    /// The mask as sysfs writes it: the most significant group without leading zeros, the
    /// others eight digits wide (so a group of zeros between set ones keeps its place).
    pub fn to_mask(&self) -> String {
        let Some(highest) = self.0.last() else {
            return "0".to_string();
        };
        let mut groups = vec![0u32; highest / GROUP_BITS + 1];
        for cpu in &self.0 {
            groups[cpu / GROUP_BITS] |= 1u32 << (cpu % GROUP_BITS);
        }
        let mut words = groups.iter().rev();
        let mut out = format!("{:x}", words.next().copied().unwrap_or(0));
        for word in words {
            let _ = write!(out, ",{word:08x}");
        }
        out
    }

    pub fn contains(&self, cpu: usize) -> bool {
        self.0.contains(&cpu)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn is_superset(&self, other: &CpuSet) -> bool {
        self.0.is_superset(&other.0)
    }

    /// Ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().copied()
    }

    pub fn to_vec(&self) -> Vec<usize> {
        self.iter().collect()
    }
}

impl FromIterator<usize> for CpuSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// The list spelling, runs collapsed (`0-3,8`).
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cpus = self.iter().peekable();
        let mut first = true;
        while let Some(start) = cpus.next() {
            let mut end = start;
            while cpus.peek() == Some(&(end + 1)) {
                end = cpus.next().unwrap_or(end);
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_ranges_and_skip_garbage() {
        assert_eq!(
            CpuSet::parse_list("0-3,8,10-11\n").to_vec(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(CpuSet::parse_list("1").to_vec(), vec![1]);
        assert!(CpuSet::parse_list("").is_empty());
        assert_eq!(CpuSet::parse_list("x,2").to_vec(), vec![2]);
        assert_eq!(CpuSet::parse_list("0-4294967295").len(), MAX_RANGE + 1);
    }

    #[test]
    fn masks_parse_groups_most_significant_first() {
        assert_eq!(CpuSet::parse_mask("2").to_vec(), vec![1]);
        assert_eq!(CpuSet::parse_mask("f").to_vec(), vec![0, 1, 2, 3]);
        assert_eq!(CpuSet::parse_mask("00000001,00000000").to_vec(), vec![32]);
        assert_eq!(CpuSet::parse_mask("f,ffffffff").len(), 36);
        assert!(CpuSet::parse_mask("0").is_empty());
        assert!(CpuSet::parse_mask("00000000,00000000\n").is_empty());
    }

    #[test]
    fn masks_render_as_sysfs_writes_them() {
        assert_eq!(CpuSet::first(2).to_mask(), "3");
        assert_eq!(CpuSet::first(8).to_mask(), "ff");
        assert_eq!(CpuSet::first(32).to_mask(), "ffffffff");
        assert_eq!(CpuSet::first(40).to_mask(), "ff,ffffffff");
        assert_eq!(CpuSet::from_iter([32]).to_mask(), "1,00000000");
        assert_eq!(CpuSet::default().to_mask(), "0");
    }

    #[test]
    fn masks_and_lists_round_trip() {
        for text in ["3", "ff,ffffffff", "1,00000000", "80000000", "5,0000000a"] {
            assert_eq!(CpuSet::parse_mask(text).to_mask(), text);
        }
        for text in ["0-3,8", "1", "0,2,4-7,63-64"] {
            assert_eq!(CpuSet::parse_list(text).to_string(), text);
        }
        let set = CpuSet::parse_list("0-3,40");
        assert_eq!(CpuSet::parse_mask(&set.to_mask()), set);
    }
}
