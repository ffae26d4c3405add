//! Kernel text addresses to `symbol+0xoffset`, from /proc/kallsyms.

use std::{
    collections::HashMap,
    fs,
    io::{self, BufRead},
    path::Path,
};

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
}

/// Sorted text symbols of the kernel and loaded modules.
#[derive(Debug, Default)]
pub struct Symbolizer {
    /// (address, name, module) sorted by address.
    symbols: Vec<(u64, String, Option<String>)>,
}

impl Symbolizer {
    /// No symbols: every address resolves to hex.
    pub const EMPTY: Self = Self {
        symbols: Vec::new(),
    };

    pub fn load(path: &Path) -> Result<Self, KallsymsError> {
        let text = fs::read_to_string(path).map_err(|source| KallsymsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::parse(&text))
    }

    /// Parses kallsyms text. Addresses shown as zero (kptr_restrict) are left out, so lookups
    /// then fall back to hex addresses rather than naming the wrong symbol.
    pub fn parse(text: &str) -> Self {
        let mut symbols: Vec<_> = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
                let kind = parts.next()?;
                let name = parts.next()?;
                let module = parts
                    .next()
                    .map(|m| m.trim_matches(|c| c == '[' || c == ']').to_string());
                let is_text = matches!(kind, "t" | "T" | "w" | "W");
                (addr != 0 && is_text).then(|| (addr, name.to_string(), module))
            })
            .collect();
        symbols.sort_by_key(|(addr, _, _)| *addr);
        Self { symbols }
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// `name+0xoff` (`name+0xoff [module]` for module code), or `0x<addr>` when unknown.
    pub fn resolve(&self, addr: u64) -> String {
        let index = self.symbols.partition_point(|(a, _, _)| *a <= addr);
        if addr == 0 || index == 0 {
            return format!("{addr:#x}");
        }
        let (start, name, module) = &self.symbols[index - 1];
        match module {
            Some(m) => format!("{name}+{:#x} [{m}]", addr - start),
            None => format!("{name}+{:#x}", addr - start),
        }
    }
}

/// The symbol table being read on a thread of its own: /proc/kallsyms (tens of thousands of
/// lines the kernel formats on each read) is not needed until the first drop is named, so
/// start-up does not wait for it.
pub struct SymbolsLoading {
    pending: Option<std::thread::JoinHandle<Result<Symbolizer, KallsymsError>>>,
    ready: Symbolizer,
}

impl SymbolsLoading {
    pub fn start(path: &Path) -> Self {
        let path = path.to_path_buf();
        Self {
            pending: Some(std::thread::spawn(move || Symbolizer::load(&path))),
            ready: Symbolizer::default(),
        }
    }

    /// Already loaded (tests, or a caller that has its table).
    pub fn loaded(symbols: Symbolizer) -> Self {
        Self {
            pending: None,
            ready: symbols,
        }
    }

    /// The table, waiting for the read the first time. Unreadable: said once, and every
    /// address is then named in hex.
    pub fn get(&mut self) -> &Symbolizer {
        if let Some(handle) = self.pending.take() {
            match handle.join() {
                Ok(Ok(symbols)) => self.ready = symbols,
                Ok(Err(e)) => eprintln!("netprobe: {e}; drop locations will be hex addresses"),
                Err(_) => eprintln!(
                    "netprobe: reading kallsyms failed; drop locations will be hex addresses"
                ),
            }
        }
        &self.ready
    }
}

/// `name+0xoff` for each of a few `wanted` addresses, from one streaming pass over kallsyms
/// text, keeping nothing else: what a long-running process that meets a new address only
/// now and then uses instead of holding every symbol (tens of MB on a distribution kernel).
/// Addresses below every text symbol (or hidden, shown as 0) are left out.
pub fn resolve_batch(text: impl BufRead, wanted: &[u64]) -> HashMap<u64, String> {
    let mut wanted: Vec<u64> = wanted.iter().copied().filter(|a| *a != 0).collect();
    wanted.sort_unstable();
    wanted.dedup();
    // For each wanted address: the highest text symbol at or below it so far.
    let mut best: Vec<Option<(u64, String)>> = vec![None; wanted.len()];
    for line in text.lines().map_while(Result::ok) {
        let mut parts = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(start) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        if start == 0 || !matches!(kind, "t" | "T" | "w" | "W") {
            continue;
        }
        let first = wanted.partition_point(|w| *w < start);
        for (slot, _) in best[first..].iter_mut().zip(&wanted[first..]) {
            if slot.as_ref().is_none_or(|(b, _)| *b < start) {
                let module = parts
                    .next()
                    .map(|m| m.trim_matches(|c| c == '[' || c == ']'));
                let label = match module {
                    Some(m) => format!("{name} [{m}]"),
                    None => name.to_string(),
                };
                *slot = Some((start, label));
            }
        }
    }
    wanted
        .into_iter()
        .zip(best)
        .filter_map(|(addr, found)| {
            let (start, label) = found?;
            Some((addr, with_offset(&label, addr - start)))
        })
        .collect()
}

/// `name+0xoff`, the module (if any) after it.
fn with_offset(label: &str, offset: u64) -> String {
    match label.split_once(' ') {
        Some((name, module)) => format!("{name}+{offset:#x} {module}"),
        None => format!("{label}+{offset:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streaming pass names what the whole table names.
    #[test]
    fn a_batch_resolves_as_the_table_does() {
        let wanted = [
            0xffffffff8123459a,
            0xffffffff81234700,
            0xffffffffc0001010,
            0xffffffff812a0004,
            0x1000,
            0,
        ];
        let batch = resolve_batch(KALLSYMS.as_bytes(), &wanted);
        let table = Symbolizer::parse(KALLSYMS);
        for addr in wanted {
            let expected = table.resolve(addr);
            match batch.get(&addr) {
                Some(name) => assert_eq!(name, &expected),
                None => assert!(expected.starts_with("0x"), "{addr:#x}: {expected}"),
            }
        }
        assert_eq!(batch.len(), 4);
    }

    const KALLSYMS: &str = "\
ffffffff81000000 T _text
ffffffff81000000 T startup_64
ffffffff81234560 t nf_hook_slow
ffffffff81234700 T ip_rcv
ffffffff812a0000 D some_data
ffffffffc0001000 t nft_do_chain\t[nf_tables]
ffffffffc0002000 t nft_other\t[nf_tables]
";

    #[test]
    fn resolves_to_symbol_and_offset() {
        let s = Symbolizer::parse(KALLSYMS);
        assert_eq!(s.resolve(0xffffffff8123459a), "nf_hook_slow+0x3a");
        assert_eq!(s.resolve(0xffffffff81234700), "ip_rcv+0x0");
        assert_eq!(
            s.resolve(0xffffffffc0001010),
            "nft_do_chain+0x10 [nf_tables]"
        );
        // Data symbols are not code: an address past ip_rcv stays with ip_rcv.
        assert_eq!(s.resolve(0xffffffff812a0004), "ip_rcv+0x6b904");
        // Below every symbol.
        assert_eq!(s.resolve(0x1000), "0x1000");
        assert_eq!(s.resolve(0), "0x0");
    }

    #[test]
    fn hidden_addresses_give_hex() {
        let s = Symbolizer::parse("0000000000000000 T _text\n0000000000000000 t nf_hook_slow\n");
        assert!(s.is_empty());
        assert_eq!(s.resolve(0xffffffff81234567), "0xffffffff81234567");
    }
}
