//! An independent witness of the kernel's own tracepoints: ftrace's event buffer, beside
//! netprobe's programs on the same tracepoints.
//!
//! Why the tests need one: this project's CI host (a sandbox kernel, 6.18-fc) runs no BPF
//! program for a tracepoint that fires while its PID 1 (the sandbox's agent) is the current
//! task — a retransmit timer's softirq on top of that agent's thread — and counts no
//! recursion miss for it, while ftrace records the firing (measured: 4 of 800 retransmits, all
//! four and only those in the agent's context; none of 80 fired on top of a busy user process).
//! No program can see those; the matrix checks that netprobe saw every other firing, exactly,
//! and says how many the kernel withheld.

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

const TRACEFS: &str = "/sys/kernel/tracing";

/// tracefs, mounted by whoever needed it first and unmounted by the same.
struct Tracefs {
    mounted_here: bool,
}

impl Tracefs {
    /// `None` where tracefs is not mounted and cannot be.
    fn mount() -> Option<Tracefs> {
        if Path::new(TRACEFS).join("events").exists() {
            return Some(Tracefs {
                mounted_here: false,
            });
        }
        let ok = Command::new("mount")
            .args(["-t", "tracefs", "nodev", TRACEFS])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tracefs { mounted_here: true })
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = Command::new("umount").arg(TRACEFS).status();
        }
    }
}

/// ftrace recording some events while it lives; restores what it changed when stopped.
pub struct Ftrace {
    /// tracefs itself (the top-level buffer), or an instance this recording has to itself.
    dir: PathBuf,
    instance: bool,
    events: Vec<String>,
    /// The top-level buffer's size before, restored when stopped.
    buffer_kb: Option<String>,
    _tracefs: Tracefs,
}

impl Ftrace {
    /// Starts recording `events` (`tcp/tcp_retransmit_skb`…) in the top-level buffer; `None`
    /// where tracefs cannot be mounted or an event does not exist, and then there is no witness.
    pub fn start(events: &[&str]) -> Option<Ftrace> {
        let tracefs = Tracefs::mount()?;
        let root = Path::new(TRACEFS);
        let mut trace = Ftrace {
            dir: root.to_path_buf(),
            instance: false,
            events: Vec::new(),
            buffer_kb: fs::read_to_string(root.join("buffer_size_kb")).ok(),
            _tracefs: tracefs,
        };
        let _ = fs::write(root.join("buffer_size_kb"), "8192");
        let _ = fs::write(root.join("trace"), "");
        for event in events {
            if fs::write(root.join("events").join(event).join("enable"), "1").is_err() {
                return None;
            }
            trace.events.push(event.to_string());
        }
        Some(trace)
    }

    /// Starts recording the firings of one `event` that an ftrace event filter passes, in a
    /// tracefs instance of its own (its own buffer, filter and switch: the top-level buffer,
    /// global settings and other recordings are untouched; the instance is removed when
    /// stopped). `filter` makes the filter from the event's format file; `None` from it, or
    /// where there is no tracefs, no instances or no such event, or the kernel refuses the
    /// filter: no witness.
    pub fn start_filtered(
        event: &str,
        filter: impl FnOnce(&str) -> Option<String>,
    ) -> Option<Ftrace> {
        static INSTANCES: AtomicUsize = AtomicUsize::new(0);
        let tracefs = Tracefs::mount()?;
        let root = Path::new(TRACEFS);
        let format = fs::read_to_string(root.join("events").join(event).join("format")).ok()?;
        let filter = filter(&format)?;
        let name = format!(
            "netprobe-{}-{}",
            std::process::id(),
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        );
        let dir = root.join("instances").join(name);
        fs::create_dir(&dir).ok()?;
        let mut trace = Ftrace {
            dir,
            instance: true,
            events: Vec::new(),
            buffer_kb: None,
            _tracefs: tracefs,
        };
        let event_dir = trace.dir.join("events").join(event);
        fs::write(event_dir.join("filter"), &filter).ok()?;
        trace.events.push(event.to_string());
        fs::write(event_dir.join("enable"), "1").ok()?;
        Some(trace)
    }

