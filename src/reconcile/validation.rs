//! What "a valid spec" means, once for every writer of desired state: spec files, LaunchPattern
//! and AssignProcess all resolve their input into a `ProcessSpec` and run `ProcessSpec::problems`
//! on it before it is stored. Each writer names the fields in its own spelling (`spec.sessionId`
//! in a file, `session_id` on the wire), so a problem carries the field and is worded with the
//! writer's names.

use std::time::Duration;

use super::environment::{env_entry_problem, is_env_name, EnvProblem, EnvWriter};
use super::limits::{
    echo, MAX_ARGS_ENV_BYTES, MAX_ENTRIES, MAX_NAME_BYTES, MAX_NAME_PART, MAX_PATH_BYTES,
    MAX_VALUE_BYTES,
};
use super::model::{HealthCheck, Isolation, Probe, ProcessSpec};

/// The longest duration accepted anywhere (grace periods, backoff, intervals, timeouts): a week.
/// Nothing a supervisor waits for is longer, and the bound keeps time arithmetic from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The smallest memory limit accepted: under it a program fails somewhere in its dynamic loader
/// (a different error each time), which says nothing about the limit.
pub const MIN_MEMORY_LIMIT_BYTES: u64 = 4 << 20;

/// The shortest health-check interval: probing faster only loads the process.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// A field of a resolved spec.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpecField {
    /// The process type (`pattern`, `proxy`, `backend`, `utility`).
    ProcessType,
    Executable,
    Args,
    /// The arguments and the environment together, as `execve` takes them.
    ArgsAndEnv,
    WorkingDir,
    /// The catalog entry the spec names.
    Pattern,
    Namespace,
    SessionId,
    Isolation,
    Env,
    InheritEnv,
    HealthCheck(HealthCheckField),
    GrpcPort,
    HealthPort,
    BackoffInitial,
    BackoffMax,
    BackoffResetAfter,
    BackoffFailureThreshold,
    TerminationGrace,
    MemoryLimit,
    CpuLimit,
    RestartPolicy,
    SuccessExitCodes,
    Labels,
    /// A field of the type's configuration block, relative and in snake case (`proxy.proxy_id`).
    TypeConfig(String),
}

/// A field of a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HealthCheckField {
    /// The probe as a whole: whether there is a health check, its kind (HTTP, TCP, exec) and
    /// its port.
    Probe,
    HttpPath,
    ExecCommand,
    InitialDelay,
    Interval,
    Timeout,
    FailureThreshold,
    SuccessThreshold,
}

/// How one writer spells the fields of a spec, e.g. `spec.sessionId` or `session_id`.
pub trait FieldNames {
    fn name(&self, field: &SpecField) -> String;
}

impl<F: Fn(&SpecField) -> String> FieldNames for F {
    fn name(&self, field: &SpecField) -> String {
        self(field)
    }
}

/// One thing wrong with a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    pub field: SpecField,
    pub kind: ProblemKind,
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    RelativeExecutable(String),
    /// A NUL byte, which no argument, path or name handed to a process can hold.
    NulByte,
    MissingNamespace(Isolation),
    MissingSession,
    Env {
        name: String,
        problem: EnvProblem,
    },
    BadInheritName(String),
    /// A request set a variable outside its pattern's `allowed_config_keys`.
    KeyNotAllowed {
        name: String,
        allowed: Vec<String>,
    },
    /// A text (the field says which) of `len` bytes, over `max`.
    TextTooLong {
        len: usize,
        max: usize,
    },
    /// A map or list (the field says which) of `count` entries, over `max`.
    TooMany {
        count: usize,
        max: usize,
    },
    /// Arguments and environment that take `bytes` bytes, over `MAX_ARGS_ENV_BYTES`.
    ArgsAndEnvTooLarge {
        bytes: usize,
    },
    HttpPathNotAbsolute(String),
    EmptyExecCommand,
    IntervalTooShort(Duration),
    ZeroTimeout,
    /// A threshold (the field says which) of 0.
    ZeroThreshold,
    PortZero,
    BackoffBackwards {
        initial: Duration,
        max: Duration,
    },
    TooLong(Duration),
    /// A memory limit no program can start under.
    MemoryLimitTooSmall(u64),
    /// A problem of the type's configuration, already worded.
    TypeConfig(String),
}

