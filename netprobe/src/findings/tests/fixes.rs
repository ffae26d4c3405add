//! One bundle, one value per knob.

use super::*;

/// Every `name=value` a bundle's fixes would set, from the `sysctl -w` commands in them.
fn proposed_settings(bundle: &FindingsJson) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for f in &bundle.findings {
        for command in f
            .fix
            .split(';')
            .filter_map(|c| c.split("sysctl -w ").nth(1))
        {
            for word in command.split_whitespace() {
                if let Some((name, value)) = word.split_once('=') {
                    out.push((name.to_string(), value.to_string(), f.id.clone()));
                }
            }
        }
    }
    out
}

/// The report's rules and the bundle's own rules see the same overflow and the same NAPI
/// squeeze: every knob they both turn gets one value.
#[test]
fn one_bundle_proposes_one_value_per_knob() {
    use crate::report::{procfs::Softnet, rules};
    let reasons = DropReasons::from_pairs(&[(9, "CPU_BACKLOG")], &[]);
    let totals = KernelTotals {
        reasons: vec![(9, vec![40, 0])],
        napi: vec![(
            "(no_device)".into(),
            vec![
                netprobe_common::NapiTotals::default(),
                netprobe_common::NapiTotals {
                    polls: 100,
                    full_budget: 30,
                    work: 6400,
                },
            ],
        )],
        ..Default::default()
    };
    let softnet: SoftnetDeltas = [(0, (0, 0)), (1, (12, 40))].into();
    let window = window_of(&totals, &reasons, &softnet);
    let mut tally = DropTally::default();
    for _ in 0..40 {
        tally.add(&ingress_drop(
            ("198.18.0.1", 40000),
            ("198.18.0.2", 5001),
            "CPU_BACKLOG",
            Layer::Backlog,
            0,
            "udp",
        ));
    }
    let now = Instant::now();
    let softnet_at = |dropped, time_squeeze| {
        vec![
            Softnet {
                cpu: 0,
                processed: 1000,
                ..Default::default()
            },
            Softnet {
                cpu: 1,
                processed: 1000,
                dropped,
                time_squeeze,
                ..Default::default()
            },
        ]
    };
    let mut before = snapshot(now, &[]);
    before.softnet = softnet_at(0, 0);
    let mut after = snapshot(now + Duration::from_secs(1), &[]);
    after.softnet = softnet_at(40, 12);
    let mut report = report_model::build(&before, &after, "test".into());
    report.sysctls = [
        ("net.core.netdev_max_backlog", "1000"),
        ("net.core.netdev_budget", "300"),
        ("net.core.netdev_budget_usecs", "2000"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    report.findings = rules::evaluate(&report);
    let bundle = bundle_with(&window, &tally, &before, &after, report);
    let ids: Vec<&str> = bundle.findings.iter().map(|f| f.id.as_str()).collect();
    for both_sides in [
        "backlog_overflow",
        "softnet_dropped",
        "napi_budget_exhausted",
    ] {
        assert!(ids.contains(&both_sides), "{both_sides} missing: {ids:?}");
    }
    let settings = proposed_settings(&bundle);
    let mut by_knob: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (name, value, id) in &settings {
        by_knob.entry(name).or_default().push((value, id));
    }
    let backlog = &by_knob["net.core.netdev_max_backlog"];
    assert!(
        backlog.len() >= 2,
        "the report and the bundle both fix the backlog: {backlog:?}"
    );
    for (knob, proposals) in &by_knob {
        let first = proposals[0].0;
        assert!(
            proposals.iter().all(|(value, _)| *value == first),
            "{knob} gets two values in one bundle: {proposals:?}"
        );
    }
    // Computed from the live value, not a constant.
    assert_eq!(backlog[0].0, "2000");
}
