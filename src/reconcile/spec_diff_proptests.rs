//! Property tests of what `apply` tells about a change: `changed_fields` names a field exactly
//! when two specs differ (so "unchanged" is never said of a spec that `plan` treats as another),
//! and the fields it names replace the process exactly when `plan` replaces it.
//!
//! Specs are drawn from small sets of values per field, so that two of them often agree in a
//! field, and a pair is a spec and the same spec with some of its fields taken from another.

#![cfg(test)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::fixtures::observed_for;
use super::{
    plan, Action, BackoffOverrides, DesiredRecord, HealthCheck, Isolation, PatternConfig, Phase,
    Probe, ProcessId, ProcessSpec, ProcessType, ProxyConfig, RequestedPorts, Resources,
    RestartPolicy, Source, SourcesRead, SpecField, StopReason, TypeConfig, UnixMillis,
    UtilityConfig,
};

/// The fields whose change applies without a new process (labels are metadata; how exits are
/// treated applies from the next exit on).
fn applies_in_place(field: &SpecField) -> bool {
    matches!(
        field,
        SpecField::Labels
            | SpecField::RestartPolicy
            | SpecField::SuccessExitCodes
            | SpecField::BackoffInitial
            | SpecField::BackoffMax
            | SpecField::BackoffResetAfter
            | SpecField::BackoffFailureThreshold
    )
}

fn one_of<T: Clone + std::fmt::Debug + 'static>(values: Vec<T>) -> impl Strategy<Value = T> {
    proptest::sample::select(values)
}

fn words(values: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(one_of(values.to_vec()).prop_map(str::to_string), 0..=2)
}

fn map(
    keys: &'static [&'static str],
    values: &'static [&'static str],
) -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(
        one_of(keys.to_vec()).prop_map(str::to_string),
        one_of(values.to_vec()).prop_map(str::to_string),
        0..=2,
    )
}

fn maybe_word(values: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(one_of(values.to_vec()).prop_map(str::to_string))
}

fn seconds() -> impl Strategy<Value = Duration> {
    one_of(vec![Duration::ZERO, Duration::from_secs(1)])
}

fn probe() -> impl Strategy<Value = Probe> {
    let port = || proptest::option::of(one_of(vec![1u16, 2]));
    prop_oneof![
        (one_of(vec!["/a", "/b"]), port()).prop_map(|(path, port)| Probe::Http {
            path: path.to_string(),
            port
        }),
        port().prop_map(|port| Probe::Tcp { port }),
        words(&["true", "false"]).prop_map(|command| Probe::Exec { command }),
    ]
}

fn health_check() -> impl Strategy<Value = HealthCheck> {
    (
        probe(),
        seconds(),
        seconds(),
        seconds(),
        one_of(vec![1u32, 2]),
        one_of(vec![1u32, 2]),
    )
        .prop_map(
            |(probe, initial_delay, interval, timeout, failure_threshold, success_threshold)| {
                HealthCheck {
                    probe,
                    initial_delay,
                    interval,
                    timeout,
                    failure_threshold,
                    success_threshold,
                }
            },
        )
}

fn backoff() -> impl Strategy<Value = BackoffOverrides> {
    let maybe_seconds = || proptest::option::of(seconds());
    (
        maybe_seconds(),
        maybe_seconds(),
        maybe_seconds(),
        proptest::option::of(one_of(vec![1u32, 2])),
    )
        .prop_map(
            |(initial, max, reset_after, failure_threshold)| BackoffOverrides {
                initial,
                max,
                reset_after,
                failure_threshold,
            },
        )
}

fn type_config() -> impl Strategy<Value = TypeConfig> {
    one_of(vec![
        TypeConfig::None,
        TypeConfig::Pattern(PatternConfig::default()),
        TypeConfig::Pattern(PatternConfig {
            pattern_type: "keyvalue".to_string(),
            ..PatternConfig::default()
        }),
        TypeConfig::Proxy(ProxyConfig::default()),
        TypeConfig::Utility(UtilityConfig::default()),
    ])
}

/// A spec from small sets of values; its limits made as every reader makes them.
fn spec() -> impl Strategy<Value = ProcessSpec> {
    let process = (
        one_of(vec![
            ProcessType::Pattern,
            ProcessType::Proxy,
            ProcessType::Backend,
            ProcessType::Utility,
        ]),
        one_of(vec!["/bin/a", "/bin/b"]).prop_map(PathBuf::from),
        words(&["x", "y"]),
        map(&["A", "B"], &["1", "2"]),
        words(&["PATH", "HOME"]),
        maybe_word(&["/tmp", "/var"]).prop_map(|dir| dir.map(PathBuf::from)),
        maybe_word(&["p", "q"]),
        one_of(vec![
            Isolation::None,
            Isolation::Namespace,
            Isolation::Session,
        ]),
        maybe_word(&["n", "m"]),
        maybe_word(&["s", "t"]),
    );
    let lifecycle = (
        proptest::option::of(health_check()),
        one_of(vec![
            RestartPolicy::Always,
            RestartPolicy::OnFailure,
            RestartPolicy::Never,
        ]),
        proptest::collection::vec(one_of(vec![0i32, 1]), 0..=2),
        backoff(),
        one_of(vec![Duration::from_secs(1), Duration::from_secs(2)]),
        (
            proptest::option::of(one_of(vec![100u32, 200])),
            proptest::option::of(one_of(vec![1u64 << 20, 2 << 20])),
        )
            .prop_map(|(cpu, memory)| Resources::limits(cpu, memory)),
        (
            proptest::option::of(one_of(vec![1u16, 2])),
            proptest::option::of(one_of(vec![3u16, 4])),
        )
            .prop_map(|(grpc, health)| RequestedPorts { grpc, health }),
        type_config(),
        map(&["team"], &["a", "b"]),
    );
    (process, lifecycle).prop_map(
        |(
            (
                process_type,
                executable,
                args,
                env,
                inherit_env,
                working_dir,
                pattern,
                isolation,
                namespace,
                session_id,
            ),
            (
                health_check,
                restart_policy,
                success_exit_codes,
                backoff,
                termination_grace,
                resources,
                requested_ports,
                type_config,
                labels,
            ),
        )| ProcessSpec {
            process_type,
            executable,
            args,
            env,
            inherit_env,
            working_dir,
            pattern,
            isolation,
            namespace,
            session_id,
            health_check,
            restart_policy,
            success_exit_codes,
            backoff,
            termination_grace,
            resources,
            requested_ports,
            type_config,
            labels,
        },
    )
}

