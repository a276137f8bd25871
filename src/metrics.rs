//! What witty-bff counts, served on `GET /metrics` in the Prometheus text format (the `prometheus`
//! crate). One [`Metrics`] per process (per app in tests): its own registry, no global state.

use std::sync::Arc;

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub(crate) struct Metrics {
    registry: Registry,
    /// Live watches: GraphQL subscriptions (`stationEvents`, `chargingStationUpdated`) being
    /// served, and commands waiting for their outcome.
    pub live_subscriptions: IntGauge,
    /// Installations with at least one live subscription.
    pub watched_installations: IntGauge,
    /// Watched installations on the polling fallback.
    pub polled_installations: IntGauge,
    /// Upstream event subscriptions of ours that could not be removed yet (their holder's token
    /// had expired): each goes with its holder's next token.
    pub unremoved_upstream_subscriptions: IntGauge,
    /// Upstream event subscriptions of ours given up (refused, or every try failed): left
    /// upstream, to remove by hand (the log names each).
    pub abandoned_upstream_subscriptions: IntCounter,
    /// Webhook deliveries accepted, by `aeg-event-type`.
    pub webhook_deliveries: IntCounterVec,
    /// Webhook events, by outcome: `published`, `duplicate`, or `replaced_subscription` (from a
    /// subscription of ours being replaced).
    pub events: IntCounterVec,
    /// Subscribers dropped because they fell too far behind.
    pub lagging_subscribers_dropped: IntCounter,
    /// Upstream calls, by kind (`read`, `command`) and outcome (`ok`, `error`).
    pub upstream_calls: IntCounterVec,
    /// Upstream call duration, retries included.
    pub upstream_seconds: Histogram,
    /// Shared-cache lookups, by outcome: `hit` or `miss` (a miss is one upstream read, however
    /// many callers waited on it).
    pub cache_lookups: IntCounterVec,
    /// Requests refused by the per-caller rate limit, by `transport`: `http` (a `/graphql`
    /// request, SSE included) or `websocket` (a `subscribe`).
    pub rate_limited: IntCounterVec,
    /// In a fleet: 1 while this replica reaches Redis (events, invalidations and idempotency keys
    /// are shared), 0 while it works on its own state.
    pub fleet_connected: IntGauge,
    /// In a fleet: operations that could not use Redis and fell back to the replica's own state,
    /// by `part` (`events`, `idempotency`, `invalidation`, `lease`, `barrier`).
    pub fleet_fallbacks: IntCounterVec,
}

impl Metrics {
    pub(crate) fn new() -> Arc<Metrics> {
        let registry = Registry::new_custom(Some("witty_bff".into()), None).expect("a valid prefix");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("a valid metric");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("a valid metric");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let counters = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let live_subscriptions =
            gauge("live_subscriptions", "GraphQL subscriptions being served and commands waiting for their outcome.");
        let watched_installations =
            gauge("watched_installations", "Installations with at least one live subscription.");
        let polled_installations = gauge("polled_installations", "Watched installations on the polling fallback.");
        let unremoved_upstream_subscriptions = gauge(
            "unremoved_upstream_subscriptions",
            "Upstream event subscriptions of ours not removed yet, waiting for their holder's next token.",
        );
        let abandoned_upstream_subscriptions = counter(
            "abandoned_upstream_subscriptions_total",
            "Upstream event subscriptions of ours given up, left upstream to remove by hand (see the log).",
        );
        let webhook_deliveries =
            counters("webhook_deliveries_total", "Webhook deliveries accepted, by aeg-event-type.", &["kind"]);
        let events = counters("events_total", "Webhook events, by outcome.", &["outcome"]);
        let lagging =
            counter("lagging_subscribers_dropped_total", "Subscribers dropped because they fell too far behind.");
        let upstream_calls =
            counters("upstream_calls_total", "Calls to the Witty-Home API, by kind and outcome.", &["kind", "outcome"]);
        let upstream_seconds = Histogram::with_opts(
            HistogramOpts::new("upstream_call_seconds", "Duration of calls to the Witty-Home API, retries included.")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("a valid metric");
        registry.register(Box::new(upstream_seconds.clone())).expect("registered once");
        let cache_lookups = counters("cache_lookups_total", "Shared-cache lookups, by outcome.", &["outcome"]);
        let rate_limited = counters(
            "rate_limited_requests_total",
            "Requests refused by the per-caller rate limit, by transport.",
            &["transport"],
        );
        let fleet_connected = gauge("fleet_connected", "1 while this replica of a fleet reaches Redis, else 0.");
        let fleet_fallbacks = counters(
            "fleet_fallbacks_total",
            "Operations of a fleet replica that could not use Redis and used its own state, by part.",
            &["part"],
        );
        Arc::new(Metrics {
            registry,
            live_subscriptions,
            watched_installations,
            polled_installations,
            unremoved_upstream_subscriptions,
            abandoned_upstream_subscriptions,
            webhook_deliveries,
            events,
            lagging_subscribers_dropped: lagging,
            upstream_calls,
            upstream_seconds,
            cache_lookups,
            rate_limited,
            fleet_connected,
            fleet_fallbacks,
        })
    }

    /// Every metric, in the Prometheus text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_metrics_with_labels() {
        let m = Metrics::new();
        m.live_subscriptions.inc();
        m.events.with_label_values(&["duplicate"]).inc();
        let text = m.render();
        assert!(text.contains("witty_bff_live_subscriptions 1"), "{text}");
        assert!(text.contains(r#"witty_bff_events_total{outcome="duplicate"} 1"#), "{text}");
        assert!(text.contains("# TYPE witty_bff_upstream_call_seconds histogram"), "{text}");
    }
}
