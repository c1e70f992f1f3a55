//! The type-specific configuration of ADR-057's process types (pattern, proxy, backend,
//! utility): what each needs, how each is validated, and the environment each hands its child.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::model::{ProcessId, ProcessType};

/// A value that must never be shown: credentials and connection strings. Its `Debug` is
/// redacted and it has no `Display`, so it cannot reach a log line, `status`, a metric or an
/// error message by accident. It is handed to the child's environment, and it is stored with its
/// desired record in the launcher's store, in clear: the store is protected only by the
/// permissions of the data directory (ARCHITECTURE.md, "Secrets at rest", says why).
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that needs it: the child's environment.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The configuration block of a process's type. `None` for a process that needs none (a pattern
/// from the catalog, a plain utility).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TypeConfig {
    #[default]
    None,
    Pattern(PatternConfig),
    Proxy(ProxyConfig),
    Backend(BackendConfig),
    Utility(UtilityConfig),
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PatternConfig {
    /// keyvalue, pubsub, ...
    pub pattern_type: String,
    /// The backends of the pattern's slots, by slot name.
    pub slots: BTreeMap<String, BackendConfig>,
    pub settings: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProxyConfig {
    pub proxy_id: String,
    pub admin_endpoint: String,
    pub control_port: u16,
    pub data_port: u16,
    pub partition_ranges: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BackendConfig {
    /// redis, kafka, nats, postgres, ...
    pub backend_type: String,
    /// Often holds a password, so it is a secret too.
    pub connection_string: Secret,
    pub credentials: BTreeMap<String, Secret>,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UtilityConfig {
    /// log-collector, metrics-exporter, ...
    pub utility_type: String,
    pub settings: BTreeMap<String, String>,
    /// The processes the utility works on.
    pub target_processes: Vec<String>,
}

/// Longest type name, setting key or value accepted in a type config.
pub const MAX_CONFIG_TEXT: usize = 4096;

impl TypeConfig {
    /// What is wrong with this configuration for a process of `process_type`, as (field,
    /// message) pairs; the fields are relative to the config block.
    pub fn problems(&self, process_type: ProcessType) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut problem =
            |field: &str, message: String| problems.push((field.to_string(), message));
        match (self, process_type) {
            (TypeConfig::None, ProcessType::Proxy) => problem(
                "proxy",
                "a proxy needs its proxy config (proxy_id, control and data ports)".to_string(),
            ),
            (TypeConfig::None, ProcessType::Backend) => problem(
                "backend",
                "a backend needs its backend config (backend_type, connection string)".to_string(),
            ),
            (TypeConfig::None, _) => {}
            (TypeConfig::Pattern(config), ProcessType::Pattern) => {
                for (slot, backend) in &config.slots {
                    if !is_config_key(slot) {
                        problem(
                            "pattern.slots",
                            format!("slot name {slot:?} must be letters, digits, - and _"),
                        );
                    }
                    for (field, message) in backend_problems(backend) {
                        problem(&format!("pattern.slots.{slot}.{field}"), message);
                    }
                }
                check_keys(&config.settings, "pattern.settings", &mut problem);
            }
            (TypeConfig::Proxy(config), ProcessType::Proxy) => {
                if config.proxy_id.trim().is_empty() {
                    problem("proxy.proxy_id", "a proxy needs a proxy_id".to_string());
                }
                if config.control_port == 0 || config.data_port == 0 {
                    problem(
                        "proxy",
                        "a proxy needs a control_port and a data_port (1-65535)".to_string(),
                    );
                } else if config.control_port == config.data_port {
                    problem(
                        "proxy.data_port",
                        format!(
                            "control_port and data_port must differ (both are {})",
                            config.data_port
                        ),
                    );
                }
            }
            (TypeConfig::Backend(config), ProcessType::Backend) => {
                for (field, message) in backend_problems(config) {
                    problem(&format!("backend.{field}"), message);
                }
            }
            (TypeConfig::Utility(config), ProcessType::Utility) => {
                if config.utility_type.trim().is_empty() {
                    problem(
                        "utility.utility_type",
                        "a utility needs a utility_type".to_string(),
                    );
                }
                check_keys(&config.settings, "utility.settings", &mut problem);
                for target in &config.target_processes {
                    if let Err(error) = ProcessId::new(target.clone()) {
                        problem("utility.target_processes", error.to_string());
                    }
                }
            }
            (config, process_type) => problem(
                config.block_name(),
                format!(
                    "a {} config was given for a process of type {}",
                    config.block_name(),
                    process_type.as_str()
                ),
            ),
        }
        problems
    }

    fn block_name(&self) -> &'static str {
        match self {
            TypeConfig::None => "",
            TypeConfig::Pattern(_) => "pattern",
            TypeConfig::Proxy(_) => "proxy",
            TypeConfig::Backend(_) => "backend",
            TypeConfig::Utility(_) => "utility",
        }
    }

    /// The environment variables this configuration hands the child (documented in the
    /// README). Setting keys become upper case, with characters other than letters and digits
    /// replaced by `_`.
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        match self {
            TypeConfig::None => {}
            TypeConfig::Pattern(config) => {
                push_if_set(&mut env, "PATTERN_TYPE", &config.pattern_type);
                push_map(&mut env, "PATTERN_SETTING_", &config.settings);
                if !config.slots.is_empty() {
                    let names: Vec<&str> = config.slots.keys().map(String::as_str).collect();
                    env.push(("PATTERN_SLOTS".to_string(), names.join(",")));
                }
                for (slot, backend) in &config.slots {
                    backend_environment(
                        &mut env,
                        &format!("PATTERN_SLOT_{}_", env_key(slot)),
                        backend,
                    );
                }
            }
            TypeConfig::Proxy(config) => {
                env.push(("PROXY_ID".to_string(), config.proxy_id.clone()));
                push_if_set(&mut env, "PROXY_ADMIN_ENDPOINT", &config.admin_endpoint);
                env.push((
                    "PROXY_CONTROL_PORT".to_string(),
                    config.control_port.to_string(),
                ));
                env.push(("PROXY_DATA_PORT".to_string(), config.data_port.to_string()));
                if !config.partition_ranges.is_empty() {
                    let ranges: Vec<String> = config
                        .partition_ranges
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    env.push(("PROXY_PARTITION_RANGES".to_string(), ranges.join(",")));
                }
            }
            TypeConfig::Backend(config) => backend_environment(&mut env, "BACKEND_", config),
            TypeConfig::Utility(config) => {
                env.push(("UTILITY_TYPE".to_string(), config.utility_type.clone()));
                push_map(&mut env, "UTILITY_SETTING_", &config.settings);
                if !config.target_processes.is_empty() {
                    env.push((
                        "UTILITY_TARGET_PROCESSES".to_string(),
                        config.target_processes.join(","),
                    ));
                }
            }
        }
        env
    }
}

fn backend_problems(config: &BackendConfig) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if config.backend_type.trim().is_empty() {
        problems.push((
            "backend_type".to_string(),
            "a backend needs a backend_type".to_string(),
        ));
    }
    if config.connection_string.is_empty() {
        problems.push((
            "connection_string".to_string(),
            "a backend needs a connection string".to_string(),
        ));
    }
    for key in config.credentials.keys().chain(config.options.keys()) {
        if !is_config_key(key) {
            problems.push((
                "credentials".to_string(),
                format!("key {key:?} must be letters, digits, - and _"),
            ));
        }
    }
    problems
}

