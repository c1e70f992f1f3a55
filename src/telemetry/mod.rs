//! The launcher's metrics, its HTTP endpoint and the usage board: one registry, created by `app`
//! and handed to the parts that record (the loop, the admin client) and to the HTTP endpoint
//! that exposes them. Nothing is global.
//!
//! Label values are bounded: process states, sources, action kinds, failure reasons, and the
//! seed's `pattern_isolation` (catalog pattern × isolation level). No series per pid.

pub mod http;
pub mod https;
mod usage;

pub use usage::{Reader, ResourceUsage, Sampler, UsageBoard};

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Metric, MetricFamily, MetricType, Quantile, Summary};
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::reconcile::{
    AdminLink, AdminLinkState, AdminTerm, ClientState, Phase, ProcessId, ProcessRow, SourceKind,
    Vocabulary,
};

/// The quantiles of the launch-duration summary, as the seed shows them.
pub const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// How many recent launch durations the quantiles are computed over.
const LAUNCH_WINDOW: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("cannot register the metric {name}")]
pub struct MetricsError {
    name: &'static str,
    #[source]
    source: prometheus::Error,
}

/// Every metric of the launcher.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `pattern_launcher_processes_total{state}`: processes by state, set at each scrape.
    pub processes: IntGaugeVec,
    /// `pattern_launcher_process_starts_total{pattern_isolation}`.
    pub starts: IntCounterVec,
    pub restarts: IntCounter,
    /// Failures by reason: exit_code, signal, oom, liveness, spawn, unknown.
    pub failures: IntCounterVec,
    /// Health probes by result: pass, fail.
    pub health_checks: IntCounterVec,
    /// Processes whose circuit is open (terminal), set at each scrape.
    pub circuit_open: IntGauge,
    pub orphans_reaped: IntCounter,
    pub reconcile_duration: Histogram,
    /// Actions carried out, by kind (start, restart, stop, kill, forget, record-generation).
    pub actions: IntCounterVec,
    /// Desired and observed records by source (file, api, admin), set at each scrape.
    pub desired: IntGaugeVec,
    pub observed: IntGaugeVec,
    /// 1 while registered with prism-admin.
    pub admin_registered: IntGauge,
    pub heartbeat_failures: IntCounter,
    /// The link to prism-admin: 1 for its state (`state`: standalone, connecting, connected,
    /// unreachable), 0 for the others.
    pub admin_link: IntGaugeVec,
    /// When the link went down (unix seconds), while it is down; 0 while it is up.
    pub admin_unreachable_since: IntGauge,
    /// When prism-admin last accepted a heartbeat (unix seconds); 0 before the first.
    pub admin_last_heartbeat: IntGauge,
    pub admin_registrations: IntCounter,
    /// 1 while admin-owned processes are stopped because admin has been unreachable for
    /// longer than `--admin-disconnect-grace`.
    pub admin_suspended: IntGauge,
    /// Admin-owned processes the admin's last (partial) view did not name, set at each scrape.
    pub admin_unconfirmed: IntGauge,
    /// The newest admin term seen, set at each scrape; -1 before any.
    pub admin_term: IntGauge,
    /// `pattern_launcher_launch_duration_seconds`: from spawn to ready.
    pub launch_duration: LaunchDuration,
    /// Per process with a declared limit (`process_id`): resident memory, its memory limit,
    /// CPU in percent of a core and its CPU limit in millicores, set at each scrape.
    pub process_memory: IntGaugeVec,
    pub process_memory_limit: IntGaugeVec,
    pub process_cpu: prometheus::GaugeVec,
    pub process_cpu_limit: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        fn register<C: Collector + Clone + 'static>(
            registry: &Registry,
            name: &'static str,
            collector: Result<C, prometheus::Error>,
        ) -> Result<C, MetricsError> {
            let collector = collector.map_err(|source| MetricsError { name, source })?;
            registry
                .register(Box::new(collector.clone()))
                .map_err(|source| MetricsError { name, source })?;
            Ok(collector)
        }
        let gauge_vec = |name: &'static str, help: &str, label: &str| {
            register(
                &registry,
                name,
                IntGaugeVec::new(Opts::new(name, help), &[label]),
            )
        };
        let counter_vec = |name: &'static str, help: &str, label: &str| {
            register(
                &registry,
                name,
                IntCounterVec::new(Opts::new(name, help), &[label]),
            )
        };
        let counter =
            |name: &'static str, help: &str| register(&registry, name, IntCounter::new(name, help));
        let gauge =
            |name: &'static str, help: &str| register(&registry, name, IntGauge::new(name, help));
        let launch_duration = LaunchDuration::default();
        registry
            .register(Box::new(launch_duration.clone()))
            .map_err(|source| MetricsError {
                name: "pattern_launcher_launch_duration_seconds",
                source,
            })?;
        let process_cpu = register(
            &registry,
            "pattern_launcher_process_cpu_percent",
            prometheus::GaugeVec::new(
                Opts::new(
                    "pattern_launcher_process_cpu_percent",
                    "CPU of a process with a declared limit, in percent of one core since the previous sample",
                ),
                &["process_id"],
            ),
        )?;
        Ok(Metrics {
            process_memory: gauge_vec(
                "pattern_launcher_process_memory_bytes",
                "Resident memory of a process with a declared limit",
                "process_id",
            )?,
            process_memory_limit: gauge_vec(
                "pattern_launcher_process_memory_limit_bytes",
                "The declared memory limit of a process",
                "process_id",
            )?,
            process_cpu,
            process_cpu_limit: gauge_vec(
                "pattern_launcher_process_cpu_limit_millicores",
                "The declared CPU limit of a process, in thousandths of a core",
                "process_id",
            )?,
            processes: gauge_vec(
                "pattern_launcher_processes_total",
                "Total number of processes",
                "state",
            )?,
            starts: counter_vec(
                "pattern_launcher_process_starts_total",
                "Total process starts",
                "pattern_isolation",
            )?,
            restarts: counter(
                "pattern_launcher_restarts_total",
                "Restarts after a process exited or failed",
            )?,
            failures: counter_vec(
                "pattern_launcher_failures_total",
                "Process failures by reason",
                "reason",
            )?,
            health_checks: counter_vec(
                "pattern_launcher_health_checks_total",
                "Health probes by result",
                "result",
            )?,
            circuit_open: gauge(
                "pattern_launcher_circuit_open",
                "Processes whose circuit is open (terminal)",
            )?,
            orphans_reaped: counter(
                "pattern_launcher_orphans_reaped_total",
                "Orphaned processes terminated",
            )?,
            reconcile_duration: register(
                &registry,
                "pattern_launcher_reconcile_duration_seconds",
                Histogram::with_opts(
                    HistogramOpts::new(
                        "pattern_launcher_reconcile_duration_seconds",
                        "Duration of one reconcile pass",
                    )
                    .buckets(vec![
                        0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
                    ]),
                ),
            )?,
            actions: counter_vec(
                "pattern_launcher_reconcile_actions_total",
                "Actions carried out by the reconcile loop",
                "kind",
            )?,
            desired: gauge_vec(
                "pattern_launcher_desired_processes",
                "Desired records by source",
                "source",
            )?,
            observed: gauge_vec(
                "pattern_launcher_observed_processes",
                "Observed records by source of their desired record",
                "source",
            )?,
            admin_registered: gauge(
                "pattern_launcher_admin_registered",
                "1 while registered with prism-admin",
            )?,
            heartbeat_failures: counter(
                "pattern_launcher_admin_heartbeat_failures_total",
                "Heartbeats to prism-admin that failed",
            )?,
            admin_link: gauge_vec(
                "pattern_launcher_admin_link",
                "The state of the link to prism-admin (1 for the current state)",
                "state",
            )?,
            admin_unreachable_since: gauge(
                "pattern_launcher_admin_unreachable_since_seconds",
                "Since when prism-admin has been unreachable (unix seconds); 0 while connected",
            )?,
            admin_last_heartbeat: gauge(
                "pattern_launcher_admin_last_heartbeat_timestamp_seconds",
                "When prism-admin last accepted a heartbeat (unix seconds)",
            )?,
            admin_registrations: counter(
                "pattern_launcher_admin_registrations_total",
                "Successful registrations with prism-admin",
            )?,
            admin_suspended: gauge(
                "pattern_launcher_admin_processes_suspended",
                "1 while admin-owned processes are stopped: prism-admin unreachable for longer than --admin-disconnect-grace",
            )?,
            admin_unconfirmed: gauge(
                "pattern_launcher_admin_unconfirmed_processes",
                "Admin-owned processes that prism-admin's last view did not name (kept running)",
            )?,
            admin_term: gauge(
                "pattern_launcher_admin_term",
                "The newest prism-admin term seen; -1 before any",
            )?,
            launch_duration,
            registry,
        })
    }

    /// Sets the gauges that describe the current state (called before each scrape).
    pub fn refresh_state(&self, rows: &[ProcessRow]) {
        let mut states: BTreeMap<&str, i64> = ClientState::ALL
            .iter()
            .map(|state| (state.metric_label(), 0))
            .collect();
        let mut desired_by: BTreeMap<&str, i64> = source_labels().map(|label| (label, 0)).collect();
        let mut observed_by: BTreeMap<&str, i64> =
            source_labels().map(|label| (label, 0)).collect();
        let mut tripped = 0i64;
        for row in rows {
            *states.entry(row.state().metric_label()).or_default() += 1;
            let source = row
                .desired()
                .map_or(NO_SOURCE, |desired| desired.source.kind().as_str());
            if row.desired().is_some() {
                *desired_by.entry(source).or_default() += 1;
            }
            if let Some(observed) = row.observed() {
                *observed_by.entry(source).or_default() += 1;
                if observed.phase == Phase::Tripped {
                    tripped += 1;
                }
            }
        }
        for (state, count) in states {
            self.processes.with_label_values(&[state]).set(count);
        }
        self.circuit_open.set(tripped);
        for (source, count) in desired_by {
            self.desired.with_label_values(&[source]).set(count);
        }
        for (source, count) in observed_by {
            self.observed.with_label_values(&[source]).set(count);
        }
    }

    /// Shows the state of the link to prism-admin.
    pub fn show_admin_link(&self, link: &AdminLink) {
        for state in AdminLinkState::ALL {
            self.admin_link
                .with_label_values(&[state.as_str()])
                .set(i64::from(*state == link.state));
        }
        self.admin_registered
            .set(i64::from(link.state == AdminLinkState::Connected));
        let seconds = |at: crate::reconcile::UnixMillis| at.whole_seconds();
        self.admin_unreachable_since.set(match link.state {
            AdminLinkState::Unreachable => seconds(link.since),
            _ => 0,
        });
        self.admin_last_heartbeat
            .set(link.last_heartbeat_at.map_or(0, seconds));
    }

    /// Sets the gauges of what the store holds of prism-admin's word (called before each
    /// scrape).
    pub fn refresh_admin(&self, unconfirmed: usize, term: Option<AdminTerm>) {
        self.admin_unconfirmed
            .set(i64::try_from(unconfirmed).unwrap_or(i64::MAX));
        self.admin_term
            .set(term.map_or(-1, |term| i64::try_from(term.0).unwrap_or(i64::MAX)));
    }

    /// Sets the per-process gauges of the processes with a declared limit, and only those (a
    /// process gone or without limits leaves no series behind).
    pub fn refresh_usage(&self, rows: &[ProcessRow], usage: &BTreeMap<ProcessId, ResourceUsage>) {
        self.process_memory.reset();
        self.process_memory_limit.reset();
        self.process_cpu.reset();
        self.process_cpu_limit.reset();
        for row in rows {
            let Some(resources) = &row.spec().resources else {
                continue;
            };
            let id = row.id().as_str();
            if let Some(limit) = resources.memory_bytes {
                self.process_memory_limit
                    .with_label_values(&[id])
                    .set(i64::try_from(limit).unwrap_or(i64::MAX));
            }
            if let Some(millicores) = resources.cpu_millis {
                self.process_cpu_limit
                    .with_label_values(&[id])
                    .set(i64::from(millicores));
            }
            if let Some(used) = usage.get(row.id()) {
                self.process_memory
                    .with_label_values(&[id])
                    .set(i64::try_from(used.memory_bytes).unwrap_or(i64::MAX));
                self.process_cpu
                    .with_label_values(&[id])
                    .set(f64::from(used.cpu_percent));
            }
        }
    }

    /// Every metric family, for an exposition.
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }
}

