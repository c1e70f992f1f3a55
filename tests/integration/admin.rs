//! prism-admin's control plane: a real tonic ControlPlane server in the test plays admin.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prism_launcher::api::proto::prism::control_plane_client::ControlPlaneClient;
use prism_launcher::api::proto::prism::control_plane_server::{ControlPlane, ControlPlaneServer};
use prism_launcher::api::proto::prism::{
    BackendProcessConfig, HeartbeatAck, LauncherHeartbeatRequest, LauncherRegistration,
    LauncherRegistrationAck, PatternProcessConfig, ProcessAssignment, ProcessAssignmentAck,
    ProcessConfig, ProcessRevocation, ProcessRevocationAck, ProxyProcessConfig,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::{Code, Request, Response, Status};

use crate::harness::*;

const TIMEOUT: Duration = Duration::from_secs(20);

/// What the fake admin saw, and the desired set it hands out at registration.
#[derive(Default)]
pub struct AdminState {
    pub registrations: Vec<LauncherRegistration>,
    /// The `authorization` header of each registration (empty when none was sent).
    pub authorizations: Vec<String>,
    heartbeats: Vec<LauncherHeartbeatRequest>,
    initial: Vec<ProcessAssignment>,
    /// The admin's term on the registration ack (`x-prism-admin-term`), if any.
    ack_term: Option<u64>,
    /// The ack's `x-prism-initial-set` marker, if any.
    initial_marker: Option<&'static str>,
}

#[derive(Clone, Default)]
pub struct FakeAdmin {
    state: Arc<Mutex<AdminState>>,
}

impl FakeAdmin {
    pub fn state(&self) -> std::sync::MutexGuard<'_, AdminState> {
        self.state.lock().unwrap()
    }
}

#[tonic::async_trait]
impl ControlPlane for FakeAdmin {
    async fn register_launcher(
        &self,
        request: Request<LauncherRegistration>,
    ) -> Result<Response<LauncherRegistrationAck>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut state = self.state();
        state.authorizations.push(authorization);
        state.registrations.push(request.into_inner());
        let mut response = Response::new(LauncherRegistrationAck {
            success: true,
            message: "welcome".into(),
            initial_processes: state.initial.clone(),
            assigned_capacity: 10,
        });
        if let Some(term) = state.ack_term {
            response
                .metadata_mut()
                .insert("x-prism-admin-term", term.to_string().parse().unwrap());
        }
        if let Some(marker) = state.initial_marker {
            response
                .metadata_mut()
                .insert("x-prism-initial-set", marker.parse().unwrap());
        }
        Ok(response)
    }

    async fn launcher_heartbeat(
        &self,
        request: Request<LauncherHeartbeatRequest>,
    ) -> Result<Response<HeartbeatAck>, Status> {
        self.state().heartbeats.push(request.into_inner());
        Ok(Response::new(HeartbeatAck {
            success: true,
            message: String::new(),
            server_timestamp: 0,
        }))
    }

    async fn assign_process(
        &self,
        _request: Request<ProcessAssignment>,
    ) -> Result<Response<ProcessAssignmentAck>, Status> {
        Err(Status::unimplemented("admin side"))
    }

    async fn revoke_process(
        &self,
        _request: Request<ProcessRevocation>,
    ) -> Result<Response<ProcessRevocationAck>, Status> {
        Err(Status::unimplemented("admin side"))
    }
}

/// Serves the fake admin on `address` (port 0 for a fresh one) until the sender fires.
async fn serve_admin(admin: FakeAdmin, address: SocketAddr) -> (SocketAddr, oneshot::Sender<()>) {
    serve_admin_with(admin, address, None).await
}

/// Serves the fake admin, over TLS when `tls` is given, until the sender fires.
pub async fn serve_admin_with(
    admin: FakeAdmin,
    address: SocketAddr,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind(address)
        .await
        .expect("bind the fake admin");
    let bound = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls).expect("the fake admin's TLS");
        }
        server
            .add_service(ControlPlaneServer::new(admin))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .expect("the fake admin serves");
    });
    (bound, stop)
}

