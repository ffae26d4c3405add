//! `netprobe monitor` beside the shell script it replaces (bench/network_drops.sh), in one
//! run, on the same veth in a test namespace: CPU per interval, the share of a core that is
//! at a 5 s interval, and RSS over an hour's worth of intervals.
//!
//! An hour at 5 s is 720 intervals; they run at a short interval so that the run takes well
//! under a minute, and CPU per interval converts to the 5 s figure by division. Nothing is
//! done between samples but sleeping, yet a sample costs more after a long sleep (caches and
//! TLBs gone cold: 0.35 ms at 2 ms intervals, 0.6 ms at 20 ms, here): each netprobe variant
//! also runs at a real 5 s interval meanwhile, as a spot check of that conversion.

use std::{
    fs,
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use netprobe_integration::{signal, Link};

use crate::workspace_root;

/// An hour of 5 s intervals.
const INTERVALS: u64 = 720;
/// The interval the hour-equivalent run uses (seconds, as the command line takes it).
const RUN_INTERVAL: &str = "0.02";
/// The interval the issue states its goal at, and the goal: ≤ 0.05 % of one core.
const GOAL_INTERVAL_S: f64 = 5.0;
const GOAL_PERCENT_OF_CORE: f64 = 0.05;
/// Rows before the first mark: start-up (exec, runtime, the baseline sample, opening the log)
/// is paid once, not per interval.
const WARMUP_ROWS: u64 = 2;
/// RSS growth over the run's second half up to which memory is called flat: four pages. The
/// first half is left out, as it holds the allocator's warm-up (netprobe's RSS grows ~100 KiB
/// over its first few hundred intervals, then stays put over tens of thousands). A leak of
/// 50 bytes per interval would exceed it.
const FLAT_SLACK_KIB: u64 = 16;
/// How long a contender may stay silent before the run is called hung.
const ROW_TIMEOUT: Duration = Duration::from_secs(10);
const INTERFACE: &str = "veth0";
/// The script's 16 columns: both logs start with them (netprobe adds its own after them).
const SCRIPT_HEADER: &str = "timestamp,iteration,interface,total_drops,nic_rx,nic_tx,nic_missed,qdisc,softirq,syn_queue,accept_queue,tcp_pruned,tcp_collapsed,udp_rcvbuf,udp_sndbuf,severity";

/// `netprobe monitor`'s variants measured beside the script: (label, arguments before the
/// positionals): counters only, and as root by default the kernel programs in count mode.
const NETPROBE_VARIANTS: &[(&str, &[&str])] = &[
    ("netprobe monitor --counters-only", &["--counters-only"]),
    ("netprobe monitor (eBPF count mode)", &[]),
];

/// A program under test, run as `PROGRAM ARGS… INTERFACE INTERVAL LOGFILE`.
#[derive(Clone)]
struct Contender {
    label: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

/// A process's CPU time so far (its own and its reaped children's) and resident memory.
#[derive(Clone, Copy)]
struct Mark {
    cpu_ns: u64,
    rss_kib: u64,
}

impl Mark {
    fn read(pid: u32) -> Result<Mark> {
        Ok(Mark {
            cpu_ns: own_cpu_ns(pid)? + children_cpu_ns(pid)?,
            rss_kib: rss_kib(pid)?,
        })
    }
}

/// The process's own CPU time, in ns: the first field of each thread's schedstat (the
/// scheduler's exact runtime; /proc/PID/stat's utime/stime are in 10 ms ticks).
fn own_cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let text = fs::read_to_string(task?.path().join("schedstat"))?;
        total += text
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .context("schedstat")?;
    }
    Ok(total)
}

/// The CPU time of the children the process waited for (cutime + cstime): the script's
/// forks. The kernel sums it in ns and shows it in ticks, which over hundreds of intervals
/// of tens of ms each is exact enough.
fn children_cpu_ns(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces); field 3 (state) is the first.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .context("/proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[13].parse::<u64>()? + fields[14].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(ticks * 1_000_000_000 / per_second)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")
}

/// One contender's run: marks after the warm-up, half-way and at the end.
struct Measurement {
    label: String,
    start: Mark,
    middle: Mark,
    end: Mark,
}

impl Measurement {
    fn cpu_ms_per_interval(&self) -> f64 {
        (self.end.cpu_ns - self.start.cpu_ns) as f64 / 1e6 / INTERVALS as f64
    }

    fn percent_of_core_at_goal_interval(&self) -> f64 {
        self.cpu_ms_per_interval() / 1e3 / GOAL_INTERVAL_S * 100.0
    }

    fn rss_flat(&self) -> bool {
        self.end.rss_kib <= self.middle.rss_kib + FLAT_SLACK_KIB
    }
}