impl SpecProblem {
    fn new(field: SpecField, kind: ProblemKind) -> SpecProblem {
        SpecProblem { field, kind }
    }

    /// The problem in a sentence, with fields spelled by `names`.
    pub fn message(&self, names: &dyn FieldNames) -> String {
        // A message names its own field by its last segment (`failureThreshold`), as people
        // read it next to the field's full path.
        let own = || last_segment(&names.name(&self.field));
        match &self.kind {
            ProblemKind::RelativeExecutable(path) => {
                format!("the executable {} must be an absolute path", echo(path))
            }
            ProblemKind::NulByte => format!("{} holds a NUL byte", own()),
            ProblemKind::MissingNamespace(isolation) => {
                format!(
                    "isolation {isolation} needs a {}",
                    last_segment(&names.name(&SpecField::Namespace))
                )
            }
            ProblemKind::MissingSession => format!(
                "isolation session needs a {}",
                last_segment(&names.name(&SpecField::SessionId))
            ),
            ProblemKind::Env {
                name,
                problem: EnvProblem::Injected,
            } => format!("{name} is set by the launcher and cannot be overridden"),
            ProblemKind::Env {
                name,
                problem: EnvProblem::BadName,
            }
            | ProblemKind::BadInheritName(name) => {
                format!("{} is not a valid environment variable name", echo(name))
            }
            ProblemKind::Env {
                name,
                problem: EnvProblem::NameTooLong,
            } => format!(
                "the variable name {} is too long; names may be at most {MAX_NAME_BYTES} bytes",
                echo(name)
            ),
            ProblemKind::Env {
                name,
                problem: EnvProblem::Loader,
            } => format!(
                "{} changes how programs are loaded or interpreted; a request may not set it \
                 (only the operator's spec files and pattern manifests may)",
                echo(name)
            ),
            ProblemKind::Env {
                name,
                problem: EnvProblem::NulInValue,
            } => format!("the value of {} contains a NUL byte", echo(name)),
            ProblemKind::Env {
                name,
                problem: EnvProblem::ValueTooLong(len),
            } => format!(
                "the value of {} is {len} bytes long; at most {MAX_VALUE_BYTES} are allowed",
                echo(name)
            ),
            ProblemKind::KeyNotAllowed { name, allowed } => format!(
                "{} is not among the config keys the pattern's manifest allows (allowed: {})",
                echo(name),
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            ),
            ProblemKind::TextTooLong { len, max } => {
                format!("{} is {len} bytes long; at most {max} are allowed", own())
            }
            ProblemKind::TooMany { count, max } => {
                format!("{} has {count} entries; at most {max} are allowed", own())
            }
            ProblemKind::ArgsAndEnvTooLarge { bytes } => format!(
                "the arguments and environment take {bytes} bytes; at most \
                 {MAX_ARGS_ENV_BYTES} are allowed"
            ),
            ProblemKind::HttpPathNotAbsolute(path) => {
                format!("path {} must start with '/'", echo(path))
            }
            ProblemKind::EmptyExecCommand => "command needs at least a program to run".to_string(),
            ProblemKind::IntervalTooShort(interval) => format!(
                "interval {interval:?} is too short; it must be at least {MIN_PROBE_INTERVAL:?}"
            ),
            ProblemKind::ZeroTimeout => "timeout must be positive".to_string(),
            ProblemKind::ZeroThreshold => format!("{} must be at least 1", own()),
            ProblemKind::PortZero => {
                "port 0 cannot be requested; leave it out to have one allocated".to_string()
            }
            ProblemKind::BackoffBackwards { initial, max } => {
                format!("initial {initial:?} is longer than max {max:?}")
            }
            ProblemKind::TooLong(duration) => format!(
                "{} {duration:?} is too long; durations may be at most 168h (a week)",
                own()
            ),
            ProblemKind::MemoryLimitTooSmall(bytes) => format!(
                "{} of {bytes} bytes is too small for any program to start; it must be at least \
                 {MIN_MEMORY_LIMIT_BYTES} bytes (4Mi)",
                own()
            ),
            ProblemKind::TypeConfig(message) => message.clone(),
        }
    }
}

