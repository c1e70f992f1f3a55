//! The rules of a child's environment, in one place for the validation of specs and for the
//! spawn that builds the environment: which variables the launcher injects (and nobody else may
//! set), which it passes through from its own environment, and what a valid name and value are.

use std::collections::BTreeMap;

use super::limits::{MAX_NAME_BYTES, MAX_VALUE_BYTES};
use super::model::{Ports, ProcessId, ProcessSpec};

/// The id of the process a child is (an instance of).
pub const PROCESS_ID_ENV: &str = "PROCESS_ID";

/// The launcher a child belongs to: what makes a process provably ours.
pub const LAUNCHER_ID_ENV: &str = "PRISM_LAUNCHER_ID";

/// Unique to one spawn, and inherited by the child's descendants: what tells a process's
/// instance from the one before it.
pub const INSTANCE_ID_ENV: &str = "PRISM_INSTANCE_ID";

/// The variables the launcher sets for every child, in the order `injected_values` gives them;
/// a spec cannot set or override them.
pub const INJECTED_ENV: [&str; 9] = [
    "PATTERN_NAME",
    "NAMESPACE",
    "SESSION_ID",
    "GRPC_PORT",
    "HEALTH_PORT",
    PROCESS_ID_ENV,
    "PROCESS_TYPE",
    LAUNCHER_ID_ENV,
    INSTANCE_ID_ENV,
];

/// Carried by exec probes instead of `PRISM_LAUNCHER_ID` (a probe is not a process of the
/// launcher's, and must never be taken for one), so that a probe a crashed launcher left behind
/// is still found and ended. A spec cannot set it.
pub const PROBE_OF_ENV: &str = "PRISM_PROBE_OF";

/// Variables passed from the launcher's environment to every child when set; nothing else of
/// the launcher's environment reaches a child unless its spec names it in `inheritEnv`.
pub const PASSED_THROUGH_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];

/// The PATH a child gets when the launcher has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Whether `name` can be an environment variable name: a letter or `_`, then letters, digits, `_`.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether the launcher sets `name` itself (for a process or its probes).
pub fn is_injected(name: &str) -> bool {
    INJECTED_ENV.contains(&name) || name == PROBE_OF_ENV
}

/// Who wrote a variable of a child's environment, which decides what it may set. The operator
/// (spec files, catalog manifests) is trusted with the whole environment, `PATH` included;
/// a request (LaunchPattern's `config`, AssignProcess's `env` and `log_level`) comes over the
/// network and may never set a variable that changes how a program is loaded or interpreted
/// (`is_loader_variable`), or it could run code of its choice as the launcher's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvWriter {
    Operator,
    Request,
}

/// Variables that change how a program is loaded or interpreted, which a request may never set:
/// the dynamic loader's and glibc's (glibc's `UNSECURE_ENVVARS`, `sysdeps/generic/unsecvars.h`,
/// the list it removes for setuid programs), the shells' and interpreters' (sudo's default
/// `env_delete` list, `initial_badenv_table` in `plugins/sudoers/env.c`), and the language
/// runtimes' option and path variables that load code (Node, the JVM, Lua, OpenSSL's
/// configuration, which can load engines). `PATH` is here too: the programs a wrapper script
/// runs are found through it (kubelet and systemd give children a PATH of their own; a request
/// never chooses it).
pub const LOADER_ENV: [&str; 55] = [
    "PATH",
    // Where programs look for their own configuration and per-user code: Python's user
    // site-packages (`$HOME/.local/...` `.pth` files run at start), shells' rc files, git's and
    // other tools' configuration (`XDG_*`).
    "HOME",
    "XDG_CONFIG_HOME",
    "XDG_CONFIG_DIRS",
    "XDG_DATA_HOME",
    "XDG_DATA_DIRS",
    // Shells.
    "IFS",
    "CDPATH",
    "ENV",
    "BASH_ENV",
    "BASHOPTS",
    "SHELLOPTS",
    "GLOBIGNORE",
    "PS4",
    "FPATH",
    "ZDOTDIR",
    "NULLCMD",
    "READNULLCMD",
    "TMPPREFIX",
    // glibc (UNSECURE_ENVVARS, beside the LD_ and MALLOC_ prefixes).
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "NIS_PATH",
    "NLSPATH",
    "PATH_LOCALE",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TMPDIR",
    "TZDIR",
    // Terminal databases (sudo).
    "TERMINFO",
    "TERMINFO_DIRS",
    "TERMPATH",
    "TERMCAP",
    // Interpreters and runtimes.
    "PERLLIB",
    "PERLIO_DEBUG",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "GEM_HOME",
    "GEM_PATH",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "OPENSSL_MODULES",
    "KRB5_KTNAME",
    // Wrappers run `$JAVA_HOME/bin/java`; .NET loads startup hooks.
    "JAVA_HOME",
    "DOTNET_STARTUP_HOOKS",
    "DOTNET_ROOT",
];

