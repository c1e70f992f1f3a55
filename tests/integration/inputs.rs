//! Hostile input against the running binary: bytes that are not UTF-8 where the wire says
//! string, a megabyte where a name goes, enum numbers the proto does not define, a revocation
//! that names no launcher, and the planted-`dirname` attack through request-supplied `PATH`.
//! Each is refused with its exact code and a message that names the field or the variable, and
//! nothing starts.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use prism_launcher::api::proto::prism::control_plane_client::ControlPlaneClient;
use prism_launcher::api::proto::prism::launcher::v1::ResetProcessResponse;
use prism_launcher::api::proto::prism::launcher::{
    GetProcessStatusRequest, IsolationLevel, LaunchRequest, LaunchResponse, ListPatternsRequest,
    TerminateRequest, TerminateResponse,
};
use prism_launcher::api::proto::prism::{
    PatternProcessConfig, ProcessAssignment, ProcessAssignmentAck, ProcessConfig, ProcessRevocation,
};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Request, Status};

use crate::harness::*;

/// Any request whose field 1 is a string on the wire, sent as bytes of our choosing: the same
/// tag and wire type (length-delimited), so the launcher decodes it as its own message.
#[derive(Clone, PartialEq, prost::Message)]
struct RawFirstField {
    #[prost(bytes = "vec", tag = "1")]
    first: Vec<u8>,
}

