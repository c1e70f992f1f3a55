//! `prism-launcher describe ID`: everything the launcher knows of one process, as
//! `kubectl describe pod` shows a pod: its spec and source, generations, state and why, ports,
//! limits, health, the last events of its life with their times, and the last lines of its log.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;

use prism_launcher::api::client::{describe_process, DescriptionView};

use super::client::{
    block_on, current_dir, human_age, launcher_target, limits_column, short_source, ConnectArgs,
};

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// The process id.
    id: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = DescribeFormat::Text)]
    output: DescribeFormat,
    /// Lines from the end of the process's log to show (0: none; at most 1000).
    #[arg(long, default_value_t = 20)]
    log_lines: u32,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DescribeFormat {
    Text,
    Json,
    Yaml,
}

pub fn describe(args: &DescribeArgs) -> anyhow::Result<ExitCode> {
    let target = launcher_target(&args.connect)?;
    let description = block_on(describe_process(
        &target,
        &args.id,
        args.log_lines,
        args.connect.timeout,
    ))?;
    let shown = match args.output {
        DescribeFormat::Json => {
            serde_json::to_string_pretty(&description).context("cannot encode the description")?
                + "\n"
        }
        DescribeFormat::Yaml => {
            serde_yaml::to_string(&description).context("cannot encode the description")?
        }
        DescribeFormat::Text => {
            render(&description, &current_dir(), prism_launcher::clock::now().0)
        }
    };
    print!("{shown}");
    Ok(ExitCode::SUCCESS)
}

