//! Which process owns a socket: socket inode → (pid, comm), from /proc/<pid>/fd.
//!
//! The kernel programs report the socket's inode (not the task that happened to be on the
//! CPU: retransmits run from timers and softirqs). Only root can read every process's fds.

use std::{
    collections::HashMap,
    fs,
    time::{Duration, Instant},
};

use serde::Serialize;

/// A process holding sockets.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub pid: u32,
    pub comm: String,
}

/// Scans /proc/*/fd for sockets whose inode passes `wanted`. A process's name is read only when
/// it holds one. Returns the owners and whether every process could be read.
pub fn scan(wanted: &dyn Fn(u64) -> bool) -> (HashMap<u64, Vec<Owner>>, bool) {
    let mut owners: HashMap<u64, Vec<Owner>> = HashMap::new();
    let mut complete = true;
    let Ok(procs) = fs::read_dir("/proc") else {
        return (owners, false);
    };
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            complete = false;
            continue;
        };
        let mut comm: Option<String> = None;
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if !wanted(inode) {
                continue;
            }
            let comm = comm.get_or_insert_with(|| {
                fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_default()
            });
            let list = owners.entry(inode).or_default();
            if !list.iter().any(|o| o.pid == pid) {
                list.push(Owner {
                    pid,
                    comm: comm.clone(),
                });
            }
        }
    }
    (owners, complete)
}

/// Owners of the sockets seen in the event stream. A miss triggers a full rescan at most
/// every `MIN_RESCAN`, so a burst of events costs at most a few scans; an inode still unknown
/// after a scan is not looked for again until a wait that doubles with each miss, from
/// `MIN_RESCAN` to `MISS_TTL`: a socket can have no owner yet (a connection still in its
/// listener's accept queue, whose first segments are dropped before accept() gives it an fd),
/// and is then named a moment later, while an orphaned one costs one scan per `MISS_TTL`.
pub struct OwnerCache {
    known: HashMap<Inode, Owner>,
    /// Inodes a scan did not find: when, and how long to wait before looking again.
    unknown: HashMap<Inode, (Instant, Duration)>,
    last_scan: Option<Instant>,
}

type Inode = u64;

const MIN_RESCAN: Duration = Duration::from_millis(100);
const MISS_TTL: Duration = Duration::from_secs(2);

impl Default for OwnerCache {
    fn default() -> Self {
        Self::new()
    }
}

impl OwnerCache {
    pub fn new() -> Self {
        Self {
            known: HashMap::new(),
            unknown: HashMap::new(),
            last_scan: None,
        }
    }

    pub fn lookup(&mut self, inode: u64) -> Option<&Owner> {
        if inode == 0 || (!self.known.contains_key(&inode) && !self.rescan_finds(inode)) {
            return None;
        }
        self.known.get(&inode)
    }

    /// Scans /proc again for an inode not known yet, unless it was missed recently or a scan
    /// ran moments ago; whether it is known now.
    fn rescan_finds(&mut self, inode: u64) -> bool {
        let recently_missed = self
            .unknown
            .get(&inode)
            .is_some_and(|(t, wait)| t.elapsed() < *wait);
        if recently_missed || self.last_scan.is_some_and(|t| t.elapsed() < MIN_RESCAN) {
            return false;
        }
        let now = Instant::now();
        self.last_scan = Some(now);
        let (found, _) = scan(&|_| true);
        for (ino, owners) in found {
            // The first holder: the process that created the socket or received it.
            if let Some(first) = owners.into_iter().min() {
                self.known.insert(ino, first);
            }
        }
        let found = self.known.contains_key(&inode);
        let wait = match self.unknown.get(&inode) {
            Some((_, wait)) => (*wait * 2).min(MISS_TTL),
            None => MIN_RESCAN,
        };
        // Forgotten once a scan could run for it again anyway: the table stays small.
        self.unknown
            .retain(|_, (t, wait)| t.elapsed() < *wait + MISS_TTL);
        if found {
            self.unknown.remove(&inode);
        } else {
            self.unknown.insert(inode, (now, wait));
        }
        found
    }
}