fn sleeper(id: &str, version: i64, seconds: &str) -> ProcessAssignment {
    ProcessAssignment {
        process_id: id.into(),
        process_type: "utility".into(),
        namespace: String::new(),
        config: Some(ProcessConfig {
            binary: "/bin/sleep".into(),
            args: vec![seconds.into()],
            env: HashMap::from([("ROLE".into(), format!("v{version}"))]),
            ..Default::default()
        }),
        version,
    }
}

fn hello(id: &str, version: i64) -> ProcessAssignment {
    ProcessAssignment {
        process_id: id.into(),
        process_type: "pattern".into(),
        namespace: "tenant-a".into(),
        config: Some(ProcessConfig {
            binary: HELLO_PATTERN.into(),
            ..Default::default()
        }),
        version,
    }
}

fn launcher_args<'a>(endpoint: &'a str, bin_dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--admin-endpoint",
        endpoint,
        "--heartbeat-interval",
        "200ms",
        "--allowed-executable-root",
        "/bin",
        "--allowed-executable-root",
        bin_dir,
    ];
    args.extend_from_slice(extra);
    args
}

fn bin_dir() -> String {
    std::path::Path::new(HELLO_PATTERN)
        .parent()
        .unwrap()
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_registers_takes_assignments_heartbeats_and_survives_admin_restarts() {
    let admin = FakeAdmin::default();
    admin.state().initial = vec![sleeper("p-one", 1, "600"), hello("p-two", 1)];
    let (admin_address, admin_stop) =
        serve_admin(admin.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let endpoint = admin_address.to_string();
    let bins = bin_dir();
    let mut launcher =
        TestLauncher::start_with(&launcher_args(&endpoint, &bins, &["--region", "test-1"]));
    let launcher_address = launcher.address();

    let registration = eventually(TIMEOUT, "a registration", || {
        admin.state().registrations.first().cloned()
    });
    assert_eq!(registration.launcher_id, launcher.launcher_id);
    assert_eq!(
        registration.address, launcher_address,
        "advertises where it listens"
    );
    assert_eq!(registration.region, "test-1");
    assert_eq!(
        registration.capabilities,
        ["pattern", "proxy", "backend", "utility"]
    );
    assert_eq!(registration.process_types, registration.capabilities);
    let one = launcher.wait_running("p-one", None, TIMEOUT);
    let two = launcher.wait_running("p-two", None, TIMEOUT);
    let row = launcher.process("p-one").unwrap();
    assert_eq!(
        (row["source"].as_str(), row["admin_version"].as_i64()),
        (Some("admin"), Some(1)),
        "{row}"
    );
    let table = String::from_utf8(launcher.cli(&["status"]).stdout).unwrap();
    assert!(
        table.contains("admin v1"),
        "status shows the admin's version:\n{table}"
    );

    let mut client = ControlPlaneClient::connect(format!("http://{launcher_address}"))
        .await
        .unwrap();
    // A new assignment starts; a newer version replaces it; a stale one is refused; the same
    // version again changes nothing.
    let ack = client
        .assign_process(sleeper("p-three", 1, "601"))
        .await
        .unwrap()
        .into_inner();
    assert!(ack.success, "{ack:?}");
    let three = launcher.wait_running("p-three", None, TIMEOUT);
    assert_eq!(
        environment(three).get("ROLE").map(String::as_str),
        Some("v1")
    );
    client
        .assign_process(sleeper("p-three", 2, "602"))
        .await
        .unwrap();
    let three_v2 = launcher.wait_running("p-three", Some(three), TIMEOUT);
    assert_eq!(
        environment(three_v2).get("ROLE").map(String::as_str),
        Some("v2")
    );
    let stale = client
        .assign_process(sleeper("p-three", 1, "601"))
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    assert!(
        stale.message().contains("version 1") && stale.message().contains("version 2"),
        "{}",
        stale.message()
    );
    let same = client
        .assign_process(sleeper("p-three", 2, "602"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        same.success && same.message.contains("nothing changed"),
        "{same:?}"
    );
    assert_eq!(
        launcher.process("p-three").unwrap()["pid"].as_u64(),
        Some(u64::from(three_v2)),
        "undisturbed"
    );

    // Revoke stops the process and answers its real exit code (SIGTERM: 128 + 15).
    let revoked = client
        .revoke_process(ProcessRevocation {
            launcher_id: launcher.launcher_id.clone(),
            process_id: "p-two".into(),
            graceful_timeout_seconds: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.success, "{revoked:?}");
    assert_eq!(revoked.exit_code, 143, "{revoked:?}");
    assert!(revoked.stopped_at > 1_700_000_000, "{revoked:?}");
    assert_eq!(process_state(two), None, "stopped and reaped");

    // Heartbeats carry the real pids and counts.
    let heartbeat = eventually(TIMEOUT, "a heartbeat with p-one and p-three", || {
        let state = admin.state();
        let last = state.heartbeats.last()?.clone();
        let ok = last
            .process_health
            .get("p-one")
            .is_some_and(|health| health.pid == one as i32)
            && last
                .process_health
                .get("p-three")
                .is_some_and(|health| health.pid == three_v2 as i32)
            && !last.process_health.contains_key("p-two");
        ok.then_some(last)
    });
    assert_eq!(heartbeat.launcher_id, launcher.launcher_id);
    let health = &heartbeat.process_health["p-one"];
    assert_eq!(
        (
            health.status.as_str(),
            health.restart_count,
            health.error_count
        ),
        ("running", 0, 0),
        "{health:?}"
    );
    let resources = heartbeat.resources.unwrap();
    assert_eq!(resources.process_count, 2, "{resources:?}");

    // The launcher does not serve admin's own methods.
    let refused = client
        .register_launcher(LauncherRegistration::default())
        .await
        .expect_err("not served");
    assert_eq!(refused.code(), Code::Unimplemented);

    // Admin goes down and comes back: the launcher registers again, and nothing was stopped.
    admin.state().initial = vec![sleeper("p-one", 1, "600"), sleeper("p-three", 2, "602")];
    admin_stop.send(()).unwrap();
    eventually(TIMEOUT, "the launcher to notice admin is gone", || {
        launcher
            .log()
            .contains("prism-admin is unreachable")
            .then_some(())
    });
    let (_, _admin_stop) = serve_admin(admin.clone(), admin_address).await;
    eventually(TIMEOUT, "a second registration", || {
        (admin.state().registrations.len() >= 2).then_some(())
    });
    let seen = admin.state().heartbeats.len();
    eventually(TIMEOUT, "heartbeats again", || {
        (admin.state().heartbeats.len() > seen).then_some(())
    });
    assert_eq!(
        launcher.process("p-one").unwrap()["pid"].as_u64(),
        Some(u64::from(one)),
        "p-one was never stopped"
    );
    assert_eq!(
        launcher.process("p-three").unwrap()["pid"].as_u64(),
        Some(u64::from(three_v2))
    );
    assert!(is_alive(one) && is_alive(three_v2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_capacity_and_validation_refusals_disturb_nothing() {
    let admin = FakeAdmin::default();
    admin.state().initial = vec![sleeper("keep", 1, "600")];
    let (admin_address, _admin_stop) =
        serve_admin(admin.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let endpoint = admin_address.to_string();
    let bins = bin_dir();
    let mut launcher = TestLauncher::start_with(&launcher_args(
        &endpoint,
        &bins,
        &[
            "--capabilities",
            "pattern,utility,backend",
            "--max-processes",
            "2",
        ],
    ));
    let kept = launcher.wait_running("keep", None, TIMEOUT);
    let mut client = ControlPlaneClient::connect(format!("http://{}", launcher.address()))
        .await
        .unwrap();

    let proxy = ProcessAssignment {
        process_id: "proxy-01".into(),
        process_type: "proxy".into(),
        namespace: String::new(),
        config: Some(ProcessConfig {
            binary: "/bin/sleep".into(),
            proxy: Some(ProxyProcessConfig {
                proxy_id: "proxy-01".into(),
                control_port: 9000,
                data_port: 9001,
                ..Default::default()
            }),
            ..Default::default()
        }),
        version: 1,
    };
    let refused = client.assign_process(proxy).await.expect_err("not capable");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("does not run proxy processes"),
        "{}",
        refused.message()
    );

    let outside = ProcessAssignment {
        config: Some(ProcessConfig {
            binary: "/usr/sbin/nologin".into(),
            ..Default::default()
        }),
        ..sleeper("outside", 1, "1")
    };
    let refused = client
        .assign_process(outside)
        .await
        .expect_err("outside the roots");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let secret = "hunter2-secret";
    let backend = ProcessAssignment {
        process_id: "db-driver".into(),
        process_type: "backend".into(),
        namespace: String::new(),
        config: Some(ProcessConfig {
            binary: "/bin/sleep".into(),
            args: vec!["600".into()],
            backend: Some(BackendProcessConfig {
                backend_type: "postgres".into(),
                connection_string: format!("postgres://app:{secret}@db/x"),
                credentials: HashMap::from([("password".into(), secret.into())]),
                driver_options: HashMap::new(),
            }),
            ..Default::default()
        }),
        version: 1,
    };
    let invalid = ProcessAssignment {
        config: Some(ProcessConfig {
            backend: Some(BackendProcessConfig {
                backend_type: String::new(),
                ..Default::default()
            }),
            ..backend.config.clone().unwrap()
        }),
        ..backend.clone()
    };
    let refused = client
        .assign_process(invalid)
        .await
        .expect_err("invalid backend");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("backend_type"),
        "{}",
        refused.message()
    );

    client.assign_process(backend).await.unwrap();
    let driver = launcher.wait_running("db-driver", None, TIMEOUT);
    let env = environment(driver);
    assert_eq!(
        env.get("BACKEND_CREDENTIAL_PASSWORD").map(String::as_str),
        Some(secret)
    );
    assert_eq!(
        env.get("BACKEND_TYPE").map(String::as_str),
        Some("postgres")
    );
    let status = String::from_utf8(launcher.cli(&["status", "-o", "json"]).stdout).unwrap();
    assert!(
        !status.contains(secret),
        "a credential in status:\n{status}"
    );
    assert!(!launcher.log().contains(secret), "a credential in the log");

    let full = client
        .assign_process(sleeper("third", 1, "600"))
        .await
        .expect_err("at capacity");
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    assert_eq!(
        launcher.process("keep").unwrap()["pid"].as_u64(),
        Some(u64::from(kept)),
        "nothing disturbed"
    );
    assert!(launcher.process("third").is_none());
}

/// Regression: an assignment whose pattern config says `isolation_level: session`, with no
/// session id and no namespace, was accepted while a spec file saying the same was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_isolated_assignment_without_a_session_is_refused_like_a_spec_file() {
    let mut launcher = TestLauncher::start_with(&["--allowed-executable-root", "/bin"]);
    let mut client = ControlPlaneClient::connect(format!("http://{}", launcher.address()))
        .await
        .unwrap();
    client
        .assign_process(sleeper("steady", 1, "600"))
        .await
        .unwrap();
    let steady = launcher.wait_running("steady", None, TIMEOUT);

    let with_session = |id: &str, version| {
        let mut assignment = sleeper(id, version, "600");
        if let Some(config) = assignment.config.as_mut() {
            config.pattern = Some(PatternProcessConfig {
                isolation_level: "session".into(),
                ..Default::default()
            });
        }
        assignment
    };
    for assignment in [with_session("steady", 2), with_session("fresh", 1)] {
        let refused = client
            .assign_process(assignment)
            .await
            .expect_err("no session id");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        for message in [
            "isolation session needs a namespace",
            "isolation session needs a session_id",
        ] {
            assert!(refused.message().contains(message), "{}", refused.message());
        }
    }
    let row = launcher.process("steady").unwrap();
    assert_eq!(row["pid"].as_u64(), Some(u64::from(steady)), "undisturbed");
    assert_eq!(row["admin_version"].as_i64(), Some(1), "{row}");
    assert!(launcher.process("fresh").is_none());

    // A spec file saying the same thing gets the same message, in its own spelling.
    let file = launcher.dir.path().join("session.yaml");
    std::fs::write(
        &file,
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: s}\nspec:\n  binary: /bin/sleep\n  isolation: session\n",
    )
    .unwrap();
    let checked = std::process::Command::new(LAUNCHER)
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let output = String::from_utf8(checked.stdout).unwrap();
    assert!(
        output.contains("isolation session needs a namespace")
            && output.contains("isolation session needs a sessionId"),
        "{output}"
    );
}

/// `status` and `/metrics` show the link to prism-admin as it goes, and an outage changes
/// nothing that runs (no `--admin-disconnect-grace`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_show_the_admin_link_through_an_outage() {
    use crate::observability::{samples, value};
    let admin = FakeAdmin::default();
    admin.state().ack_term = Some(3);
    let (admin_address, admin_stop) =
        serve_admin(admin.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let endpoint = admin_address.to_string();
    let bins = bin_dir();
    let mut launcher = TestLauncher::start_with(&launcher_args(
        &endpoint,
        &bins,
        &["--admin-call-timeout", "1s"],
    ));
    eventually(TIMEOUT, "a heartbeat", || {
        (!admin.state().heartbeats.is_empty()).then_some(())
    });
    let mut client = ControlPlaneClient::connect(format!("http://{}", launcher.address()))
        .await
        .unwrap();
    client
        .assign_process(sleeper("steady", 1, "600"))
        .await
        .unwrap();
    let steady = launcher.wait_running("steady", None, TIMEOUT);

    let link = eventually(TIMEOUT, "status to show the heartbeat", || {
        let link = launcher.status()["admin"].clone();
        (link["last_heartbeat_unix_ms"].as_i64() > Some(0)).then_some(link)
    });
    assert_eq!(link["state"], "connected", "{link}");
    assert_eq!(link["endpoint"], endpoint.as_str(), "{link}");
    assert_eq!(link["registrations"], 1, "{link}");
    assert_eq!(
        link["term"], 3,
        "the registration's term is the newest seen: {link}"
    );
    assert_eq!(
        link["disconnect_grace_ms"],
        serde_json::Value::Null,
        "{link}"
    );
    let table = String::from_utf8(launcher.cli(&["status"]).stdout).unwrap();
    assert!(
        table.contains(&format!("prism-admin {endpoint}: connected for"))
            && table.contains("1 registration, term 3"),
        "{table}"
    );
    let (code, text) = launcher.http_get("/metrics");
    assert_eq!(code, 200);
    let scraped = samples(&text);
    assert_eq!(
        value(&scraped, "pattern_launcher_admin_link", "state=connected"),
        1.0
    );
    assert_eq!(
        value(&scraped, "pattern_launcher_admin_link", "state=unreachable"),
        0.0
    );
    assert_eq!(
        value(&scraped, "pattern_launcher_admin_registrations_total", ""),
        1.0
    );
    assert_eq!(value(&scraped, "pattern_launcher_admin_term", ""), 3.0);
    assert!(
        value(
            &scraped,
            "pattern_launcher_admin_last_heartbeat_timestamp_seconds",
            ""
        ) > 1.7e9
    );
    assert_eq!(
        value(
            &scraped,
            "pattern_launcher_admin_unreachable_since_seconds",
            ""
        ),
        0.0
    );
    let (_, json) = launcher.http_get("/metrics.json");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (json["admin_link"].as_str(), json["admin_term"].as_u64()),
        (Some("connected"), Some(3)),
        "{json}"
    );

    // Admin goes away: the link is unreachable since then, in status and metrics, and what runs
    // runs on.
    admin_stop.send(()).unwrap();
    let link = eventually(TIMEOUT, "status to show admin unreachable", || {
        let link = launcher.status()["admin"].clone();
        (link["state"] == "unreachable").then_some(link)
    });
    assert!(link["since_unix_ms"].as_i64() > Some(0), "{link}");
    assert!(
        link["last_error"]
            .as_str()
            .is_some_and(|error| !error.is_empty()),
        "{link}"
    );
    let (_, text) = launcher.http_get("/metrics");
    let scraped = samples(&text);
    assert_eq!(
        value(&scraped, "pattern_launcher_admin_link", "state=unreachable"),
        1.0
    );
    assert_eq!(
        value(&scraped, "pattern_launcher_admin_registered", ""),
        0.0
    );
    assert!(
        value(
            &scraped,
            "pattern_launcher_admin_unreachable_since_seconds",
            ""
        ) > 1.7e9
    );
    assert_eq!(
        value(&scraped, "pattern_launcher_admin_processes_suspended", ""),
        0.0
    );
    assert_eq!(
        launcher.wait_running("steady", None, TIMEOUT),
        steady,
        "undisturbed"
    );
}

/// Kills the legacy launcher and everything carrying its launcher id, also when the test fails.
struct LegacyGuard {
    launcher: std::process::Child,
    launcher_id: Option<String>,
}

impl Drop for LegacyGuard {
    fn drop(&mut self) {
        let _ = self.launcher.kill();
        let _ = self.launcher.wait();
        if let Some(id) = &self.launcher_id {
            for pid in processes_with_env("PRISM_LAUNCHER_ID", id) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_pattern_launcher_name_and_flags_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let patterns = dir.path().join("patterns");
    write_test_patterns(&patterns);
    // A manifest without isolation_level: the old --isolation flag decides.
    let plain = patterns.join("plain-pattern");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::write(
        plain.join("manifest.yaml"),
        format!("name: plain-pattern\nexecutable: {HELLO_PATTERN}\nhealthcheck:\n  path: /health\n  interval: 200ms\n"),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let launcher = std::process::Command::new(env!("CARGO_BIN_EXE_pattern-launcher"))
        .current_dir(dir.path())
        .arg("--patterns-dir")
        .arg(&patterns)
        .args([
            "--grpc-port",
            &port.to_string(),
            "--isolation",
            "namespace",
            "--metrics-port",
            "0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("launcher.log")).unwrap())
        .spawn()
        .unwrap();
    let mut guard = LegacyGuard {
        launcher,
        launcher_id: None,
    };
    let mut client = eventually_connect(port).await;
    let response = client
        .launch_pattern(prism_launcher::api::proto::prism::launcher::LaunchRequest {
            pattern_name: "plain-pattern".into(),
            namespace: "legacy".into(),
            ..Default::default()
        })
        .await
        .expect("launch through the old binary")
        .into_inner();
    assert_eq!(
        response.process_id, "ns:legacy:plain-pattern",
        "--isolation namespace applied"
    );
    assert!(response.healthy, "{response:?}");
    let pid = processes_with_env("PROCESS_ID", "ns:legacy:plain-pattern")[0];
    let env = environment(pid);
    guard.launcher_id = env.get("PRISM_LAUNCHER_ID").cloned();
    assert_eq!(
        env.get("PROCESS_TYPE").map(String::as_str),
        Some("pattern"),
        "the type defaults to pattern"
    );
    let metrics = eventually(TIMEOUT, "the metrics address", || {
        std::fs::read_to_string(dir.path().join("data/metrics.addr")).ok()
    });
    assert_eq!(
        http_get(&metrics, "/healthz"),
        (200, "ok\n".to_string()),
        "--metrics-port is served"
    );
    assert!(
        dir.path().join("data/specs").is_dir(),
        "spec files are watched in <data-dir>/specs"
    );
}

async fn eventually_connect(
    port: u16,
) -> prism_launcher::api::proto::prism::launcher::pattern_launcher_client::PatternLauncherClient<
    tonic::transport::Channel,
> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Ok(client) = prism_launcher::api::proto::prism::launcher::pattern_launcher_client::PatternLauncherClient::connect(format!("http://127.0.0.1:{port}")).await {
            return client;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old launcher never listened on {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An admin that answers a re-registration with an empty initial set (as upstream prism-admin
/// does) stops nothing: what it assigned keeps running, unconfirmed; one that marks its set
/// complete has the processes it does not list stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_initial_set_keeps_every_admin_process_and_a_complete_one_stops_the_missing() {
    let admin = FakeAdmin::default();
    admin.state().initial = vec![sleeper("p-one", 1, "600"), sleeper("p-two", 1, "601")];
    let (admin_address, admin_stop) =
        serve_admin(admin.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let endpoint = admin_address.to_string();
    let bins = bin_dir();
    let mut launcher = TestLauncher::start_with(&launcher_args(&endpoint, &bins, &[]));
    let one = launcher.wait_running("p-one", None, TIMEOUT);
    let two = launcher.wait_running("p-two", None, TIMEOUT);

    // Admin restarts and answers the re-registration with an empty set: nothing stops.
    admin.state().initial = Vec::new();
    admin_stop.send(()).unwrap();
    eventually(TIMEOUT, "the launcher to notice admin is gone", || {
        launcher
            .log()
            .contains("prism-admin is unreachable")
            .then_some(())
    });
    let (_, admin_stop) = serve_admin(admin.clone(), free(admin_address)).await;
    eventually(TIMEOUT, "a second registration", || {
        (admin.state().registrations.len() >= 2).then_some(())
    });
    let seen = admin.state().heartbeats.len();
    eventually(TIMEOUT, "heartbeats again", || {
        (admin.state().heartbeats.len() > seen).then_some(())
    });
    for (id, pid) in [("p-one", one), ("p-two", two)] {
        let process = launcher.process(id).unwrap();
        assert_eq!(
            process["pid"].as_u64(),
            Some(u64::from(pid)),
            "{id} kept running"
        );
        assert_eq!(process["unconfirmed"].as_bool(), Some(true), "{process}");
    }
    assert!(is_alive(one) && is_alive(two));

    // Admin restarts again, with its whole set marked complete: p-two, not in it, stops.
    {
        let mut state = admin.state();
        state.initial = vec![sleeper("p-one", 1, "600")];
        state.initial_marker = Some("complete");
    }
    let noticed = launcher.log().matches("prism-admin is unreachable").count();
    admin_stop.send(()).unwrap();
    eventually(
        TIMEOUT,
        "the launcher to notice admin is gone again",
        || (launcher.log().matches("prism-admin is unreachable").count() > noticed).then_some(()),
    );
    let registered = admin.state().registrations.len();
    let (_, _admin_stop) = serve_admin(admin.clone(), free(admin_address)).await;
    eventually(TIMEOUT, "a third registration", || {
        (admin.state().registrations.len() > registered).then_some(())
    });
    eventually(TIMEOUT, "p-two to be stopped and forgotten", || {
        launcher.process("p-two").is_none().then_some(())
    });
    assert!(!is_alive(two), "p-two's process is gone");
    let kept = launcher.process("p-one").unwrap();
    assert_eq!(
        kept["pid"].as_u64(),
        Some(u64::from(one)),
        "p-one kept running"
    );
    assert_eq!(kept["unconfirmed"].as_bool(), Some(false), "{kept}");
}

/// `address` once the fake admin that served on it has let it go.
fn free(address: SocketAddr) -> SocketAddr {
    eventually(TIMEOUT, "the admin's port to be free", || {
        std::net::TcpListener::bind(address).ok().map(drop)
    });
    address
}

/// A launcher restarted while prism-admin is still unreachable, after the disconnect grace had
/// stopped admin's processes, keeps them stopped until a registration succeeds: the admin may
/// have placed them elsewhere meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_a_partition_keeps_what_the_grace_stopped_stopped() {
    let admin = FakeAdmin::default();
    admin.state().initial = vec![sleeper("p-one", 1, "600")];
    let (admin_address, admin_stop) =
        serve_admin(admin.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let endpoint = admin_address.to_string();
    let bins = bin_dir();
    let mut launcher = TestLauncher::start_with(&launcher_args(
        &endpoint,
        &bins,
        &["--admin-disconnect-grace", "1s"],
    ));
    let one = launcher.wait_running("p-one", None, TIMEOUT);

    admin_stop.send(()).unwrap();
    eventually(TIMEOUT, "p-one to be stopped past the grace", || {
        let process = launcher.process("p-one")?;
        (process["actual"].as_str() == Some("stopped") && !is_alive(one)).then_some(())
    });
    launcher.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(15));
    launcher.spawn();
    // Suspended from the start: the last run's stop stands until admin is back.
    let link = launcher.status()["admin"].clone();
    assert_eq!(link["processes_suspended"].as_bool(), Some(true), "{link}");
    let process = launcher.process("p-one").unwrap();
    assert_eq!(process["actual"].as_str(), Some("stopped"), "{process}");
    assert!(process["pid"].is_null(), "{process}");

    // Admin is back: p-one runs again as its set says.
    let (_, _admin_stop) = serve_admin(admin.clone(), free(admin_address)).await;
    let again = launcher.wait_running("p-one", None, TIMEOUT);
    assert_ne!(again, one);
}
