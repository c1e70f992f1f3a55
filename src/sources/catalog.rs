//! The pattern catalog: `<patterns-dir>/<name>/manifest.yaml` in the seed's manifest format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use serde::Deserialize;

use super::spec_file::{read_bounded_text, MAX_SPEC_FILE_BYTES};
use super::values::{parse_cpu, parse_memory, DurationValue, QuantityValue, Word};
use super::yaml_shape::check_shape;
use crate::reconcile::{
    echo, env_entry_problem, is_env_name, is_loader_variable, shortened, EnvWriter, HealthCheck,
    HealthCheckField, Isolation, Probe, ProblemKind, ProcessSpec, ProcessType, RequestedPorts,
    Resources, RestartPolicy, SpecField, SpecProblem, TypeConfig, MAX_ENTRIES,
};

pub const MANIFEST_FILE: &str = "manifest.yaml";

/// Largest manifest read (as large as a spec file may be); bigger ones are refused unparsed.
pub const MAX_MANIFEST_BYTES: u64 = MAX_SPEC_FILE_BYTES;

/// A pattern as its manifest declares it, with its executable made absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub name: String,
    pub version: String,
    pub executable: PathBuf,
    /// The isolation a launch gets when it does not say; `None` leaves it to the launcher's
    /// default (`--default-isolation`, the old `--isolation`).
    pub isolation: Option<Isolation>,
    pub health_check: Option<HealthCheck>,
    /// The health port the manifest names: used when free, else one is allocated.
    pub health_port: Option<u16>,
    pub resources: Option<Resources>,
    pub environment: BTreeMap<String, String>,
    /// The only `config` keys a launch of this pattern may set (`allowed_config_keys`); `None`
    /// when the manifest does not narrow them (a request still never sets a loader variable).
    pub allowed_config_keys: Option<Vec<String>>,
    pub manifest: PathBuf,
}

/// The loaded catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    entries: BTreeMap<String, CatalogEntry>,
}

/// A manifest that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", manifest.display())]
pub struct CatalogError {
    pub manifest: PathBuf,
    pub message: String,
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.entries.get(name)
    }

    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.values()
    }

    pub fn insert(&mut self, entry: CatalogEntry) {
        self.entries.insert(entry.name.clone(), entry);
    }

    /// The known names, for "not found" messages.
    pub fn names_for_message(&self) -> String {
        if self.entries.is_empty() {
            "none".to_string()
        } else {
            self.entries.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// The catalog shared by the spec watcher and the PatternLauncher service, replaced whole on
/// every reload.
pub type SharedCatalog = Arc<RwLock<Catalog>>;

/// Reads the shared catalog. A panic while it was being replaced cannot leave it half-written
/// (it is swapped whole), so a poisoned lock still holds a consistent catalog.
pub fn read_catalog(shared: &SharedCatalog) -> RwLockReadGuard<'_, Catalog> {
    shared
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Catalog {
    /// The catalog after a reload: the freshly loaded entries, plus each entry of `self` whose
    /// manifest failed to load this time, so that a bad edit never removes a good pattern.
    pub fn reloaded(&self, fresh: Catalog, errors: &[CatalogError]) -> Catalog {
        let mut next = fresh;
        for entry in self.entries.values() {
            let broken = errors.iter().any(|error| error.manifest == entry.manifest);
            if broken && next.get(&entry.name).is_none() {
                next.insert(entry.clone());
            }
        }
        next
    }
}

impl CatalogEntry {
    /// The spec of a process launched from this pattern.
    pub fn launch_spec(&self, launch: Launch) -> ProcessSpec {
        let mut env = self.environment.clone();
        env.extend(launch.config);
        ProcessSpec {
            process_type: ProcessType::Pattern,
            executable: self.executable.clone(),
            args: Vec::new(),
            env,
            inherit_env: Vec::new(),
            working_dir: None,
            pattern: Some(self.name.clone()),
            isolation: launch.isolation,
            namespace: launch.namespace,
            session_id: launch.session_id,
            health_check: self.health_check.clone(),
            restart_policy: RestartPolicy::Always,
            success_exit_codes: Vec::new(),
            backoff: Default::default(),
            termination_grace: launch
                .grace
                .unwrap_or(ProcessSpec::DEFAULT_TERMINATION_GRACE),
            resources: self.resources.clone(),
            requested_ports: RequestedPorts {
                grpc: None,
                health: self.health_port,
            },
            type_config: TypeConfig::None,
            labels: BTreeMap::new(),
        }
    }
}

/// What a launch adds to a catalog entry.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub isolation: Isolation,
    pub namespace: Option<String>,
    pub session_id: Option<String>,
    /// Variables for the child's environment (validated with the whole spec it makes).
    pub config: BTreeMap<String, String>,
    pub grace: Option<Duration>,
}

/// Loads every `<dir>/<name>/manifest.yaml`. A bad manifest is reported and left out; the others
/// load.
pub fn load_catalog(dir: &Path) -> (Catalog, Vec<CatalogError>) {
    let mut catalog = Catalog::default();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            errors.push(CatalogError {
                manifest: dir.to_path_buf(),
                message: format!("cannot read the patterns directory: {error}"),
            });
            return (catalog, errors);
        }
    };
    let mut folders: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.join(MANIFEST_FILE).is_file())
        .collect();
    folders.sort();
    for folder in folders {
        match load_manifest(&folder.join(MANIFEST_FILE)) {
            Ok(entry) => catalog.insert(entry),
            Err(error) => errors.push(error),
        }
    }
    (catalog, errors)
}