fn last_segment(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).to_string()
}

impl ProcessSpec {
    /// Everything wrong with this spec, whoever wrote it; empty when it is valid. A spec is
    /// stored only when this is empty.
    pub fn problems(&self) -> Vec<SpecProblem> {
        let mut problems = Vec::new();
        let mut problem = |field: SpecField, kind: ProblemKind| {
            problems.push(SpecProblem::new(field, kind));
        };
        if !self.executable.is_absolute() {
            problem(
                SpecField::Executable,
                ProblemKind::RelativeExecutable(self.executable.display().to_string()),
            );
        }
        let has_nul = |text: &str| text.contains('\0');
        if has_nul(&self.executable.to_string_lossy()) {
            problem(SpecField::Executable, ProblemKind::NulByte);
        }
        if self.args.iter().any(|arg| has_nul(arg)) {
            problem(SpecField::Args, ProblemKind::NulByte);
        }
        if self
            .working_dir
            .as_ref()
            .is_some_and(|dir| has_nul(&dir.to_string_lossy()))
        {
            problem(SpecField::WorkingDir, ProblemKind::NulByte);
        }
        for (field, text) in [
            (SpecField::Namespace, &self.namespace),
            (SpecField::SessionId, &self.session_id),
        ] {
            if text.as_deref().is_some_and(has_nul) {
                problem(field, ProblemKind::NulByte);
            }
        }
        if self.isolation != Isolation::None && self.namespace.as_deref().is_none_or(str::is_empty)
        {
            problem(
                SpecField::Namespace,
                ProblemKind::MissingNamespace(self.isolation),
            );
        }
        if self.isolation == Isolation::Session
            && self.session_id.as_deref().is_none_or(str::is_empty)
        {
            problem(SpecField::SessionId, ProblemKind::MissingSession);
        }
        for (name, value) in &self.env {
            // Whoever wrote it, the spec as a whole is checked as the operator's: the variables
            // a request set itself were checked as a request's before they were merged with
            // its pattern's (`request_env_problems`).
            if let Some(env_problem) = env_entry_problem(name, value, EnvWriter::Operator) {
                problem(
                    SpecField::Env,
                    ProblemKind::Env {
                        name: name.clone(),
                        problem: env_problem,
                    },
                );
            }
        }
        for name in &self.inherit_env {
            if name.len() > MAX_NAME_BYTES {
                problem(
                    SpecField::InheritEnv,
                    ProblemKind::TextTooLong {
                        len: name.len(),
                        max: MAX_NAME_BYTES,
                    },
                );
            } else if !is_env_name(name) {
                problem(
                    SpecField::InheritEnv,
                    ProblemKind::BadInheritName(name.clone()),
                );
            }
        }
        if let Some(check) = &self.health_check {
            for health_problem in check.problems() {
                problem(health_problem.field, health_problem.kind);
            }
        }
        for (field, port) in [
            (SpecField::GrpcPort, self.requested_ports.grpc),
            (SpecField::HealthPort, self.requested_ports.health),
        ] {
            if port == Some(0) {
                problem(field, ProblemKind::PortZero);
            }
        }
        let backoff = &self.backoff;
        if backoff.failure_threshold == Some(0) {
            problem(
                SpecField::BackoffFailureThreshold,
                ProblemKind::ZeroThreshold,
            );
        }
        if let (Some(initial), Some(max)) = (backoff.initial, backoff.max) {
            if initial > max {
                problem(
                    SpecField::BackoffInitial,
                    ProblemKind::BackoffBackwards { initial, max },
                );
            }
        }
        for (field, duration) in [
            (SpecField::BackoffInitial, backoff.initial),
            (SpecField::BackoffMax, backoff.max),
            (SpecField::BackoffResetAfter, backoff.reset_after),
            (SpecField::TerminationGrace, Some(self.termination_grace)),
        ] {
            if let Some(duration) = duration.filter(|duration| *duration > MAX_DURATION) {
                problem(field, ProblemKind::TooLong(duration));
            }
        }
        if let Some(bytes) = self
            .resources
            .as_ref()
            .and_then(|resources| resources.memory_bytes)
            .filter(|bytes| *bytes < MIN_MEMORY_LIMIT_BYTES)
        {
            problem(
                SpecField::MemoryLimit,
                ProblemKind::MemoryLimitTooSmall(bytes),
            );
        }
        for (field, message) in self.type_config.problems(self.process_type) {
            problem(
                SpecField::TypeConfig(field),
                ProblemKind::TypeConfig(message),
            );
        }
        for (field, kind) in self.bound_problems() {
            problem(field, kind);
        }
        problems
    }

