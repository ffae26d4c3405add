//! How receive work is spread: IRQ routing and RPS masks.

use super::*;

#[test]
fn steering_names_irq_routing_and_rps() {
    use crate::report::{sample::NicIrq, sysfs::InterfaceInfo};
    let now = Instant::now();
    let mut before = snapshot(now, &[]);
    let iface = |name: &str, rps: &[(&str, &str)]| InterfaceInfo {
        name: name.into(),
        rps_cpus: rps
            .iter()
            .map(|(q, m)| (q.to_string(), m.to_string()))
            .collect(),
        ..Default::default()
    };
    before.interfaces = vec![iface("eth0", &[]), iface("eth1", &[("rx-0", "2")])];
    let irq = |n: &str, ifname: &str, name: &str, per_cpu: Vec<u64>, affinity: Vec<usize>| NicIrq {
        irq: n.into(),
        ifname: ifname.into(),
        name: name.into(),
        per_cpu,
        affinity,
    };
    before.irqs = vec![
        irq("38", "eth0", "virtio2-input.0", vec![0, 100], vec![1]),
        irq("39", "eth0", "virtio2-output.0", vec![50, 0], vec![0]),
        irq("40", "eth1", "eth1-TxRx-0", vec![7, 7], vec![0]),
        irq("41", "eth1", "eth1-TxRx-1", vec![7, 7], vec![1]),
    ];
    let mut after = snapshot(now + Duration::from_secs(1), &[]);
    after.interfaces = before.interfaces.clone();
    after.irqs = before.irqs.clone();
    after.irqs[0].per_cpu = vec![0, 180];
    let report = report_model::build(&before, &after, "test".into());
    let st = steering(&report);
    assert_eq!(
        st[0].summary,
        "eth0: all RX interrupts routed to CPU 1; interrupts during the window all on CPU 1, RPS off"
    );
    assert_eq!(
        st[0].rx_irqs.len(),
        1,
        "the output queue's line carries no receive work"
    );
    assert_eq!(
        st[1].summary,
        "eth1: 2 receive IRQ lines routed to CPUs [0, 1] (no NIC interrupts during the window), RPS steers everything to CPU 1"
    );
}
