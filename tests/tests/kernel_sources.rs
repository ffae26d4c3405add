//! netprobe's readers of the running kernel, against the running kernel: its BTF, namespace
//! lookups, socket owners from /proc, the ethtool ioctl and netlink dumps. (Moved here from
//! netprobe's unit tests, which stay independent of the machine they run on.) Read-only: no
//! namespace, no program; root sees every process's sockets.

use std::{
    net::TcpListener,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use netprobe::{
    kernel::{
        btf::{DropReasons, KernelBtf, VMLINUX_BTF},
        filter::{FilterError, FilterSpec},
    },
    model::owners::{self, OwnerCache},
    report::{ethtool, netlink, sockets},
};

/// The running kernel's drop reasons.
fn running_reasons() -> DropReasons {
    DropReasons::from_btf(&KernelBtf::load(Path::new(VMLINUX_BTF)).unwrap()).unwrap()
}

/// The running kernel's BTF (netprobe requires it): the layout resolves completely and the
/// reasons netprobe's tests rely on are present.
#[test]
fn running_kernel_btf_resolves() {
    let path = Path::new(VMLINUX_BTF);
    let btf = KernelBtf::load(path).unwrap();
    let layout = btf.kernel_layout().unwrap();
    assert!(layout.skb_cb > 0 && layout.skb_cb < 256);
    assert!(btf.enumerator("NET_RX_SOFTIRQ").is_some());
    assert!(btf.enumerator("TIMER_SOFTIRQ").is_some());
    let (byte, shift, bits) = btf
        .small_field_of("inet_connection_sock", "icsk_ca_state")
        .unwrap();
    assert!(byte > 0 && shift + bits <= 16, "{byte} {shift} {bits}");
    let reasons = DropReasons::from_btf(&btf).unwrap();
    assert!(reasons.value("NETFILTER_DROP").is_some());
    assert!(reasons.value("NO_SOCKET").is_some());
}

/// Unknown names are errors; a namespace given by path resolves (our own).
#[test]
fn bad_names_are_errors() {
    let reasons = running_reasons();
    let bad_reason = FilterSpec {
        reason: Some("NOPE".into()),
        ..Default::default()
    };
    assert_eq!(
        bad_reason.resolve(&reasons),
        Err(FilterError::Reason("NOPE".into()))
    );
    let bad_ns = FilterSpec {
        netns: Some("np-no-such-ns".into()),
        ..Default::default()
    };
    assert!(matches!(
        bad_ns.resolve(&reasons),
        Err(FilterError::Netns { .. })
    ));
    // A path works too: our own namespace.
    let own = FilterSpec {
        netns: Some("/proc/self/ns/net".into()),
        ..Default::default()
    };
    assert!(own.resolve(&reasons).unwrap().netns > 0);
}

fn socket_inode(fd: &impl AsRawFd) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap()
        .ino()
}

/// The owner cache's least interval between two scans of /proc (`MIN_RESCAN`).
const MIN_RESCAN: Duration = Duration::from_millis(100);

/// A miss right after a scan is not rescanned (no scan storm under a burst of events): a
/// socket opened after the cache's scan stays unknown until `MIN_RESCAN` has passed. Returns
/// the cache and that socket, once a try looked it up inside the interval.
fn cache_that_missed_a_new_socket() -> (OwnerCache, TcpListener) {
    for _ in 0..5 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let started = Instant::now();
        let mut cache = OwnerCache::new();
        let owner = cache
            .lookup(socket_inode(&listener))
            .expect("found by the first scan");
        assert_eq!(owner.pid, std::process::id());
        let late = TcpListener::bind("127.0.0.1:0").unwrap();
        let miss = cache.lookup(socket_inode(&late));
        // The scan began after `started`: if this is inside the interval, so was the lookup.
        if started.elapsed() < MIN_RESCAN {
            assert_eq!(miss, None, "a miss right after a scan rescanned /proc");
            return (cache, late);
        }
    }
    panic!("no try looked a socket up within {MIN_RESCAN:?} of a scan");
}

#[test]
fn our_own_socket_is_ours_and_misses_are_rescanned_at_most_every_100ms() {
    let (mut cache, late) = cache_that_missed_a_new_socket();
    assert!(cache.lookup(0).is_none());
    // …and after MIN_RESCAN the miss is scanned for again, and found.
    thread::sleep(MIN_RESCAN + Duration::from_millis(10));
    let inode = socket_inode(&late);
    let owner = cache.lookup(inode).expect("found by the rescan");
    assert_eq!(owner.pid, std::process::id());
    let (found, _) = owners::scan(&|i| i == inode);
    assert_eq!(found.len(), 1);
}

#[test]
fn loopback_has_a_driver_answer_or_a_clear_error() {
    // Loopback has no ethtool driver info on most kernels: an error, never a panic.
    match ethtool::read_nic("lo") {
        Ok(info) => assert!(info.rings.is_none()),
        Err(e) => assert!(e.raw_os_error().is_some()),
    }
    assert!(ethtool::read_nic("np-no-such-if0").is_err());
}

/// Dumps work unprivileged in any namespace: the loopback qdisc list and our own socket.
#[test]
fn dumps_qdiscs_and_finds_our_own_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sockets = netlink::inet_sockets().unwrap();
    let ours = sockets
        .iter()
        .find(|s| s.protocol == libc::IPPROTO_TCP as u8 && s.local_port == port && s.state == 10)
        .expect("our listener");
    assert_eq!(ours.recv_queue, 0);
    assert!(ours.send_queue > 0, "backlog limit reported for listeners");
    assert!(ours.inode > 0);
    // SK_MEMINFO answered: the listener's buffers and its own drop counter (none yet).
    let memory = ours.memory.expect("SK_MEMINFO for a full socket");
    assert!(memory.rcvbuf > 0 && memory.sndbuf > 0, "{memory:?}");
    assert_eq!(memory.drops, 0);
    // Every interface has a qdisc entry (noqueue at least is not always dumped, but the
    // call itself must succeed).
    netlink::qdiscs().unwrap();
}

#[test]
fn finds_our_own_sockets_owner() {
    const TCP_LISTEN: u8 = 10;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sockets = netlink::inet_sockets().unwrap();
    let (owners, _) = sockets::socket_owners(&sockets::inodes_of_interest(
        &sockets::SocketWindow::new(None, &sockets),
    ));
    let ours = sockets
        .iter()
        .find(|s| s.local_port == port && s.state == TCP_LISTEN)
        .unwrap();
    let who = &owners[&ours.inode];
    assert!(who.iter().any(|o| o.pid == std::process::id()), "{who:?}");
}
