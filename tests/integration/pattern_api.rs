//! `prism.launcher.PatternLauncher` over a real tonic client against the running binary.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prism_launcher::api::proto::prism::launcher::{
    GetProcessStatusRequest, HealthRequest, IsolationLevel, LaunchRequest, LaunchResponse,
    ListPatternsRequest, ProcessState, TerminateRequest,
};
use tonic::Code;

use crate::harness::*;

fn launch(
    pattern: &str,
    isolation: IsolationLevel,
    namespace: &str,
    session: &str,
) -> LaunchRequest {
    LaunchRequest {
        pattern_name: pattern.to_string(),
        isolation: isolation as i32,
        namespace: namespace.to_string(),
        session_id: session.to_string(),
        config: HashMap::new(),
        grace_period_secs: 0,
    }
}

/// The pid of a launched process, from GetProcessStatus.
async fn pid_of(launcher: &mut TestLauncher, id: &str) -> u32 {
    let mut client = launcher.pattern_client().await;
    let status = client
        .get_process_status(GetProcessStatusRequest {
            process_id: id.to_string(),
        })
        .await
        .expect("GetProcessStatus")
        .into_inner();
    status.process.expect("a known process").pid as u32
}

fn assert_healthy(response: &LaunchResponse) {
    assert!(response.healthy, "{response:?}");
    assert_eq!(
        response.state,
        ProcessState::StateRunning as i32,
        "{response:?}"
    );
    assert!(response.address.starts_with("localhost:"), "{response:?}");
    assert!(response.error.is_empty(), "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_isolation_level_shares_or_separates_processes() {
    let mut launcher = TestLauncher::start();
    let mut client = launcher.pattern_client().await;
    let cases = [
        (
            IsolationLevel::IsolationNone,
            "",
            "",
            "shared:hello-pattern",
        ),
        (
            IsolationLevel::IsolationNamespace,
            "tenant-a",
            "",
            "ns:tenant-a:hello-pattern",
        ),
        (
            IsolationLevel::IsolationNamespace,
            "tenant-b",
            "",
            "ns:tenant-b:hello-pattern",
        ),
        (
            IsolationLevel::IsolationSession,
            "tenant-a",
            "user-1",
            "session:tenant-a:user-1:hello-pattern",
        ),
        (
            IsolationLevel::IsolationSession,
            "tenant-a",
            "user-2",
            "session:tenant-a:user-2:hello-pattern",
        ),
        // Unspecified takes the manifest's isolation_level (namespace).
        (
            IsolationLevel::Unspecified,
            "tenant-c",
            "",
            "ns:tenant-c:hello-pattern",
        ),
    ];
    let mut pids = Vec::new();
    for (isolation, namespace, session, expected_id) in cases {
        let first = client
            .launch_pattern(launch("hello-pattern", isolation, namespace, session))
            .await
            .expect("launch")
            .into_inner();
        assert_eq!(first.process_id, expected_id);
        assert_healthy(&first);
        let pid = pid_of(&mut launcher, expected_id).await;
        let again = client
            .launch_pattern(launch("hello-pattern", isolation, namespace, session))
            .await
            .expect("launch again")
            .into_inner();
        assert_eq!(
            again.process_id, expected_id,
            "the same launch is the same process"
        );
        assert_eq!(again.address, first.address);
        assert_eq!(
            pid_of(&mut launcher, expected_id).await,
            pid,
            "{expected_id} was not restarted"
        );
        let env = environment(pid);
        assert_eq!(env.get("PROCESS_ID").map(String::as_str), Some(expected_id));
        assert_eq!(env.get("NAMESPACE").map(String::as_str), Some(namespace));
        assert_eq!(env.get("SESSION_ID").map(String::as_str), Some(session));
        assert_eq!(
            env.get("PATTERN_NAME").map(String::as_str),
            Some("hello-pattern")
        );
        assert_eq!(
            env.get("GRPC_PORT").map(|port| format!("localhost:{port}")),
            Some(first.address.clone()),
            "address is where GRPC_PORT is"
        );
        pids.push(pid);
    }
    let mut distinct = pids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        pids.len(),
        "another tenant or session gets another process: {pids:?}"
    );

    // A process started by LaunchPattern shows in `status` with source `api`.
    let row = launcher
        .process("ns:tenant-a:hello-pattern")
        .expect("in status");
    assert_eq!(row["source"], "api", "{row}");
    assert_eq!(row["pattern"], "hello-pattern", "{row}");
    // The manifest's resources are kept and shown (enforcement is later work).
    assert_eq!(row["resources"]["cpu_limit_millis"], 500, "{row}");
    assert_eq!(row["resources"]["memory_limit_bytes"], 64 << 20, "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_launches_make_one_process() {
    let mut launcher = TestLauncher::start();
    let client = launcher.pattern_client().await;
    let launches = (0..8).map(|_| {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .launch_pattern(launch(
                    "hello-pattern",
                    IsolationLevel::IsolationNamespace,
                    "busy",
                    "",
                ))
                .await
                .map(tonic::Response::into_inner)
        })
    });
    let responses: Vec<LaunchResponse> = futures_join_all(launches).await;
    for response in &responses {
        assert_eq!(response.process_id, "ns:busy:hello-pattern");
        assert_healthy(response);
    }
    let running = processes_with_env("PROCESS_ID", "ns:busy:hello-pattern")
        .into_iter()
        .filter(|pid| launcher.our_processes().contains(pid))
        .count();
    assert_eq!(running, 1, "one process for eight identical launches");
}

