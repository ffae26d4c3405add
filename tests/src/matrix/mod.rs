//! The kernel matrix: the same scenario set (`scenarios`) on every kernel netprobe supports,
//! judged here, on the host, against what each kernel can and cannot do.

use serde_json::Value;

mod cost;
mod count;
mod line;
mod monitor;
pub mod scenarios;
mod sockets;
mod spurious;
mod storm;

/// The verifier's instruction limit, and the margin every program must keep below it.
pub const VERIFIER_LIMIT: u64 = 1_000_000;
pub const VERIFIER_BUDGET: u64 = VERIFIER_LIMIT / 4;

/// What a kernel is expected to offer.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// `enum skb_drop_reason` and the `reason` argument of `kfree_skb` (Linux ≥ 5.17).
    pub drop_reasons: bool,
    /// fentry/fexit or kprobes work (Debian's kernels; not this project's CI host). `None`:
    /// not known in advance (the host), only a reason is required when they are inactive.
    pub function_hooks: Option<bool>,
    /// `bpf_prog_info.verified_insns` (Linux ≥ 5.16).
    pub verified_insns: bool,
    /// `tcp_retransmit_skb` fires for failed attempts, with `err` (Linux ≥ 6.17): the
    /// socket-state hook (attached everywhere) also classifies them.
    pub retransmit_outcomes: bool,
}

impl Expect {
    pub fn for_kernel(major: u32, minor: u32, function_hooks: Option<bool>) -> Expect {
        let at_least = |a: u32, b: u32| (major, minor) >= (a, b);
        Expect {
            drop_reasons: at_least(5, 17),
            function_hooks,
            verified_insns: at_least(5, 16),
            retransmit_outcomes: at_least(6, 17),
        }
    }
}

/// Collects failed checks with their numbers.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn that(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(u64::MAX)
}

