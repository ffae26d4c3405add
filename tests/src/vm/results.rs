//! The results stream /init writes to the second serial port: a gzipped tar of /np (the
//! command's stdout, stderr and status) and /results, base64 between two marker lines. gzip
//! matters: the emulated UART moves only about 100 KB/s.

use std::{
    collections::BTreeMap,
    fs, io,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use super::{tail, GuestOutcome, VmError};

const RESULTS_BEGIN: &str = "NETPROBE-RESULTS-BEGIN";
const RESULTS_END: &str = "NETPROBE-RESULTS-END";

/// Decodes the stream in `raw` and unpacks it into `dir` (as `dir/np`, `dir/results`).
pub(super) fn unpack(raw: &[u8], dir: &Path) -> Result<(), String> {
    let tarball = extract_stream(raw)?;
    let archive = dir.join("results.tar.gz");
    fs::write(&archive, tarball).map_err(|e| e.to_string())?;
    // GNU tar: no absolute names, no `..` members.
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running tar: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "the results tarball does not unpack: {}",
            err.trim()
        ));
    }
    Ok(())
}

/// The base64 text between the markers, decoded.
fn extract_stream(raw: &[u8]) -> Result<Vec<u8>, String> {
    let text = String::from_utf8_lossy(raw);
    // The tty turns \n into \r\n.
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    if !lines.any(|l| l == RESULTS_BEGIN) {
        let n = raw.len();
        return Err(format!(
            "no {RESULTS_BEGIN} on the second serial port ({n} bytes)"
        ));
    }
    let mut b64 = String::new();
    for line in lines {
        if line == RESULTS_END {
            return base64_decode(&b64).ok_or_else(|| "bad base64 in the results".into());
        }
        b64.push_str(line.trim());
    }
    Err(format!(
        "no {RESULTS_END}: the results stream was cut ({} bytes)",
        raw.len()
    ))
}

/// The outcome, from what [`unpack`] left in `dir`.
pub(super) fn outcome(
    dir: &Path,
    console: String,
    wall: Duration,
) -> Result<GuestOutcome, VmError> {
    let meta = |name: &str| fs::read_to_string(dir.join("np").join(name)).ok();
    if let Some(failed) = meta("insmod_failed") {
        return Err(VmError::Insmod {
            modules: failed.lines().map(str::to_owned).collect(),
            console_tail: tail(&console),
        });
    }
    let results = dir.join("results");
    let mut files = BTreeMap::new();
    collect(&results, "", &mut files)?;
    Ok(GuestOutcome {
        stdout: meta("stdout").unwrap_or_default(),
        stderr: meta("stderr").unwrap_or_default(),
        status: meta("status")
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(-1),
        timed_out: meta("timed_out").is_some(),
        console,
        results,
        files,
        wall,
    })
}

/// Every file under `dir`, by path relative to the results directory.
fn collect(dir: &Path, prefix: &str, files: &mut BTreeMap<String, Vec<u8>>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type()?.is_dir() {
            collect(&entry.path(), &format!("{name}/"), files)?;
        } else {
            files.insert(name, fs::read(entry.path())?);
        }
    }
    Ok(())
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().take_while(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_busybox_output() {
        assert_eq!(base64_decode("aGVsbG8K").unwrap(), b"hello\n");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert!(base64_decode("a*b").is_none());
    }

    #[test]
    fn results_stream_needs_both_markers() {
        let ok = "noise\r\nNETPROBE-RESULTS-BEGIN\r\naGVs\r\nbG8K\r\nNETPROBE-RESULTS-END\r\n";
        assert_eq!(extract_stream(ok.as_bytes()).unwrap(), b"hello\n");
        assert!(extract_stream(&ok.as_bytes()[..ok.len() - 10]).is_err());
        assert!(extract_stream(b"console only\n").is_err());
    }
}
