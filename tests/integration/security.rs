//! Who may call the launcher, against the running binary: a bearer token on TCP, the Unix socket
//! with the peer's uid checked, mutual TLS, the refusal of an unauthenticated non-loopback
//! listener, and the data directory's permissions.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use prism_launcher::api::proto::prism::control_plane_client::ControlPlaneClient;
use prism_launcher::api::proto::prism::launcher::pattern_launcher_client::PatternLauncherClient;
use prism_launcher::api::proto::prism::launcher::v1::launcher_admin_client::LauncherAdminClient;
use prism_launcher::api::proto::prism::launcher::v1::{ResetProcessRequest, StreamLogsRequest};
use prism_launcher::api::proto::prism::launcher::{
    HealthRequest, IsolationLevel, LaunchRequest, TerminateRequest,
};
use prism_launcher::api::proto::prism::{ProcessAssignment, ProcessConfig, ProcessRevocation};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

use crate::admin::{serve_admin_with, FakeAdmin};
use crate::harness::*;

const TOKEN: &str = "test-token-0123456789abcdef";

/// A token file, private as the launcher requires.
fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn launch(namespace: &str) -> LaunchRequest {
    LaunchRequest {
        pattern_name: "hello-pattern".into(),
        isolation: IsolationLevel::IsolationNamespace as i32,
        namespace: namespace.into(),
        session_id: String::new(),
        config: HashMap::new(),
        grace_period_secs: 0,
    }
}

fn assignment(id: &str) -> ProcessAssignment {
    ProcessAssignment {
        process_id: id.into(),
        process_type: "utility".into(),
        namespace: String::new(),
        config: Some(ProcessConfig {
            binary: "/bin/sleep".into(),
            args: vec!["600".into()],
            ..Default::default()
        }),
        version: 1,
    }
}

fn with_token<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
}

async fn channel_to(uri: String) -> Channel {
    Endpoint::from_shared(uri)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect")
}

/// Every privileged call on `channel`, each with the code it answered.
async fn privileged_calls(
    channel: &Channel,
    token: bool,
    launcher_id: &str,
) -> Vec<(&'static str, Code)> {
    let code = |result: Result<_, tonic::Status>| result.err().map_or(Code::Ok, |s| s.code());
    let mut patterns = PatternLauncherClient::new(channel.clone());
    let mut control = ControlPlaneClient::new(channel.clone());
    let mut admin = LauncherAdminClient::new(channel.clone());
    vec![
        (
            "LaunchPattern",
            code(
                patterns
                    .launch_pattern(maybe_token(token, launch("tenant-t")))
                    .await
                    .map(drop),
            ),
        ),
        (
            "AssignProcess",
            code(
                control
                    .assign_process(wrap_assign(token, assignment("assigned-t")))
                    .await
                    .map(drop),
            ),
        ),
        (
            "ResetProcess",
            code(
                admin
                    .reset_process(wrap_reset(token, "nobody-knows-me"))
                    .await
                    .map(drop),
            ),
        ),
        (
            "StreamLogs",
            code(
                admin
                    .stream_logs(wrap_logs(token, "nobody-knows-me"))
                    .await
                    .map(drop),
            ),
        ),
        (
            "RevokeProcess",
            code(
                control
                    .revoke_process(wrap_revoke(token, launcher_id, "assigned-t"))
                    .await
                    .map(drop),
            ),
        ),
        (
            "TerminatePattern",
            code(
                patterns
                    .terminate_pattern(wrap_terminate(token, "hello-pattern:tenant-t"))
                    .await
                    .map(drop),
            ),
        ),
    ]
}

fn maybe_token<T>(token: bool, message: T) -> tonic::Request<T> {
    if token {
        with_token(message)
    } else {
        tonic::Request::new(message)
    }
}

fn wrap_assign(token: bool, message: ProcessAssignment) -> tonic::Request<ProcessAssignment> {
    maybe_token(token, message)
}

fn wrap_reset(token: bool, id: &str) -> tonic::Request<ResetProcessRequest> {
    maybe_token(
        token,
        ResetProcessRequest {
            process_id: id.into(),
        },
    )
}

fn wrap_logs(token: bool, id: &str) -> tonic::Request<StreamLogsRequest> {
    maybe_token(
        token,
        StreamLogsRequest {
            process_id: id.into(),
            tail_lines: 1,
            ..StreamLogsRequest::default()
        },
    )
}

fn wrap_revoke(token: bool, launcher_id: &str, id: &str) -> tonic::Request<ProcessRevocation> {
    maybe_token(
        token,
        ProcessRevocation {
            process_id: id.into(),
            launcher_id: launcher_id.into(),
            graceful_timeout_seconds: 1,
        },
    )
}