    /// The sizes of the spec held to the bounds of `limits`: every text, map and list, and the
    /// arguments and environment together (what the child's `execve` will take).
    fn bound_problems(&self) -> Vec<(SpecField, ProblemKind)> {
        let mut problems = Vec::new();
        let mut text = |field: SpecField, text: &str, max: usize| {
            if text.len() > max {
                problems.push((
                    field,
                    ProblemKind::TextTooLong {
                        len: text.len(),
                        max,
                    },
                ));
            }
        };
        text(
            SpecField::Executable,
            &self.executable.to_string_lossy(),
            MAX_PATH_BYTES,
        );
        if let Some(dir) = &self.working_dir {
            text(
                SpecField::WorkingDir,
                &dir.to_string_lossy(),
                MAX_PATH_BYTES,
            );
        }
        if let Some(longest) = self.args.iter().max_by_key(|arg| arg.len()) {
            text(SpecField::Args, longest, MAX_VALUE_BYTES);
        }
        text(
            SpecField::Namespace,
            self.namespace.as_deref().unwrap_or_default(),
            MAX_NAME_PART,
        );
        text(
            SpecField::SessionId,
            self.session_id.as_deref().unwrap_or_default(),
            MAX_NAME_PART,
        );
        text(
            SpecField::Pattern,
            self.pattern.as_deref().unwrap_or_default(),
            MAX_NAME_BYTES,
        );
        if let Some(check) = &self.health_check {
            let field = |field| SpecField::HealthCheck(field);
            match &check.probe {
                Probe::Http { path, .. } => {
                    text(field(HealthCheckField::HttpPath), path, MAX_VALUE_BYTES)
                }
                Probe::Exec { command } => {
                    if let Some(longest) = command.iter().max_by_key(|part| part.len()) {
                        text(
                            field(HealthCheckField::ExecCommand),
                            longest,
                            MAX_VALUE_BYTES,
                        );
                    }
                }
                Probe::Tcp { .. } => {}
            }
        }
        for (key, value) in &self.labels {
            text(SpecField::Labels, key, MAX_NAME_BYTES);
            text(SpecField::Labels, value, MAX_VALUE_BYTES);
        }
        let exec_command = self
            .health_check
            .as_ref()
            .map_or(0, |check| match &check.probe {
                Probe::Exec { command } => command.len(),
                Probe::Http { .. } | Probe::Tcp { .. } => 0,
            });
        for (field, count) in [
            (SpecField::Args, self.args.len()),
            (SpecField::Env, self.env.len()),
            (SpecField::InheritEnv, self.inherit_env.len()),
            (SpecField::SuccessExitCodes, self.success_exit_codes.len()),
            (SpecField::Labels, self.labels.len()),
            (
                SpecField::HealthCheck(HealthCheckField::ExecCommand),
                exec_command,
            ),
        ] {
            if count > MAX_ENTRIES {
                problems.push((
                    field,
                    ProblemKind::TooMany {
                        count,
                        max: MAX_ENTRIES,
                    },
                ));
            }
        }
        let bytes = self.args_and_env_bytes();
        if bytes > MAX_ARGS_ENV_BYTES {
            problems.push((
                SpecField::ArgsAndEnv,
                ProblemKind::ArgsAndEnvTooLarge { bytes },
            ));
        }
        problems
    }