/// Loads one manifest file.
pub fn load_manifest(path: &Path) -> Result<CatalogEntry, CatalogError> {
    let error = |message: String| CatalogError {
        manifest: path.to_path_buf(),
        message,
    };
    let text = read_bounded_text(path, MAX_MANIFEST_BYTES)
        .map_err(|problem| error(format!("cannot use the manifest: {problem}")))?;
    check_shape(&text).map_err(|problem| error(format!("cannot use the manifest: {problem}")))?;
    let manifest: Manifest = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(
        &text,
    ))
    .map_err(|parse| {
        let field = parse.path().to_string();
        let inner = parse.into_inner();
        let line = inner.location().map_or_else(String::new, |location| {
            format!("line {}: ", location.line())
        });
        // serde quotes a value it refuses whole: kept short, as spec files' errors are.
        error(shortened(&format!("{line}field {field}: {inner}"), 512))
    })?;
    let folder = path.parent().unwrap_or(Path::new("."));
    manifest
        .resolve(folder)
        .map_err(|problems| error(problems.join("; ")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    #[serde(default)]
    version: String,
    executable: String,
    isolation_level: Option<Word<Isolation>>,
    healthcheck: Option<ManifestHealthCheck>,
    resources: Option<ManifestResources>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    allowed_config_keys: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestHealthCheck {
    port: Option<u16>,
    #[serde(default = "default_path")]
    path: String,
    interval: Option<DurationValue>,
    timeout: Option<DurationValue>,
    failure_threshold: Option<u32>,
}

fn default_path() -> String {
    "/health".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestResources {
    cpu_limit: Option<QuantityValue>,
    memory_limit: Option<QuantityValue>,
}

impl Manifest {
    fn resolve(self, folder: &Path) -> Result<CatalogEntry, Vec<String>> {
        let mut problems = Vec::new();
        let folder_name = folder
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        if self.name != folder_name {
            problems.push(format!(
                "name {:?} does not match its folder {folder_name:?}",
                self.name
            ));
        }
        if self.executable.trim().is_empty() {
            problems.push("executable is empty".to_string());
        }
        let executable = {
            let path = Path::new(&self.executable);
            let joined = if path.is_absolute() {
                path.to_path_buf()
            } else {
                folder.join(path)
            };
            std::path::absolute(&joined).unwrap_or(joined)
        };
        let health_port = self.healthcheck.as_ref().and_then(|check| check.port);
        if health_port == Some(0) {
            problems.push(
                "healthcheck.port 0 cannot be requested; leave it out to have one allocated"
                    .to_string(),
            );
        }
        let health_check = self.healthcheck.map(|check| {
            let defaults = HealthCheck::new(
                // The manifest's port is where HEALTH_PORT is allocated when free, so the probe
                // follows HEALTH_PORT rather than the literal number.
                Probe::Http {
                    path: check.path,
                    port: None,
                },
            );
            HealthCheck {
                interval: check.interval.map_or(defaults.interval, |value| value.0),
                timeout: check.timeout.map_or(defaults.timeout, |value| value.0),
                failure_threshold: check
                    .failure_threshold
                    .unwrap_or(defaults.failure_threshold),
                ..defaults
            }
        });
        // Variables the launcher injects, or that no environment can hold, are refused here,
        // where the manifest is to blame, rather than in every launch of it.
        for (name, value) in &self.environment {
            if let Some(problem) = env_entry_problem(name, value, EnvWriter::Operator) {
                let found = SpecProblem {
                    field: SpecField::Env,
                    kind: ProblemKind::Env {
                        name: name.clone(),
                        problem,
                    },
                };
                problems.push(format!("environment: {}", found.message(&manifest_field)));
            }
        }
        // The list narrows what requests may set; it cannot widen it, so a loader variable in
        // it is a mistake worth refusing rather than a key silently never allowed.
        for key in self.allowed_config_keys.iter().flatten() {
            if !is_env_name(key) {
                problems.push(format!(
                    "allowed_config_keys: {} is not a valid environment variable name",
                    echo(key)
                ));
            } else if is_loader_variable(key) {
                problems.push(format!(
                    "allowed_config_keys: {} changes how programs are loaded or interpreted; \
                     a request may never set it (set it in environment instead)",
                    echo(key)
                ));
            }
        }
        if let Some(count) = self
            .allowed_config_keys
            .as_ref()
            .map(Vec::len)
            .filter(|count| *count > MAX_ENTRIES)
        {
            problems.push(format!(
                "allowed_config_keys has {count} entries; at most {MAX_ENTRIES} are allowed"
            ));
        }
        for found in health_check.iter().flat_map(HealthCheck::problems) {
            let field = manifest_field(&found.field);
            problems.push(format!("{field}: {}", found.message(&manifest_field)));
        }
        let resources = self.resources.and_then(|resources| {
            Resources::limits(
                resources.cpu_limit.and_then(|value| {
                    parse_cpu(&value.0)
                        .map_err(|problem| problems.push(format!("resources.cpu_limit: {problem}")))
                        .ok()
                }),
                resources.memory_limit.and_then(|value| {
                    parse_memory(&value.0)
                        .map_err(|problem| {
                            problems.push(format!("resources.memory_limit: {problem}"))
                        })
                        .ok()
                }),
            )
        });
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(CatalogEntry {
            name: self.name,
            version: self.version,
            executable,
            isolation: self.isolation_level.map(|word| word.0),
            health_check,
            health_port,
            resources,
            environment: self.environment,
            allowed_config_keys: self.allowed_config_keys,
            manifest: folder.join(MANIFEST_FILE),
        })
    }
}

/// How a manifest spells the fields of its health check (the only part of a spec it declares
/// that has rules beyond its syntax).
fn manifest_field(field: &SpecField) -> String {
    let name = match field {
        SpecField::HealthCheck(HealthCheckField::HttpPath) => "path",
        SpecField::HealthCheck(HealthCheckField::Interval) => "interval",
        SpecField::HealthCheck(HealthCheckField::Timeout) => "timeout",
        SpecField::HealthCheck(HealthCheckField::FailureThreshold) => "failure_threshold",
        SpecField::HealthCheck(_) => "",
        _ => return String::new(),
    };
    format!("healthcheck.{name}")
}