fn check_keys(map: &BTreeMap<String, String>, field: &str, problem: &mut impl FnMut(&str, String)) {
    for (key, value) in map {
        if !is_config_key(key) {
            problem(
                field,
                format!("key {key:?} must be letters, digits, - and _"),
            );
        }
        if value.len() > MAX_CONFIG_TEXT || value.contains('\0') {
            problem(
                field,
                format!("the value of {key:?} is too long or holds a NUL byte"),
            );
        }
    }
}

fn backend_environment(env: &mut Vec<(String, String)>, prefix: &str, config: &BackendConfig) {
    env.push((format!("{prefix}TYPE"), config.backend_type.clone()));
    env.push((
        format!("{prefix}CONNECTION_STRING"),
        config.connection_string.expose().to_string(),
    ));
    for (key, value) in &config.credentials {
        env.push((
            format!("{prefix}CREDENTIAL_{}", env_key(key)),
            value.expose().to_string(),
        ));
    }
    push_map(env, &format!("{prefix}OPTION_"), &config.options);
}

fn push_if_set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    if !value.is_empty() {
        env.push((name.to_string(), value.to_string()));
    }
}

fn push_map(env: &mut Vec<(String, String)>, prefix: &str, map: &BTreeMap<String, String>) {
    for (key, value) in map {
        env.push((format!("{prefix}{}", env_key(key)), value.clone()));
    }
}

/// `redis-url` → `REDIS_URL`.
fn env_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn is_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
