//! Traffic between test namespaces: one TCP sink for every test, bulk transfers, UDP bursts.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use crate::{pin_to_cpu, Link, Netns};

/// A TCP server in a namespace that accepts one connection and reads it until the peer's FIN.
pub struct TcpSink {
    received: JoinHandle<u64>,
}

/// How a [`TcpSink`] runs.
#[derive(Clone, Copy, Default)]
pub struct SinkOptions {
    /// The CPU its thread is pinned to (before it binds).
    pub cpu: Option<usize>,
    /// Answer every read with one byte (the first it read), for request/response traffic.
    /// The client then judges the exchange: a read error ends the sink like the peer's FIN.
    pub reply: bool,
}

impl TcpSink {
    /// Listens on `to`'s port, on every address of its family in `ns`, and returns once it
    /// listens: a client may connect right away.
    pub fn start(ns: &Netns, to: SocketAddr) -> Self {
        Self::with(ns, to, SinkOptions::default())
    }

    /// The same, with its thread pinned to one CPU.
    pub fn pinned(ns: &Netns, to: SocketAddr, cpu: usize) -> Self {
        Self::with(
            ns,
            to,
            SinkOptions {
                cpu: Some(cpu),
                ..SinkOptions::default()
            },
        )
    }

    pub fn with(ns: &Netns, to: SocketAddr, options: SinkOptions) -> Self {
        let (ready_tx, ready_rx) = mpsc::channel();
        let received = ns.spawn(move || {
            if let Some(cpu) = options.cpu {
                pin_to_cpu(cpu);
            }
            let any = if to.is_ipv6() { "::" } else { "0.0.0.0" };
            let listener = TcpListener::bind(SocketAddr::new(any.parse().unwrap(), to.port()))
                .expect("bind sink");
            ready_tx.send(()).unwrap();
            let (mut conn, _) = listener.accept().expect("accept");
            read_to_fin(&mut conn, options.reply)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("sink ready");
        Self { received }
    }

    /// Waits for the peer's FIN; the bytes received.
    pub fn received(self) -> u64 {
        self.received.join().expect("sink")
    }
}

fn read_to_fin(conn: &mut TcpStream, reply: bool) -> u64 {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => {
                total += n as u64;
                if reply {
                    // The peer may have gone already; the bytes it sent are what counts.
                    let _ = conn.write_all(&buf[..1]);
                }
            }
            Err(_) if reply => return total,
            Err(e) => panic!("sink read: {e}"),
        }
    }
}

/// Closes our sending side, then reads until the peer's FIN: it comes only after the peer
/// has read ours, so everything we sent, FIN included, is then acknowledged.
pub fn close_and_wait_for_fin(conn: &mut TcpStream) {
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).expect("read until FIN");
}

/// Result of a bulk transfer.
pub struct Transfer {
    pub local: SocketAddr,
    pub bytes: u64,
}

/// Sends `bytes` from a thread in `client` to a sink in `server` listening on `to`, then closes
/// both ends cleanly (FIN both ways) so that no retransmit can follow the transfer.
pub fn bulk_transfer(client: &Netns, server: &Netns, to: SocketAddr, bytes: u64) -> Transfer {
    transfer(client, server, to, bytes, None)
}

/// `bulk_transfer` with both ends kept on one CPU. veth delivers through the transmitting
/// CPU's backlog, and TCP also transmits from the CPU where the receiver freed its skbs (TSQ);
/// packets sent from two CPUs can overtake each other, and the receiver's SACKs then trigger
/// spurious fast retransmits (real, and counted as such).
pub fn bulk_transfer_pinned(
    client: &Netns,
    server: &Netns,
    to: SocketAddr,
    bytes: u64,
    cpu: usize,
) -> Transfer {
    transfer(client, server, to, bytes, Some(cpu))
}

/// How the sending thread of a transfer is placed.
#[derive(Clone, Copy)]
enum SenderCpu {
    Free,
    Pinned(usize),
    /// Moved between CPU 0 and CPU 1 every few writes: veth delivers through the transmitting
    /// CPU's backlog, so the segments of one flow overtake each other (reordering, no loss).
    Alternating,
}

/// `bulk_transfer` with the sender moved between the two CPUs as it writes: a clean transfer
/// whose segments arrive reordered (see [`bulk_transfer_pinned`]).
pub fn bulk_transfer_across_cpus(
    client: &Netns,
    server: &Netns,
    to: SocketAddr,
    bytes: u64,
) -> Transfer {
    transfer_with(client, server, to, bytes, SenderCpu::Alternating)
}

fn transfer(
    client: &Netns,
    server: &Netns,
    to: SocketAddr,
    bytes: u64,
    pin: Option<usize>,
) -> Transfer {
    let sender = pin.map_or(SenderCpu::Free, SenderCpu::Pinned);
    transfer_with(client, server, to, bytes, sender)
}

fn transfer_with(
    client: &Netns,
    server: &Netns,
    to: SocketAddr,
    bytes: u64,
    sender_cpu: SenderCpu,
) -> Transfer {
    let pin = match sender_cpu {
        SenderCpu::Pinned(cpu) => Some(cpu),
        _ => None,
    };
    let sink = TcpSink::with(
        server,
        to,
        SinkOptions {
            cpu: pin,
            ..SinkOptions::default()
        },
    );
    let sender = client.spawn(move || {
        if let Some(cpu) = pin {
            pin_to_cpu(cpu);
        }
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(20)).expect("connect");
        let local = conn.local_addr().unwrap();
        let chunk = vec![0x5au8; 1 << 16];
        let mut sent = 0u64;
        let mut writes = 0usize;
        while sent < bytes {
            if let SenderCpu::Alternating = sender_cpu {
                if writes.is_multiple_of(4) {
                    pin_to_cpu((writes / 4) % 2);
                }
            }
            writes += 1;
            let n = chunk.len().min((bytes - sent) as usize);
            conn.write_all(&chunk[..n]).expect("send");
            sent += n as u64;
        }
        close_and_wait_for_fin(&mut conn);
        local
    });
    let local = sender.join().expect("sender");
    let received = sink.received();
    assert_eq!(received, bytes, "sink received everything");
    Transfer { local, bytes }
}

/// A UDP socket bound to `at` in `ns` whose application asked for a `bytes` receive buffer
/// (SO_RCVBUF; the kernel doubles it), for a test to hold and never read.
pub fn udp_socket_with_rcvbuf(ns: &Netns, at: SocketAddr, bytes: libc::c_int) -> UdpSocket {
    ns.run(move || {
        let socket = UdpSocket::bind(at).expect("bind");
        // SAFETY: setsockopt on a descriptor this thread owns, with a c_int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &bytes as *const _ as *const _,
                std::mem::size_of::<libc::c_int>() as _,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUF");
        socket
    })
}

/// Sends `count` datagrams of `payload` from a thread in `ns` to `to` (IPv4 or IPv6); returns
/// how many the kernel accepted (a test that expects every one asserts it).
pub fn send_udp(ns: &Netns, to: SocketAddr, payload: &[u8], count: usize) -> usize {
    let payload = payload.to_vec();
    ns.run(move || {
        let udp = UdpSocket::bind(if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }).unwrap();
        (0..count)
            .filter(|_| udp.send_to(&payload, to).is_ok())
            .count()
    })
}

/// `count` UDP datagrams from `link.a`, pinned to CPU 0, to the discard port of `link.b`.
pub fn udp_flood_from_cpu0(link: &Link, count: usize) {
    let to = link.b_port(9);
    link.a.run(move || {
        pin_to_cpu(0);
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..count {
            let _ = udp.send_to(b"rps", to);
        }
    });
}