/// Prefixes of variables a request may never set, for the same reasons as `LOADER_ENV`: the
/// dynamic loader's (`LD_`, and other systems' `DYLD_`, `_RLD`, `LDR_`), malloc's tuning,
/// exported bash functions, Python's, Perl 5's, Ruby's and Lua's variables, Kerberos'
/// configuration, the .NET runtime's (`CORECLR_` loads profilers, `COREHOST_` traces to files),
/// git's (`GIT_SSH_COMMAND`, `GIT_EXEC_PATH`, `GIT_CONFIG_*` run or configure commands).
pub const LOADER_ENV_PREFIXES: [&str; 15] = [
    "LD_",
    "DYLD_",
    "_RLD",
    "LDR_",
    "MALLOC_",
    "BASH_FUNC_",
    "PYTHON",
    "PERL5",
    "RUBY",
    "LUA_",
    "KRB5_CONFIG",
    "GCONV_",
    "CORECLR_",
    "COREHOST_",
    "GIT_",
];

/// Whether `name` changes how a program is loaded or interpreted (`LOADER_ENV`,
/// `LOADER_ENV_PREFIXES`).
pub fn is_loader_variable(name: &str) -> bool {
    LOADER_ENV.contains(&name)
        || LOADER_ENV_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

/// What is wrong with a variable that `writer` sets, if anything.
pub fn env_entry_problem(name: &str, value: &str, writer: EnvWriter) -> Option<EnvProblem> {
    if name.len() > MAX_NAME_BYTES {
        Some(EnvProblem::NameTooLong)
    } else if is_injected(name) {
        Some(EnvProblem::Injected)
    } else if !is_env_name(name) {
        Some(EnvProblem::BadName)
    } else if writer == EnvWriter::Request && is_loader_variable(name) {
        Some(EnvProblem::Loader)
    } else if value.contains('\0') {
        Some(EnvProblem::NulInValue)
    } else if value.len() > MAX_VALUE_BYTES {
        Some(EnvProblem::ValueTooLong(value.len()))
    } else {
        None
    }
}

/// Why a variable cannot be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvProblem {
    Injected,
    BadName,
    NameTooLong,
    /// A loader or interpreter variable, set by a request.
    Loader,
    NulInValue,
    /// A value of this many bytes, over `MAX_VALUE_BYTES`.
    ValueTooLong(usize),
}

/// Who a child is, for the variables the launcher injects.
#[derive(Debug, Clone, Copy)]
pub struct ChildIdentity<'a> {
    pub id: &'a ProcessId,
    pub ports: Ports,
    pub launcher_id: &'a str,
    /// Unique to one spawn; inherited by the child's descendants.
    pub instance: &'a str,
}

/// The values of `INJECTED_ENV`, in its order. A port the process was not given (0) is left
/// out rather than set to 0, which a program would take as "any port".
pub fn injected_values(
    spec: &ProcessSpec,
    child: ChildIdentity<'_>,
) -> Vec<(&'static str, String)> {
    let port = |port: u16| (port != 0).then(|| port.to_string());
    let values = [
        Some(spec.pattern.clone().unwrap_or_else(|| child.id.to_string())),
        Some(spec.namespace.clone().unwrap_or_default()),
        Some(spec.session_id.clone().unwrap_or_default()),
        port(child.ports.grpc),
        port(child.ports.health),
        Some(child.id.to_string()),
        Some(spec.process_type.as_str().to_string()),
        Some(child.launcher_id.to_string()),
        Some(child.instance.to_string()),
    ];
    INJECTED_ENV
        .into_iter()
        .zip(values)
        .filter_map(|(name, value)| Some((name, value?)))
        .collect()
}

/// The whole environment of a child: the pass-through variables, the ones its spec inherits and
/// sets, its type's configuration, and the injected ones, which nothing overrides.
/// `launcher_env` reads the launcher's own environment.
pub fn child_environment(
    spec: &ProcessSpec,
    child: ChildIdentity<'_>,
    launcher_env: impl Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for name in PASSED_THROUGH_ENV
        .iter()
        .copied()
        .chain(spec.inherit_env.iter().map(String::as_str))
    {
        if let Some(value) = launcher_env(name) {
            env.insert(name.to_string(), value);
        }
    }
    env.entry("PATH".to_string())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    env.extend(spec.env.clone());
    env.extend(spec.type_config.environment());
    for (name, value) in injected_values(spec, child) {
        env.insert(name.to_string(), value);
    }
    env
}

/// The environment of an exec probe of a process of `launcher_id`: the process's own, except
/// that it carries `PROBE_OF_ENV` instead of the launcher id and no instance, so that it is
/// never taken for a process of the launcher's (nor adopted), yet is found and ended when a
/// crashed launcher left it behind.
pub fn probe_environment(
    spec: &ProcessSpec,
    id: &ProcessId,
    ports: Ports,
    launcher_id: &str,
    launcher_env: impl Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let identity = ChildIdentity {
        id,
        ports,
        launcher_id: "",
        instance: "",
    };
    let mut env = child_environment(spec, identity, launcher_env);
    env.remove(LAUNCHER_ID_ENV);
    env.remove(INSTANCE_ID_ENV);
    env.insert(PROBE_OF_ENV.to_string(), launcher_id.to_string());
    env
}