    /// The bytes the executable, the arguments and the variables of the spec and of its type's
    /// configuration take in an `execve` (each string with its NUL; `NAME=value`). The few the
    /// launcher injects or passes through are not counted: they are small, and the bound leaves
    /// room for them.
    pub fn args_and_env_bytes(&self) -> usize {
        let executable = self.executable.as_os_str().len() + 1;
        let args: usize = self.args.iter().map(|arg| arg.len() + 1).sum();
        let variable = |name: &str, value: &str| name.len() + 1 + value.len() + 1;
        let env: usize = self
            .env
            .iter()
            .map(|(name, value)| variable(name, value))
            .sum();
        let type_env: usize = self
            .type_config
            .environment()
            .iter()
            .map(|(name, value)| variable(name, value))
            .sum();
        executable
            .saturating_add(args)
            .saturating_add(env)
            .saturating_add(type_env)
    }
}

/// What the variables a request sets itself (LaunchPattern's `config`, an assignment's `env`
/// and `log_level`; not what its pattern's manifest sets, which the operator wrote) add to the
/// problems of the spec it makes: a request may not set a loader or interpreter variable
/// (`EnvWriter::Request`), nor, when the pattern's manifest lists `allowed_config_keys`, a key
/// outside that list. The rest of each variable's rules are the spec's (`ProcessSpec::problems`).
pub fn request_env_problems<'a>(
    request_env: impl IntoIterator<Item = (&'a str, &'a str)>,
    allowed_keys: Option<&[String]>,
) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    for (name, value) in request_env {
        let kind = match env_entry_problem(name, value, EnvWriter::Request) {
            Some(EnvProblem::Loader) => ProblemKind::Env {
                name: name.to_string(),
                problem: EnvProblem::Loader,
            },
            // Found again, and reported, by the spec's own check.
            Some(_) => continue,
            None => match allowed_keys {
                Some(allowed) if !allowed.iter().any(|key| key == name) => {
                    ProblemKind::KeyNotAllowed {
                        name: name.to_string(),
                        allowed: allowed.to_vec(),
                    }
                }
                Some(_) | None => continue,
            },
        };
        problems.push(SpecProblem::new(SpecField::Env, kind));
    }
    problems
}

impl HealthCheck {
    /// Everything wrong with this health check; also what a catalog manifest's health check is
    /// checked with.
    pub fn problems(&self) -> Vec<SpecProblem> {
        let mut problems = Vec::new();
        let mut problem = |field: HealthCheckField, kind: ProblemKind| {
            problems.push(SpecProblem::new(SpecField::HealthCheck(field), kind));
        };
        match &self.probe {
            Probe::Http { path, .. } if !path.starts_with('/') => problem(
                HealthCheckField::HttpPath,
                ProblemKind::HttpPathNotAbsolute(path.clone()),
            ),
            Probe::Exec { command } if command.first().is_none_or(String::is_empty) => {
                problem(HealthCheckField::ExecCommand, ProblemKind::EmptyExecCommand)
            }
            Probe::Exec { command } if command.iter().any(|part| part.contains('\0')) => {
                problem(HealthCheckField::ExecCommand, ProblemKind::NulByte)
            }
            Probe::Http { .. } | Probe::Tcp { .. } | Probe::Exec { .. } => {}
        }
        if self.interval < MIN_PROBE_INTERVAL {
            problem(
                HealthCheckField::Interval,
                ProblemKind::IntervalTooShort(self.interval),
            );
        }
        if self.timeout.is_zero() {
            problem(HealthCheckField::Timeout, ProblemKind::ZeroTimeout);
        }
        if self.failure_threshold == 0 {
            problem(
                HealthCheckField::FailureThreshold,
                ProblemKind::ZeroThreshold,
            );
        }
        if self.success_threshold == 0 {
            problem(
                HealthCheckField::SuccessThreshold,
                ProblemKind::ZeroThreshold,
            );
        }
        for (field, duration) in [
            (HealthCheckField::InitialDelay, self.initial_delay),
            (HealthCheckField::Interval, self.interval),
            (HealthCheckField::Timeout, self.timeout),
        ] {
            if duration > MAX_DURATION {
                problem(field, ProblemKind::TooLong(duration));
            }
        }
        problems
    }
}