/// Judges one kernel's results; `Ok` is the one-line summary for the test output.
pub fn check(results: &Value, expect: Expect) -> Result<String, Vec<String>> {
    let mut c = Checks::default();
    c.that(results["success"] == true, || {
        format!("netprobe trace failed: {}", results["stderr_tail"])
    });
    let verifier = check_hooks(&mut c, &results["hooks"], expect);
    check_events(&mut c, results);
    check_lossy(&mut c, &results["lossy"], expect);
    check_handshakes(&mut c, results);
    check_backlog(&mut c, &results["backlog"], expect);
    check_tail(
        &mut c,
        "tail",
        &results["tail"]["client"],
        tlp_hooked(&results["hooks"]),
    );
    check_kprobes(&mut c, &results["kprobe"], expect);
    check_ack_loss(&mut c, &results["ack_loss"], expect);
    check_after_fin(&mut c, &results["after_fin"], expect);
    let reasons = &results["reasons"];
    c.that(
        reasons["ok"] == true
            && reasons["netfilter_drop"] == expect.drop_reasons
            && (expect.drop_reasons
                || reasons["stderr"]
                    .as_str()
                    .is_some_and(|e| e.contains("records no drop reasons"))),
        || format!("netprobe reasons: {reasons}"),
    );
    sockets::check(&mut c, &results["udp_socket"]);
    spurious::check(&mut c, &results["spurious"]);
    monitor::check(&mut c, &results["monitor"]);
    storm::check(&mut c, &results["storm"]);
    cost::check(&mut c, &results["cost"]);
    count::check(&mut c, &results["count"], expect);
    c.that(results["report"]["ok"] == true, || {
        format!(
            "netprobe report --json failed: {}",
            results["report"]["error"]
        )
    });
    c.that(
        results["programs_left"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        || {
            format!(
                "programs left loaded after exit: {}",
                results["programs_left"]
            )
        },
    );
    c.that(
        results["programs_left_after_kill"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        || {
            format!(
                "programs left loaded after kill -9: {}",
                results["programs_left_after_kill"]
            )
        },
    );
    if !c.0.is_empty() {
        return Err(c.0);
    }
    Ok(line::summary_line(results, &verifier))
}

const CORE_HOOKS: &[&str] = &[
    "tcp:tcp_retransmit_skb",
    "tcp:tcp_retransmit_synack",
    "skb:kfree_skb",
    "tcp:tcp_probe",
    "irq:softirq_entry",
    "irq:softirq_exit",
    "napi:napi_poll",
];
const FUNCTION_HOOKS: &[&str] = &[
    "function:tcp_send_loss_probe",
    "function:tcp_retransmit_timer",
];
/// Hooked only where drops would not name their socket otherwise.
const STATE_PROCESS_HOOK: &str = "function:tcp_rcv_state_process";

/// Every hook active (or, for the function hooks on a kernel without them, inactive with a
/// reason), every program well inside the verifier's limit. Returns the verifier summary.
fn check_hooks(c: &mut Checks, hooks: &Value, expect: Expect) -> String {
    let hooks = hooks.as_array().cloned().unwrap_or_default();
    let find = |name: &str| hooks.iter().find(|h| h["hook"] == name).cloned();
    for name in CORE_HOOKS {
        match find(name) {
            Some(h) => c.that(h["active"] == true, || {
                format!("{name} inactive: {}", h["detail"])
            }),
            None => c.that(false, || format!("{name} not reported")),
        }
    }
    let drop_detail = find("skb:kfree_skb")
        .map(|h| h["detail"].to_string())
        .unwrap_or_default();
    c.that(
        drop_detail.contains("records no drop reasons") != expect.drop_reasons,
        || {
            format!(
                "kfree_skb detail does not match drop_reasons={}: {drop_detail}",
                expect.drop_reasons
            )
        },
    );
    // The socket-state hook is attached on every kernel (the end of handshakes); it also
    // classifies failed retransmits where they fire the tracepoint (6.17+), as the retransmit
    // hook's detail says.
    match find("sock:inet_sock_set_state") {
        Some(h) => c.that(h["active"] == true, || {
            format!("sock:inet_sock_set_state inactive: {}", h["detail"])
        }),
        None => c.that(false, || "sock:inet_sock_set_state not reported".into()),
    }
    let rtx_detail = find("tcp:tcp_retransmit_skb")
        .and_then(|h| h["detail"].as_str().map(String::from))
        .unwrap_or_default();
    // Spurious retransmits are told from loss by the socket's D-SACK counter on every kernel.
    c.that(
        rtx_detail.contains("spurious retransmits from the socket's tcp_sock.dsack_dups"),
        || format!("tcp_retransmit_skb reads no dsack_dups: {rtx_detail}"),
    );
    let classified = rtx_detail.contains("outcome of failed attempts from");
    c.that(classified == expect.retransmit_outcomes, || {
        format!(
            "retransmit outcomes classified={classified}, expected {}: {rtx_detail}",
            expect.retransmit_outcomes
        )
    });
    c.that(classified || rtx_detail.contains("no err argument"), || {
        format!("failed retransmits unclassified without the reason: {rtx_detail}")
    });
    for name in FUNCTION_HOOKS {
        let Some(h) = find(name) else {
            c.that(false, || format!("{name} not reported"));
            continue;
        };
        let active = h["active"] == true;
        c.that(
            expect.function_hooks.is_none_or(|want| want == active),
            || {
                format!(
                    "{name} active={active}, expected {:?}: {}",
                    expect.function_hooks, h["detail"]
                )
            },
        );
        c.that(
            active || h["detail"].as_str().is_some_and(|d| d.len() > 20),
            || format!("{name} inactive without a reason"),
        );
    }
    check_state_process_hook(c, find(STATE_PROCESS_HOOK), &drop_detail, expect);
    let mut parts = Vec::new();
    for h in hooks.iter().filter(|h| h["active"] == true) {
        let program = h["program"].as_str().unwrap_or("?");
        let load_ms = h["load_ms"].as_f64().unwrap_or(f64::NAN);
        match h["verified_insns"].as_u64() {
            Some(insns) => {
                c.that(insns < VERIFIER_BUDGET, || {
                    format!("{program}: {insns} verified instructions, over ¼ of the 1M limit")
                });
                parts.push(format!("{program} {insns} insns/{load_ms:.0} ms"));
            }
            None => {
                c.that(!expect.verified_insns, || {
                    format!("{program}: no verified_insns")
                });
                parts.push(format!("{program} {load_ms:.0} ms"));
            }
        }
    }
    let counted = if expect.verified_insns {
        "verified insns (limit 1M)/load+attach"
    } else {
        "load+attach (verified_insns arrived in 5.16)"
    };
    format!("{counted}: {}", parts.join(", "))
}

fn check_events(c: &mut Checks, results: &Value) {
    let events = &results["events"];
    for kind in ["retransmit", "drop", "receive"] {
        c.that(n(&events[kind]["lost"]) == 0, || {
            format!("{kind} events lost: {}", events[kind])
        });
    }
    c.that(n(&events["decode_errors"]) == 0, || {
        format!("decode errors: {events}")
    });
    let skipped: u64 = results["kernel_skipped"]
        .as_object()
        .map(|o| o.values().map(n).sum())
        .unwrap_or(0);
    c.that(skipped == 0, || {
        format!("kernel skipped hooks: {}", results["kernel_skipped"])
    });
}

fn check_lossy(c: &mut Checks, lossy: &Value, expect: Expect) {
    let sender = &lossy["sender"];
    let segs = n(&sender["segs"]);
    let counter = n(&sender["counters"]["RetransSegs"]);
    // A bulk transfer's withheld retransmit may carry several segments: at least one each.
    let withheld = n(&sender["withheld"]);
    let segs_ok =
        segs <= counter && counter - segs >= withheld && (withheld > 0 || segs == counter);
    c.that(segs > 0 && segs_ok, || {
        format!("lossy: retransmitted segments {segs} (+{withheld} withheld attempts) vs RetransSegs {counter}")
    });
    let rx = &lossy["receiver"];
    let duplicates = n(&rx["duplicate"]).saturating_add(n(&rx["duplicate_after_fin"]));
    let lost = n(&rx["DelayedACKLost"]);
    let probes_withheld = n(&rx["withheld"]);
    c.that(
        duplicates <= lost && lost - duplicates <= probes_withheld,
        || {
            format!(
                "lossy: duplicates {} (+{} after the FIN) vs DelayedACKLost {}",
                rx["duplicate"], rx["duplicate_after_fin"], rx["DelayedACKLost"]
            )
        },
    );
    let ofo = n(&rx["TCPOFOQueue"]) + n(&rx["TCPOFODrop"]);
    let out_of_order = n(&rx["out_of_order"]);
    c.that(
        out_of_order > 0 && out_of_order <= ofo && ofo - out_of_order <= probes_withheld,
        || format!("lossy: out-of-order {out_of_order} (+ at most {probes_withheld} withheld) vs TCPOFOQueue+TCPOFODrop {ofo}"),
    );
    c.that(n(&rx["fills_hole"]) > 0, || {
        "lossy: no fills_hole at the receiver".into()
    });
    let drops = &lossy["drops"];
    c.that(
        n(&drops["netfilter_ingress"]) > 0
            && n(&drops["netfilter_ingress"]) == n(&drops["nft_counter"])
            && n(&drops["events"]) == n(&drops["nft_counter"]),
        || format!("lossy: netfilter ingress drops {drops} vs the nft counter"),
    );
    let want = if expect.drop_reasons {
        "NETFILTER_DROP"
    } else {
        "UNRECORDED"
    };
    c.that(drops["reasons"] == serde_json::json!([want]), || {
        format!(
            "lossy: drop reasons {} (expected [{want}])",
            drops["reasons"]
        )
    });
    // The flow's other drops at the receiver are TCP's own (duplicates of spurious
    // retransmits), or a late segment that found the receiver's socket gone after the
    // teardown (NO_SOCKET): never a firewall drop put in another layer.
    let misplaced = drops["other_reasons"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r == "NETFILTER_DROP"));
    let other_layers_ok = drops["other_layers"].as_array().is_some_and(|layers| {
        layers.iter().all(|l| {
            l.as_str()
                .is_some_and(|l| l.starts_with("tcp/") || l == "socket/NO_SOCKET")
        })
    });
    c.that(!misplaced && other_layers_ok, || {
        format!(
            "lossy: drops of the flow outside netfilter: {}",
            drops["other_layers"]
        )
    });
}

/// Backlog drops: the drop events equal softnet_stat's `dropped` over the same window, host
/// wide, where the kernel names them (CPU_BACKLOG); before drop reasons the row says why not.
fn check_backlog(c: &mut Checks, backlog: &Value, expect: Expect) {
    let (events, softnet) = (n(&backlog["drop_events"]), n(&backlog["softnet_dropped"]));
    c.that(softnet > 0 && softnet != u64::MAX, || {
        format!("backlog: softnet_stat counted no drop: {backlog}")
    });
    if expect.drop_reasons {
        c.that(backlog["must_match"] == true && events == softnet, || {
            format!("backlog: drop events {events} vs softnet_stat dropped {softnet}: {backlog}")
        });
    } else {
        c.that(
            backlog["must_match"] == false
                && backlog["not_exact_because"]
                    .as_str()
                    .is_some_and(|w| w.contains("no drop reasons")),
            || format!("backlog without drop reasons must say why it is not exact: {backlog}"),
        );
    }
}

fn check_handshakes(c: &mut Checks, results: &Value) {
    let exact = |c: &mut Checks, who: &str, side: &Value, kind: &str| {
        let events = n(&side["kinds"][kind]);
        let counter = n(&side["counters"]["TCPSynRetrans"]);
        let withheld = n(&side["withheld"]);
        c.that(events + withheld > 0 && accounted(events, counter, withheld), || {
            format!("{who}: {kind} retransmits {events} (+{withheld} withheld) vs TCPSynRetrans {counter}: {side}")
        });
        let segs = n(&side["segs"]);
        c.that(
            accounted(segs, n(&side["counters"]["RetransSegs"]), withheld),
            || {
                format!(
                    "{who}: segments {segs} (+{withheld} withheld) vs RetransSegs {}",
                    side["counters"]["RetransSegs"]
                )
            },
        );
    };
    exact(c, "syn client", &results["syn"]["client"], "syn");
    exact(c, "synack server", &results["synack"]["server"], "synack");
    exact(c, "synack client", &results["synack"]["client"], "syn");
    // Each scenario's one connect gave up: its flow's handshake failed, once. The server's
    // request never got its ACK: its flow's handshake never completed.
    handshake_ends(c, "syn client", &results["syn"]["client"], "failed", 1);
    handshake_ends(
        c,
        "synack client",
        &results["synack"]["client"],
        "failed",
        1,
    );
    handshake_ends(
        c,
        "synack server",
        &results["synack"]["server"],
        "pending",
        0,
    );
}

/// The handshake end of the flows of one side (the summary's `handshake`): every flow that
/// retransmitted its SYN or SYN-ACK says `end`, and `failed` attempts failed in all. A flow
/// whose every retransmit the kernel withheld from BPF (see `witness`) has no entry at all.
fn handshake_ends(c: &mut Checks, who: &str, side: &Value, end: &str, failed: u64) {
    let flows: Vec<&Value> = side["flows"]
        .as_array()
        .map(|f| f.iter().collect())
        .unwrap_or_default();
    let withheld = n(&side["withheld"]);
    c.that(!flows.is_empty() || withheld > 0, || {
        format!("{who}: no flow retransmitted: {side}")
    });
    for f in &flows {
        c.that(f["handshake"]["end"] == end, || {
            format!("{who}: handshake {} , expected {end}: {f}", f["handshake"])
        });
        c.that(f["handshake"]["completed"] == 0, || {
            format!("{who}: a blocked handshake completed: {f}")
        });
    }
    let total: u64 = flows.iter().map(|f| n(&f["handshake"]["failed"])).sum();
    c.that(
        total == failed || (flows.is_empty() && withheld > 0),
        || format!("{who}: {total} failed handshakes, expected {failed}: {side}"),
    );
}

/// Events that are the kernel's counter exactly, but for the firings the kernel ran no
/// program for (`withheld`, witnessed by ftrace: see `witness`), one attempt or segment each.
fn accounted(events: u64, counter: u64, withheld: u64) -> bool {
    events <= counter && counter - events == withheld
}

/// `tcp_rcv_state_process` is hooked exactly where drops have reasons but no `rx_sk` (the
/// drop hook then says so), wherever function hooks work; elsewhere it says why not.
fn check_state_process_hook(c: &mut Checks, h: Option<Value>, drop_detail: &str, expect: Expect) {
    let Some(h) = h else {
        return c.that(false, || format!("{STATE_PROCESS_HOOK} not reported"));
    };
    let active = h["active"] == true;
    let needed = drop_detail.contains("no rx_sk argument");
    if let Some(hooks_work) = expect.function_hooks.or(Some(false).filter(|_| !needed)) {
        c.that(active == (needed && hooks_work), || {
            format!(
                "{STATE_PROCESS_HOOK} active={active}, needed={needed}: {}",
                h["detail"]
            )
        });
    }
    c.that(
        active || h["detail"].as_str().is_some_and(|d| d.len() > 20),
        || format!("{STATE_PROCESS_HOOK} inactive without a reason"),
    );
}

/// How the timer functions were hooked, or that they were not.
fn function_hook_method(hooks: &Value) -> String {
    hooks
        .as_array()
        .and_then(|hooks| {
            hooks
                .iter()
                .find(|h| h["hook"] == "function:tcp_send_loss_probe" && h["active"] == true)
        })
        .map_or("inferred (no function hooks)".into(), |h| {
            format!("via {}", h["attach"].as_str().unwrap_or("?"))
        })
}

/// Whether the tail-loss probe was hooked in this run.
fn tlp_hooked(hooks: &Value) -> bool {
    hooks.as_array().is_some_and(|hooks| {
        hooks
            .iter()
            .any(|h| h["hook"] == "function:tcp_send_loss_probe" && h["active"] == true)
    })
}

/// ACKs lost: the duplicates the server receives equal its DelayedACKLost, and every drop of
/// them by TCP carries the server's namespace, on kernels without `rx_sk` too. Linux 5.10
/// frees them with `__kfree_skb` (no tracepoint): none is seen there.
fn check_ack_loss(c: &mut Checks, acks: &Value, expect: Expect) {
    let (dups, lost) = (n(&acks["duplicates"]), n(&acks["DelayedACKLost"]));
    let late = acks["late_duplicates"]
        .as_array()
        .map_or(0, |l| l.len() as u64);
    // A withheld tcp_probe firing may have been a duplicate or not: a bound by those only.
    let withheld = n(&acks["withheld_at_server"]);
    let seen = dups + late;
    c.that(dups > 0 && seen <= lost && lost - seen <= withheld, || {
        format!("ack loss: duplicates {dups} + {late} past FIN (+ at most {withheld} withheld) vs DelayedACKLost {lost}: {acks}")
    });
    let drops = n(&acks["tcp_drops"]);
    c.that(drops == n(&acks["tcp_drops_in_server_netns"]), || {
        format!("ack loss: TCP drops without the server's netns: {acks}")
    });
    c.that(!expect.drop_reasons || drops > 0, || {
        format!("ack loss: no TCP-layer drop of the duplicates seen: {acks}")
    });
}

/// Duplicates after the receiver's FIN: with drop reasons, every one a drop of the receiver's
/// FIN_WAIT2 socket, and with the established ones exactly DelayedACKLost, but for the drops
/// the kernel ran no program for (`withheld`, witnessed by ftrace: see `witness`; none
/// without a witness). Linux 5.10 frees them with `__kfree_skb` (no tracepoint): only the
/// scenario itself is checked there.
fn check_after_fin(c: &mut Checks, after_fin: &Value, expect: Expect) {
    let lost = n(&after_fin["DelayedACKLost"]);
    c.that(lost >= 2, || {
        format!("after FIN: the scenario made no duplicates: {after_fin}")
    });
    if !expect.drop_reasons {
        return;
    }
    let old = n(&after_fin["old_drops"]);
    c.that(old >= 2 && old == n(&after_fin["in_fin_wait2"]), || {
        format!("after FIN: drops of old data not all of the FIN_WAIT2 socket: {after_fin}")
    });
    let withheld = after_fin["withheld"].as_u64().unwrap_or(0);
    c.that(
        old + n(&after_fin["duplicate_established"]) + withheld == lost,
        || format!("after FIN: duplicates (+{withheld} withheld) vs DelayedACKLost: {after_fin}"),
    );
}

/// The second trace, with `--function-hooks kprobe`: on kernels with function hooks the
/// kprobe pair attaches and the tail loss is attributed exactly through it; elsewhere both
/// are inactive with a reason.
fn check_kprobes(c: &mut Checks, run: &Value, expect: Expect) {
    c.that(run["success"] == true, || {
        "the --function-hooks kprobe trace failed".into()
    });
    let hooks = run["hooks"].as_array().cloned().unwrap_or_default();
    for name in FUNCTION_HOOKS {
        let h = hooks.iter().find(|h| h["hook"] == *name);
        let method = h.map(|h| h["attach"].clone()).unwrap_or(Value::Null);
        let active = h.is_some_and(|h| h["active"] == true);
        c.that(
            expect.function_hooks.is_none_or(|want| want == active),
            || format!("--function-hooks kprobe: {name} active={active} ({method})"),
        );
        c.that(!active || method == "kprobe/kretprobe", || {
            format!("--function-hooks kprobe: {name} attached by {method}")
        });
    }
    check_tail(
        c,
        "tail (kprobes)",
        &run["tail"]["client"],
        tlp_hooked(&run["hooks"]),
    );
}

fn check_tail(c: &mut Checks, what: &str, client: &Value, hooked: bool) {
    let counters = &client["counters"];
    let tlp = n(&client["kinds"]["tlp"]);
    let probes = n(&counters["TCPLossProbes"]);
    // With the probe hooked every probe that retransmitted is named, and in this blackout no
    // probe has new data to send instead: equal. Inferred, it is a bound.
    let withheld = n(&client["withheld"]);
    let tlp_ok = tlp <= probes && (!hooked || probes - tlp <= withheld);
    c.that((tlp > 0 || withheld > 0) && tlp_ok, || {
        format!("{what}: TLP retransmits {tlp} vs TCPLossProbes {probes}: {client}")
    });
    let rto = n(&client["rto_timer"]);
    let timeouts = n(&counters["TCPTimeouts"]);
    c.that(rto > 0 && rto <= timeouts, || {
        format!("{what}: RTO timer retransmits {rto} vs TCPTimeouts {timeouts}")
    });
    c.that(
        accounted(n(&client["segs"]), n(&counters["RetransSegs"]), withheld),
        || {
            format!(
                "{what}: segments {} (+{withheld} withheld) vs RetransSegs {}: {client}",
                client["segs"], counters["RetransSegs"]
            )
        },
    );
}