/// The `source` label of a process nothing desires any more.
const NO_SOURCE: &str = "none";

/// Every `source` label, each reported even at 0.
fn source_labels() -> impl Iterator<Item = &'static str> {
    SourceKind::WORDS.iter().copied().chain([NO_SOURCE])
}

/// A summary of launch durations (the seed's `pattern_launcher_launch_duration_seconds`, with
/// quantiles 0.5/0.95/0.99, `_sum` and `_count`), which the prometheus crate has no type for:
/// quantiles over the last `LAUNCH_WINDOW` launches, sum and count over all.
#[derive(Clone)]
pub struct LaunchDuration {
    state: Arc<Mutex<LaunchState>>,
    desc: Desc,
}

#[derive(Default)]
struct LaunchState {
    recent: VecDeque<f64>,
    sum: f64,
    count: u64,
}

impl Default for LaunchDuration {
    fn default() -> Self {
        LaunchDuration {
            state: Arc::default(),
            // The name and help are constants that Desc accepts (valid metric name, no labels).
            desc: Desc::new(
                "pattern_launcher_launch_duration_seconds".to_string(),
                "Launch duration percentiles".to_string(),
                Vec::new(),
                std::collections::HashMap::new(),
            )
            .unwrap_or_else(|_| unreachable!("a valid constant metric description")),
        }
    }
}

