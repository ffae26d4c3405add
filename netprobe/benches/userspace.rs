//! Userspace hot path: decode a ring-buffer record and render it as an NDJSON line.
//! Plain timing loop (no external harness); prints ns per event for each event kind, and the
//! heap allocations per event (a counting allocator wraps the system one).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

/// The system allocator, counting allocations.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

use netprobe::{
    kernel::{
        btf::DropReasons,
        kallsyms::{Symbolizer, SymbolsLoading},
    },
    model::{event::EventModel, owners::Owner},
    trace::output::Renderer,
};
use netprobe_common::{
    decode::{Encode, Event},
    DropEvent, EventHeader, EventKind, Flow, ReceiveEvent, RetransmitEvent, DROP_HAS_DEV,
    DROP_HAS_FLOW, DROP_HAS_PORTS, RX_FILLS_HOLE, RX_HAD_OOO,
};

const ITERATIONS: u32 = 500_000;

/// Decode, build the typed event (naming and classifying drops), render.
fn measure(
    name: &str,
    record: &[u8],
    (model, renderer): (&mut EventModel, &Renderer),
    owner: &Owner,
    json: bool,
) {
    // Warm up.
    for _ in 0..10_000 {
        let e = model.build(&Event::try_from(black_box(record)).unwrap());
        black_box(renderer.json_line(&e, Some(owner)));
    }
    // As the trace writes NDJSON: straight into its (reused) output buffer.
    let mut out: Vec<u8> = Vec::with_capacity(1 << 16);
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..ITERATIONS {
        let e = model.build(&Event::try_from(black_box(record)).unwrap());
        if json {
            out.clear();
            renderer.write_json(&mut out, &e, Some(owner)).unwrap();
            bytes += out.len();
        } else {
            bytes += renderer.text_line(&e, Some(owner)).len();
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / ITERATIONS as f64;
    let allocations =
        (ALLOCATIONS.load(Ordering::Relaxed) - allocations_before) as f64 / ITERATIONS as f64;
    // The NDJSON path's promise: nothing allocated per event once warm (the renderer's line
    // buffer, the model's drop sites and the output buffer are reused).
    assert!(
        !json || allocations == 0.0,
        "{name}: {allocations} allocations per event in steady state"
    );
    let decode_start = Instant::now();
    for _ in 0..ITERATIONS {
        black_box(Event::try_from(black_box(record)).unwrap());
    }
    let decode_ns = decode_start.elapsed().as_nanos() as f64 / ITERATIONS as f64;
    println!(
        "{name:<22} decode {decode_ns:>6.1} ns   decode+render {ns:>7.1} ns/event   ({:.0} B/line, {allocations:.1} allocations/event)",
        bytes as f64 / ITERATIONS as f64
    );
}

fn main() {
    // A kallsyms-sized symbol table, so lookups cost what they cost on a real host.
    let mut kallsyms = String::new();
    for i in 0..200_000u64 {
        kallsyms.push_str(&format!(
            "{:016x} t sym_{i}\n",
            0xffffffff81000000 + i * 0x40
        ));
    }
    let mut model = EventModel::new(
        DropReasons::default(),
        SymbolsLoading::loaded(Symbolizer::parse(&kallsyms)),
    );
    let renderer = Renderer::new(0);
    let flow = Flow::ipv4([198, 18, 0, 1], 40000, [198, 18, 0, 2], 5001);
    let retransmit = RetransmitEvent {
        header: EventHeader {
            kind: EventKind::Retransmit.id(),
            _pad0: 0,
            cpu: 1,
            ts_ns: 123_456_789,
        },
        flow,
        netns: 4026531840,
        segs: 2,
        bytes: 2896,
        seq: 1,
        state: 1,
        ..Default::default()
    }
    .encode();
    let mut ifname = [0u8; 16];
    ifname[..5].copy_from_slice(b"veth0");
    let drop = DropEvent {
        header: EventHeader {
            kind: EventKind::Drop.id(),
            _pad0: 0,
            cpu: 0,
            ts_ns: 123_456_789,
        },
        flow,
        location: 0xffffffff81234567,
        netns: 4026531840,
        reason: 12,
        ifindex: 2,
        protocol: 0x0800,
        ip_proto: 6,
        flags: DROP_HAS_FLOW | DROP_HAS_PORTS | DROP_HAS_DEV,
        ifname,
        sk_state: 0,
        _pad0: [0; 3],
        skb_iif: 0,
        sock_ino: 0,
    }
    .encode();
    // Events whose socket owner is known carry pid and comm.
    let owner = Owner {
        pid: 4242,
        comm: "iperf3".into(),
    };
    let peer = ReceiveEvent {
        header: EventHeader {
            kind: EventKind::PeerRetransmit.id(),
            _pad0: 0,
            cpu: 1,
            ts_ns: 123_456_789,
        },
        flow,
        netns: 4026531840,
        seq: 1000,
        len: 1448,
        rcv_nxt: 1000,
        ooo_end: 9000,
        class: RX_FILLS_HOLE,
        flags: RX_HAD_OOO,
        ..Default::default()
    }
    .encode();
    measure(
        "peer_retransmit (json)",
        &peer,
        (&mut model, &renderer),
        &owner,
        true,
    );
    measure(
        "retransmit (json)",
        &retransmit,
        (&mut model, &renderer),
        &owner,
        true,
    );
    measure("drop (json)", &drop, (&mut model, &renderer), &owner, true);
    measure(
        "retransmit (text)",
        &retransmit,
        (&mut model, &renderer),
        &owner,
        false,
    );
    measure("drop (text)", &drop, (&mut model, &renderer), &owner, false);
}