/// `base` with the fields `take` marks taken from `other`: a spec and an edit of it.
fn edited(base: &ProcessSpec, other: &ProcessSpec, take: &[bool]) -> ProcessSpec {
    let mut edit = base.clone();
    let ProcessSpec {
        process_type,
        executable,
        args,
        env,
        inherit_env,
        working_dir,
        pattern,
        isolation,
        namespace,
        session_id,
        health_check,
        restart_policy,
        success_exit_codes,
        backoff,
        termination_grace,
        resources,
        requested_ports,
        type_config,
        labels,
    } = other.clone();
    // Every field, without `..`: a new field does not compile until the edits reach it.
    let mut take = take.iter().copied();
    let mut pick = || take.next().unwrap_or(false);
    if pick() {
        edit.process_type = process_type;
    }
    if pick() {
        edit.executable = executable;
    }
    if pick() {
        edit.args = args;
    }
    if pick() {
        edit.env = env;
    }
    if pick() {
        edit.inherit_env = inherit_env;
    }
    if pick() {
        edit.working_dir = working_dir;
    }
    if pick() {
        edit.pattern = pattern;
    }
    if pick() {
        edit.isolation = isolation;
    }
    if pick() {
        edit.namespace = namespace;
    }
    if pick() {
        edit.session_id = session_id;
    }
    if pick() {
        edit.health_check = health_check;
    }
    if pick() {
        edit.restart_policy = restart_policy;
    }
    if pick() {
        edit.success_exit_codes = success_exit_codes;
    }
    if pick() {
        edit.backoff = backoff;
    }
    if pick() {
        edit.termination_grace = termination_grace;
    }
    if pick() {
        edit.resources = resources;
    }
    if pick() {
        edit.requested_ports = requested_ports;
    }
    if pick() {
        edit.type_config = type_config;
    }
    if pick() {
        edit.labels = labels;
    }
    edit
}

/// Whether `plan` replaces a process running `running` once `desired` is declared instead.
fn plan_replaces(running: &ProcessSpec, desired: &ProcessSpec) -> bool {
    let observed = observed_for("web", Phase::Running, running.clone());
    let desired = DesiredRecord {
        id: ProcessId::new("web").expect("a valid id"),
        spec: Arc::new(desired.clone()),
        generation: 2,
        source: Source::Api,
        resets: 0,
        held: false,
        restarts: 0,
    };
    let planned = plan(
        [(Some(&desired), Some(&observed))],
        UnixMillis(1_000_000),
        SourcesRead::ALL,
    );
    planned.actions.iter().any(|action| {
        matches!(
            action,
            Action::Stop {
                reason: StopReason::Replace,
                ..
            }
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_field_is_named_exactly_when_the_specs_differ_and_replacing_agrees_with_plan(
        before in spec(),
        other in spec(),
        take in proptest::collection::vec(proptest::bool::weighted(0.15), 19),
    ) {
        let after = edited(&before, &other, &take);
        let fields = after.changed_fields(&before);
        prop_assert_eq!(fields.is_empty(), after == before, "fields {:?}", fields);
        let replaces = after.requires_restart_from(&before);
        prop_assert_eq!(
            replaces,
            fields.iter().any(|field| !applies_in_place(field)),
            "fields {:?}",
            fields
        );
        prop_assert_eq!(replaces, plan_replaces(&before, &after), "fields {:?}", fields);
    }

    #[test]
    fn limits_stored_and_read_back_are_the_limits_declared(
        cpu in proptest::option::of(1u32..2000),
        memory in proptest::option::of(1u64..(1 << 40)),
    ) {
        let limits = Resources::limits(cpu, memory);
        prop_assert_eq!(limits.is_none(), cpu.is_none() && memory.is_none());
        // A record written before an empty block meant none reads back as none.
        let stored = Resources { cpu_millis: cpu, memory_bytes: memory };
        let spec = ProcessSpec {
            resources: Some(stored),
            ..super::fixtures::spec()
        };
        let read: ProcessSpec =
            serde_json::from_str(&serde_json::to_string(&spec).expect("encodes"))
                .expect("decodes");
        prop_assert_eq!(read.resources, limits);
    }
}