/// Reads a child's pipe to the end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// A contender started in a namespace, whose process is marked after each interval.
struct Running {
    child: Child,
    /// One mark per console interval line (`[timestamp] #0001 | …`), read right after it.
    marks: mpsc::Receiver<Result<Mark>>,
    /// Taken when the contender failed, for its error message.
    stderr: Option<JoinHandle<String>>,
    rows: u64,
    /// Waited for: its pid may belong to another process now.
    stopped: bool,
}

impl Running {
    fn start(netns: &str, contender: &Contender, interval: &str) -> Result<Running> {
        // `ip netns exec` execs the program: the pid is the script's shell, or netprobe.
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(&contender.program)
            .args(&contender.args)
            .args([INTERFACE, interval])
            .arg(&contender.log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", contender.label))?;
        let pid = child.id();
        let stderr = drain(child.stderr.take().expect("piped"));
        let stdout = child.stdout.take().expect("piped");
        let (tx, marks) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with('[') && tx.send(Mark::read(pid)).is_err() {
                    break;
                }
            }
        });
        Ok(Running {
            child,
            marks,
            stderr: Some(stderr),
            rows: 0,
            stopped: false,
        })
    }

    /// The mark after the next interval.
    fn next_mark(&mut self, label: &str) -> Result<Mark> {
        match self.marks.recv_timeout(ROW_TIMEOUT) {
            Ok(mark) => {
                self.rows += 1;
                mark
            }
            Err(_) => {
                self.stop();
                let stderr = self.stderr.take().and_then(|s| s.join().ok());
                bail!(
                    "{label} stopped printing after {} intervals: {}",
                    self.rows,
                    stderr.unwrap_or_default()
                )
            }
        }
    }

    /// The marks of the intervals done since the last call, without waiting.
    fn marks_so_far(&mut self) -> Result<Vec<Mark>> {
        let marks: Vec<Mark> = self.marks.try_iter().collect::<Result<_>>()?;
        self.rows += marks.len() as u64;
        Ok(marks)
    }

    fn stop(&mut self) {
        if !self.stopped {
            signal(self.child.id() as i32, libc::SIGTERM);
            let _ = self.child.wait();
            self.stopped = true;
        }
    }
}

/// A section that fails half-way leaves no contender running.
impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `contender` for the warm-up and [`INTERVALS`] intervals at [`RUN_INTERVAL`], then
/// stops it.
fn measure_hour(netns: &str, contender: &Contender) -> Result<Measurement> {
    let mut running = Running::start(netns, contender, RUN_INTERVAL)?;
    let at_rows = [
        WARMUP_ROWS,
        WARMUP_ROWS + INTERVALS / 2,
        WARMUP_ROWS + INTERVALS,
    ];
    let mut marks = Vec::new();
    while marks.len() < at_rows.len() {
        let mark = running.next_mark(&contender.label)?;
        if running.rows == at_rows[marks.len()] {
            marks.push(mark);
        }
    }
    running.stop();
    check_log(contender, running.rows)?;
    Ok(Measurement {
        label: contender.label.clone(),
        start: marks[0],
        middle: marks[1],
        end: marks[2],
    })
}

/// The contender did the whole job: a log with the script's columns and a row per interval.
fn check_log(contender: &Contender, rows_seen: u64) -> Result<()> {
    let text =
        fs::read_to_string(&contender.log).with_context(|| format!("{}'s log", contender.label))?;
    let mut lines = text.lines();
    if !lines.next().is_some_and(|h| h.starts_with(SCRIPT_HEADER)) {
        bail!(
            "{}'s log does not start with the script's header",
            contender.label
        );
    }
    let logged = lines.count() as u64;
    // The script prints before it logs, and SIGTERM's trap runs between the two: the row
    // whose line was just read may be lost with it.
    if logged + 1 < rows_seen {
        bail!(
            "{} printed {rows_seen} intervals but logged {logged} rows",
            contender.label
        );
    }
    Ok(())
}

/// A directory for the contenders' logs, removed when dropped.
struct LogDir(PathBuf);

