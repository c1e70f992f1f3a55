//! Request input, as a hostile caller sends it, through the conversions and the one mapping of
//! errors to gRPC statuses: the trust rule for the environment (a request never sets a loader or
//! interpreter variable; the operator's manifests and spec files may), the manifest's allow-list,
//! the bounds of every field, enums out of range, versions, and pushed binaries. Each refusal is
//! checked with its exact code and a message that names the field or the variable.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tonic::{Code, Status};

use super::from_proto::{assignment_spec, launch_from_request, list_filters, requested_process_id};
use crate::api::control_plane::AssignmentPolicy;
use crate::api::errors::{assignment_status, pattern_status};
use crate::api::proto::prism as admin_pb;
use crate::api::proto::prism::launcher as launcher_pb;
use crate::reconcile::{
    Isolation, ProcessSpec, ProcessType, Vocabulary, MAX_ARGS_ENV_BYTES, MAX_NAME_BYTES,
    MAX_VALUE_BYTES,
};
use crate::sources::catalog::{Catalog, CatalogEntry};
use crate::sources::spec_file::parse_spec_text;

/// Variables that change how a program is loaded or interpreted, one of each family.
const LOADER_VARIABLES: [&str; 14] = [
    "PATH",
    "LD_PRELOAD",
    "HOME",
    "GIT_SSH_COMMAND",
    "DOTNET_STARTUP_HOOKS",
    "CORECLR_PROFILER_PATH",
    "LD_LIBRARY_PATH",
    "BASH_ENV",
    "ENV",
    "IFS",
    "PYTHONPATH",
    "NODE_OPTIONS",
    "GLIBC_TUNABLES",
    "BASH_FUNC_ls",
];

fn entry(name: &str, allowed: Option<&[&str]>) -> CatalogEntry {
    CatalogEntry {
        name: name.to_string(),
        version: "1".to_string(),
        executable: PathBuf::from(format!("/opt/patterns/{name}/run")),
        isolation: None,
        health_check: None,
        health_port: None,
        resources: None,
        // The operator's manifest may set what a request may not.
        environment: BTreeMap::from([
            (
                "PATH".to_string(),
                "/opt/patterns/bin:/usr/bin:/bin".to_string(),
            ),
            (
                "LD_LIBRARY_PATH".to_string(),
                "/opt/patterns/lib".to_string(),
            ),
        ]),
        allowed_config_keys: allowed.map(|keys| keys.iter().map(ToString::to_string).collect()),
        manifest: PathBuf::from(format!("/opt/patterns/{name}/manifest.yaml")),
    }
}

fn catalog() -> Catalog {
    let mut catalog = Catalog::default();
    catalog.insert(entry("echo", None));
    catalog.insert(entry("narrow", Some(&["LOG_LEVEL", "FOO"])));
    catalog
}

fn launch_request(pattern: &str, config: &[(&str, &str)]) -> launcher_pb::LaunchRequest {
    launcher_pb::LaunchRequest {
        pattern_name: pattern.to_string(),
        isolation: launcher_pb::IsolationLevel::IsolationNone as i32,
        namespace: String::new(),
        session_id: String::new(),
        config: config
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
        grace_period_secs: 0,
    }
}

fn launch(request: &launcher_pb::LaunchRequest) -> Result<ProcessSpec, Status> {
    launch_from_request(request, &catalog(), Isolation::None)
        .map(|(_, spec)| spec)
        .map_err(pattern_status)
}

fn policy(roots: &[&Path]) -> AssignmentPolicy {
    AssignmentPolicy {
        launcher_id: "launcher-test".to_string(),
        capabilities: ProcessType::ALL.to_vec(),
        max_processes: None,
        allowed_roots: roots.iter().map(|root| root.to_path_buf()).collect(),
    }
}

