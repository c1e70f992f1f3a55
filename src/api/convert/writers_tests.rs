//! "A valid spec" means one thing whatever its source: the same cases through the three writers
//! of desired state (a spec file, LaunchPattern, AssignProcess) are accepted or refused alike,
//! and each refusal carries the message `ProcessSpec::problems` words for that writer.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::from_proto::{assignment_spec, launch_from_request};
use crate::api::control_plane::AssignmentPolicy;
use crate::api::errors::{AssignmentError, PatternError};
use crate::api::proto::prism as admin_pb;
use crate::api::proto::prism::launcher as launcher_pb;
use crate::reconcile::{EnvProblem, Isolation, ProblemKind, ProcessType, SpecField, Vocabulary};
use crate::sources::catalog::{Catalog, CatalogEntry};
use crate::sources::spec_file::{parse_spec_text, spec_file_field};

/// One case, as each writer can say it.
struct Case {
    name: &'static str,
    isolation: Isolation,
    namespace: &'static str,
    session: &'static str,
    env: &'static [(&'static str, &'static str)],
    /// The problems the one validation finds, in its order; empty when valid.
    expected: Vec<(SpecField, ProblemKind)>,
}

fn cases() -> Vec<Case> {
    let env_problem = |name: &str, problem| {
        (
            SpecField::Env,
            ProblemKind::Env {
                name: name.to_string(),
                problem,
            },
        )
    };
    vec![
        Case {
            name: "valid, shared",
            isolation: Isolation::None,
            namespace: "",
            session: "",
            env: &[("MODE", "fast")],
            expected: vec![],
        },
        Case {
            name: "valid, per namespace",
            isolation: Isolation::Namespace,
            namespace: "tenant-a",
            session: "",
            env: &[],
            expected: vec![],
        },
        Case {
            name: "namespace isolation without a namespace",
            isolation: Isolation::Namespace,
            namespace: "",
            session: "",
            env: &[],
            expected: vec![(
                SpecField::Namespace,
                ProblemKind::MissingNamespace(Isolation::Namespace),
            )],
        },
        Case {
            name: "the drift bug: session isolation without a session or a namespace",
            isolation: Isolation::Session,
            namespace: "",
            session: "",
            env: &[],
            expected: vec![
                (
                    SpecField::Namespace,
                    ProblemKind::MissingNamespace(Isolation::Session),
                ),
                (SpecField::SessionId, ProblemKind::MissingSession),
            ],
        },
        Case {
            name: "session isolation without a session",
            isolation: Isolation::Session,
            namespace: "tenant-a",
            session: "",
            env: &[],
            expected: vec![(SpecField::SessionId, ProblemKind::MissingSession)],
        },
        Case {
            name: "an injected variable",
            isolation: Isolation::None,
            namespace: "",
            session: "",
            env: &[("PROCESS_ID", "spoof")],
            expected: vec![env_problem("PROCESS_ID", EnvProblem::Injected)],
        },
        Case {
            name: "a bad variable name",
            isolation: Isolation::None,
            namespace: "",
            session: "",
            env: &[("1ABC", "x")],
            expected: vec![env_problem("1ABC", EnvProblem::BadName)],
        },
        Case {
            name: "a NUL byte in a value",
            isolation: Isolation::None,
            namespace: "",
            session: "",
            env: &[("OK", "a\0b")],
            expected: vec![env_problem("OK", EnvProblem::NulInValue)],
        },
    ]
}

const EXECUTABLE: &str = "/opt/patterns/echo/echo";

fn catalog() -> Catalog {
    let mut catalog = Catalog::default();
    catalog.insert(CatalogEntry {
        name: "echo".to_string(),
        version: "1".to_string(),
        executable: PathBuf::from(EXECUTABLE),
        isolation: None,
        health_check: None,
        health_port: None,
        resources: None,
        environment: BTreeMap::new(),
        allowed_config_keys: None,
        manifest: PathBuf::from("/opt/patterns/echo/manifest.yaml"),
    });
    catalog
}

/// The case as a spec file; its errors as messages, or the spec's isolation when valid.
fn through_spec_file(case: &Case) -> Result<Isolation, Vec<(String, String)>> {
    let mut text = format!(
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata:\n  name: x\nspec:\n  pattern: echo\n  isolation: {}\n",
        case.isolation
    );
    if !case.namespace.is_empty() {
        text.push_str(&format!("  namespace: {}\n", case.namespace));
    }
    if !case.session.is_empty() {
        text.push_str(&format!("  sessionId: {}\n", case.session));
    }
    if !case.env.is_empty() {
        text.push_str("  env:\n");
        for (name, value) in case.env {
            // JSON strings are YAML strings, escapes included.
            text.push_str(&format!(
                "    {}: {}\n",
                serde_json::json!(name),
                serde_json::json!(value)
            ));
        }
    }
    parse_spec_text(
        Path::new("/specs/x.yaml"),
        &text,
        Path::new("/specs"),
        &catalog(),
    )
    .map(|mut specs| specs.remove(0).spec.isolation)
    .map_err(|errors| {
        errors
            .into_iter()
            .map(|error| (error.field, error.message))
            .collect()
    })
}

