//! Property tests of every RPC's request conversion: arbitrary requests (any text in every
//! string, any number in every enum and integer, maps of loader variables and of megabyte-long
//! keys) through `launch_from_request`, `assignment_spec`, `list_filters`,
//! `requested_process_id` and `grace_from_request`. None panics; every refusal maps to a code a
//! caller can act on with a short message that names a field; every spec accepted is valid,
//! within the bounds, and holds no loader variable the request set.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use proptest::prelude::*;
use tonic::{Code, Status};

use super::from_proto::{
    assignment_spec, grace_from_request, launch_from_request, list_filters, requested_process_id,
};
use crate::api::control_plane::AssignmentPolicy;
use crate::api::errors::{assignment_status, pattern_status};
use crate::api::proto::prism as admin_pb;
use crate::api::proto::prism::launcher as launcher_pb;
use crate::reconcile::{
    is_loader_variable, Isolation, ProcessSpec, ProcessType, Vocabulary, MAX_ARGS_ENV_BYTES,
    MAX_ENTRIES, MAX_NAME_PART, MAX_VALUE_BYTES,
};
use crate::sources::catalog::{Catalog, CatalogEntry};

/// Longest message a refusal may carry: echoed input is cut to 64 characters, so a message is
/// a few sentences, never a copy of the request.
const MAX_MESSAGE: usize = 8192;

fn catalog() -> Catalog {
    let mut catalog = Catalog::default();
    for (name, allowed) in [
        ("echo", None),
        ("narrow", Some(vec!["LOG_LEVEL".to_string()])),
    ] {
        catalog.insert(CatalogEntry {
            name: name.to_string(),
            version: "1".to_string(),
            executable: PathBuf::from(format!("/opt/patterns/{name}/run")),
            isolation: None,
            health_check: None,
            health_port: None,
            resources: None,
            environment: BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]),
            allowed_config_keys: allowed,
            manifest: PathBuf::from(format!("/opt/patterns/{name}/manifest.yaml")),
        });
    }
    catalog
}

fn policy() -> AssignmentPolicy {
    AssignmentPolicy {
        launcher_id: "launcher-test".to_string(),
        capabilities: ProcessType::ALL.to_vec(),
        max_processes: None,
        allowed_roots: vec![PathBuf::from("/opt/patterns")],
    }
}

/// Any text: mostly plausible words, sometimes any string, sometimes past a bound.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9_.:/-]{0,12}",
        3 => any::<String>(),
        1 => prop::sample::select(vec![64usize, 254, 4097, 1 << 20]).prop_map(|len| "x".repeat(len)),
    ]
}

/// Mostly `valid`, else anything of `text()`: so that requests are accepted too, and what is
/// accepted is checked.
fn mostly<T: std::fmt::Debug + 'static>(
    valid: impl Strategy<Value = T> + 'static,
    other: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![9 => valid, 1 => other].boxed()
}

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.-]{0,11}"
}

/// A variable name: ordinary, a loader variable, an injected one, or any text.
fn env_name() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => "[A-Z][A-Z0-9_]{0,8}",
        1 => prop::sample::select(vec![
            "PATH", "LD_PRELOAD", "BASH_ENV", "PYTHONPATH", "NODE_OPTIONS", "PROCESS_ID",
            "LOG_LEVEL",
        ])
        .prop_map(str::to_string),
        1 => text(),
    ]
}

fn env() -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map(env_name(), mostly(word(), text()), 0..4)
}

/// Any `i32`, weighted towards the small numbers enums use.
fn enum_number() -> impl Strategy<Value = i32> {
    mostly(0i32..4, prop_oneof![-2i32..0, 4i32..8, any::<i32>()])
}

