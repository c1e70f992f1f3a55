//! The type-specific configuration of ADR-057's process types (pattern, proxy, backend,
//! utility): what each needs, how each is validated, and the environment each hands its child.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::limits::{echo, MAX_ENTRIES, MAX_VALUE_BYTES};
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
                    let slot_field = slot_field(slot);
                    if !is_config_key(slot) {
                        problem(
                            "pattern.slots",
                            format!("slot name {} must be letters, digits, - and _", echo(slot)),
                        );
                    }
                    for (field, message) in backend_problems(backend) {
                        problem(&format!("{slot_field}.{field}"), message);
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
        problems.extend(self.bound_problems());
        problems
    }

    /// The sizes of this configuration held to the bounds of `limits`: every text, map and list.
    fn bound_problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        // Each of these reaches the child's environment, where a NUL byte would fail every spawn.
        let mut text = |field: &str, value: &str| {
            if value.len() > MAX_VALUE_BYTES {
                problems.push((field.to_string(), too_long(field, value.len())));
            } else if value.contains('\0') {
                let name = field.rsplit('.').next().unwrap_or(field);
                problems.push((field.to_string(), format!("{name} holds a NUL byte")));
            }
        };
        match self {
            TypeConfig::None => {}
            TypeConfig::Pattern(config) => {
                text("pattern.pattern_type", &config.pattern_type);
                for (slot, backend) in &config.slots {
                    for (field, message) in backend_bound_problems(backend) {
                        problems.push((format!("{}.{field}", slot_field(slot)), message));
                    }
                }
            }
            TypeConfig::Proxy(config) => {
                text("proxy.proxy_id", &config.proxy_id);
                text("proxy.admin_endpoint", &config.admin_endpoint);
            }
            TypeConfig::Backend(config) => {
                for (field, message) in backend_bound_problems(config) {
                    problems.push((format!("backend.{field}"), message));
                }
            }
            TypeConfig::Utility(config) => text("utility.utility_type", &config.utility_type),
        }
        let counts = match self {
            TypeConfig::None | TypeConfig::Backend(_) => vec![],
            TypeConfig::Pattern(config) => vec![
                ("pattern.slots", config.slots.len()),
                ("pattern.settings", config.settings.len()),
            ],
            TypeConfig::Proxy(config) => {
                vec![("proxy.partition_ranges", config.partition_ranges.len())]
            }
            TypeConfig::Utility(config) => vec![
                ("utility.settings", config.settings.len()),
                ("utility.target_processes", config.target_processes.len()),
            ],
        };
        for (field, count) in counts {
            if count > MAX_ENTRIES {
                problems.push((field.to_string(), too_many(field, count)));
            }
        }
        problems
    }

    /// The name of the block this configuration is written in (`pattern`, `proxy`, `backend`,
    /// `utility`, as `problems` names its fields); empty for none.
    pub fn block_name(&self) -> &'static str {
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
                format!("key {} must be letters, digits, - and _", echo(key)),
            ));
        }
    }
    problems
}

/// The field of a slot: its name is part of the path only when it is a valid one (a bad name
/// is reported, and echoed truncated, on `pattern.slots` itself).
fn slot_field(slot: &str) -> String {
    if is_config_key(slot) {
        format!("pattern.slots.{slot}")
    } else {
        "pattern.slots".to_string()
    }
}

/// The sizes of a backend's configuration (its secrets' lengths only: they are never echoed).
fn backend_bound_problems(config: &BackendConfig) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (field, value) in [
        ("backend_type", config.backend_type.as_str()),
        ("connection_string", config.connection_string.expose()),
    ] {
        if value.len() > MAX_VALUE_BYTES {
            problems.push((field.to_string(), too_long(field, value.len())));
        } else if value.contains('\0') {
            problems.push((field.to_string(), format!("{field} holds a NUL byte")));
        }
    }
    for (field, count) in [
        ("credentials", config.credentials.len()),
        ("options", config.options.len()),
    ] {
        if count > MAX_ENTRIES {
            problems.push((field.to_string(), too_many(field, count)));
        }
    }
    let values = config
        .credentials
        .iter()
        .map(|(key, value)| ("credentials", key, value.expose()))
        .chain(
            config
                .options
                .iter()
                .map(|(key, value)| ("options", key, value.as_str())),
        );
    for (field, key, value) in values {
        if value.len() > MAX_VALUE_BYTES || value.contains('\0') {
            problems.push((
                field.to_string(),
                format!(
                    "the value of {} is too long (over {MAX_VALUE_BYTES} bytes) or holds a NUL byte",
                    echo(key)
                ),
            ));
        }
    }
    problems
}

/// The message of a text of `len` bytes over `MAX_VALUE_BYTES`, naming its field by its last
/// segment as the writers' messages do.
fn too_long(field: &str, len: usize) -> String {
    let name = field.rsplit('.').next().unwrap_or(field);
    format!("{name} is {len} bytes long; at most {MAX_VALUE_BYTES} are allowed")
}

fn too_many(field: &str, count: usize) -> String {
    let name = field.rsplit('.').next().unwrap_or(field);
    format!("{name} has {count} entries; at most {MAX_ENTRIES} are allowed")
}

fn check_keys(map: &BTreeMap<String, String>, field: &str, problem: &mut impl FnMut(&str, String)) {
    for (key, value) in map {
        if !is_config_key(key) {
            problem(
                field,
                format!("key {} must be letters, digits, - and _", echo(key)),
            );
        }
        if value.len() > MAX_VALUE_BYTES || value.contains('\0') {
            problem(
                field,
                format!(
                    "the value of {} is too long (over {MAX_VALUE_BYTES} bytes) or holds a NUL byte",
                    echo(key)
                ),
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
