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

use std::{collections::HashSet, fs, path::Path, process::Command};

const TRACEFS: &str = "/sys/kernel/tracing";

/// ftrace recording some events while it lives; restores what it changed when stopped.
pub struct Ftrace {
    events: Vec<String>,
    mounted_here: bool,
    buffer_kb: Option<String>,
}

impl Ftrace {
    /// Starts recording `events` (`tcp/tcp_retransmit_skb`…); `None` where tracefs cannot be
    /// mounted or an event does not exist, and then there is no witness.
    pub fn start(events: &[&str]) -> Option<Ftrace> {
        let root = Path::new(TRACEFS);
        let mut mounted_here = false;
        if !root.join("events").exists() {
            let ok = Command::new("mount")
                .args(["-t", "tracefs", "nodev", TRACEFS])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
            mounted_here = true;
        }
        let mut trace = Ftrace {
            events: Vec::new(),
            mounted_here,
            buffer_kb: fs::read_to_string(root.join("buffer_size_kb")).ok(),
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

    /// Stops recording and returns the recorded lines.
    pub fn stop(self) -> Vec<String> {
        self.disable();
        let root = Path::new(TRACEFS);
        let text = fs::read_to_string(root.join("trace")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    }
}

impl Ftrace {
    fn disable(&self) {
        let events = Path::new(TRACEFS).join("events");
        for event in &self.events {
            let _ = fs::write(events.join(event).join("enable"), "0");
        }
    }
}

impl Drop for Ftrace {
    fn drop(&mut self) {
        self.disable();
        let root = Path::new(TRACEFS);
        let _ = fs::write(root.join("trace"), "");
        if let Some(kb) = &self.buffer_kb {
            let _ = fs::write(root.join("buffer_size_kb"), kb.trim());
        }
        if self.mounted_here {
            let _ = Command::new("umount").arg(TRACEFS).status();
        }
    }
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

    /// Every firing in PID 1's context.
    pub fn total(&self) -> u64 {
        self.count("", "")
    }

    /// Firings of `event` (`tcp_retransmit_skb:`) in PID 1's context whose line names `addr`
    /// as `field` (`saddr=198.18.61.1`, `dest=198.18.65.2:`).
    pub fn count(&self, event: &str, needle: &str) -> u64 {
        self.lines
            .iter()
            .filter(|l| l.contains(event) && l.contains(needle))
            .filter(|l| task_pid(l).is_some_and(|pid| self.pid1_threads.contains(&pid)))
            .count() as u64
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
}