/// The description as text: "Field:  value" lines, then the spec, the events (with their age at
/// `now_ms`) and the log's last lines.
fn render(description: &DescriptionView, cwd: &str, now_ms: u64) -> String {
    let now_ms = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let status = &description.status;
    let spec = &description.spec;
    let ago = |at: i64| format!("{} ago", human_age(now_ms.saturating_sub(at)));
    let mut fields: Vec<(&str, String)> = vec![
        ("Name", status.id.clone()),
        (
            "Source",
            if status.source.is_empty() {
                "- (no longer desired)".to_string()
            } else {
                short_source(status, cwd)
            },
        ),
        ("Type", type_words(description)),
    ];
    if !status.labels.is_empty() {
        let labels: Vec<String> = status
            .labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        fields.push(("Labels", labels.join(", ")));
    }
    fields.push((
        "Generation",
        format!(
            "desired {}, running {}",
            dash_if_zero(status.desired_generation),
            dash_if_zero(status.running_generation)
        ),
    ));
    fields.push((
        "Held",
        if status.held {
            format!(
                "yes: stopped by the operator until `prism-launcher start {}`",
                status.id
            )
        } else {
            "no".to_string()
        },
    ));
    let mut state = format!("{} ({})", status.actual, status.diff);
    if let Some(reason) = &description.stop_reason {
        state.push_str(&format!(", stopping: {reason}"));
        if let Some(deadline) = description.stop_deadline_unix_ms {
            state.push_str(&format!(
                ", SIGKILL in {}",
                human_age(deadline.saturating_sub(now_ms))
            ));
        }
    }
    fields.push(("State", state));
    if !status.diff_detail.is_empty() {
        fields.push(("Why", status.diff_detail.clone()));
    }
    let mut process = status
        .pid
        .map_or_else(|| "-".to_string(), |pid| format!("pid {pid}"));
    if let Some(instance) = &description.instance {
        process.push_str(&format!(", instance {instance}"));
    }
    if let Some(started) = status.started_at_unix_ms {
        process.push_str(&format!(", started {}", ago(started)));
    }
    fields.push(("Process", process));
    fields.push((
        "Restarts",
        format!(
            "{} after failures ({} failing in a row, {} failures counted); {} asked by the \
             operator, {} done",
            status.restart_count,
            status.consecutive_failures,
            description.error_count,
            description.restart_requests,
            description.restart_requests_done
        ),
    ));
    if !status.last_exit.is_empty() {
        let when = status
            .exited_at_unix_ms
            .map_or_else(String::new, |at| format!(", {}", ago(at)));
        fields.push(("Last exit", format!("{}{when}", status.last_exit)));
    }
    if !status.last_error.is_empty() {
        fields.push(("Last error", status.last_error.clone()));
    }
    if let Some(at) = status.next_restart_at_unix_ms {
        fields.push((
            "Next restart",
            format!("in {}", human_age(at.saturating_sub(now_ms))),
        ));
    }
    fields.push((
        "Ports",
        format!(
            "grpc {}, health {}",
            dash_if_zero(u64::from(status.grpc_port)),
            dash_if_zero(u64::from(status.health_port))
        ),
    ));
    fields.push(("Limits", limits_column(status)));
    let health = match &spec.health_check {
        Some(check) => {
            let mut health = format!("{}: {check}", status.health);
            if description.probe_failures > 0 {
                health.push_str(&format!("; {} failed in a row", description.probe_failures));
            }
            if let Some(deadline) = description.ready_deadline_unix_ms {
                health.push_str(&format!(
                    "; not ready counts as a failure in {}",
                    human_age(deadline.saturating_sub(now_ms))
                ));
            }
            health
        }
        None => "no health check".to_string(),
    };
    fields.push(("Health", health));

    let mut out = String::new();
    push_fields(&mut out, "", &fields);
    out.push_str("Spec:\n");
    let mut spec_fields = vec![("Executable", spec.executable.clone())];
    if !spec.args.is_empty() {
        spec_fields.push(("Args", format!("{:?}", spec.args)));
    }
    if !spec.env.is_empty() {
        let env: Vec<String> = spec
            .env
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        spec_fields.push(("Env", env.join(", ")));
    }
    if !spec.inherit_env.is_empty() {
        spec_fields.push(("Inherited env", spec.inherit_env.join(", ")));
    }
    if let Some(dir) = &spec.working_dir {
        spec_fields.push(("Working dir", dir.clone()));
    }
    let mut isolation = spec.isolation.clone();
    for part in [&spec.namespace, &spec.session_id].into_iter().flatten() {
        isolation.push_str(&format!(" {part}"));
    }
    spec_fields.push(("Isolation", isolation));
    let mut restart = spec.restart_policy.clone();
    if !spec.success_exit_codes.is_empty() {
        restart.push_str(&format!(
            " (success exit codes {:?})",
            spec.success_exit_codes
        ));
    }
    spec_fields.push(("Restart policy", restart));
    spec_fields.push((
        "Grace period",
        format!(
            "{:?}",
            std::time::Duration::from_millis(u64::try_from(spec.termination_grace_ms).unwrap_or(0))
        ),
    ));
    push_fields(&mut out, "  ", &spec_fields);

    out.push_str("Events:\n");
    if description.events.is_empty() {
        out.push_str("  (none recorded)\n");
    } else {
        let width = description
            .events
            .iter()
            .map(|event| event.kind.len())
            .max()
            .unwrap_or(0);
        let ages: Vec<String> = description
            .events
            .iter()
            .map(|event| human_age(now_ms.saturating_sub(event.at_unix_ms)))
            .collect();
        let age_width = ages.iter().map(String::len).max().unwrap_or(0).max(3);
        let _ = writeln!(out, "  {:<age_width$}  {:<width$}  MESSAGE", "AGE", "KIND");
        for (event, age) in description.events.iter().zip(ages) {
            let _ = writeln!(
                out,
                "  {age:<age_width$}  {:<width$}  {}",
                event.kind, event.message
            );
        }
    }
    if let Some(note) = &description.log_note {
        let _ = writeln!(out, "Log: {note}");
    } else if !description.log_tail.is_empty() {
        out.push_str("Log (last lines):\n");
        for line in description.log_tail.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

/// "pattern (hello-pattern)" or the process type alone.
fn type_words(description: &DescriptionView) -> String {
    let status = &description.status;
    if status.pattern.is_empty() {
        status.process_type.clone()
    } else {
        format!("{} ({})", status.process_type, status.pattern)
    }
}

fn dash_if_zero(value: u64) -> String {
    if value == 0 {
        "-".to_string()
    } else {
        value.to_string()
    }
}

/// "Name:  value" lines, the values aligned, each prefixed with `indent`.
fn push_fields(out: &mut String, indent: &str, fields: &[(&str, String)]) {
    let width = fields
        .iter()
        .map(|(name, _)| name.len() + 1)
        .max()
        .unwrap_or(0);
    for (name, value) in fields {
        let label = format!("{name}:");
        let _ = writeln!(out, "{indent}{label:<width$}  {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_launcher::api::client::{EventView, ProcessView, SpecView};

    fn description() -> DescriptionView {
        DescriptionView {
            status: ProcessView {
                id: "web".to_string(),
                process_type: "pattern".to_string(),
                source: "file:/work/specs/web.yaml".to_string(),
                admin_version: 0,
                desired_generation: 2,
                running_generation: 0,
                actual: "stopped".to_string(),
                diff: "held".to_string(),
                diff_detail: "held by the operator (stopped)".to_string(),
                pid: None,
                health: "unknown".to_string(),
                restart_count: 0,
                consecutive_failures: 0,
                last_error: String::new(),
                last_exit: "signal SIGTERM".to_string(),
                started_at_unix_ms: None,
                next_restart_at_unix_ms: None,
                exited_at_unix_ms: Some(50_000),
                tripped_at_unix_ms: None,
                pattern: "hello-pattern".to_string(),
                labels: [("team".to_string(), "web".to_string())].into(),
                grpc_port: 40_000,
                health_port: 40_001,
                resources: None,
                held: true,
                unconfirmed: false,
            },
            spec: SpecView {
                executable: "/bin/hello".to_string(),
                args: vec!["-v".to_string()],
                env: [("GREETING".to_string(), "hi".to_string())].into(),
                inherit_env: Vec::new(),
                working_dir: None,
                isolation: "namespace".to_string(),
                namespace: Some("my-app".to_string()),
                session_id: None,
                restart_policy: "always".to_string(),
                success_exit_codes: Vec::new(),
                termination_grace_ms: 5_000,
                health_check: Some("http GET /health on HEALTH_PORT every 200ms".to_string()),
                requested_grpc_port: None,
                requested_health_port: None,
            },
            events: vec![
                EventView {
                    at_unix_ms: 10_000,
                    kind: "started".to_string(),
                    message: "started with pid 42 (generation 2)".to_string(),
                },
                EventView {
                    at_unix_ms: 40_000,
                    kind: "held".to_string(),
                    message: "held stopped by the operator".to_string(),
                },
            ],
            log_tail: "hello\nworld\n".to_string(),
            log_note: None,
            restart_requests: 0,
            restart_requests_done: 0,
            error_count: 0,
            probe_successes: 0,
            probe_failures: 0,
            instance: None,
            stop_reason: None,
            stop_deadline_unix_ms: None,
            ready_deadline_unix_ms: None,
        }
    }

    #[test]
    fn the_text_tells_source_state_spec_events_with_their_age_and_the_log() {
        let text = render(&description(), "/work", 70_000);
        for expected in [
            "Name:",
            "file:specs/web.yaml",
            "pattern (hello-pattern)",
            "team=web",
            "desired 2, running -",
            "yes: stopped by the operator until `prism-launcher start web`",
            "stopped (held)",
            "Why:",
            "signal SIGTERM, 20s ago",
            "grpc 40000, health 40001",
            "unknown: http GET /health on HEALTH_PORT every 200ms",
            "Executable:",
            "GREETING=hi",
            "namespace my-app",
            "Grace period:",
            "5s",
            "1m   started  started with pid 42 (generation 2)",
            "30s  held     held stopped by the operator",
            "Log (last lines):\n  hello\n  world\n",
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
        let started = text.find("started with pid").unwrap();
        let held = text.find("held stopped by").unwrap();
        assert!(started < held, "events oldest first");
    }
}