impl LaunchDuration {
    pub fn observe(&self, seconds: f64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.recent.len() == LAUNCH_WINDOW {
            state.recent.pop_front();
        }
        state.recent.push_back(seconds);
        state.sum += seconds;
        state.count += 1;
    }

    /// (quantile, value) pairs, the sum and the count.
    pub fn snapshot(&self) -> (Vec<(f64, f64)>, f64, u64) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sorted: Vec<f64> = state.recent.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let quantiles = QUANTILES
            .iter()
            .map(|quantile| {
                let value = if sorted.is_empty() {
                    0.0
                } else {
                    let rank = (quantile * (sorted.len() - 1) as f64).round() as usize;
                    sorted[rank.min(sorted.len() - 1)]
                };
                (*quantile, value)
            })
            .collect();
        (quantiles, state.sum, state.count)
    }
}

impl Collector for LaunchDuration {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (quantiles, sum, count) = self.snapshot();
        let mut summary = Summary::default();
        summary.set_sample_sum(sum);
        summary.set_sample_count(count);
        summary.set_quantile(
            quantiles
                .into_iter()
                .map(|(rank, value)| {
                    let mut quantile = Quantile::default();
                    quantile.set_quantile(rank);
                    quantile.set_value(value);
                    quantile
                })
                .collect(),
        );
        let mut metric = Metric::default();
        metric.set_summary(summary);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::SUMMARY);
        family.set_metric(vec![metric]);
        vec![family]
    }
}

