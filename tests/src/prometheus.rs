//! A real Prometheus (Debian's `prometheus` package) inside a test's namespace, scraping a
//! `netprobe monitor --listen` there every second, with its storage in a temporary directory;
//! its HTTP API queried from inside the namespace. Killed, and its storage removed, on drop.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::Netns;

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// Where Prometheus listens inside the test's namespace (its own loopback: no clash).
const PROMETHEUS_ADDR: &str = "127.0.0.1:9090";

pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    ns: Netns,
}

impl Prometheus {
    /// Starts Prometheus in `ns` scraping `target` (`127.0.0.1:9464`) every second, and waits
    /// until it is ready.
    pub fn start(ns: &Netns, target: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("np-prometheus-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: netprobe\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, PROMETHEUS])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS_ADDR}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("prometheus (Debian's package; cargo xtask setup installs it)");
        let prometheus = Prometheus {
            child,
            dir,
            ns: ns.shared(),
        };
        let end = Instant::now() + Duration::from_secs(30);
        while prometheus.get("/-/ready", &[]).is_none() {
            assert!(Instant::now() < end, "prometheus not ready in 30 s");
            thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    /// GET `path` with `params` from inside the namespace: the body of a 200, else `None`.
    pub fn get(&self, path: &str, params: &[(&str, String)]) -> Option<String> {
        let url = format!("http://{PROMETHEUS_ADDR}{path}");
        let params = params.to_vec();
        let params: Vec<(String, String)> = params
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        self.ns.run(move || {
            let mut request = ureq::get(&url);
            for (k, v) in &params {
                request = request.query(k, v);
            }
            request.call().ok()?.body_mut().read_to_string().ok()
        })
    }

    /// An instant query at `at` (Unix seconds; ms precision): the API's `data.result`.
    pub fn query(&self, expr: &str, at: f64) -> Vec<Value> {
        let body = self
            .get(
                "/api/v1/query",
                &[("query", expr.to_string()), ("time", format!("{at:.3}"))],
            )
            .unwrap_or_else(|| panic!("query {expr} failed"));
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], "success", "{body}");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The one value of an instant query (`None`: no series).
    pub fn value(&self, expr: &str, at: f64) -> Option<f64> {
        let result = self.query(expr, at);
        assert!(
            result.len() <= 1,
            "{expr}: more than one series: {result:?}"
        );
        result
            .first()
            .map(|r| r["value"][1].as_str().unwrap().parse().unwrap())
    }

    /// The timestamps (Unix seconds) of the scrapes of the last `secs` seconds, from the
    /// samples of `series`.
    pub fn scrape_times(&self, series: &str, secs: u32) -> Vec<f64> {
        let result = self.query(&format!("{series}[{secs}s]"), unix_now());
        result
            .first()
            .and_then(|r| r["values"].as_array())
            .map(|values| values.iter().map(|v| v[0].as_f64().unwrap()).collect())
            .unwrap_or_default()
    }

    /// Waits for a scrape that started at `after` (Unix seconds) or later; its timestamp.
    pub fn scrape_after(&self, series: &str, after: f64) -> f64 {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(t) = self
                .scrape_times(series, 60)
                .into_iter()
                .find(|t| *t >= after)
            {
                return t;
            }
            assert!(Instant::now() < end, "no scrape of {series} after {after}");
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `GET url` from inside `ns` without asking for OpenMetrics: the classic text format.
pub fn scrape_in(ns: &Netns, url: &str) -> String {
    let url = url.to_string();
    ns.run(move || {
        ureq::get(&url)
            .call()
            .expect("scrape")
            .body_mut()
            .read_to_string()
            .unwrap()
    })
}
