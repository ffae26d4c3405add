//! `netprobe trace`'s start-up: from exec to the `tracing (N of M hooks active)` line on
//! stderr, the moment events start to count (goal: under 150 ms on the project's 2-core
//! machines). Idle: nothing else of ours runs meanwhile; the medians of several runs, since a
//! shared machine's other tenants make single runs noisy.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{median, stop};
use crate::workspace_root;

const RUNS: usize = 9;

/// Milliseconds from exec to the hooks line, one `netprobe trace --json` run of `binary`.
fn one_start(binary: &Path) -> Result<f64> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["trace", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stderr = child.stderr.take().expect("piped");
    let mut attached = None;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.starts_with("netprobe: tracing (") {
            attached = Some(started.elapsed());
            break;
        }
    }
    stop(&mut child);
    match attached {
        Some(elapsed) => Ok(elapsed.as_secs_f64() * 1e3),
        None => bail!("{} exited before its hooks line", binary.display()),
    }
}

/// The median start-up of this build, and of `NETPROBE_STARTUP_BASELINE` (another build's
/// binary, e.g. main's) when set: alternated run by run, so that both see the same noise.
pub fn startup() -> Result<()> {
    let ours = workspace_root().join("target/release/netprobe");
    let baseline = std::env::var_os("NETPROBE_STARTUP_BASELINE").map(std::path::PathBuf::from);
    let mut binaries = vec![("this build", ours)];
    if let Some(path) = baseline {
        binaries.push(("baseline", path));
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); binaries.len()];
    for _ in 0..RUNS {
        for (i, (_, binary)) in binaries.iter().enumerate() {
            times[i].push(one_start(binary)?);
            // The previous run's programs are unloaded by the time it exits; a short pause
            // lets its memory go before the next one starts.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for ((name, binary), runs) in binaries.iter().zip(times) {
        let each: Vec<String> = runs.iter().map(|t| format!("{t:.0}")).collect();
        println!(
            "netprobe trace start-up to the hooks line ({name}, {}): median {:.1} ms over {RUNS} runs ({} ms)",
            binary.display(),
            median(runs.clone()),
            each.join(" ")
        );
    }
    Ok(())
}