    /// Stops recording and returns the recorded lines.
    pub fn stop(self) -> Vec<String> {
        self.disable();
        let text = fs::read_to_string(self.dir.join("trace")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    }
}

impl Ftrace {
    fn disable(&self) {
        let events = self.dir.join("events");
        for event in &self.events {
            let _ = fs::write(events.join(event).join("enable"), "0");
        }
    }
}

impl Drop for Ftrace {
    fn drop(&mut self) {
        self.disable();
        if self.instance {
            let _ = fs::remove_dir(&self.dir);
            return;
        }
        let _ = fs::write(self.dir.join("trace"), "");
        if let Some(kb) = &self.buffer_kb {
            let _ = fs::write(self.dir.join("buffer_size_kb"), kb.trim());
        }
    }
}

/// An event filter for `skb:kfree_skb` that passes IPv4 drops for any of `reasons`
/// (`TCP_OLD_DATA`…), with their values as the kernel's own `enum skb_drop_reason` has them:
/// read from the event's `format`, which prints the reason through that enum's symbolic map.
/// Reasons this kernel does not have are left out; `None` where it has none of them (no
/// `reason` field before Linux 5.17).
pub fn drop_reason_filter(format: &str, reasons: &[&str]) -> Option<String> {
    let map = format.split_once("__print_symbolic(REC->reason,")?.1;
    let values: Vec<String> = map
        .split('{')
        .filter_map(|entry| {
            let (value, rest) = entry.split_once(',')?;
            let name = rest.trim_start().strip_prefix('"')?.split('"').next()?;
            let value: u32 = value.trim().parse().ok()?;
            reasons
                .contains(&name)
                .then(|| format!("reason == {value}"))
        })
        .collect();
    (!values.is_empty()).then(|| format!("protocol == 2048 && ({})", values.join(" || ")))
}

/// The firings the kernel ran no program for: those whose current task is a thread of PID 1,
/// on a kernel that withholds that context (see the module's comment). On other kernels the
/// count is what ftrace saw there, which netprobe's programs must have seen too: the checks
/// then fail, as they should.
#[derive(Debug, Default, Clone)]
pub struct Withheld {
    lines: Vec<String>,
    pid1_threads: HashSet<u32>,
}

impl Withheld {
    pub fn from_lines(lines: Vec<String>) -> Self {
        let pid1_threads = fs::read_dir("/proc/1/task")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        Withheld {
            lines,
            pid1_threads,
        }
    }

    /// Firings of `event` (`kfree_skb:`) ftrace saw, in any context.
    pub fn seen(&self, event: &str) -> u64 {
        self.lines.iter().filter(|l| l.contains(event)).count() as u64
    }

    /// Every firing in PID 1's context.
    pub fn total(&self) -> u64 {
        self.count("", "")
    }

    /// Firings of `event` (`tcp_retransmit_skb:`) in PID 1's context whose line names `addr`
    /// as `field` (`saddr=198.18.61.1`, `dest=198.18.65.2:`).
    pub fn count(&self, event: &str, needle: &str) -> u64 {
        self.lines_of(event, needle).len() as u64
    }

    /// Those firings' lines, as ftrace printed them.
    pub fn lines_of(&self, event: &str, needle: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|l| l.contains(event) && l.contains(needle))
            .filter(|l| task_pid(l).is_some_and(|pid| self.pid1_threads.contains(&pid)))
            .map(String::as_str)
            .collect()
    }
}

/// The pid in an ftrace line's `comm-pid [cpu]` prefix.
fn task_pid(line: &str) -> Option<u32> {
    let task = line.split(" [").next()?.trim();
    task.rsplit('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_pid1_firings_of_the_address() {
        let lines = vec![
            "  tokio-rt-worker-76      [001] ..s2.  4706.318492: tcp_retransmit_skb: sport=59868 dport=5004 saddr=198.18.61.1 daddr=198.18.61.2".to_string(),
            "          <idle>-0       [000] ..s2.  4704.858445: tcp_retransmit_skb: sport=59868 dport=5004 saddr=198.18.61.1 daddr=198.18.61.2".to_string(),
            "  tokio-rt-worker-76      [001] ..s2.  4706.318492: tcp_retransmit_skb: sport=5 dport=5004 saddr=198.18.62.1 daddr=198.18.62.2".to_string(),
        ];
        let w = Withheld {
            lines,
            pid1_threads: [1, 76].into_iter().collect(),
        };
        assert_eq!(w.count("tcp_retransmit_skb:", "saddr=198.18.61.1 "), 1);
        assert_eq!(w.count("tcp_retransmit_skb:", "saddr=198.18.63.1 "), 0);
        assert_eq!(task_pid("          <idle>-0       [000] ..."), Some(0));
    }

    #[test]
    fn reason_values_come_from_the_format() {
        let format = r#"print fmt: "skbaddr=%p rx_sk=%p protocol=%u location=%pS reason: %s", REC->skbaddr, REC->rx_sk, REC->protocol, REC->location, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 33, "TCP_OLD_DATA" }, { 41, "TCP_OLD_SEQUENCE" }, { 49, "TCP_OLD_ACK" }, { 0x4000, "SUBSYS_MASK" })"#;
        assert_eq!(
            drop_reason_filter(format, &["TCP_OLD_DATA", "TCP_OLD_SEQUENCE"]).as_deref(),
            Some("protocol == 2048 && (reason == 33 || reason == 41)")
        );
        assert_eq!(
            drop_reason_filter(format, &["TCP_OLD_DATA", "NO_SUCH_REASON"]).as_deref(),
            Some("protocol == 2048 && (reason == 33)")
        );
        assert_eq!(drop_reason_filter(format, &["NO_SUCH_REASON"]), None);
        let before_reasons = r#"print fmt: "skbaddr=%p protocol=%u location=%p", REC->skbaddr, REC->protocol, REC->location"#;
        assert_eq!(drop_reason_filter(before_reasons, &["TCP_OLD_DATA"]), None);
    }
}