/// What `/readyz` checks: the store is open (it is, once this exists), the first reconcile and
/// the first spec-directory scan are done, and the gRPC listener is up.
#[derive(Debug, Clone)]
pub struct Readiness {
    loop_synced: Arc<std::sync::atomic::AtomicBool>,
    /// Watched by the loop, which acts on what files declare only once they have been read.
    specs_synced: Arc<tokio::sync::watch::Sender<bool>>,
    listening: Arc<std::sync::atomic::AtomicBool>,
    /// Turns true once nothing is missing (for systemd's `READY=1`).
    ready: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Readiness {
    fn default() -> Readiness {
        Readiness {
            loop_synced: Arc::default(),
            specs_synced: Arc::new(tokio::sync::watch::Sender::new(false)),
            listening: Arc::default(),
            ready: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }
}

impl Readiness {
    /// Changes to true once the spec directory has been read in full.
    pub fn specs_read(&self) -> tokio::sync::watch::Receiver<bool> {
        self.specs_synced.subscribe()
    }

    /// Changes to true once the launcher is ready (nothing `missing`).
    pub fn when_ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }

    pub fn loop_synced(&self) {
        self.loop_synced
            .store(true, std::sync::atomic::Ordering::Release);
        self.check_ready();
    }

    pub fn specs_synced(&self) {
        self.specs_synced.send_replace(true);
        self.check_ready();
    }

    pub fn listening(&self) {
        self.listening
            .store(true, std::sync::atomic::Ordering::Release);
        self.check_ready();
    }

    fn check_ready(&self) {
        if self.missing().is_empty() {
            self.ready
                .send_if_modified(|ready| !std::mem::replace(ready, true));
        }
    }

    /// What is not ready yet, empty when ready.
    pub fn missing(&self) -> Vec<&'static str> {
        let load =
            |flag: &std::sync::atomic::AtomicBool| flag.load(std::sync::atomic::Ordering::Acquire);
        let mut missing = Vec::new();
        if !load(&self.loop_synced) {
            missing.push("the first reconcile");
        }
        if !*self.specs_synced.borrow() {
            missing.push("the first scan of the spec directory");
        }
        if !load(&self.listening) {
            missing.push("the gRPC listener");
        }
        missing
    }
}