/// An assignment of the catalog's `pattern`, with `env`.
fn assignment(pattern: &str, env: &[(&str, &str)]) -> admin_pb::ProcessAssignment {
    admin_pb::ProcessAssignment {
        process_id: "assigned-1".to_string(),
        process_type: "pattern".to_string(),
        namespace: String::new(),
        config: Some(admin_pb::ProcessConfig {
            env: env
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
            pattern: Some(admin_pb::PatternProcessConfig {
                pattern_type: pattern.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        version: 1,
    }
}

fn assign(assignment: &admin_pb::ProcessAssignment) -> Result<ProcessSpec, Status> {
    assign_with(assignment, &policy(&[]))
}

fn assign_with(
    assignment: &admin_pb::ProcessAssignment,
    policy: &AssignmentPolicy,
) -> Result<ProcessSpec, Status> {
    assignment_spec(assignment, policy, &catalog())
        .map(|(_, spec)| spec)
        .map_err(assignment_status)
}

/// Asserts `result` is refused with `code` and a message holding every one of `parts`.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, parts: &[&str]) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    for part in parts {
        assert!(
            status.message().contains(part),
            "{:?} does not mention {part:?}",
            status.message()
        );
    }
    assert!(
        status.message().len() < 1024,
        "an echoed input is truncated: {} bytes",
        status.message().len()
    );
}

fn spec_file(env: &[(&str, &str)]) -> String {
    let mut text = "apiVersion: prism.launcher/v1\nkind: Process\nmetadata:\n  name: x\nspec:\n  \
                    pattern: echo\n  env:\n"
        .to_string();
    for (name, value) in env {
        text.push_str(&format!("    {name}: {}\n", serde_json::json!(value)));
    }
    text
}

#[test]
fn a_launch_never_sets_a_loader_or_interpreter_variable() {
    for name in LOADER_VARIABLES {
        let request = launch_request("echo", &[("MODE", "fast"), (name, "/tmp/evil")]);
        assert_refused(
            launch(&request),
            Code::InvalidArgument,
            &[
                &format!("config: {name:?} changes how programs are loaded or interpreted"),
                "a request may not set it",
            ],
        );
    }
}

#[test]
fn an_assignment_never_sets_a_loader_or_interpreter_variable() {
    for name in LOADER_VARIABLES {
        assert_refused(
            assign(&assignment("echo", &[(name, "/tmp/evil")])),
            Code::InvalidArgument,
            &[&format!(
                "config.env: {name:?} changes how programs are loaded or interpreted"
            )],
        );
    }
}

#[test]
fn the_operator_sets_what_requests_may_not_and_ordinary_variables_pass() {
    let spec = launch(&launch_request(
        "echo",
        &[("LOG_LEVEL", "debug"), ("MODE", "fast")],
    ))
    .expect("ordinary variables are accepted");
    assert_eq!(spec.env["MODE"], "fast");
    // The manifest's PATH and LD_LIBRARY_PATH are the operator's: kept.
    assert_eq!(spec.env["PATH"], "/opt/patterns/bin:/usr/bin:/bin");
    assert_eq!(spec.env["LD_LIBRARY_PATH"], "/opt/patterns/lib");

    let mut with_log_level = assignment("echo", &[("MODE", "fast")]);
    if let Some(config) = with_log_level.config.as_mut() {
        config.log_level = "debug".to_string();
    }
    let spec = assign(&with_log_level).expect("log_level sets LOG_LEVEL, which is fine");
    assert_eq!(spec.env["LOG_LEVEL"], "debug");
    assert_eq!(spec.env["PATH"], "/opt/patterns/bin:/usr/bin:/bin");

    // A spec file is the operator's too: it may set PATH and LD_PRELOAD.
    let text = spec_file(&[("PATH", "/opt/tools:/usr/bin"), ("LD_PRELOAD", "/opt/x.so")]);
    let specs = parse_spec_text(
        Path::new("/specs/x.yaml"),
        &text,
        Path::new("/specs"),
        &catalog(),
    )
    .expect("a spec file is trusted");
    assert_eq!(specs[0].spec.env["PATH"], "/opt/tools:/usr/bin");
}

#[test]
fn a_manifest_allow_list_refuses_every_other_key_naming_it_and_the_allowed_ones() {
    launch(&launch_request(
        "narrow",
        &[("FOO", "1"), ("LOG_LEVEL", "info")],
    ))
    .expect("allowed keys pass");
    assert_refused(
        launch(&launch_request("narrow", &[("FOO", "1"), ("BAR", "2")])),
        Code::InvalidArgument,
        &[
            "config: \"BAR\" is not among the config keys",
            "(allowed: LOG_LEVEL, FOO)",
        ],
    );
    // A loader variable stays refused as such, listed or not.
    assert_refused(
        launch(&launch_request("narrow", &[("PATH", "/tmp")])),
        Code::InvalidArgument,
        &["config: \"PATH\" changes how programs are loaded"],
    );
    assert_refused(
        assign(&assignment("narrow", &[("BAR", "2")])),
        Code::InvalidArgument,
        &["config.env: \"BAR\" is not among the config keys"],
    );
}

#[test]
fn a_huge_pattern_name_is_refused_with_a_short_message() {
    let huge = "p".repeat(1 << 20);
    assert_refused(
        launch(&launch_request(&huge, &[])),
        Code::InvalidArgument,
        &["pattern_name is 1048576 bytes long; at most 253 are allowed"],
    );
    // Within the bound but unknown: NOT_FOUND, echoing the name truncated.
    let long = "q".repeat(MAX_NAME_BYTES);
    assert_refused(
        launch(&launch_request(&long, &[])),
        Code::NotFound,
        &[&format!("\"{}…\" (253 bytes)", "q".repeat(64))],
    );
}

#[test]
fn enums_out_of_range_are_invalid_argument() {
    for isolation in [99, -5, 4] {
        let mut request = launch_request("echo", &[]);
        request.isolation = isolation;
        assert_refused(
            launch(&request),
            Code::InvalidArgument,
            &[&format!("isolation {isolation} is not one of the values")],
        );
    }
    let list = |state: i32| launcher_pb::ListPatternsRequest {
        pattern_name: String::new(),
        namespace: String::new(),
        state,
    };
    assert_refused(
        list_filters(&list(42)).map_err(pattern_status),
        Code::InvalidArgument,
        &["state 42 is not one of the values"],
    );
    assert_eq!(list_filters(&list(0)).expect("all states"), None);
    assert_eq!(
        list_filters(&list(2)).expect("running"),
        Some(launcher_pb::ProcessState::StateRunning)
    );
}

#[test]
fn every_string_of_a_request_is_bounded() {
    let long_namespace = "n".repeat(64);
    let mut request = launch_request("echo", &[]);
    request.namespace = long_namespace.clone();
    assert_refused(
        launch(&request),
        Code::InvalidArgument,
        &["namespace is 64 bytes long; at most 63 are allowed"],
    );
    let huge_filter = launcher_pb::ListPatternsRequest {
        pattern_name: "x".repeat(MAX_NAME_BYTES + 1),
        namespace: String::new(),
        state: 0,
    };
    assert_refused(
        list_filters(&huge_filter).map_err(pattern_status),
        Code::InvalidArgument,
        &["pattern_name is 254 bytes long"],
    );
    assert_refused(
        requested_process_id(&"i".repeat(1 << 20)).map_err(pattern_status),
        Code::InvalidArgument,
        &["process_id is 1048576 bytes long"],
    );
    assert_refused(
        requested_process_id("").map_err(pattern_status),
        Code::InvalidArgument,
        &["process_id is required"],
    );
    assert_eq!(requested_process_id("bad/id").expect("bounded"), None);

    let long_value = "v".repeat(MAX_VALUE_BYTES + 1);
    assert_refused(
        launch(&launch_request("echo", &[("MODE", &long_value)])),
        Code::InvalidArgument,
        &["config: the value of \"MODE\" is 4097 bytes long; at most 4096 are allowed"],
    );
    let long_key = "K".repeat(1 << 20);
    assert_refused(
        launch(&launch_request("echo", &[(&long_key, "1")])),
        Code::InvalidArgument,
        &["config: the variable name", "(1048576 bytes) is too long"],
    );

    let mut assigned = assignment("echo", &[]);
    assigned.namespace = long_namespace;
    assert_refused(
        assign(&assigned),
        Code::InvalidArgument,
        &["namespace: namespace is 64 bytes long"],
    );
    let mut assigned = assignment("echo", &[]);
    assigned.process_id = "a".repeat(1 << 20);
    assert_refused(
        assign(&assigned),
        Code::InvalidArgument,
        &["process_id is not valid", "(1048576 bytes)"],
    );
    let mut assigned = assignment("echo", &[]);
    assigned.process_type = "t".repeat(1 << 20);
    assert_refused(
        assign(&assigned),
        Code::InvalidArgument,
        &[
            "process_type: process type",
            "(1048576 bytes) is not one of",
        ],
    );
    let mut assigned = assignment("echo", &[]);
    if let Some(config) = assigned.config.as_mut() {
        config.args = vec!["a".repeat(MAX_VALUE_BYTES + 1)];
    }
    assert_refused(
        assign(&assigned),
        Code::InvalidArgument,
        &["config.args: args is 4097 bytes long"],
    );
}

#[test]
fn args_and_environment_beyond_128_kib_are_refused_by_every_writer() {
    let value = "v".repeat(4000);
    let names: Vec<String> = (0..40).map(|index| format!("VAR_{index}")).collect();
    let env: Vec<(&str, &str)> = names
        .iter()
        .map(|name| (name.as_str(), value.as_str()))
        .collect();
    assert_refused(
        launch(&launch_request("echo", &env)),
        Code::InvalidArgument,
        &[
            "config: the arguments and environment take",
            &format!("at most {MAX_ARGS_ENV_BYTES} are allowed"),
        ],
    );
    let mut assigned = assignment("echo", &[]);
    if let Some(config) = assigned.config.as_mut() {
        config.args = vec![value.clone(); 40];
    }
    assert_refused(
        assign(&assigned),
        Code::InvalidArgument,
        &["config.args+config.env: the arguments and environment take"],
    );
    let errors = parse_spec_text(
        Path::new("/specs/x.yaml"),
        &spec_file(&env),
        Path::new("/specs"),
        &catalog(),
    )
    .expect_err("too large");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "spec");
    assert_eq!(errors[0].line, Some(5), "{errors:?}");
    assert!(
        errors[0]
            .message
            .contains("the arguments and environment take"),
        "{errors:?}"
    );
}

#[test]
fn nul_bytes_are_refused_when_written() {
    let mut assigned = assignment("echo", &[]);
    if let Some(config) = assigned.config.as_mut() {
        config.args = vec!["a\0b".to_string()];
    }
    assert_refused(
        assign(&assigned),
        Code::InvalidArgument,
        &["config.args: args holds a NUL byte"],
    );
    assert_refused(
        launch(&launch_request("echo", &[("MODE", "a\0b")])),
        Code::InvalidArgument,
        &["config: the value of \"MODE\" contains a NUL byte"],
    );
    let proxy = admin_pb::ProcessAssignment {
        process_id: "proxy-1".to_string(),
        process_type: "proxy".to_string(),
        namespace: String::new(),
        config: Some(admin_pb::ProcessConfig {
            binary: "/bin/sh".to_string(),
            proxy: Some(admin_pb::ProxyProcessConfig {
                proxy_id: "p\0x".to_string(),
                control_port: 9001,
                data_port: 9002,
                ..Default::default()
            }),
            ..Default::default()
        }),
        version: 1,
    };
    assert_refused(
        assign_with(&proxy, &policy(&[Path::new("/")])),
        Code::InvalidArgument,
        &["config.proxy.proxy_id: proxy_id holds a NUL byte"],
    );
    let text = "apiVersion: prism.launcher/v1\nkind: Process\nmetadata:\n  name: x\nspec:\n  \
                binary: \"/bin/t\\0rue\"\n  healthCheck:\n    exec: {command: [\"te\\0st\"]}\n";
    let errors = parse_spec_text(
        Path::new("/specs/x.yaml"),
        text,
        Path::new("/specs"),
        &catalog(),
    )
    .expect_err("NUL bytes");
    let found: Vec<(&str, &str)> = errors
        .iter()
        .map(|error| (error.field.as_str(), error.message.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("spec.binary", "binary holds a NUL byte"),
            ("spec.healthCheck.exec.command", "command holds a NUL byte"),
        ]
    );
}

#[test]
fn an_assignment_version_is_never_negative() {
    let mut assigned = assignment("echo", &[]);
    assigned.version = i64::MIN;
    assert_refused(
        assign(&assigned),
        Code::InvalidArgument,
        &["version -9223372036854775808 is negative"],
    );
    assigned.version = 0;
    assign(&assigned).expect("0 is a version");
}

#[test]
fn a_pushed_binary_is_an_executable_regular_file_under_an_allowed_root() {
    let root = tempfile::tempdir().expect("temporary directory");
    let root_path = root.path().canonicalize().expect("canonical root");
    let write = |name: &str, mode: u32| {
        let path = root_path.join(name);
        std::fs::write(&path, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    };
    let runnable = write("runnable", 0o755);
    let plain = write("plain", 0o644);
    let folder = root_path.join("folder");
    std::fs::create_dir(&folder).expect("folder");
    let with_binary = |binary: &str| {
        let mut assigned = assignment("", &[]);
        if let Some(config) = assigned.config.as_mut() {
            config.binary = binary.to_string();
            config.pattern = None;
        }
        assigned
    };
    let policy = policy(&[&root_path]);
    let spec = assign_with(&with_binary(&runnable.to_string_lossy()), &policy)
        .expect("an executable file under the root");
    assert_eq!(spec.executable, runnable);
    assert_refused(
        assign_with(&with_binary(&plain.to_string_lossy()), &policy),
        Code::InvalidArgument,
        &["config.binary", "plain", "is not executable (mode 644)"],
    );
    assert_refused(
        assign_with(&with_binary(&folder.to_string_lossy()), &policy),
        Code::InvalidArgument,
        &["config.binary", "folder", "is not a regular file"],
    );
    assert_refused(
        assign_with(&with_binary("/bin/sh"), &policy),
        Code::PermissionDenied,
        &["config.binary \"/bin/sh\" is outside the allowed executable roots"],
    );
    assert_refused(
        assign_with(&with_binary(&format!("/{}", "b".repeat(1 << 20))), &policy),
        Code::InvalidArgument,
        &["config.binary is 1048577 bytes long; at most 4096 are allowed"],
    );
    assert_refused(
        assign_with(&with_binary("relative/run"), &policy),
        Code::InvalidArgument,
        &["config.binary \"relative/run\" must be an absolute path"],
    );
}

#[test]
fn a_spec_file_is_held_to_the_same_bounds_with_its_file_and_line() {
    let text = format!(
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata:\n  name: x\n  labels:\n    \
         team: {}\nspec:\n  binary: /bin/true\n  isolation: namespace\n  namespace: {}\n",
        "t".repeat(MAX_VALUE_BYTES + 1),
        "n".repeat(64),
    );
    let errors = parse_spec_text(
        Path::new("/specs/x.yaml"),
        &text,
        Path::new("/specs"),
        &catalog(),
    )
    .expect_err("over the bounds");
    let found: Vec<(String, Option<usize>, String)> = errors
        .into_iter()
        .map(|error| (error.field, error.line, error.message))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "spec.namespace".to_string(),
                Some(10),
                "namespace is 64 bytes long; at most 63 are allowed".to_string()
            ),
            (
                "metadata.labels".to_string(),
                Some(5),
                "labels is 4097 bytes long; at most 4096 are allowed".to_string()
            ),
        ]
    );
}

#[test]
fn a_request_with_many_config_entries_is_refused_before_anything_else() {
    let config: HashMap<String, String> = (0..300)
        .map(|index| (format!("K{index}"), String::new()))
        .collect();
    let mut request = launch_request("echo", &[]);
    request.config = config;
    assert_refused(
        launch(&request),
        Code::InvalidArgument,
        &["config has 300 entries; at most 256 are allowed"],
    );
}
