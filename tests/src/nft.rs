//! Loss on demand: nftables tables of one rule on one hook of a namespace, and their counters.

use std::{
    io::Write,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;

use crate::{sh, Netns};

/// Runs `nft -f -` inside a namespace with the given ruleset.
pub fn nft_in(ns: &str, ruleset: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ruleset.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "nft ruleset failed:\n{ruleset}"
    );
}

/// A table of one filter chain (`in` on the input hook, `out` on the output hook) holding
/// one rule.
fn one_rule_table(table: &str, chain: &str, hook: &str, rule: &str) -> String {
    format!(
        "table inet {table} {{\n  chain {chain} {{\n    type filter hook {hook} priority 0; policy accept;\n    \
         {rule}\n  }}\n}}\n"
    )
}

/// The rule dropping `percent`% of TCP segments to `port` at random, counted by its counter.
fn random_loss_rule(port: u16, percent: u32) -> String {
    format!("tcp dport {port} numgen random mod 100 < {percent} counter drop")
}

/// A ruleset dropping `percent`% of TCP segments to `port` at random on their way *into* the
/// host, counted by the rule's own counter. (A drop in the sender's own OUTPUT hook is not path
/// loss: the error reaches TCP synchronously and it sends the data again as new data, so
/// RetransSegs does not move.)
pub fn input_loss_ruleset(table: &str, port: u16, percent: u32) -> String {
    one_rule_table(table, "in", "input", &random_loss_rule(port, percent))
}

/// Packets counted by the first `counter` in `table inet <table>` in a namespace.
pub fn nft_counter_packets(ns: &str, table: &str) -> u64 {
    nft_counter(ns, table, "packets")
}

/// A field (`packets`, `bytes`) of the first counter in `table`.
fn nft_counter(ns: &str, table: &str, field: &str) -> u64 {
    let json = sh(
        "ip",
        &[
            "netns", "exec", ns, "nft", "-j", "list", "table", "inet", table,
        ],
    );
    let v: Value = serde_json::from_str(&json).expect("nft json");
    for item in v["nftables"].as_array().expect("nftables array") {
        if let Some(exprs) = item["rule"]["expr"].as_array() {
            for e in exprs {
                if let Some(p) = e["counter"][field].as_u64() {
                    return p;
                }
            }
        }
    }
    panic!("no counter in table {table}: {json}");
}

/// One rule in its own table in a namespace. It stays until [`NftTable::delete`] (or
/// `delete_after`), or until the namespace goes.
pub struct NftTable {
    ns: String,
    table: String,
}

impl NftTable {
    /// `rule` on the input hook of `ns`: packets entering the host.
    pub fn input(ns: &Netns, table: &str, rule: &str) -> Self {
        Self::install(ns, table, one_rule_table(table, "in", "input", rule))
    }

    /// `rule` on the output hook of `ns`: packets the host itself sends.
    pub fn output(ns: &Netns, table: &str, rule: &str) -> Self {
        Self::install(ns, table, one_rule_table(table, "out", "output", rule))
    }

    /// `percent`% of the TCP segments to `port` lost on their way into `ns`
    /// ([`input_loss_ruleset`]).
    pub fn input_loss(ns: &Netns, table: &str, port: u16, percent: u32) -> Self {
        Self::install(ns, table, input_loss_ruleset(table, port, percent))
    }

    fn install(ns: &Netns, table: &str, ruleset: String) -> Self {
        nft_in(&ns.name, &ruleset);
        Self {
            ns: ns.name.clone(),
            table: table.to_string(),
        }
    }

    /// Packets the rule's counter has counted.
    pub fn packets(&self) -> u64 {
        nft_counter_packets(&self.ns, &self.table)
    }

    /// Bytes the rule's counter has counted.
    pub fn bytes(&self) -> u64 {
        nft_counter(&self.ns, &self.table, "bytes")
    }

    /// `ip netns exec <ns> nft delete table inet <table>`, as arguments of `ip`.
    fn delete_args(&self) -> [&str; 8] {
        [
            "netns",
            "exec",
            &self.ns,
            "nft",
            "delete",
            "table",
            "inet",
            &self.table,
        ]
    }

    /// Removes the table now, panicking if nft cannot.
    pub fn delete(self) {
        sh("ip", &self.delete_args());
    }

    /// Removes the table after `hold`, in the background.
    pub fn delete_after(self, hold: Duration) {
        thread::spawn(move || {
            thread::sleep(hold);
            // The scenario may be over and its namespace (with the table) gone already.
            let _ = Command::new("ip").args(self.delete_args()).output();
        });
    }
}