fn wrap_terminate(token: bool, id: &str) -> tonic::Request<TerminateRequest> {
    maybe_token(
        token,
        TerminateRequest {
            process_id: id.into(),
            grace_period_secs: 0,
            force: true,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_privileged_call_over_tcp_needs_it_and_the_socket_needs_none() {
    let secrets = tempfile::tempdir().unwrap();
    let token = token_file(secrets.path());
    let mut launcher = TestLauncher::start_with(&[
        "--auth-token-file",
        token.to_str().unwrap(),
        "--allowed-executable-root",
        "/bin",
    ]);
    let tcp = channel_to(format!("http://{}", launcher.address())).await;

    // Without the token: every privileged call is UNAUTHENTICATED and nothing changes.
    for (call, code) in privileged_calls(&tcp, false, &launcher.launcher_id.clone()).await {
        assert_eq!(code, Code::Unauthenticated, "{call} without a token");
    }
    assert!(
        launcher.status()["processes"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "{}",
        launcher.status()
    );
    assert!(launcher.our_processes().is_empty());
    // Open calls stay open on loopback.
    PatternLauncherClient::new(tcp.clone())
        .health(HealthRequest {
            include_processes: false,
        })
        .await
        .expect("Health needs no token on loopback");

    // With it: no call is refused for want of authentication, and the launch runs.
    for (call, code) in privileged_calls(&tcp, true, &launcher.launcher_id.clone()).await {
        assert!(
            !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
            "{call} with the token answered {code:?}"
        );
    }

    // Over the Unix socket, the launcher's own user (root here) needs no token.
    let socket = launcher.data_dir().join("launcher.sock");
    let unix = channel_to(format!("unix:{}", socket.display())).await;
    let launched = PatternLauncherClient::new(unix.clone())
        .launch_pattern(launch("tenant-u"))
        .await
        .expect("LaunchPattern over the socket")
        .into_inner();
    assert!(launched.process_id.contains("tenant-u"), "{launched:?}");
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The CLI: over TCP without the token it is refused with the reason, with it it works, and
    // by default it finds the socket.
    let address = launcher.address();
    let data_dir = launcher.data_dir();
    let refused = cli(&["reset", "nobody", "--addr", &address]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("needs authentication"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let with = cli(&[
        "reset",
        "nobody",
        "--addr",
        &address,
        "--token-file",
        token.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&with.stderr).contains("not found")
            || String::from_utf8_lossy(&with.stderr).contains("NotFound")
            || String::from_utf8_lossy(&with.stderr).contains("no process"),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    let status = cli(&[
        "status",
        "-o",
        "json",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(String::from_utf8_lossy(&status.stdout).contains("tenant-u"));
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(LAUNCHER)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run prism-launcher")
}

/// Runs `command` as uid/gid 65534 with no supplementary groups.
fn as_nobody(program: &str, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            program,
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn the_data_directory_is_private_and_another_user_reads_nothing_in_it() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec("sleeper.yaml", &sleeper_spec());
    launcher.wait_running("sleeper", None, Duration::from_secs(10));
    let data = launcher.data_dir();
    let mode = |path: &Path| std::fs::symlink_metadata(path).unwrap().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("store")), 0o700);
    assert_eq!(mode(&data.join("logs")), 0o700);
    assert_eq!(mode(&data.join("logs/sleeper.log")), 0o600);
    assert_eq!(mode(&data.join("launcher.addr")), 0o600);
    assert_eq!(mode(&data.join("launcher.sock")), 0o600);
    for entry in std::fs::read_dir(data.join("store")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
        }
    }
    if !is_root() {
        // Reading as another user needs root to become one; the modes above are the proof.
        return;
    }
    // Even with the test's own folder opened up, the data directory stops another user.
    std::fs::set_permissions(launcher.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = data.join("store/db");
    let read = as_nobody("cat", &[db.to_str().unwrap()]);
    assert!(!read.status.success(), "another user read the store");
    assert!(
        String::from_utf8_lossy(&read.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let log = data.join("logs/sleeper.log");
    assert!(!as_nobody("cat", &[log.to_str().unwrap()]).status.success());
}

#[test]
fn an_open_data_directory_is_made_private_at_start() {
    let mut launcher = TestLauncher::start();
    let data = launcher.data_dir();
    launcher.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20));
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    launcher.spawn();
    assert_eq!(std::fs::metadata(&data).unwrap().mode() & 0o777, 0o700);
    assert!(
        launcher.log().contains("made it private"),
        "{}",
        launcher.log()
    );
}

#[test]
fn on_the_socket_another_uid_is_refused_even_when_the_modes_let_it_connect() {
    if !is_root() {
        return;
    }
    let mut launcher = TestLauncher::start();
    launcher.address();
    let data = launcher.data_dir();
    // An operator's mistake, opening the folders and the socket to everyone: the uid check
    // still holds.
    for (path, mode) in [
        (launcher.dir.path().to_path_buf(), 0o711),
        (data.clone(), 0o711),
        (data.join("launcher.sock"), 0o666),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let socket = format!("unix:{}", data.join("launcher.sock").display());
    let refused = as_nobody(LAUNCHER, &["reset", "anything", "--addr", &socket]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("uid 65534 may not call this launcher"),
        "{stderr}"
    );
    let status = as_nobody(LAUNCHER, &["status", "--addr", &socket]);
    assert!(!status.status.success(), "another uid read the status");
}

#[test]
fn a_non_loopback_listener_without_authentication_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("specs")).unwrap();
    let serve = |extra: &[&str]| {
        let mut child = Command::new(LAUNCHER)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--specs-dir")
            .arg(dir.path().join("specs"))
            .arg("--patterns-dir")
            .arg(dir.path().join("patterns"))
            .args(["--listen", "0.0.0.0:0", "--metrics-listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start prism-launcher");
        let pid = child.id();
        let exited = eventually(Duration::from_secs(20), "the launcher to decide", || {
            if let Some(status) = child.try_wait().ok().flatten() {
                return Some(Some(status));
            }
            std::fs::read_to_string(dir.path().join("data/launcher.addr"))
                .ok()
                .filter(|text| !text.is_empty())
                .map(|_| None)
        });
        if exited.is_none() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let output = child.wait_with_output().expect("launcher output");
        (exited, String::from_utf8_lossy(&output.stderr).to_string())
    };
    let (exited, stderr) = serve(&[]);
    let status = exited.expect("the launcher refused to start");
    assert!(!status.success());
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0") && stderr.contains("--auth-token-file"),
        "{stderr}"
    );
    let token = token_file(dir.path());
    let (exited, stderr) = serve(&["--auth-token-file", token.to_str().unwrap()]);
    assert!(exited.is_none(), "with a token it serves: {stderr}");
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let issue = |names: Vec<String>, name: &str| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        issue(
            vec!["localhost".to_string(), "127.0.0.1".to_string()],
            "server",
        );
        issue(vec!["client".to_string()], "client");
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_tls_only_clients_with_a_certificate_of_the_ca_get_in() {
    let pki = Pki::new();
    let mut launcher = TestLauncher::start_with(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
        "--tls-client-ca",
        &pki.path("ca.pem"),
    ]);
    let address = launcher.address();
    let port = address.rsplit(':').next().unwrap().to_string();
    let uri = format!("https://localhost:{port}");
    let ca = Certificate::from_pem(pki.read("ca.pem"));

    // Without a client certificate the handshake fails: no call gets through.
    let without = Endpoint::from_shared(uri.clone())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(ca.clone()))
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    let refused = match without.connect().await {
        Err(_) => true,
        Ok(channel) => PatternLauncherClient::new(channel)
            .health(HealthRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate got in");

    // Plain text is refused too.
    let plain = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    if let Ok(channel) = plain.connect().await {
        assert!(PatternLauncherClient::new(channel)
            .health(HealthRequest::default())
            .await
            .is_err());
    }

    // With one: open and privileged calls both work (the certificate authenticates).
    let with = Endpoint::from_shared(uri)
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(ca)
                .identity(Identity::from_pem(
                    pki.read("client.pem"),
                    pki.read("client.key"),
                )),
        )
        .unwrap()
        .connect()
        .await
        .expect("mutual TLS handshake");
    let launched = PatternLauncherClient::new(with)
        .launch_pattern(launch("tenant-m"))
        .await
        .expect("LaunchPattern with a client certificate")
        .into_inner();
    assert!(launched.healthy, "{launched:?}");

    // The CLI speaks TLS too.
    let status = cli(&[
        "status",
        "-o",
        "json",
        "--addr",
        &format!("localhost:{port}"),
        "--ca",
        &pki.path("ca.pem"),
        "--cert",
        &pki.path("client.pem"),
        "--key",
        &pki.path("client.key"),
    ]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(String::from_utf8_lossy(&status.stdout).contains("tenant-m"));
    // The metrics endpoint speaks TLS with the same certificate.
    let metrics = launcher.metrics_address();
    let (code, body) = https_get(&metrics, "/healthz", &pki.read("ca.pem")).await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let plain = std::panic::catch_unwind(|| http_get(&metrics, "/healthz"));
    assert!(
        plain.map_or(true, |(code, _)| code != 200),
        "plain HTTP was served"
    );

    let no_cert = cli(&[
        "status",
        "--addr",
        &format!("localhost:{port}"),
        "--ca",
        &pki.path("ca.pem"),
    ]);
    assert!(!no_cert.status.success());
}

fn sleeper_spec() -> String {
    "apiVersion: prism.launcher/v1\nkind: Process\nmetadata:\n  name: sleeper\nspec:\n  binary: /bin/sleep\n  args: [\"600\"]\n".to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_registers_with_admin_over_mutual_tls_sending_its_token() {
    let pki = Pki::new();
    let admin = FakeAdmin::default();
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(Identity::from_pem(
            pki.read("server.pem"),
            pki.read("server.key"),
        ))
        .client_ca_root(Certificate::from_pem(pki.read("ca.pem")));
    let (bound, stop) =
        serve_admin_with(admin.clone(), "127.0.0.1:0".parse().unwrap(), Some(tls)).await;
    let port = bound.port();
    let token = token_file(pki.dir.path());
    let endpoint = format!("localhost:{port}");
    let launcher = TestLauncher::start_with(&[
        "--admin-endpoint",
        &endpoint,
        "--admin-ca",
        &pki.path("ca.pem"),
        "--admin-cert",
        &pki.path("client.pem"),
        "--admin-key",
        &pki.path("client.key"),
        "--admin-token-file",
        token.to_str().unwrap(),
    ]);
    let authorization = eventually(Duration::from_secs(20), "a registration", || {
        admin.state().authorizations.first().cloned()
    });
    assert_eq!(authorization, format!("Bearer {TOKEN}"));
    drop(launcher);
    let _ = stop.send(());
}

/// An HTTP/1.0 GET over TLS to `address`, trusting `ca` for the name localhost: the status
/// code and the body.
async fn https_get(address: &str, path: &str, ca: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut tls = tokio::time::timeout(
        Duration::from_secs(5),
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("TLS handshake with the metrics endpoint");
    tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (code, body)
}

#[test]
fn members_of_the_socket_group_may_call_through_the_socket_and_others_cannot_reach_it() {
    if !is_root() {
        return;
    }
    let mut launcher = TestLauncher::start_with(&["--socket-group", "nogroup"]);
    launcher.address();
    let data = launcher.data_dir();
    // The test's own folder must let the group through to the data directory; the launcher
    // made that 0710 and the socket 0660, both of the group.
    std::fs::set_permissions(launcher.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap();
    assert_eq!(mode(&data).mode() & 0o777, 0o710);
    assert_eq!(mode(&data).gid(), 65534);
    let socket = data.join("launcher.sock");
    assert_eq!(mode(&socket).mode() & 0o777, 0o660);
    assert_eq!(mode(&socket).gid(), 65534);
    assert_eq!(mode(&data.join("store")).mode() & 0o777, 0o700);

    // nobody, whose group is nogroup, may call; a uid outside the group cannot even connect.
    let address = format!("unix:{}", socket.display());
    let member = as_nobody(LAUNCHER, &["status", "-o", "json", "--addr", &address]);
    assert!(
        member.status.success(),
        "{}",
        String::from_utf8_lossy(&member.stderr)
    );
    let outsider = Command::new("setpriv")
        .args([
            "--reuid=65533",
            "--regid=65533",
            "--clear-groups",
            "--",
            LAUNCHER,
        ])
        .args(["status", "--addr", &address])
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv");
    assert!(!outsider.status.success(), "a uid outside the group got in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_launchers_own_privileged_calls_need_the_socket_even_on_loopback() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec(
        "talker.yaml",
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata:\n  name: talker\nspec:\n  \
         binary: /bin/sh\n  args: [\"-c\", \"echo DB_PASSWORD=hunter2; exec sleep 600\"]\n",
    );
    launcher.wait_running("talker", None, Duration::from_secs(20));
    let tcp = channel_to(format!("http://{}", launcher.address())).await;
    let mut admin = LauncherAdminClient::new(tcp);
    for code in [
        admin
            .stream_logs(StreamLogsRequest {
                process_id: "talker".into(),
                tail_lines: 10,
                ..StreamLogsRequest::default()
            })
            .await
            .err()
            .map(|status| status.code()),
        admin
            .reset_process(ResetProcessRequest {
                process_id: "talker".into(),
            })
            .await
            .err()
            .map(|status| status.code()),
    ] {
        assert_eq!(code, Some(Code::Unauthenticated));
    }
    // Through the socket (the CLI's default) the log is there.
    let logs = eventually(
        Duration::from_secs(20),
        "the log through the socket",
        || {
            let output = launcher.cli(&["logs", "talker", "-n", "10"]);
            let text = String::from_utf8_lossy(&output.stdout).to_string();
            text.contains("DB_PASSWORD").then_some(text)
        },
    );
    assert!(logs.contains("hunter2"));
}