fn launch_request() -> impl Strategy<Value = launcher_pb::LaunchRequest> {
    let pattern = prop_oneof![
        4 => prop::sample::select(vec!["echo", "narrow"]).prop_map(str::to_string),
        1 => text(),
    ];
    (
        pattern,
        enum_number(),
        mostly(word(), text()),
        mostly(word(), text()),
        env(),
        mostly(0i64..100, any::<i64>()),
    )
        .prop_map(
            |(pattern_name, isolation, namespace, session_id, config, grace_period_secs)| {
                launcher_pb::LaunchRequest {
                    pattern_name,
                    isolation,
                    namespace,
                    session_id,
                    config,
                    grace_period_secs,
                }
            },
        )
}

fn settings() -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map(mostly(word(), text()), mostly(word(), text()), 0..3)
}

fn process_config() -> impl Strategy<Value = admin_pb::ProcessConfig> {
    let binary = mostly(
        Just(String::new()),
        prop_oneof![Just("/bin/sh".to_string()), text()],
    );
    let pattern = prop::option::weighted(
        0.9,
        (
            mostly(Just("echo".to_string()), text()),
            mostly(
                prop::sample::select(vec!["", "none", "namespace"]).prop_map(str::to_string),
                prop_oneof![Just("session".to_string()), text()],
            ),
            settings(),
        )
            .prop_map(|(pattern_type, isolation_level, settings)| {
                admin_pb::PatternProcessConfig {
                    pattern_type,
                    isolation_level,
                    slots: HashMap::new(),
                    settings,
                }
            }),
    );
    let proxy = prop::option::weighted(
        0.1,
        (text(), enum_number(), any::<i32>(), text()).prop_map(
            |(admin_endpoint, control_port, data_port, proxy_id)| admin_pb::ProxyProcessConfig {
                admin_endpoint,
                control_port,
                data_port,
                proxy_id,
                partition_ranges: vec![0, 63],
            },
        ),
    );
    let backend = prop::option::weighted(
        0.1,
        (text(), text(), settings()).prop_map(|(backend_type, connection_string, credentials)| {
            admin_pb::BackendProcessConfig {
                backend_type,
                connection_string,
                credentials,
                driver_options: HashMap::new(),
            }
        }),
    );
    let utility = prop::option::weighted(
        0.1,
        (text(), settings(), prop::collection::vec(text(), 0..3)).prop_map(
            |(utility_type, settings, target_processes)| admin_pb::UtilityProcessConfig {
                utility_type,
                settings,
                target_processes,
            },
        ),
    );
    (
        (binary, prop::collection::vec(text(), 0..4), env()),
        (
            mostly(Just(0), any::<i32>()),
            mostly(Just(0), any::<i32>()),
            mostly(word(), text()),
        ),
        (pattern, proxy, backend, utility),
    )
        .prop_map(
            |(
                (binary, args, env),
                (port, health_port, log_level),
                (pattern, proxy, backend, utility),
            )| {
                admin_pb::ProcessConfig {
                    binary,
                    args,
                    env,
                    port,
                    health_port,
                    log_level,
                    pattern,
                    proxy,
                    backend,
                    utility,
                }
            },
        )
}

fn assignment() -> impl Strategy<Value = admin_pb::ProcessAssignment> {
    let process_type = mostly(
        prop::sample::select(vec!["", "pattern"]).prop_map(str::to_string),
        prop_oneof![
            prop::sample::select(vec!["proxy", "backend", "utility"]).prop_map(str::to_string),
            text(),
        ],
    );
    (
        mostly(word(), text()),
        process_type,
        mostly(prop_oneof![Just(String::new()), word()], text()),
        prop::option::weighted(0.95, process_config()),
        mostly(0i64..10, any::<i64>()),
    )
        .prop_map(|(process_id, process_type, namespace, config, version)| {
            admin_pb::ProcessAssignment {
                process_id,
                process_type,
                namespace,
                config,
                version,
            }
        })
}

