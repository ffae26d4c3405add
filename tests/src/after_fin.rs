//! Duplicates that arrive after the receiver has closed its side (FIN-WAIT-2): `tcp_probe` does
//! not see them (it fires on established sockets only), TCP drops them as old data and counts
//! each in DelayedACKLost. Made on purpose rather than by chance: the receiver shuts down its
//! side, then every segment it sends back (its ACKs) is dropped while the sender sends, so the
//! sender's timers re-send data the receiver has. Shared by the host test and the kernel
//! matrix.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    thread::sleep,
    time::Duration,
};

use crate::{Link, NftTable};

/// The scenario on its own link: made by `new`, run (with a trace attached) by `run`.
pub struct AfterFin {
    pub link: Link,
    pub port: u16,
    /// The receiver's DelayedACKLost over the run.
    pub delayed_ack_lost: u64,
}

impl AfterFin {
    pub fn new(tag: &str, subnet: u8, port: u16) -> AfterFin {
        AfterFin {
            link: Link::new(tag, subnet),
            port,
            delayed_ack_lost: 0,
        }
    }

    pub fn run(&mut self) {
        let (link, port) = (&self.link, self.port);
        let addr = link.b_port(port);
        let listener = link.b.run(move || TcpListener::bind(addr).expect("bind"));
        let before = link.b.netstat("TcpExt", "DelayedACKLost");
        let mut sender = link
            .a
            .run(move || TcpStream::connect(addr).expect("connect"));
        let (mut receiver, _) = listener.accept().expect("accept");
        receiver.shutdown(Shutdown::Write).expect("shutdown");
        // The sender has the FIN once it reads end-of-file, and acknowledges it at once: the
        // receiver is then in FIN-WAIT-2, where its data still arrives through tcp_data_queue.
        let mut byte = [0u8; 1];
        assert_eq!(sender.read(&mut byte).expect("read"), 0);
        sleep(Duration::from_millis(100));
        let blackout = NftTable::input(&link.a, "np_afin", &format!("tcp sport {port} drop"));
        let data = vec![0x42u8; 4000];
        sender.write_all(&data).expect("send");
        let mut got = vec![0u8; data.len()];
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        receiver.read_exact(&mut got).expect("receive");
        // The sender's loss probe and RTOs (≥ 200 ms, doubling) re-send what the receiver has.
        sleep(Duration::from_millis(1500));
        blackout.delete();
        drop(sender);
        drop(receiver);
        assert!(
            link.a.wait_tcp_quiet(port, Duration::from_secs(10)),
            "the sender never went quiet"
        );
        assert!(link.b.wait_tcp_quiet(port, Duration::from_secs(10)));
        self.delayed_ack_lost = link.b.netstat("TcpExt", "DelayedACKLost") - before;
    }
}
