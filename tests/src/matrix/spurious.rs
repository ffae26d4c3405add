//! Spurious retransmits on every kernel, made deterministic: the client's input drops the
//! server's segments for a second, so the client re-sends data the server already has, and the
//! server answers each copy with a D-SACK (dropped too, but the first after the blackout). Once
//! the client has counted it, a second, real loss makes the client retransmit again, and that
//! retransmit reads the socket's `tcp_sock.dsack_dups`: the flow's `dsacked_segs` must show the
//! D-SACK it received.

use std::{
    io::{Read, Write},
    net::TcpStream,
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::Checks;
use crate::{Link, NftTable, TcpSink, TraceOutput};

const PORT: u16 = 5071;

pub struct Spurious {
    link: Link,
}

impl Spurious {
    pub fn run() -> Spurious {
        let link = Link::new("mxd", 71);
        link.static_neighbours();
        let to = link.b_port(PORT);
        // A sink that only reads: while the client's input is dark the server has nothing
        // of its own to re-send, so the only answer to the client's re-sent copies is a
        // D-SACK, and the first one after the blackout reaches the client.
        let server = TcpSink::start(&link.b, to);
        let (client_ns, server_ns) = (link.a.shared(), link.b.shared());
        let sent = link.a.run(move || {
            let mut conn = TcpStream::connect(to).expect("connect");
            conn.set_nodelay(true).unwrap();
            for _ in 0..20 {
                conn.write_all(b"x").unwrap();
                thread::sleep(Duration::from_millis(5));
            }
            let acks = NftTable::input(&client_ns, "mxd_acks", &format!("tcp sport {PORT} drop"));
            conn.write_all(&[0x61; 1000]).unwrap();
            thread::sleep(Duration::from_millis(1000));
            acks.delete();
            // The next timer's copy draws the D-SACK that gets through.
            let deadline = Instant::now() + Duration::from_secs(15);
            while client_ns.netstat("TcpExt", "TCPDSACKRecv") == 0 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            // A real loss: the next data dark at the server for a moment, so the client
            // retransmits once more, and reads the D-SACKs it has received by then.
            let data = NftTable::input(&server_ns, "mxd_data", &format!("tcp dport {PORT} drop"));
            conn.write_all(&[0x62; 1000]).unwrap();
            thread::sleep(Duration::from_millis(300));
            data.delete();
            conn.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest);
            20 + 2000
        });
        assert_eq!(server.received(), sent);
        Spurious { link }
    }

    /// The client's flows and its namespace's counters (new inside the trace's window, so their
    /// values are the window's).
    pub fn measure(&self, out: &TraceOutput) -> Value {
        let a = &self.link.a;
        let flows: Vec<&Value> = out.summary()["retransmits"]["flows"]
            .as_array()
            .map(|flows| flows.iter().filter(|f| f["netns"] == a.inode()).collect())
            .unwrap_or_default();
        let sum = |field: &str| -> u64 { flows.iter().filter_map(|f| f[field].as_u64()).sum() };
        json!({
            "retransmits": sum("sent"),
            "dsacked": sum("dsacked_segs"),
            "TCPDSACKRecv": a.netstat("TcpExt", "TCPDSACKRecv"),
        })
    }
}

/// The D-SACK received before the last retransmit shows in the flow's reading, and no more
/// than the namespace received (measured: 1 = 1 on 5.10, 6.1, 6.12 and 6.18).
pub(super) fn check(c: &mut Checks, v: &Value) {
    let received = v["TCPDSACKRecv"].as_u64().unwrap_or(0);
    let dsacked = v["dsacked"].as_u64().unwrap_or(0);
    c.that(dsacked >= 1 && dsacked <= received, || {
        format!("spurious retransmits: the socket's D-SACKs not read: {v}")
    });
}