/// A refusal's message is short and names one of `fields`.
fn check_refusal(status: &Status, codes: &[Code], fields: &[&str]) -> Result<(), TestCaseError> {
    prop_assert!(codes.contains(&status.code()), "{status:?}");
    let message = status.message();
    prop_assert!(
        message.len() <= MAX_MESSAGE,
        "a message of {} bytes",
        message.len()
    );
    prop_assert!(
        fields.iter().any(|field| message.contains(field)),
        "{message:?} names none of {fields:?}"
    );
    Ok(())
}

/// A spec accepted is valid and within the bounds, and the variables the request set hold no
/// loader variable.
fn check_spec(
    spec: &ProcessSpec,
    request_env: &HashMap<String, String>,
) -> Result<(), TestCaseError> {
    prop_assert!(spec.problems().is_empty(), "{:?}", spec.problems());
    prop_assert!(spec.args_and_env_bytes() <= MAX_ARGS_ENV_BYTES);
    prop_assert!(spec.env.len() <= MAX_ENTRIES);
    prop_assert!(spec
        .env
        .values()
        .all(|value| value.len() <= MAX_VALUE_BYTES));
    prop_assert!(spec
        .namespace
        .iter()
        .chain(&spec.session_id)
        .all(|part| part.len() <= MAX_NAME_PART));
    for name in request_env.keys() {
        prop_assert!(!is_loader_variable(name), "the request set {name}");
    }
    Ok(())
}

const LAUNCH_FIELDS: [&str; 8] = [
    "pattern_name",
    "pattern ",
    "isolation",
    "namespace",
    "session_id",
    "config",
    "grace_period_secs",
    "manifest",
];

const ASSIGNMENT_FIELDS: [&str; 6] = [
    "process_id",
    "process_type",
    "config",
    "namespace",
    "session_id",
    "version",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_launch_request_converts_or_is_refused_naming_a_field(request in launch_request()) {
        match launch_from_request(&request, &catalog(), Isolation::None) {
            Ok((id, spec)) => {
                prop_assert!(!id.as_str().is_empty());
                check_spec(&spec, &request.config)?;
            }
            Err(error) => check_refusal(
                &pattern_status(error),
                &[Code::InvalidArgument, Code::NotFound],
                &LAUNCH_FIELDS,
            )?,
        }
    }

    #[test]
    fn any_assignment_converts_or_is_refused_naming_a_field(assignment in assignment()) {
        match assignment_spec(&assignment, &policy(), &catalog()) {
            Ok((id, spec)) => {
                prop_assert_eq!(id.as_str(), assignment.process_id.as_str());
                prop_assert!(assignment.version >= 0);
                let config = assignment.config.clone().unwrap_or_default();
                check_spec(&spec, &config.env)?;
            }
            Err(error) => check_refusal(
                &assignment_status(error),
                &[Code::InvalidArgument, Code::PermissionDenied],
                &ASSIGNMENT_FIELDS,
            )?,
        }
    }

    #[test]
    fn any_filter_id_or_grace_is_taken_or_refused_naming_its_field(
        pattern_name in text(),
        namespace in text(),
        state in enum_number(),
        process_id in text(),
        grace in any::<i64>(),
    ) {
        let filters = launcher_pb::ListPatternsRequest { pattern_name, namespace, state };
        if let Err(error) = list_filters(&filters) {
            check_refusal(
                &pattern_status(error),
                &[Code::InvalidArgument],
                &["pattern_name", "namespace", "state"],
            )?;
        }
        match requested_process_id(&process_id) {
            Ok(Some(id)) => prop_assert_eq!(id.as_str(), process_id.as_str()),
            Ok(None) => {}
            Err(error) => check_refusal(
                &pattern_status(error),
                &[Code::InvalidArgument],
                &["process_id"],
            )?,
        }
        match grace_from_request(grace) {
            Ok(duration) => prop_assert_eq!(i64::try_from(duration.as_secs()).ok(), Some(grace)),
            Err(error) => check_refusal(
                &pattern_status(error),
                &[Code::InvalidArgument],
                &["grace_period_secs"],
            )?,
        }
    }
}