impl LogDir {
    fn create() -> Result<LogDir> {
        let dir =
            std::env::temp_dir().join(format!("netprobe-bench-monitor-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        Ok(LogDir(dir))
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The script first, then each netprobe variant.
fn contenders(logs: &LogDir) -> Vec<Contender> {
    let mut all = vec![Contender {
        label: "script".into(),
        program: "bash".into(),
        args: vec![workspace_root()
            .join("bench/network_drops.sh")
            .display()
            .to_string()],
        log: logs.0.join("script.log"),
    }];
    for (i, (label, args)) in NETPROBE_VARIANTS.iter().enumerate() {
        let mut all_args = vec!["monitor".to_string()];
        all_args.extend(args.iter().map(|a| a.to_string()));
        all.push(Contender {
            label: label.to_string(),
            program: workspace_root().join("target/release/netprobe"),
            args: all_args,
            log: logs.0.join(format!("netprobe-{i}.log")),
        });
    }
    all
}

/// A netprobe variant run at the goal's own interval while the hour-equivalent runs go on:
/// the short interval keeps caches warm between samples, which a real 5 s interval does not.
struct SpotCheck {
    label: String,
    running: Running,
}

/// CPU per interval of a spot check from its first interval on; `None` before two intervals.
fn spot_check_result(spot: &mut SpotCheck) -> Result<Option<(u64, f64)>> {
    let marks = spot.running.marks_so_far()?;
    spot.running.stop();
    let (Some(first), Some(last)) = (marks.first(), marks.last()) else {
        return Ok(None);
    };
    let intervals = marks.len() as u64 - 1;
    if intervals == 0 {
        return Ok(None);
    }
    let ms = (last.cpu_ns - first.cpu_ns) as f64 / 1e6 / intervals as f64;
    Ok(Some((intervals, ms)))
}

/// The monitor section: the contenders one after the other on the same idle veth, with a
/// spot check of each netprobe variant at a real 5 s interval meanwhile.
pub fn monitor_beside_script() -> Result<()> {
    let link = Link::new("mon", 203);
    let logs = LogDir::create()?;
    let all = contenders(&logs);
    let mut spot_checks = Vec::new();
    for contender in &all[1..] {
        let spot_contender = Contender {
            log: logs.0.join(format!("spot-{}.log", spot_checks.len())),
            ..contender.clone()
        };
        spot_checks.push(SpotCheck {
            label: contender.label.clone(),
            running: Running::start(&link.b.name, &spot_contender, &GOAL_INTERVAL_S.to_string())?,
        });
    }
    let mut measured = Vec::new();
    for contender in &all {
        measured.push(measure_hour(&link.b.name, contender)?);
    }
    print_table(&measured);
    for spot in &mut spot_checks {
        match spot_check_result(spot)? {
            Some((intervals, ms)) => println!(
                "spot check, {} at a real {GOAL_INTERVAL_S} s interval during the runs above: \
                 {ms:.3} ms per interval over {intervals} intervals = {:.4} % of a core",
                spot.label,
                ms / 1e3 / GOAL_INTERVAL_S * 100.0
            ),
            None => println!("spot check, {}: fewer than two intervals", spot.label),
        }
    }
    Ok(())
}

fn print_table(measured: &[Measurement]) {
    println!(
        "{INTERVALS} intervals (an hour at {GOAL_INTERVAL_S} s) at {RUN_INTERVAL} s each, on an \
         idle {INTERFACE} in a test namespace, one contender after the other; CPU is user+sys of \
         the process and of the children it forked, after interval {WARMUP_ROWS}"
    );
    let row = |name: &str, cell: &dyn Fn(&Measurement) -> String| {
        let cells: String = measured
            .iter()
            .map(|m| format!("{:>36}", cell(m)))
            .collect();
        println!("{name:<40}{cells}");
    };
    row("", &|m| m.label.clone());
    row("CPU per interval", &|m| {
        format!("{:.3} ms", m.cpu_ms_per_interval())
    });
    row(&format!("% of a core at {GOAL_INTERVAL_S} s"), &|m| {
        format!("{:.4} %", m.percent_of_core_at_goal_interval())
    });
    row("RSS start / middle / end (KiB)", &|m| {
        format!(
            "{} / {} / {}",
            m.start.rss_kib, m.middle.rss_kib, m.end.rss_kib
        )
    });
    row(
        &format!("RSS over the 2nd half (flat: ≤ {FLAT_SLACK_KIB} KiB)"),
        &|m| {
            let growth = m.end.rss_kib as i64 - m.middle.rss_kib as i64;
            let verdict = if m.rss_flat() { "flat" } else { "GROWS" };
            format!("{growth:+} KiB: {verdict}")
        },
    );
    let script = &measured[0];
    for m in &measured[1..] {
        let percent = m.percent_of_core_at_goal_interval();
        let verdict = if percent <= GOAL_PERCENT_OF_CORE {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "goal {}: ≤ {GOAL_PERCENT_OF_CORE} % of a core at {GOAL_INTERVAL_S} s and flat RSS: \
             CPU {verdict} ({percent:.4} %), RSS {}; {:.0}× less CPU per interval than the script",
            m.label,
            if m.rss_flat() { "flat" } else { "NOT flat" },
            script.cpu_ms_per_interval() / m.cpu_ms_per_interval()
        );
    }
}
