//! The monitor's `/metrics` (`--listen`): one scrape's latency, size and series with 2 and
//! with 64 simulated CPUs' worth of series, and the agent's CPU per scrape over loopback HTTP.
//! The exporter is filled as a busy host's would be after an interval: every column, 24 drop
//! reasons over layers and directions in both namespace scopes, each CPU with backlog,
//! time_squeeze and NET_RX series, every retransmit kind. Plain timing loop, no harness.

use std::{
    collections::BTreeMap,
    hint::black_box,
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use netprobe::{
    model::classify::{Direction, DropRole, Layer},
    monitor::{
        columns::Column,
        counters::{LinkState, Sample},
        delta::Readings,
        exporter::{server, Exporter, Start},
        interval::{self, Context},
        kernel_side::attribution::{Attribution, Backlog, CpuCount, DropRow, NetRxCpu},
        schedule::Timing,
    },
};
use netprobe_common::vocab::RetransmitKind;

fn sample(cpus: u32, at: Instant, grow: u64) -> Sample {
    let mut readings = Readings::default();
    for column in Column::ALL {
        readings.set(column, "all", 1000 * grow);
    }
    let mut time_squeeze = BTreeMap::new();
    for cpu in 0..cpus {
        readings.set(Column::Softirq, format!("cpu{cpu}"), 10 * grow);
        time_squeeze.insert(cpu, 5 * grow);
    }
    Sample {
        at,
        link: LinkState {
            ifindex: Some(2),
            operstate: Some("up".into()),
            renamed_to: None,
        },
        readings,
        time_squeeze,
        nic: Default::default(),
        problems: Vec::new(),
    }
}

fn kernel(cpus: u32) -> Attribution {
    let mut drops = Vec::new();
    for reason in 0..24u32 {
        let layer = Layer::ALL[reason as usize % Layer::ALL.len()];
        for direction in [Direction::Ingress, Direction::Egress] {
            for own in [true, false] {
                drops.push(DropRow {
                    reason: format!("REASON_{reason}"),
                    layer,
                    direction,
                    role: DropRole::Loss,
                    cpu: reason % cpus,
                    interface: Some("eth0".into()),
                    own_netns: own,
                    netns: 1,
                    location: String::new(),
                    count: 7,
                });
            }
        }
    }
    let each = |count| (0..cpus).map(|cpu| CpuCount { cpu, count }).collect();
    Attribution {
        drops,
        by_kind: RetransmitKind::ALL.iter().map(|k| (*k, 3)).collect(),
        backlog: Some(Backlog {
            overflowed: each(2),
            enqueued: each(2),
            fix: String::new(),
        }),
        net_rx: (0..cpus)
            .map(|cpu| NetRxCpu {
                cpu,
                runs: 10,
                ms: 1.5,
            })
            .collect(),
        ..Attribution::default()
    }
}

fn filled(cpus: u32) -> Exporter {
    let hooks = (0..11).map(|i| (format!("hook{i}"), i % 3 != 0)).collect();
    let mut exporter = Exporter::new(&Start {
        interface: "eth0",
        interface_filter: None,
        hooks,
        kernel_release: "6.18.0".into(),
    })
    .unwrap();
    let t0 = Instant::now();
    let (before, after) = (
        sample(cpus, t0, 1),
        sample(cpus, t0 + Duration::from_secs(5), 2),
    );
    let mut interval = interval::build(
        &before,
        &after,
        Context {
            timestamp: String::new(),
            iteration: 1,
            interface: "eth0",
            threshold: 100,
            period: Duration::from_secs(5),
            timing: Timing {
                late: Duration::ZERO,
                periods: 1,
            },
            stopped_by: None,
        },
    );
    interval.kernel = Some(kernel(cpus));
    exporter.record(&interval, &before, &after);
    exporter
}

fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One HTTP scrape over loopback, the body's length (std's socket, a request by hand: a
/// benchmark's client, not the server's parsing).
fn http_scrape(port: u16) -> usize {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept: application/openmetrics-text\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    assert!(
        all.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&all)
    );
    all.len()
}

fn main() {
    for cpus in [2u32, 64] {
        let exporter = filled(cpus);
        let registry = exporter.registry();
        let (openmetrics, _) = server::scrape(&registry, true);
        let (classic, _) = server::scrape(&registry, false);
        let series = openmetrics
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        let rounds = 2000;
        let t = Instant::now();
        for _ in 0..rounds {
            black_box(server::scrape(&registry, true));
        }
        let encode = t.elapsed() / rounds;
        let t = Instant::now();
        for _ in 0..rounds {
            black_box(server::scrape(&registry, false));
        }
        let encode_classic = t.elapsed() / rounds;

        let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = server::start(listener, exporter.registry()).unwrap().port();
        http_scrape(port);
        let http_rounds = 500;
        let (cpu0, t) = (process_cpu(), Instant::now());
        for _ in 0..http_rounds {
            black_box(http_scrape(port));
        }
        let latency = t.elapsed() / http_rounds;
        let cpu = (process_cpu() - cpu0) / http_rounds;
        println!(
            "{cpus:>2} CPUs: {series} series; {} bytes OpenMetrics, {} classic; encode {:.1} µs (classic {:.1} µs); \
             HTTP scrape over loopback {:.1} µs, process CPU {:.1} µs per scrape (server and client)",
            openmetrics.len(),
            classic.len(),
            encode.as_secs_f64() * 1e6,
            encode_classic.as_secs_f64() * 1e6,
            latency.as_secs_f64() * 1e6,
            cpu.as_secs_f64() * 1e6,
        );
    }
}
