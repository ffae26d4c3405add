//! `netprobe monitor --listen` without root: a port already taken is one clear line and a
//! non-zero exit before anything runs; a port alone binds loopback, and the scrape is served
//! in the classic text format to a client that does not ask for OpenMetrics.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    process::{Command, Stdio},
};

use netprobe_integration::netprobe_bin;

#[test]
fn a_taken_port_is_one_line_and_exit_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(netprobe_bin())
        .args([
            "monitor",
            "lo",
            "1",
            "--no-log",
            "--counters-only",
            "--count",
            "1",
        ])
        .args(["--listen", &addr])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        vec![format!(
            "netprobe: error: --listen {addr}: cannot listen: Address already in use (os error 98)"
        )]
    );
    assert!(out.stdout.is_empty(), "no interval ran");
}

#[test]
fn a_port_alone_is_loopback() {
    // A free port: bound and let go (nothing else here takes ports from this range's top).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(netprobe_bin())
        .args([
            "monitor",
            "lo",
            "1",
            "--no-log",
            "--counters-only",
            "--count",
            "3",
        ])
        .args(["--listen", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let served = stderr
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("metrics on"))
        .expect("the metrics line");
    assert_eq!(
        served,
        format!("netprobe monitor: metrics on http://127.0.0.1:{port}/metrics")
    );
    let body = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        body.contains("# TYPE netprobe_stack_drops_total counter\n"),
        "{body}"
    );
    assert!(body.contains(r#"netprobe_stack_drops_total{interface="lo",category="udp_rcvbuf"} 0"#));
    assert!(child.wait().unwrap().success());
}