async fn futures_join_all(
    handles: impl Iterator<Item = tokio::task::JoinHandle<Result<LaunchResponse, tonic::Status>>>,
) -> Vec<LaunchResponse> {
    let mut responses = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        responses.push(handle.await.expect("task").expect("launch"));
    }
    responses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_stops_the_process_and_the_same_launch_works_again() {
    let mut launcher = TestLauncher::start();
    let mut client = launcher.pattern_client().await;
    let request = launch(
        "hello-pattern",
        IsolationLevel::IsolationNamespace,
        "again",
        "",
    );
    let first = client
        .launch_pattern(request.clone())
        .await
        .unwrap()
        .into_inner();
    let pid = pid_of(&mut launcher, &first.process_id).await;

    let terminated = client
        .terminate_pattern(TerminateRequest {
            process_id: first.process_id.clone(),
            grace_period_secs: 5,
            force: false,
        })
        .await
        .expect("terminate")
        .into_inner();
    assert!(terminated.success, "{terminated:?}");
    assert_eq!(
        process_state(pid),
        None,
        "stopped and reaped when terminate answers"
    );
    let status = client
        .get_process_status(GetProcessStatusRequest {
            process_id: first.process_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.not_found, "{status:?}");

    let second = client.launch_pattern(request).await.unwrap().into_inner();
    assert_eq!(second.process_id, first.process_id, "ids are never burned");
    assert_healthy(&second);
    assert_ne!(pid_of(&mut launcher, &second.process_id).await, pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_honours_the_grace_period_and_force() {
    let mut launcher = TestLauncher::start();
    let mut client = launcher.pattern_client().await;
    let stubborn = launch("stubborn-pattern", IsolationLevel::IsolationNone, "", "");

    let first = client
        .launch_pattern(stubborn.clone())
        .await
        .unwrap()
        .into_inner();
    assert_healthy(&first);
    let started = Instant::now();
    let terminated = client
        .terminate_pattern(TerminateRequest {
            process_id: first.process_id.clone(),
            grace_period_secs: 1,
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    let took = started.elapsed();
    assert!(terminated.success, "{terminated:?}");
    assert!(
        took >= Duration::from_millis(900),
        "a SIGTERM-ignoring process gets its grace ({took:?})"
    );
    assert!(took < Duration::from_secs(4), "then SIGKILL ({took:?})");

    let second = client.launch_pattern(stubborn).await.unwrap().into_inner();
    let started = Instant::now();
    let forced = client
        .terminate_pattern(TerminateRequest {
            process_id: second.process_id.clone(),
            grace_period_secs: 30,
            force: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(forced.success, "{forced:?}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "force kills at once ({:?})",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_entries_reach_the_environment() {
    let mut launcher = TestLauncher::start();
    let mut client = launcher.pattern_client().await;
    let mut request = launch(
        "hello-pattern",
        IsolationLevel::IsolationNamespace,
        "configured",
        "",
    );
    request.config = HashMap::from([
        ("FEATURE_FLAG".to_string(), "on".to_string()),
        ("backend_url".to_string(), "redis://127.0.0.1:1".to_string()),
    ]);
    let response = client.launch_pattern(request).await.unwrap().into_inner();
    let env = environment(pid_of(&mut launcher, &response.process_id).await);
    assert_eq!(env.get("FEATURE_FLAG").map(String::as_str), Some("on"));
    assert_eq!(
        env.get("backend_url").map(String::as_str),
        Some("redis://127.0.0.1:1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_case_answers_the_right_code_with_a_clear_message() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec("owned.yaml", &hello_spec("file-owned", "x"));
    let mut client = launcher.pattern_client().await;

    let cases: Vec<(LaunchRequest, Code, &str)> = vec![
        (
            launch("", IsolationLevel::IsolationNone, "", ""),
            Code::InvalidArgument,
            "pattern_name is required",
        ),
        (
            launch("hello-pattern", IsolationLevel::IsolationNamespace, "", ""),
            Code::InvalidArgument,
            "needs a namespace",
        ),
        (
            launch("hello-pattern", IsolationLevel::IsolationSession, "ns", ""),
            Code::InvalidArgument,
            "needs a session_id",
        ),
        (
            launch("no-such-pattern", IsolationLevel::IsolationNone, "", ""),
            Code::NotFound,
            "\"no-such-pattern\" is not in the catalog",
        ),
        (
            launch(
                "hello-pattern",
                IsolationLevel::IsolationNamespace,
                "bad/ns",
                "",
            ),
            Code::InvalidArgument,
            "contains '/'",
        ),
        (
            LaunchRequest {
                config: HashMap::from([("PROCESS_ID".to_string(), "spoof".to_string())]),
                ..launch("hello-pattern", IsolationLevel::IsolationNone, "", "")
            },
            Code::InvalidArgument,
            "set by the launcher",
        ),
    ];
    for (request, code, message) in cases {
        let status = client
            .launch_pattern(request.clone())
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
        assert!(
            status.message().contains(message),
            "{request:?}: {}",
            status.message()
        );
    }

    let huge = client
        .terminate_pattern(TerminateRequest {
            process_id: "ns:nobody:hello-pattern".to_string(),
            grace_period_secs: i64::MAX,
            force: false,
        })
        .await
        .expect_err("out of range");
    assert!(
        matches!(huge.code(), Code::InvalidArgument | Code::NotFound),
        "{huge:?}"
    );
    let mut long_launch = launch("hello-pattern", IsolationLevel::IsolationNone, "", "");
    long_launch.grace_period_secs = i64::MAX;
    let refused = client
        .launch_pattern(long_launch)
        .await
        .expect_err("out of range");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("grace_period_secs"),
        "{}",
        refused.message()
    );

    let unknown = client
        .terminate_pattern(TerminateRequest {
            process_id: "ns:nobody:hello-pattern".to_string(),
            ..Default::default()
        })
        .await
        .expect_err("unknown id");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    launcher.wait_running("file-owned", None, Duration::from_secs(15));
    let owned = client
        .terminate_pattern(TerminateRequest {
            process_id: "file-owned".to_string(),
            ..Default::default()
        })
        .await
        .expect_err("file-owned");
    assert_eq!(owned.code(), Code::FailedPrecondition, "{owned:?}");
    assert!(
        owned.message().contains("owned.yaml"),
        "names the file: {}",
        owned.message()
    );
    assert!(
        owned.message().contains("remove the file"),
        "{}",
        owned.message()
    );
    assert!(
        launcher.process("file-owned").is_some(),
        "nothing was stopped"
    );

    let missing = client
        .get_process_status(GetProcessStatusRequest {
            process_id: "ns:nobody:hello-pattern".to_string(),
        })
        .await
        .expect("unknown ids answer OK")
        .into_inner();
    assert!(
        missing.not_found && missing.process.is_none(),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_that_never_gets_healthy_says_so() {
    let mut launcher = TestLauncher::start();
    let mut client = launcher.pattern_client().await;
    let response = client
        .launch_pattern(launch(
            "sick-pattern",
            IsolationLevel::IsolationNone,
            "",
            "",
        ))
        .await
        .expect("a slow launch still answers")
        .into_inner();
    assert_eq!(response.process_id, "shared:sick-pattern");
    assert!(!response.healthy, "{response:?}");
    assert_eq!(
        response.state,
        ProcessState::StateStarting as i32,
        "{response:?}"
    );
    assert!(
        response.error.contains("not healthy within"),
        "{response:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_list_patterns_count_what_runs() {
    let mut launcher = TestLauncher::start();
    let mut client = launcher.pattern_client().await;
    for (isolation, namespace, session) in [
        (IsolationLevel::IsolationNone, "", ""),
        (IsolationLevel::IsolationNamespace, "tenant-a", ""),
        (IsolationLevel::IsolationSession, "tenant-a", "user-1"),
    ] {
        let response = client
            .launch_pattern(launch("hello-pattern", isolation, namespace, session))
            .await
            .unwrap()
            .into_inner();
        assert_healthy(&response);
    }

    let health = client
        .health(HealthRequest {
            include_processes: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(health.healthy, "{health:?}");
    assert_eq!(health.total_processes, 3);
    assert_eq!(health.running_processes, 3);
    assert_eq!(health.terminating_processes, 0);
    assert_eq!(health.failed_processes, 0);
    let distribution: HashMap<&str, i32> = health
        .isolation_distribution
        .iter()
        .map(|(key, count)| (key.as_str(), *count))
        .collect();
    assert_eq!(
        distribution,
        HashMap::from([("None", 1), ("Namespace", 1), ("Session", 1)])
    );
    assert_eq!(health.processes.len(), 3);
    for process in &health.processes {
        assert!(
            process.pid > 0 && is_alive(process.pid as u32),
            "{process:?}"
        );
        assert!(process.healthy, "{process:?}");
    }
    let lean = client
        .health(HealthRequest {
            include_processes: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(lean.processes.is_empty());

    let list = |pattern: &str, namespace: &str, state: ProcessState| ListPatternsRequest {
        pattern_name: pattern.to_string(),
        namespace: namespace.to_string(),
        state: state as i32,
    };
    let all = client
        .list_patterns(list("", "", ProcessState::StateUnspecified))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((all.patterns.len(), all.total_count), (3, 3));
    let tenant_a = client
        .list_patterns(list("", "tenant-a", ProcessState::StateUnspecified))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (tenant_a.patterns.len(), tenant_a.total_count),
        (2, 3),
        "total_count is before filtering"
    );
    let running = client
        .list_patterns(list("hello-pattern", "", ProcessState::StateRunning))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(running.patterns.len(), 3);
    let failed = client
        .list_patterns(list("", "", ProcessState::StateFailed))
        .await
        .unwrap()
        .into_inner();
    assert!(failed.patterns.is_empty());
    let info = &tenant_a.patterns[0];
    assert_eq!(info.pattern_name, "hello-pattern");
    assert_eq!(info.namespace, "tenant-a");
    assert!(
        info.pid > 0 && info.address.starts_with("localhost:"),
        "{info:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_reloads_and_a_broken_manifest_keeps_its_last_good_version() {
    let mut launcher = TestLauncher::start();
    let mut client = launcher.pattern_client().await;
    let fresh = launch("fresh-pattern", IsolationLevel::IsolationNone, "", "");
    let refused = client
        .launch_pattern(fresh.clone())
        .await
        .expect_err("not yet in the catalog");
    assert_eq!(refused.code(), Code::NotFound);

    write_manifest(
        &launcher.patterns_dir(),
        "fresh-pattern",
        HELLO_PATTERN,
        "none",
        "{}",
    );
    let response = eventually_async(Duration::from_secs(10), || {
        let mut client = client.clone();
        let fresh = fresh.clone();
        async move {
            client
                .launch_pattern(fresh)
                .await
                .ok()
                .map(tonic::Response::into_inner)
        }
    })
    .await;
    assert_healthy(&response);

    std::fs::write(
        launcher.patterns_dir().join("hello-pattern/manifest.yaml"),
        "name: hello-pattern\nexecutable: ./x\nhealthcheck: {interval: soon}\n",
    )
    .unwrap();
    eventually(
        Duration::from_secs(10),
        "the broken manifest in status",
        || {
            let status = launcher.status();
            status["source_problems"]
                .as_object()?
                .keys()
                .any(|source| source.starts_with("manifest:") && source.contains("hello-pattern"))
                .then_some(())
        },
    );
    let still = client
        .launch_pattern(launch(
            "hello-pattern",
            IsolationLevel::IsolationNamespace,
            "kept",
            "",
        ))
        .await
        .expect("the last good hello-pattern is still in the catalog")
        .into_inner();
    assert_healthy(&still);
}

async fn eventually_async<T, F, Fut>(timeout: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_cuts_short_a_termination_under_way_and_shutdown_stays_bounded() {
    let mut launcher = TestLauncher::start();
    let mut client = launcher.pattern_client().await;
    let mut stubborn = launch("stubborn-pattern", IsolationLevel::IsolationNone, "", "");
    stubborn.grace_period_secs = 1;
    let first = client
        .launch_pattern(stubborn.clone())
        .await
        .unwrap()
        .into_inner();
    let pid = pid_of(&mut launcher, &first.process_id).await;

    // A slow terminate, then a forced one while the first is under way.
    let mut slow_client = client.clone();
    let id = first.process_id.clone();
    let slow = tokio::spawn(async move {
        slow_client
            .terminate_pattern(TerminateRequest {
                process_id: id,
                grace_period_secs: 600,
                force: false,
            })
            .await
    });
    eventually_async(Duration::from_secs(10), || {
        let mut client = client.clone();
        let id = first.process_id.clone();
        async move {
            let status = client
                .get_process_status(GetProcessStatusRequest { process_id: id })
                .await
                .ok()?
                .into_inner();
            (status.process?.state == ProcessState::StateTerminating as i32).then_some(())
        }
    })
    .await;
    let started = Instant::now();
    let forced = client
        .terminate_pattern(TerminateRequest {
            process_id: first.process_id.clone(),
            grace_period_secs: 0,
            force: true,
        })
        .await
        .expect("force on a stop under way")
        .into_inner();
    assert!(forced.success, "{forced:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "forced at once ({:?})",
        started.elapsed()
    );
    assert_eq!(process_state(pid), None);
    assert!(slow.await.unwrap().unwrap().into_inner().success);

    // Shutdown with a long terminate in flight: the waiting call ends, the child is killed by
    // its spec's grace (1 s), and the launcher exits promptly.
    let second = client.launch_pattern(stubborn).await.unwrap().into_inner();
    let pid = pid_of(&mut launcher, &second.process_id).await;
    let mut waiting_client = client.clone();
    let id = second.process_id.clone();
    let waiting = tokio::spawn(async move {
        waiting_client
            .terminate_pattern(TerminateRequest {
                process_id: id,
                grace_period_secs: 600,
                force: false,
            })
            .await
    });
    eventually(Duration::from_secs(10), "the stop to be under way", || {
        let row = launcher.process(&second.process_id)?;
        (row["actual"] == "stopping").then_some(())
    });
    let took = launcher.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(15));
    assert!(
        took < Duration::from_secs(5),
        "shutdown is bounded by the spec's grace ({took:?})"
    );
    assert_eq!(process_state(pid), None, "the stubborn child was killed");
    // UNAVAILABLE, or the connection closed by the stopping server: either way it ended.
    let answer = waiting.await.unwrap();
    assert!(answer.is_err(), "the in-flight call ended: {answer:?}");
}

/// The seed quick start, step by step, on the repository's own catalog manifest and beside the
/// default examples (examples/desired-state), as on a fresh checkout: its answers are the
/// seed's, with the examples' processes counted beside its own (README, "Quick start").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_quick_start_gives_the_seeds_answers_beside_the_default_examples() {
    // The seed's pattern answers on its manifest's port 9090, the example on 9190.
    for port in [9090, 9190] {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            eprintln!("not checked: port {port}, which the seed walk-through uses, is taken here");
            return;
        }
    }
    let repo = env!("CARGO_MANIFEST_DIR");
    let mut launcher = TestLauncher::start_with_catalog(&[], |patterns| {
        // The repository's manifest, its executable the built binary (the repository's own
        // script finds it under target/ beside the manifest, which a copy is not).
        let manifest =
            std::fs::read_to_string(format!("{repo}/manifests/hello-pattern/manifest.yaml"))
                .unwrap()
                .replace(
                    "executable: ./hello-pattern",
                    &format!("executable: {HELLO_PATTERN}"),
                );
        std::fs::write(patterns.join("hello-pattern/manifest.yaml"), manifest).unwrap();
    });
    for example in ["hello.yaml", "workers.yaml"] {
        let text =
            std::fs::read_to_string(format!("{repo}/examples/desired-state/{example}")).unwrap();
        launcher.write_spec(example, &text);
    }
    launcher.wait_running("hello-examples", None, Duration::from_secs(30));
    launcher.wait_running("ticker", None, Duration::from_secs(30));
    let mut client = launcher.pattern_client().await;

    // Step 5: launch hello-pattern for namespace my-app.
    let request = launch(
        "hello-pattern",
        IsolationLevel::IsolationNamespace,
        "my-app",
        "",
    );
    let launched = client
        .launch_pattern(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_healthy(&launched);
    assert_eq!(launched.process_id, "ns:my-app:hello-pattern");
    // The same launch again is the same process: one process for the tenant.
    let again = client.launch_pattern(request).await.unwrap().into_inner();
    assert_eq!(again.process_id, launched.process_id);
    assert_eq!(
        pid_of(&mut launcher, "ns:my-app:hello-pattern").await,
        pid_of(&mut launcher, &again.process_id).await
    );

    // Step 6: Health counts patterns, as the seed's launcher ran only patterns: the
    // walk-through's and the example's hello-examples (the examples' utilities are not counted).
    let health = eventually(Duration::from_secs(30), "the counts to settle", || {
        let health = futures_block_on(client.clone().health(HealthRequest::default()))?;
        (health.running_processes == 2).then_some(health)
    });
    assert!(health.healthy, "{health:?}");
    assert_eq!(health.total_processes, 2, "{health:?}");
    assert_eq!(
        health.isolation_distribution.get("Namespace"),
        Some(&2),
        "{health:?}"
    );
    let listed = client
        .list_patterns(ListPatternsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let patterns: Vec<&str> = listed
        .patterns
        .iter()
        .map(|p| p.process_id.as_str())
        .collect();
    assert!(
        patterns.contains(&"ns:my-app:hello-pattern"),
        "{patterns:?}"
    );

    // curl localhost:9090/health answers from the walk-through's process, 9190 from the example.
    for port in [9090u16, 9190] {
        let answer = http_get_port(port, "/health");
        assert!(
            answer.contains("OK - hello-pattern is healthy"),
            "port {port}: {answer}"
        );
    }
}

/// Runs a tonic call to completion from a synchronous closure (for `eventually`).
fn futures_block_on<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Option<T> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| handle.block_on(call))
        .ok()
        .map(tonic::Response::into_inner)
}

/// GET `path` on 127.0.0.1:`port`, the whole answer as text (empty when nothing answers).
fn http_get_port(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}
