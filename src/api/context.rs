//! What every gRPC service and the admin client share, built once by `app` and handed out as
//! one `Arc`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::admin_client::AdminLinkWatch;
use super::control_plane::AssignmentPolicy;
use super::logs::LogSource;
use crate::clock::Clock;
use crate::reconcile::{Isolation, LimitMode, UnixMillis};
use crate::sources::catalog::SharedCatalog;
use crate::sources::SourceProblems;
use crate::store::Store;
use crate::telemetry::UsageBoard;

pub struct ApiContext {
    pub store: Arc<Store>,
    pub catalog: SharedCatalog,
    /// The watched spec directory (absolute), which `apply` and `delete` write.
    pub specs_dir: PathBuf,
    /// Problems of the sources of desired state, for `status`.
    pub problems: SourceProblems,
    pub clock: Clock,
    /// Becomes true when the launcher shuts down; waiting calls then end at once.
    pub stopping: watch::Receiver<bool>,
    pub launcher_id: String,
    /// When the launcher started, for `uptime_seconds`.
    pub started_at: UnixMillis,
    /// How long LaunchPattern waits for a healthy process (at least what the health check needs).
    pub launch_wait: Duration,
    /// The isolation of a launch that does not say, for patterns whose manifest does not either.
    pub default_isolation: Isolation,
    /// What the launcher accepts from prism-admin.
    pub policy: AssignmentPolicy,
    /// Children's logs, for StreamLogs.
    pub logs: Arc<dyn LogSource>,
    /// What the host enforces resource limits with, for status.
    pub limit_mode: LimitMode,
    /// What processes use, sampled on demand.
    pub usage: UsageBoard,
    /// The link to prism-admin (standalone without one), for status.
    pub admin: AdminLinkWatch,
}

impl ApiContext {
    /// The current time, from the context's clock.
    pub fn now(&self) -> UnixMillis {
        (self.clock)()
    }
}
