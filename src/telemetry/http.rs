//! The HTTP endpoint (`--metrics-listen`): `/metrics` in the Prometheus text format,
//! `/metrics.json` with the same numbers, `/healthz` (the launcher lives) and `/readyz` (store
//! open, first sync done, listeners up); over TLS when the launcher has a certificate.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::Encoder;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use super::https::{HttpsConfig, HttpsListener};
use super::Reader;
use super::{Metrics, Readiness};
use crate::clock::Clock;
use crate::error_chain::Chain;
use crate::reconcile::UnixMillis;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
#[error("the HTTP endpoint failed")]
pub struct HttpError(#[from] std::io::Error);

/// What the endpoint reads.
#[derive(Clone)]
pub struct HttpState {
    pub store: Arc<Store>,
    /// What processes use, sampled at each scrape for those with limits.
    pub usage: super::UsageBoard,
    /// Held by a scrape from refreshing the gauges to gathering them, so that two scrapes at
    /// once never gather the other's half-refreshed per-process series.
    pub scrape: Arc<std::sync::Mutex<()>>,
    pub metrics: Metrics,
    pub readiness: Readiness,
    pub clock: Clock,
    pub started_at: UnixMillis,
}

/// Serves the endpoint on `listener` (over TLS with `tls`) until `shutdown` completes.
pub async fn serve_http(
    listener: TcpListener,
    tls: Option<HttpsConfig>,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/metrics.json", get(metrics_json))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state);
    match tls {
        Some(tls) => {
            axum::serve(HttpsListener::new(listener, tls)?, app)
                .with_graceful_shutdown(shutdown)
                .await?
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?
        }
    }
    Ok(())
}

/// Refreshes the state gauges from the store and gathers every family, on the blocking pool
/// (reading every record is O(processes)); the error is the body of a 500 answer.
async fn gather(state: &HttpState) -> Result<Vec<MetricFamily>, String> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || gather_now(&state))
        .await
        .map_err(|error| format!("cannot gather the metrics: {error}\n"))?
}

fn gather_now(state: &HttpState) -> Result<Vec<MetricFamily>, String> {
    // Only ever held around the refresh and gather below, which cannot leave it inconsistent.
    let _one_scrape_at_a_time = state
        .scrape
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rows = state
        .store
        .rows()
        .map_err(|error| format!("cannot read the store: {}\n", Chain(&error)))?;
    state.metrics.refresh_state(&rows);
    let unconfirmed = state
        .store
        .unconfirmed_admin()
        .map_err(|error| format!("cannot read the store: {}\n", Chain(&error)))?;
    let term = state
        .store
        .admin_term()
        .map_err(|error| format!("cannot read the store: {}\n", Chain(&error)))?;
    state.metrics.refresh_admin(unconfirmed.len(), term);
    let usage = state
        .usage
        .sample_limited(Reader::Metrics, (state.clock)(), &rows);
    state.metrics.refresh_usage(&rows, &usage);
    Ok(state.metrics.gather())
}

fn server_error(body: String) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
}

async fn metrics_text(State(state): State<HttpState>) -> Response {
    let families = match gather(&state).await {
        Ok(families) => families,
        Err(body) => return server_error(body),
    };
    let encoder = prometheus::TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&families, &mut body) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {error}\n"),
        )
            .into_response(),
    }
}

async fn metrics_json(State(state): State<HttpState>) -> Response {
    match gather(&state).await {
        Ok(families) => {
            let uptime = (state.clock)()
                .saturating_duration_since(state.started_at)
                .as_secs();
            axum::Json(metrics_document(&families, uptime)).into_response()
        }
        Err(body) => server_error(body),
    }
}

async fn ready(State(state): State<HttpState>) -> Response {
    let missing = state.readiness.missing();
    if missing.is_empty() {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: waiting for {}\n", missing.join(", ")),
        )
            .into_response()
    }
}

