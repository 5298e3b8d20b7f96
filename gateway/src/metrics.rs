//! The gateway's Prometheus metrics: one registry, created once, shared by the proxy, the
//! reloader and the admin endpoint.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: Histogram,
    pub upstream_failures: IntCounterVec,
    pub failovers: IntCounterVec,
    pub blocked_set_cookies: IntCounterVec,
    pub shadow_requests: IntCounterVec,
    pub h2_premature_resets: IntCounter,
    pub h2_reset_floods: IntCounter,
    pub downstream_connections: IntGauge,
    pub reloads_ok: IntCounter,
    pub reloads_failed: IntCounter,
    pub route_hosts: IntGauge,
    pub route_objects: IntGauge,
    pub route_errors: IntGauge,
    pub source_up: IntGaugeVec,
    pub source_errors: IntCounterVec,
    pub source_lists: IntCounterVec,
    pub source_objects: IntGaugeVec,
    pub source_last_sync: GaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "modelgate_requests_total",
                "Requests answered, by InferenceService, revision and status class.",
            ),
            &["namespace", "isvc", "revision", "class"],
        )
        .expect("static metric definition");
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "modelgate_request_duration_seconds",
                "Time from request start to the end of the response.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 300.0,
            ]),
        )
        .expect("static metric definition");
        let upstream_failures = IntCounterVec::new(
            Opts::new(
                "modelgate_upstream_failures_total",
                "Failed upstream exchanges, by revision and kind (connect, timeout, other).",
            ),
            &["namespace", "isvc", "revision", "kind"],
        )
        .expect("static metric definition");
        let failovers = IntCounterVec::new(
            Opts::new(
                "modelgate_failovers_total",
                "Requests sent to another revision because the chosen one refused the connection.",
            ),
            &["namespace", "isvc", "from_revision"],
        )
        .expect("static metric definition");
        let blocked_set_cookies = IntCounterVec::new(
            Opts::new(
                "modelgate_blocked_set_cookies_total",
                "Set-Cookie headers from upstreams for the gateway's own cookies, removed.",
            ),
            &["namespace", "isvc"],
        )
        .expect("static metric definition");
        let shadow_requests = IntCounterVec::new(
            Opts::new(
                "modelgate_shadow_requests_total",
                "Copies of requests for a shadow (mirror) backend: answered, failed, or dropped \
                 (too many in flight, or a body too large to keep).",
            ),
            &["namespace", "isvc", "result"],
        )
        .expect("static metric definition");
        let h2_premature_resets = IntCounter::new(
            "modelgate_h2_premature_resets_total",
            "HTTP/2 streams the client reset within a second of opening them.",
        )
        .expect("static metric definition");
        let h2_reset_floods = IntCounter::new(
            "modelgate_h2_reset_floods_total",
            "HTTP/2 connections closed because most of their streams were reset right after opening.",
        )
        .expect("static metric definition");
        let downstream_connections = IntGauge::new(
            "modelgate_downstream_connections",
            "Client connections open now.",
        )
        .expect("static metric definition");
        let reloads = IntCounterVec::new(
            Opts::new(
                "modelgate_reloads_total",
                "Route table rebuilds; failed means at least one file or object was rejected.",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let route_hosts = IntGauge::new("modelgate_route_hosts", "Hosts in the live route table.")
            .expect("static metric definition");
        let route_objects = IntGauge::new(
            "modelgate_route_objects",
            "InferenceServices with routes in the live table.",
        )
        .expect("static metric definition");
        let route_errors = IntGauge::new(
            "modelgate_route_errors",
            "Files or objects rejected by the last reload.",
        )
        .expect("static metric definition");
        let source_up = IntGaugeVec::new(
            Opts::new(
                "modelgate_route_source_up",
                "1 while the route source reads (the API server answers), 0 while it fails.",
            ),
            &["source"],
        )
        .expect("static metric definition");
        let source_errors = IntCounterVec::new(
            Opts::new(
                "modelgate_route_source_errors_total",
                "Failed reads of a route source (a list or watch of the API server that failed).",
            ),
            &["source"],
        )
        .expect("static metric definition");
        let source_lists = IntCounterVec::new(
            Opts::new(
                "modelgate_route_source_lists_total",
                "Complete lists of the API server (the first, and each relist).",
            ),
            &["source"],
        )
        .expect("static metric definition");
        let source_objects = IntGaugeVec::new(
            Opts::new(
                "modelgate_route_source_objects",
                "Items (files, or API objects) in the route source's last complete read.",
            ),
            &["source"],
        )
        .expect("static metric definition");
        let source_last_sync = GaugeVec::new(
            Opts::new(
                "modelgate_route_source_last_sync_timestamp_seconds",
                "When the route source's last complete read went into the table (Unix time).",
            ),
            &["source"],
        )
        .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(upstream_failures.clone()),
            Box::new(failovers.clone()),
            Box::new(blocked_set_cookies.clone()),
            Box::new(shadow_requests.clone()),
            Box::new(h2_premature_resets.clone()),
            Box::new(h2_reset_floods.clone()),
            Box::new(downstream_connections.clone()),
            Box::new(reloads.clone()),
            Box::new(route_hosts.clone()),
            Box::new(route_objects.clone()),
            Box::new(route_errors.clone()),
            Box::new(source_up.clone()),
            Box::new(source_errors.clone()),
            Box::new(source_lists.clone()),
            Box::new(source_objects.clone()),
            Box::new(source_last_sync.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            latency,
            upstream_failures,
            failovers,
            blocked_set_cookies,
            shadow_requests,
            h2_premature_resets,
            h2_reset_floods,
            downstream_connections,
            reloads_ok: reloads.with_label_values(&["success"]),
            reloads_failed: reloads.with_label_values(&["failure"]),
            route_hosts,
            route_objects,
            route_errors,
            source_up,
            source_errors,
            source_lists,
            source_objects,
            source_last_sync,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One revision's request counters by status class, made once (the label lookup hashes four
/// strings) and kept with the revision in the route table.
pub struct RevisionCounters([prometheus::IntCounter; CLASSES.len()]);

/// The classes of `status_class`.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

impl RevisionCounters {
    pub fn new(m: &Metrics, namespace: &str, isvc: &str, revision: &str) -> Self {
        RevisionCounters(CLASSES.map(|class| {
            m.requests
                .with_label_values(&[namespace, isvc, revision, class])
        }))
    }

    /// Counts one request of `class` (what `status_class` returns).
    pub fn count(&self, class: &str) {
        if let Some(i) = CLASSES.iter().position(|c| *c == class) {
            self.0[i].inc();
        }
    }
}

/// `2xx`, `4xx`, ... for a status; `0` means no response was sent (client went away).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the issue names is exposed under a stable name.
    #[test]
    fn exposition_names() {
        let m = Metrics::new();
        m.requests
            .with_label_values(&["ns", "m", "m-predictor-00001", "2xx"])
            .inc();
        m.failovers.with_label_values(&["ns", "m", "r"]).inc();
        m.blocked_set_cookies.with_label_values(&["ns", "m"]).inc();
        m.upstream_failures
            .with_label_values(&["ns", "m", "r", "connect"])
            .inc();
        m.latency.observe(0.01);
        m.reloads_ok.inc();
        let text = String::from_utf8(m.render()).unwrap();
        for name in [
            "modelgate_requests_total{class=\"2xx\",isvc=\"m\",namespace=\"ns\",revision=\"m-predictor-00001\"} 1",
            "modelgate_request_duration_seconds_bucket",
            "modelgate_failovers_total",
            "modelgate_blocked_set_cookies_total{isvc=\"m\",namespace=\"ns\"} 1",
            "modelgate_upstream_failures_total",
            "modelgate_reloads_total{result=\"success\"} 1",
            "modelgate_reloads_total{result=\"failure\"} 0",
            "modelgate_route_hosts 0",
            "modelgate_route_objects 0",
            "modelgate_route_errors 0",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(0), "none");
    }
}
