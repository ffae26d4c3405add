//! The `/metrics` endpoint: hyper's HTTP/1 server on a thread of its own (its own
//! single-thread tokio runtime), so that a scrape is never queued behind a sample, and a sample
//! never behind a slow scraper. A scrape encodes the registry and nothing else.
//!
//! hyper rather than a hand-written parser: it is the HTTP implementation the Rust ecosystem
//! shares (axum and reqwest are built on it); axum's routing would add a dependency tree for
//! one path.

use std::{
    convert::Infallible,
    io,
    net::{SocketAddr, TcpListener as StdListener},
    sync::Arc,
    thread,
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{ACCEPT, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{encoding::text::encode, registry::Registry};

/// OpenMetrics' own media type: Prometheus then parses it as OpenMetrics (`# EOF`, `_total`).
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A scraper that sends no complete request head in this long is dropped, so that idle
/// connections cannot pile up.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("--listen {0}: cannot listen: {1}")]
    Bind(SocketAddr, io::Error),
    #[error("--listen: starting the metrics server: {0}")]
    Start(io::Error),
}

/// `--listen`'s value: `HOST:PORT`, or a port alone for the loopback address (never every
/// address unless asked for, as `0.0.0.0:PORT`).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse::<SocketAddr>()
        .map_err(|_| format!("{text:?}: expected HOST:PORT (127.0.0.1:9464, [::1]:9464) or a port"))
}

/// Binds at once, before anything is loaded: a taken port is one error line, not a monitor
/// that runs without its endpoint.
pub fn bind(addr: SocketAddr) -> Result<StdListener, ServerError> {
    let listener = StdListener::bind(addr).map_err(|e| ServerError::Bind(addr, e))?;
    listener.set_nonblocking(true).map_err(ServerError::Start)?;
    Ok(listener)
}

/// Serves on a thread of its own until the process ends. Returns the address bound (port 0
/// resolved).
pub fn start(listener: StdListener, registry: Arc<Registry>) -> Result<SocketAddr, ServerError> {
    let bound = listener.local_addr().map_err(ServerError::Start)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServerError::Start)?;
    thread::Builder::new()
        .name("netprobe-metrics".into())
        .spawn(move || runtime.block_on(serve(listener, registry)))
        .map_err(ServerError::Start)?;
    Ok(bound)
}

async fn serve(listener: StdListener, registry: Arc<Registry>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("netprobe monitor: metrics server stopped: {e}");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors and the like: the monitor goes on; a later accept may
            // succeed, after a pause that keeps this loop from spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let registry = Arc::clone(&registry);
                async move { Ok::<_, Infallible>(respond(&request, &registry)) }
            });
            // A scraper that goes away mid-request is its own business.
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The classic text format's media type, for scrapers that do not ask for OpenMetrics.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics` (or `HEAD`): the registry encoded; anything else, 404 or 405.
pub fn respond(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let openmetrics = request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    route(
        request.method(),
        request.uri().path(),
        registry,
        openmetrics,
    )
}

/// The classic text format (0.0.4) from prometheus-client's OpenMetrics: a counter's HELP and
/// TYPE name its `_total` series, and OpenMetrics' `# UNIT` and `# EOF` go (the classic
/// parsers, promtool's `check metrics` among them, lint on the former and know neither).
pub fn classic_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.insert(name);
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// One scrape's body and media type: all a scrape does (the bench times it).
pub fn scrape(registry: &Registry, openmetrics: bool) -> (String, &'static str) {
    let mut text = String::with_capacity(16 * 1024);
    encode(&mut text, registry).expect("writing to a String cannot fail");
    if openmetrics {
        (text, CONTENT_TYPE_OPENMETRICS)
    } else {
        (classic_text(&text), CONTENT_TYPE_TEXT)
    }
}

fn route(
    method: &Method,
    path: &str,
    registry: &Registry,
    openmetrics: bool,
) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response
    };
    if path != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "netprobe serves /metrics only\n");
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n");
        response
            .headers_mut()
            .insert(ALLOW, "GET, HEAD".parse().expect("a valid header"));
        return response;
    }
    let (text, media) = scrape(registry, openmetrics);
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, media.parse().expect("a valid header"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_defaults_to_loopback_for_a_bare_port() {
        assert_eq!(parse_listen("9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(
            parse_listen("0.0.0.0:9464").unwrap().to_string(),
            "0.0.0.0:9464"
        );
        assert_eq!(parse_listen("[::1]:9").unwrap().to_string(), "[::1]:9");
        assert!(parse_listen("localhost").is_err());
        assert!(parse_listen("1.2.3.4").is_err());
    }

    #[test]
    fn only_metrics_is_served() {
        let registry = Registry::default();
        assert_eq!(
            route(&Method::GET, "/", &registry, true).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&Method::POST, "/metrics", &registry, true).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let ok = route(&Method::GET, "/metrics", &registry, true);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[CONTENT_TYPE], CONTENT_TYPE_OPENMETRICS);
        let classic = route(&Method::GET, "/metrics", &registry, false);
        assert_eq!(classic.headers()[CONTENT_TYPE], CONTENT_TYPE_TEXT);
    }

    #[test]
    fn classic_text_names_counters_by_their_series() {
        let openmetrics = "# HELP np_drops Drops.\n# TYPE np_drops counter\nnp_drops_total{a=\"b\"} 3\n\
            # HELP np_rx_seconds Time.\n# TYPE np_rx_seconds counter\n# UNIT np_rx_seconds seconds\n\
            np_rx_seconds_total 1.5\n# HELP np_up Up.\n# TYPE np_up gauge\nnp_up 1\n# EOF\n";
        assert_eq!(
            classic_text(openmetrics),
            "# HELP np_drops_total Drops.\n# TYPE np_drops_total counter\nnp_drops_total{a=\"b\"} 3\n\
             # HELP np_rx_seconds_total Time.\n# TYPE np_rx_seconds_total counter\nnp_rx_seconds_total 1.5\n\
             # HELP np_up Up.\n# TYPE np_up gauge\nnp_up 1\n"
        );
    }

    #[test]
    fn a_taken_port_is_one_clear_error() {
        let taken = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("--listen {addr}: cannot listen: ")),
            "{text}"
        );
        assert!(text.contains("in use"), "{text}");
    }
}