/// The JSON document of the seed (`total_processes`, `running_processes`,
/// `process_starts_total`, `launch_duration_p50/p95/p99_seconds`, `uptime_seconds`), plus every
/// other metric, from the same gathered families as `/metrics`.
pub fn metrics_document(families: &[MetricFamily], uptime_seconds: u64) -> Value {
    let mut document = Map::new();
    let by_label = |name: &str| -> BTreeMap<String, f64> {
        families
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| {
                let kind = family.get_field_type();
                family.get_metric().iter().map(move |metric| {
                    let label = metric
                        .get_label()
                        .first()
                        .map_or_else(String::new, |pair| pair.value().to_string());
                    let value = match kind {
                        MetricType::GAUGE => metric.get_gauge().get_value(),
                        _ => metric.get_counter().get_value(),
                    };
                    (label, value)
                })
            })
            .collect()
    };
    let states = by_label("pattern_launcher_processes_total");
    document.insert(
        "total_processes".into(),
        json!(states.values().sum::<f64>() as u64),
    );
    document.insert(
        "running_processes".into(),
        json!(states.get("running").copied().unwrap_or(0.0) as u64),
    );
    document.insert("processes_by_state".into(), json!(integers(&states)));
    document.insert(
        "process_starts_total".into(),
        json!(integers(&by_label("pattern_launcher_process_starts_total"))),
    );
    document.insert(
        "failures_total".into(),
        json!(integers(&by_label("pattern_launcher_failures_total"))),
    );
    document.insert(
        "health_checks_total".into(),
        json!(integers(&by_label("pattern_launcher_health_checks_total"))),
    );
    document.insert(
        "reconcile_actions_total".into(),
        json!(integers(&by_label(
            "pattern_launcher_reconcile_actions_total"
        ))),
    );
    document.insert(
        "desired_processes".into(),
        json!(integers(&by_label("pattern_launcher_desired_processes"))),
    );
    document.insert(
        "observed_processes".into(),
        json!(integers(&by_label("pattern_launcher_observed_processes"))),
    );
    for (key, name) in [
        ("restarts_total", "pattern_launcher_restarts_total"),
        ("circuit_open", "pattern_launcher_circuit_open"),
        (
            "orphans_reaped_total",
            "pattern_launcher_orphans_reaped_total",
        ),
        ("admin_registered", "pattern_launcher_admin_registered"),
        (
            "admin_heartbeat_failures_total",
            "pattern_launcher_admin_heartbeat_failures_total",
        ),
        (
            "admin_unreachable_since_seconds",
            "pattern_launcher_admin_unreachable_since_seconds",
        ),
        (
            "admin_last_heartbeat_timestamp_seconds",
            "pattern_launcher_admin_last_heartbeat_timestamp_seconds",
        ),
        (
            "admin_registrations_total",
            "pattern_launcher_admin_registrations_total",
        ),
        (
            "admin_processes_suspended",
            "pattern_launcher_admin_processes_suspended",
        ),
        (
            "admin_unconfirmed_processes",
            "pattern_launcher_admin_unconfirmed_processes",
        ),
    ] {
        let value: f64 = by_label(name).values().sum();
        document.insert(key.into(), json!(value as u64));
    }
    let link = by_label("pattern_launcher_admin_link");
    document.insert(
        "admin_link".into(),
        json!(link
            .iter()
            .find(|(_, value)| **value > 0.0)
            .map(|(state, _)| state.clone())),
    );
    let term: f64 = by_label("pattern_launcher_admin_term").values().sum();
    document.insert(
        "admin_term".into(),
        if term < 0.0 {
            Value::Null
        } else {
            json!(term as u64)
        },
    );
    let summary = families
        .iter()
        .find(|family| {
            family.name() == "pattern_launcher_launch_duration_seconds"
                && family.get_field_type() == MetricType::SUMMARY
        })
        .and_then(|family| family.get_metric().first())
        .map(|metric| metric.get_summary());
    for (key, rank) in [
        ("launch_duration_p50_seconds", 0.5),
        ("launch_duration_p95_seconds", 0.95),
        ("launch_duration_p99_seconds", 0.99),
    ] {
        let value = summary
            .and_then(|summary| {
                summary
                    .get_quantile()
                    .iter()
                    .find(|quantile| quantile.quantile() == rank)
            })
            .map_or(0.0, |quantile| quantile.value());
        document.insert(key.into(), json!(value));
    }
    document.insert(
        "launch_duration_sum_seconds".into(),
        json!(summary.map_or(0.0, |summary| summary.sample_sum())),
    );
    document.insert(
        "launch_duration_count".into(),
        json!(summary.map_or(0, |summary| summary.sample_count())),
    );
    document.insert("uptime_seconds".into(), json!(uptime_seconds));
    Value::Object(document)
}

fn integers(values: &BTreeMap<String, f64>) -> BTreeMap<String, u64> {
    values
        .iter()
        .map(|(key, value)| (key.clone(), *value as u64))
        .collect()
}
