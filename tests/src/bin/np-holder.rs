//! A process that misbehaves on purpose, for the report scenarios. Run inside a namespace:
//!   np-holder close-wait ADDR:PORT N   accept N connections and never close them
//!   np-holder no-accept ADDR:PORT BACKLOG   listen and never accept
//!   np-holder udp-sink ADDR:PORT RCVBUF   bind, shrink SO_RCVBUF, never read
//!   np-holder send ADDR:PORT MIB   connect, send MIB MiB, wait for the peer's FIN, keep the socket
//! Prints "ready" once the socket is set up, then holds it until killed.

use std::{
    io::Write,
    net::{SocketAddr, TcpListener, UdpSocket},
    os::fd::{AsRawFd, FromRawFd},
    thread,
    time::Duration,
};

fn ready() {
    println!("ready");
    std::io::stdout().flush().unwrap();
}

fn hold() -> ! {
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

/// A listening socket with an explicit backlog (std's TcpListener always asks for 128).
fn listen(addr: SocketAddr, backlog: i32) -> TcpListener {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket/bind/listen on a fresh fd that we hand to TcpListener.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const _,
            4,
        );
        let SocketAddr::V4(v4) = addr else {
            panic!("IPv4 only")
        };
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as _,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        assert_eq!(
            libc::bind(
                fd,
                &sin as *const _ as *const _,
                std::mem::size_of_val(&sin) as _
            ),
            0,
            "bind"
        );
        assert_eq!(libc::listen(fd, backlog), 0, "listen");
        TcpListener::from_raw_fd(fd)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, addr, n) = match args.as_slice() {
        [_, mode, addr, n] => (
            mode.as_str(),
            addr.parse::<SocketAddr>().expect("ADDR:PORT"),
            n.parse::<i32>().expect("number"),
        ),
        _ => {
            eprintln!("usage: np-holder close-wait|no-accept|udp-sink|send ADDR:PORT N");
            std::process::exit(2);
        }
    };
    match mode {
        "close-wait" => {
            let listener = listen(addr, 128);
            ready();
            let mut held = Vec::new();
            for _ in 0..n {
                held.push(listener.accept().expect("accept").0);
            }
            hold()
        }
        "no-accept" => {
            let _listener = listen(addr, n);
            ready();
            hold()
        }
        "udp-sink" => {
            let socket = UdpSocket::bind(addr).expect("bind");
            // SAFETY: setsockopt on our own fd with a c_int.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    &n as *const _ as *const _,
                    4,
                );
            }
            ready();
            hold()
        }
        "send" => {
            use std::io::Read;
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            ready();
            let chunk = vec![0x5au8; 1 << 20];
            for _ in 0..n {
                stream.write_all(&chunk).expect("send");
            }
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).expect("read until FIN");
            // Nothing more on stdout: the test stopped reading it after "ready".
            let _keep = stream;
            hold()
        }
        other => {
            eprintln!("np-holder: unknown mode {other}");
            std::process::exit(2);
        }
    }
}
