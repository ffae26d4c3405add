//! contrib/prometheus's alerting rules: valid (`promtool check rules`), and each alert fires
//! on its synthetic series with the summary that names the fix, and not on the others
//! (`promtool test rules`, contrib/prometheus/netprobe.rules.test.yml). No root needed.

use std::{path::PathBuf, process::Command};

use netprobe_integration::PROMTOOL;

fn contrib() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../contrib/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new(PROMTOOL)
        .args(args)
        .current_dir(contrib())
        .output()
        .expect("promtool (Debian's prometheus package; cargo xtask setup installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn rules_are_valid() {
    let text = promtool(&["check", "rules", "netprobe.rules.yml"]);
    assert!(text.contains("SUCCESS: 6 rules found"), "{text}");
}

#[test]
fn rules_fire_on_their_synthetic_series() {
    let text = promtool(&["test", "rules", "netprobe.rules.test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}