fn env_map(case: &Case) -> HashMap<String, String> {
    case.env
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn through_launch(case: &Case) -> Result<Isolation, String> {
    let isolation = match case.isolation {
        Isolation::None => launcher_pb::IsolationLevel::IsolationNone,
        Isolation::Namespace => launcher_pb::IsolationLevel::IsolationNamespace,
        Isolation::Session => launcher_pb::IsolationLevel::IsolationSession,
    };
    let request = launcher_pb::LaunchRequest {
        pattern_name: "echo".to_string(),
        isolation: isolation as i32,
        namespace: case.namespace.to_string(),
        session_id: case.session.to_string(),
        config: env_map(case),
        grace_period_secs: 0,
    };
    match launch_from_request(&request, &catalog(), Isolation::None) {
        Ok((_, spec)) => Ok(spec.isolation),
        Err(error @ PatternError::InvalidSpec(_)) => Err(error.to_string()),
        Err(other) => panic!("{}: refused for another reason: {other}", case.name),
    }
}

fn through_assignment(case: &Case) -> Result<Isolation, String> {
    let assignment = admin_pb::ProcessAssignment {
        process_id: "x".to_string(),
        process_type: "pattern".to_string(),
        namespace: case.namespace.to_string(),
        config: Some(admin_pb::ProcessConfig {
            env: env_map(case),
            pattern: Some(admin_pb::PatternProcessConfig {
                pattern_type: "echo".to_string(),
                isolation_level: case.isolation.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        version: 1,
    };
    let policy = AssignmentPolicy {
        launcher_id: "launcher-test".to_string(),
        capabilities: ProcessType::ALL.to_vec(),
        max_processes: None,
        allowed_roots: Vec::new(),
    };
    match assignment_spec(&assignment, &policy, &catalog()) {
        Ok((_, spec)) => Ok(spec.isolation),
        Err(error @ AssignmentError::InvalidSpec(_)) => Err(error.to_string()),
        Err(other) => panic!("{}: refused for another reason: {other}", case.name),
    }
}

/// The message the one validation gives `kind` on `field`, with `names` spelling the fields.
fn message(field: &SpecField, kind: &ProblemKind, names: &dyn Fn(&SpecField) -> String) -> String {
    crate::reconcile::SpecProblem {
        field: field.clone(),
        kind: kind.clone(),
    }
    .message(&names)
}

#[test]
fn the_three_writers_accept_and_refuse_the_same_specs_with_the_same_messages() {
    // The wire names of the fields these cases concern (the config block's name differs
    // between the two RPCs and is not part of the message).
    let wire = |field: &SpecField| match field {
        SpecField::SessionId => "session_id".to_string(),
        SpecField::Namespace => "namespace".to_string(),
        _ => "config".to_string(),
    };
    for case in cases() {
        let file = through_spec_file(&case);
        let launch = through_launch(&case);
        let assignment = through_assignment(&case);
        if case.expected.is_empty() {
            assert_eq!(file, Ok(case.isolation), "{}: spec file", case.name);
            assert_eq!(launch, Ok(case.isolation), "{}: LaunchPattern", case.name);
            assert_eq!(
                assignment,
                Ok(case.isolation),
                "{}: AssignProcess",
                case.name
            );
            continue;
        }
        let file_errors = file.expect_err(case.name);
        let expected_file: Vec<(String, String)> = case
            .expected
            .iter()
            .map(|(field, kind)| {
                (
                    spec_file_field(field),
                    message(field, kind, &spec_file_field),
                )
            })
            .collect();
        assert_eq!(file_errors, expected_file, "{}: spec file", case.name);
        let launch_error = launch.expect_err(case.name);
        let assignment_error = assignment.expect_err(case.name);
        for (field, kind) in &case.expected {
            let wire_message = message(field, kind, &wire);
            assert!(
                launch_error.contains(&wire_message),
                "{}: LaunchPattern said {launch_error:?}, not {wire_message:?}",
                case.name
            );
            assert!(
                assignment_error.contains(&wire_message),
                "{}: AssignProcess said {assignment_error:?}, not {wire_message:?}",
                case.name
            );
        }
    }
}

#[test]
fn an_assignment_can_never_be_session_isolated_since_the_wire_has_no_session() {
    let case = Case {
        name: "session with a namespace",
        isolation: Isolation::Session,
        namespace: "tenant-a",
        session: "ignored-by-the-wire",
        env: &[],
        expected: vec![],
    };
    let refused = through_assignment(&case).expect_err("no session id on the wire");
    assert!(
        refused.contains("session_id: isolation session needs a session_id"),
        "{refused}"
    );
}