/// Calls `path` with `request` encoded by prost, decoding the answer as `Answer`.
async fn raw_call<Answer>(
    launcher: &mut TestLauncher,
    path: &'static str,
    request: RawFirstField,
) -> Result<Answer, Status>
where
    Answer: prost::Message + Default + Send + 'static,
{
    // The launcher's own calls (LauncherAdmin) are answered through the socket only.
    let channel = if path.starts_with("/prism.launcher.v1.") {
        launcher.socket_channel().await
    } else {
        launcher.channel().await
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| Status::unavailable(error.to_string()))?;
    grpc.unary(
        Request::new(request),
        PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::<RawFirstField, Answer>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

#[track_caller]
fn assert_status(status: &Status, code: Code, parts: &[&str]) {
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
        "{} bytes",
        status.message().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_that_is_not_utf8_is_invalid_argument_naming_the_field() {
    let mut launcher = TestLauncher::start();
    let not_utf8 = || RawFirstField {
        first: vec![b'h', 0xff, 0xfe, b'i'],
    };
    let refused = raw_call::<LaunchResponse>(
        &mut launcher,
        "/prism.launcher.PatternLauncher/LaunchPattern",
        not_utf8(),
    )
    .await
    .expect_err("not UTF-8");
    assert_status(
        &refused,
        Code::InvalidArgument,
        &["LaunchRequest.pattern_name", "UTF-8"],
    );
    let refused = raw_call::<TerminateResponse>(
        &mut launcher,
        "/prism.launcher.PatternLauncher/TerminatePattern",
        not_utf8(),
    )
    .await
    .expect_err("not UTF-8");
    assert_status(
        &refused,
        Code::InvalidArgument,
        &["TerminateRequest.process_id"],
    );
    let refused = raw_call::<ProcessAssignmentAck>(
        &mut launcher,
        "/prism.ControlPlane/AssignProcess",
        not_utf8(),
    )
    .await
    .expect_err("not UTF-8");
    assert_status(
        &refused,
        Code::InvalidArgument,
        &["ProcessAssignment.process_id"],
    );
    let refused = raw_call::<ResetProcessResponse>(
        &mut launcher,
        "/prism.launcher.v1.LauncherAdmin/ResetProcess",
        not_utf8(),
    )
    .await
    .expect_err("not UTF-8");
    assert_status(
        &refused,
        Code::InvalidArgument,
        &["ResetProcessRequest.process_id"],
    );

    // The same bytes, valid this time, decode as before: the wire is prost's, unchanged.
    let unknown = raw_call::<LaunchResponse>(
        &mut launcher,
        "/prism.launcher.PatternLauncher/LaunchPattern",
        RawFirstField {
            first: b"no-such-pattern".to_vec(),
        },
    )
    .await
    .expect_err("unknown pattern");
    assert_status(&unknown, Code::NotFound, &["\"no-such-pattern\""]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_name_or_an_undefined_enum_is_invalid_argument_with_a_short_message() {
    let mut launcher = TestLauncher::start();
    let mut client = launcher.pattern_client().await;
    let huge = "p".repeat(1 << 20);
    let launch = |pattern: &str, isolation: i32| LaunchRequest {
        pattern_name: pattern.to_string(),
        isolation,
        namespace: "tenant-a".to_string(),
        session_id: String::new(),
        config: HashMap::new(),
        grace_period_secs: 0,
    };
    let refused = client
        .launch_pattern(launch(&huge, 0))
        .await
        .expect_err("too long");
    assert_status(
        &refused,
        Code::InvalidArgument,
        &["pattern_name is 1048576 bytes long; at most 253 are allowed"],
    );
    let refused = client
        .terminate_pattern(TerminateRequest {
            process_id: huge.clone(),
            grace_period_secs: 0,
            force: false,
        })
        .await
        .expect_err("too long");
    assert_status(
        &refused,
        Code::InvalidArgument,
        &["process_id is 1048576 bytes long"],
    );
    let refused = client
        .get_process_status(GetProcessStatusRequest {
            process_id: huge.clone(),
        })
        .await
        .expect_err("too long");
    assert_status(&refused, Code::InvalidArgument, &["process_id is 1048576"]);
    for isolation in [99, -5] {
        let refused = client
            .launch_pattern(launch("hello-pattern", isolation))
            .await
            .expect_err("no such isolation");
        assert_status(
            &refused,
            Code::InvalidArgument,
            &[&format!("isolation {isolation} is not one of the values")],
        );
    }
    let refused = client
        .list_patterns(ListPatternsRequest {
            pattern_name: String::new(),
            namespace: String::new(),
            state: 99,
        })
        .await
        .expect_err("no such state");
    assert_status(&refused, Code::InvalidArgument, &["state 99"]);

    let mut admin = ControlPlaneClient::new(launcher.channel().await);
    let refused = admin
        .assign_process(ProcessAssignment {
            process_id: huge.clone(),
            process_type: "pattern".to_string(),
            namespace: String::new(),
            config: Some(ProcessConfig::default()),
            version: 1,
        })
        .await
        .expect_err("too long");
    assert_status(
        &refused,
        Code::InvalidArgument,
        &["process_id is not valid", "(1048576 bytes)"],
    );
    let refused = admin
        .assign_process(ProcessAssignment {
            process_id: "versioned".to_string(),
            process_type: "pattern".to_string(),
            namespace: String::new(),
            config: Some(ProcessConfig {
                pattern: Some(PatternProcessConfig {
                    pattern_type: "hello-pattern".to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            version: i64::MIN,
        })
        .await
        .expect_err("negative version");
    assert_status(
        &refused,
        Code::InvalidArgument,
        &["version -9223372036854775808 is negative"],
    );
    let refused = admin
        .revoke_process(ProcessRevocation {
            launcher_id: String::new(),
            process_id: "anything".to_string(),
            graceful_timeout_seconds: 0,
        })
        .await
        .expect_err("no launcher id");
    assert_status(
        &refused,
        Code::InvalidArgument,
        &["launcher_id is required"],
    );
    let refused = admin
        .revoke_process(ProcessRevocation {
            launcher_id: huge,
            process_id: "anything".to_string(),
            graceful_timeout_seconds: 0,
        })
        .await
        .expect_err("too long");
    assert_status(
        &refused,
        Code::InvalidArgument,
        &["launcher_id is 1048576 bytes long"],
    );
    for timeout in [-1, i32::MAX] {
        let refused = admin
            .revoke_process(ProcessRevocation {
                launcher_id: launcher.launcher_id.clone(),
                process_id: "anything".to_string(),
                graceful_timeout_seconds: timeout,
            })
            .await
            .expect_err("out of range");
        assert_status(
            &refused,
            Code::InvalidArgument,
            &[&format!(
                "graceful_timeout_seconds {timeout} is out of range"
            )],
        );
    }
    assert!(launcher.status()["processes"]
        .as_array()
        .is_some_and(Vec::is_empty));
}

/// An executable file at `path` with `text`.
fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("make the script executable");
}

/// The catalog's `hello-pattern` as the repository ships it: the wrapper script of
/// `manifests/hello-pattern/`, which runs `dirname` (found through PATH) before it execs the
/// binary it finds at `../../target/<profile>/hello-pattern` from its folder.
fn install_wrapped_hello_pattern(patterns: &Path) {
    let wrapper =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/hello-pattern/hello-pattern");
    let text = std::fs::read_to_string(&wrapper).expect("the repository's wrapper script");
    assert!(text.contains("dirname"), "the wrapper still calls dirname");
    write_manifest(
        patterns,
        "hello-pattern",
        "./hello-pattern",
        "namespace",
        "{}",
    );
    write_script(&patterns.join("hello-pattern/hello-pattern"), &text);
    let target = patterns.join("../target/debug");
    std::fs::create_dir_all(&target).expect("target folder");
    std::os::unix::fs::symlink(HELLO_PATTERN, target.join("hello-pattern"))
        .expect("link the built hello-pattern where the wrapper looks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_dirname_never_runs_through_a_requests_path() {
    let planted = tempfile::tempdir().expect("planted directory");
    let marker = planted.path().join("pwned");
    write_script(
        &planted.path().join("dirname"),
        &format!(
            "#!/bin/sh\ntouch '{}'\nPATH=/usr/bin:/bin exec dirname \"$@\"\n",
            marker.display()
        ),
    );
    let evil_path = format!("{}:/usr/bin:/bin", planted.path().display());
    let mut launcher = TestLauncher::start_with_catalog(&[], install_wrapped_hello_pattern);
    let mut client = launcher.pattern_client().await;
    let attack = |name: &str, value: &str| LaunchRequest {
        pattern_name: "hello-pattern".to_string(),
        isolation: IsolationLevel::IsolationNamespace as i32,
        namespace: "attack".to_string(),
        session_id: String::new(),
        config: HashMap::from([(name.to_string(), value.to_string())]),
        grace_period_secs: 0,
    };
    let planted_file = |name: &str| planted.path().join(name).display().to_string();
    for (name, value) in [
        ("PATH", evil_path.clone()),
        ("LD_PRELOAD", planted_file("evil.so")),
        ("BASH_ENV", planted_file("evil.sh")),
    ] {
        let refused = client
            .launch_pattern(attack(name, &value))
            .await
            .expect_err("a loader variable from a request");
        assert_status(
            &refused,
            Code::InvalidArgument,
            &[&format!(
                "config: {name:?} changes how programs are loaded or interpreted"
            )],
        );
    }
    let mut admin = ControlPlaneClient::new(launcher.channel().await);
    let refused = admin
        .assign_process(ProcessAssignment {
            process_id: "attack-assigned".to_string(),
            process_type: "pattern".to_string(),
            namespace: String::new(),
            config: Some(ProcessConfig {
                env: HashMap::from([
                    ("PATH".to_string(), evil_path.clone()),
                    ("LD_PRELOAD".to_string(), planted_file("evil.so")),
                    ("BASH_ENV".to_string(), planted_file("evil.sh")),
                ]),
                pattern: Some(PatternProcessConfig {
                    pattern_type: "hello-pattern".to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            version: 1,
        })
        .await
        .expect_err("loader variables from an assignment");
    assert_status(
        &refused,
        Code::InvalidArgument,
        &[
            "config.env: \"BASH_ENV\" changes how programs",
            "config.env: \"LD_PRELOAD\" changes how programs",
            "config.env: \"PATH\" changes how programs",
        ],
    );
    for id in ["ns:attack:hello-pattern", "attack-assigned"] {
        assert!(launcher.process(id).is_none(), "{id} was stored");
        let status = client
            .get_process_status(GetProcessStatusRequest {
                process_id: id.to_string(),
            })
            .await
            .expect("GetProcessStatus")
            .into_inner();
        assert!(status.not_found, "{id}: {status:?}");
    }
    assert!(launcher.our_processes().is_empty(), "nothing started");

    // The same launch without the attack runs the wrapper, whose dirname comes from the
    // launcher's own PATH: the process is healthy and the planted one never ran.
    let launched = client
        .launch_pattern(attack("GREETING", "hello"))
        .await
        .expect("an ordinary launch")
        .into_inner();
    assert!(launched.healthy, "{launched:?}");
    assert!(!marker.exists(), "the planted dirname ran");

    // The operator's spec file is trusted with PATH: the planted dirname runs, which proves the
    // refusals above are what kept it from running.
    launcher.write_spec(
        "trusted.yaml",
        &format!(
            "apiVersion: prism.launcher/v1\nkind: Process\nmetadata:\n  name: trusted\nspec:\n  \
             pattern: hello-pattern\n  isolation: none\n  env:\n    PATH: {evil_path:?}\n"
        ),
    );
    eventually(
        Duration::from_secs(20),
        "the operator's PATH to reach the wrapper",
        || marker.exists().then_some(()),
    );
}
