//! The bundle for people: findings with their fixes, then the reconciliation.

use std::fmt::Write as _;

use super::{FindingsJson, Relation};

impl FindingsJson {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n== netprobe findings ({}, {:.1} s; counters of netns {}) ==",
            if self.is_final { "final" } else { "so far" },
            self.window_s,
            self.netns
        );
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        if self.findings.is_empty() {
            let _ = writeln!(out, "no loss found");
        }
        for f in &self.findings {
            let _ = writeln!(
                out,
                "[{}] {} ({}/{}, {}): {}",
                f.severity, f.id, f.direction, f.layer, f.source, f.summary
            );
            if !f.cpus.is_empty() {
                let _ = writeln!(out, "    cpus: {:?}", f.cpus);
            }
            for flow in &f.flows {
                let _ = writeln!(out, "    flow: {flow}");
            }
            let _ = writeln!(out, "    fix: {}", f.fix);
        }
        for st in &self.steering {
            let _ = writeln!(out, "steering: {}", st.summary);
        }
        let _ = writeln!(out, "reconciliation (events vs counters, same window):");
        for r in &self.reconciliation {
            let relation = match r.relation {
                Relation::Equal => "equal",
                Relation::AtMost => "within the bound",
            };
            let verdict = match (r.must_match, r.matches) {
                (true, true) => relation.to_string(),
                (true, false) => "MISMATCH".to_string(),
                (false, true) => format!("{relation} (not required)"),
                (false, false) => "differ (allowed)".to_string(),
            };
            let sign = match r.relation {
                Relation::Equal => "vs",
                Relation::AtMost => "≤?",
            };
            let why = r.not_exact_because.as_deref().unwrap_or(&r.note);
            let _ = writeln!(
                out,
                "  {:<48} {:>8} {sign} {:>8} {}: {verdict} ({why})",
                r.what, r.events, r.counters, r.counter
            );
        }
        out
    }
}
