//! `netprobe report`: every kernel counter that says where packets are lost, sampled twice
//! for rates, judged by rules; each finding with its evidence and the exact fix.
//! Works without root: what cannot be read is listed in `skipped` with the reason.

pub mod ethtool;
mod live;
pub mod model;
pub mod netlink;
pub mod procfs;
pub mod render;
pub mod rules;
pub mod sample;
pub mod sockets;
pub mod sysfs;

use std::{path::Path, thread, time::Duration};

use model::Report;
use sample::{Scope, Skipped};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("--interval {0}: must be a positive number of seconds (at most 3600)")]
    Interval(f64),
    #[error("--interface {0}: no such interface in this network namespace")]
    UnknownInterface(String),
}

pub struct ReportOptions {
    pub interval: f64,
    pub interface: Option<String>,
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The counter report between two snapshots taken by the caller (`netprobe trace` takes
/// them over its own window), judged by the rules. No socket dump: the trace names flows and
/// their owners from its events.
pub fn between(first: &sample::Snapshot, second: &sample::Snapshot) -> Report {
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut report = model::build(first, second, kernel_release());
    (report.sysctls, report.sysctls_from_initial_netns) = sample::sysctls(&mut skipped);
    skipped.sort();
    skipped.dedup();
    report.skipped = skipped;
    report.findings = rules::evaluate(&report);
    report
}

/// This namespace's sockets (sock_diag), with the owners of listeners and CLOSE_WAIT ones;
/// what could not be read goes to `skipped`. Also what `netprobe trace` reads when
/// connections of its namespace failed: the listener they were sent to may be here.
pub fn socket_dump(skipped: &mut Vec<Skipped>) -> Option<sockets::SocketReport> {
    match netlink::inet_sockets() {
        Ok(list) => {
            let (owners, complete) = sockets::socket_owners(&sockets::inodes_of_interest(&list));
            if !complete {
                skipped.push(Skipped {
                    source: "socket owners".into(),
                    reason: "not every process's /proc/<pid>/fd is readable (not root): owners may be missing".into(),
                });
            }
            Some(sockets::summarize(&list, &owners, complete))
        }
        Err(e) => {
            skipped.push(Skipped {
                source: "sock_diag socket dump".into(),
                reason: e.to_string(),
            });
            None
        }
    }
}

/// Samples, waits, samples again, and judges.
pub fn run(options: &ReportOptions) -> Result<Report, ReportError> {
    if !(options.interval.is_finite() && options.interval > 0.0 && options.interval <= 3600.0) {
        return Err(ReportError::Interval(options.interval));
    }
    if let Some(name) = &options.interface {
        if name.contains('/') || !Path::new(sample::SYS_CLASS_NET).join(name).exists() {
            return Err(ReportError::UnknownInterface(name.clone()));
        }
    }
    let scope = Scope {
        interface: options.interface.clone(),
    };
    let mut skipped: Vec<Skipped> = Vec::new();
    let first = sample::take(&scope, &mut skipped);
    thread::sleep(Duration::from_secs_f64(options.interval));
    let mut second_skips = Vec::new();
    let second = sample::take(&scope, &mut second_skips);
    skipped.extend(second_skips);

    let mut report = model::build(&first, &second, kernel_release());
    (report.sysctls, report.sysctls_from_initial_netns) = sample::sysctls(&mut skipped);
    report.sockets = socket_dump(&mut skipped);
    if report.conntrack.is_none() {
        skipped.push(Skipped {
            source: "conntrack".into(),
            reason: "nf_conntrack is not loaded in this namespace".into(),
        });
    }
    skipped.sort();
    skipped.dedup();
    report.skipped = skipped;
    report.findings = rules::evaluate(&report);
    Ok(report)
}

#[cfg(test)]
mod tests;
