//! Many launchers under one prism-admin, as many hosts: each launcher runs in a network
//! namespace of its own (`ip netns`), joined by a veth pair to a bridge in the test's namespace
//! on a private /24, and a test admin (a real tonic ControlPlane server on the bridge's address)
//! registers them, takes their heartbeats and assigns processes across them by capacity, as
//! ADR-057's admin does. A link is cut by setting the launcher's end of the bridge down.
//!
//! Each test makes its network and tears it down (`TestNet`'s drop, also when the test fails),
//! with names unique to the test run; where namespaces cannot be made (no root, no `ip`), the
//! test prints why and passes without running. Launchers are killed on drop with every process
//! that carries their launcher id. Every wait has a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use prism_launcher::api::proto::prism::control_plane_client::ControlPlaneClient;
use prism_launcher::api::proto::prism::control_plane_server::{ControlPlane, ControlPlaneServer};
use prism_launcher::api::proto::prism::{
    HeartbeatAck, LauncherHeartbeatRequest, LauncherRegistration, LauncherRegistrationAck,
    ProcessAssignment, ProcessAssignmentAck, ProcessConfig, ProcessRevocation,
    ProcessRevocationAck,
};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::{Code, Request, Response, Status};

use crate::harness::{eventually, is_alive, processes_with_env, LAUNCHER};

const TIMEOUT: Duration = Duration::from_secs(20);

/// The launchers' `--auth-token-file` (they listen on their namespace's address, not on
/// loopback, so the wire contract's calls need it) and what the test admin sends.
const TOKEN: &str = "multi-host-test-token-0123456789abcdef";

/// Every launcher listens on this port of its own address (each namespace has its own ports).
const LAUNCHER_PORT: u16 = 7070;

// =================================================================================================
// The network
// =================================================================================================

/// Runs `ip ARGS...`; the error says what failed and why.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("cannot run `ip {}`: {error}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}

/// One simulated host: a network namespace whose veth pair ends on the test's bridge.
struct Host {
    netns: String,
    /// The pair's end on the bridge, in the test's namespace: down is a cut link.
    outside: String,
    address: Ipv4Addr,
}

/// A bridge in the test's namespace and one namespace per host; deleted on drop.
struct TestNet {
    /// Unique to the test run (pid and a counter, in hex: interface names have 15 bytes).
    tag: String,
    bridge: String,
    /// The bridge's address, where the test admin listens; the hosts follow it in its /24.
    gateway: Ipv4Addr,
    hosts: Vec<Host>,
    namespaces: Vec<String>,
    links: Vec<String>,
}

impl TestNet {
    /// A network of `count` hosts, or why none can be made here: the first namespace cannot be
    /// made (no root, no `ip`). Once it is, every later step must work: a failure then is the
    /// test bed's, and fails the test.
    fn new(count: usize) -> Result<TestNet, String> {
        static RUN: AtomicU32 = AtomicU32::new(0);
        let run = RUN.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let [second, third] = free_subnet(pid, run)?;
        let tag = format!("{pid:x}{run:02x}");
        let mut net = TestNet {
            bridge: format!("pb{tag}"),
            gateway: Ipv4Addr::new(10, second, third, 1),
            tag,
            hosts: Vec::new(),
            namespaces: Vec::new(),
            links: Vec::new(),
        };
        let first = net.netns_name(0);
        ip(&["netns", "add", &first])?;
        net.namespaces.push(first);
        net.make(count)
            .expect("the test network, once a namespace could be made");
        Ok(net)
    }

    fn netns_name(&self, index: usize) -> String {
        format!("prism-test-{}-{index}", self.tag)
    }

    /// The bridge, then each host's namespace (the first one exists already) and veth pair.
    /// Each thing is recorded as soon as it exists, so that a later failure deletes it.
    fn make(&mut self, count: usize) -> Result<(), String> {
        let bridge = self.bridge.clone();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        self.links.push(bridge.clone());
        let gateway = format!("{}/24", self.gateway);
        ip(&["addr", "add", &gateway, "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for index in 0..count {
            let netns = self.netns_name(index);
            let outside = format!("pv{}{index}", self.tag);
            let inside = format!("pn{}{index}", self.tag);
            let [_, second, third, _] = self.gateway.octets();
            let address = Ipv4Addr::new(10, second, third, 2 + index as u8);
            if index > 0 {
                ip(&["netns", "add", &netns])?;
                self.namespaces.push(netns.clone());
            }
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            self.links.push(outside.clone());
            ip(&["link", "set", &inside, "netns", &netns])?;
            ip(&["link", "set", &outside, "master", &bridge])?;
            ip(&["link", "set", &outside, "up"])?;
            let inside_ip = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &netns, "ip"];
                all.extend_from_slice(args);
                ip(&all)
            };
            inside_ip(&["addr", "add", &format!("{address}/24"), "dev", &inside])?;
            inside_ip(&["link", "set", &inside, "up"])?;
            inside_ip(&["link", "set", "lo", "up"])?;
            self.hosts.push(Host {
                netns,
                outside,
                address,
            });
        }
        Ok(())
    }

    /// Cuts `host` off the network: its end of the bridge goes down.
    fn cut(&self, host: usize) {
        ip(&["link", "set", &self.hosts[host].outside, "down"]).expect("cut the link");
    }

    fn heal(&self, host: usize) {
        ip(&["link", "set", &self.hosts[host].outside, "up"]).expect("heal the link");
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // A namespace goes once the processes in it are gone (the launcher guards, dropped
        // before the network, killed them); its veth end goes with it, and the pair's other
        // end with that.
        for netns in &self.namespaces {
            let _ = ip(&["netns", "del", netns]);
        }
        for link in &self.links {
            let _ = ip(&["link", "del", link]);
        }
    }
}

/// A /24 of 10.0.0.0/8 that no interface or route of the test's namespace uses.
fn free_subnet(pid: u32, run: u32) -> Result<[u8; 2], String> {
    let taken = ip_output(&["-4", "-o", "addr", "show"]) + &ip_output(&["-4", "route", "show"]);
    for attempt in 0..64u32 {
        let second = 200 + ((run + attempt) % 50) as u8;
        let third = ((pid + attempt * 31) % 250) as u8 + 1;
        if !taken.contains(&format!("10.{second}.{third}.")) {
            return Ok([second, third]);
        }
    }
    Err("no free /24 in 10.200.0.0/13".to_string())
}

/// The test's network, or `None` after saying why the test cannot run here (a failure
/// instead when `PRISM_TEST_REQUIRE_NETNS` is set, for machines where it must run).
fn network(hosts: usize) -> Option<TestNet> {
    match TestNet::new(hosts) {
        Ok(net) => Some(net),
        Err(reason) if std::env::var_os("PRISM_TEST_REQUIRE_NETNS").is_some() => {
            panic!("cannot make network namespaces here ({reason}), and PRISM_TEST_REQUIRE_NETNS is set")
        }
        Err(reason) => {
            eprintln!("skipped: cannot make network namespaces here ({reason})");
            None
        }
    }
}

// =================================================================================================
// A launcher on a host
// =================================================================================================

/// A launcher running in a host's namespace (`ip netns exec NS prism-launcher serve ...`),
/// killed on drop with everything that carries its launcher id.
struct HostLauncher {
    launcher_id: String,
    netns: String,
    /// Where it listens (and what it advertises to admin).
    address: String,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl HostLauncher {
    fn start(net: &TestNet, host: usize, admin: &str, extra: &[&str]) -> HostLauncher {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::tempdir().expect("temporary directory");
        for sub in ["specs", "patterns"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("directory");
        }
        let token = dir.path().join("token");
        std::fs::write(&token, TOKEN).expect("token file");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))
            .expect("token file private");
        let launcher_id = format!(
            "host-{}-{}-{}",
            (b'a' + host as u8) as char,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let address = format!("{}:{LAUNCHER_PORT}", net.hosts[host].address);
        let path = |sub: &str| dir.path().join(sub).display().to_string();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--data-dir".into(),
            path("data"),
            "--specs-dir".into(),
            path("specs"),
            "--patterns-dir".into(),
            path("patterns"),
            "--listen".into(),
            address.clone(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--launcher-id".into(),
            launcher_id.clone(),
            "--auth-token-file".into(),
            path("token"),
            "--admin-endpoint".into(),
            admin.to_string(),
            "--heartbeat-interval".into(),
            "200ms".into(),
            "--admin-call-timeout".into(),
            "1s".into(),
            "--allowed-executable-root".into(),
            "/bin".into(),
        ];
        args.extend(extra.iter().map(ToString::to_string));
        let mut launcher = HostLauncher {
            launcher_id,
            netns: net.hosts[host].netns.clone(),
            address,
            dir,
            args,
            child: None,
        };
        launcher.spawn();
        launcher
    }

    /// (Re)starts the launcher on its directories, and waits until it listens.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let _ = std::fs::remove_file(self.data_dir().join("launcher.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("launcher.log"))
            .expect("launcher log");
        // `ip netns exec` execs the launcher itself, so the child's pid is the launcher's.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, LAUNCHER])
            .args(&self.args)
            .env("RUST_LOG", "info,prism_launcher=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prism-launcher in its namespace");
        self.child = Some(child);
        let file = self.data_dir().join("launcher.addr");
        let child = self.child.as_mut().expect("just started");
        let log = self.dir.path().join("launcher.log");
        eventually(TIMEOUT, "the launcher to listen", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the launcher exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::fs::metadata(&file).ok()
        });
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("launcher.log")).unwrap_or_default()
    }

    /// `status -o json` through the data directory's socket (a Unix socket is reached by its
    /// path, whatever the network namespace).
    fn status(&self) -> Value {
        let output = Command::new(LAUNCHER)
            .args(["status", "-o", "json", "--data-dir"])
            .arg(self.data_dir())
            .output()
            .expect("run status");
        assert!(
            output.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("status prints JSON")
    }

    fn status_table(&self) -> String {
        let output = Command::new(LAUNCHER)
            .args(["status", "--data-dir"])
            .arg(self.data_dir())
            .output()
            .expect("run status");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn admin_link(&self) -> Value {
        self.status()["admin"].clone()
    }

    /// The status rows by id.
    fn rows(&self) -> BTreeMap<String, Value> {
        self.status()["processes"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|row| {
                        (
                            row["id"].as_str().unwrap_or_default().to_string(),
                            row.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The pids of `ids` once each runs (a live process, status `running`).
    fn wait_running(&self, ids: &[&str]) -> BTreeMap<String, u32> {
        eventually(
            TIMEOUT,
            &format!("{ids:?} to run on {}", self.launcher_id),
            || {
                let rows = self.rows();
                ids.iter()
                    .map(|id| {
                        let row = rows.get(*id)?;
                        let pid = row["pid"].as_u64()? as u32;
                        (row["actual"] == "running" && is_alive(pid)).then(|| (id.to_string(), pid))
                    })
                    .collect()
            },
        )
    }

    /// Kills the launcher with SIGKILL (its children live on) and waits for it.
    fn kill_9(&mut self) {
        let mut child = self.child.take().expect("running");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).expect("kill -9 the launcher");
        eventually(TIMEOUT, "the launcher to die", || {
            child.try_wait().ok().flatten()
        });
    }

    /// Stops the launcher with SIGTERM (it stops its processes) and waits for it.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("stop the launcher");
        eventually(TIMEOUT, "the launcher to exit", || {
            child.try_wait().ok().flatten()
        });
    }

    /// Live processes of this launcher, by the process id they run for.
    fn live_processes(&self) -> BTreeMap<String, Vec<u32>> {
        let mut by_id: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for pid in processes_with_env("PRISM_LAUNCHER_ID", &self.launcher_id) {
            if let Some(id) = crate::harness::environment(pid).get("PROCESS_ID") {
                by_id.entry(id.clone()).or_default().push(pid);
            }
        }
        by_id
    }
}

impl Drop for HostLauncher {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in processes_with_env("PRISM_LAUNCHER_ID", &self.launcher_id) {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.launcher_id, self.log());
        }
    }
}

// =================================================================================================
// The test admin
// =================================================================================================

/// What a registration ack of the test admin carries for one launcher.
#[derive(Debug, Clone)]
enum Answer {
    /// Everything the admin assigned to the launcher, marked complete: its whole word.
    Intended,
    /// These assignments of it only, with this `x-prism-initial-set` marker (`None`: none, as
    /// the upstream prism-admin answers).
    Only {
        ids: Vec<&'static str>,
        marker: Option<&'static str>,
    },
}

/// One launcher as the admin knows it.
#[derive(Debug, Default)]
struct Member {
    address: String,
    max_processes: i32,
    registrations: usize,
    /// Every heartbeat, with when it came.
    heartbeats: Vec<(Instant, LauncherHeartbeatRequest)>,
    /// How many heartbeats had come at each registration.
    heartbeats_at_registration: Vec<usize>,
    /// What the admin wants on the launcher (written before it is pushed, as an admin keeps
    /// its desired state before acting on it).
    intended: BTreeMap<String, ProcessAssignment>,
}

#[derive(Debug)]
struct Fleet {
    members: BTreeMap<String, Member>,
    /// The admin's term, sent with every push and on every registration ack; `None`: none.
    term: Option<u64>,
    answers: BTreeMap<String, Answer>,
    /// Launchers whose next heartbeat is answered "unknown launcher" (an admin that restarted
    /// and forgot them): they register again.
    forget: BTreeSet<String>,
}

#[derive(Clone)]
struct FleetAdmin(Arc<Mutex<Fleet>>);

impl FleetAdmin {
    fn new(term: Option<u64>) -> FleetAdmin {
        FleetAdmin(Arc::new(Mutex::new(Fleet {
            members: BTreeMap::new(),
            term,
            answers: BTreeMap::new(),
            forget: BTreeSet::new(),
        })))
    }

    fn fleet(&self) -> MutexGuard<'_, Fleet> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn registrations(&self, launcher: &str) -> usize {
        self.fleet()
            .members
            .get(launcher)
            .map_or(0, |member| member.registrations)
    }

    fn heartbeats(&self, launcher: &str) -> usize {
        self.fleet()
            .members
            .get(launcher)
            .map_or(0, |member| member.heartbeats.len())
    }

    /// The first heartbeat of `launcher` after its registration number `registration` (1 for
    /// the first), once it came.
    fn first_heartbeat_after(
        &self,
        launcher: &str,
        registration: usize,
    ) -> Option<LauncherHeartbeatRequest> {
        let fleet = self.fleet();
        let member = fleet.members.get(launcher)?;
        let index = *member.heartbeats_at_registration.get(registration - 1)?;
        member
            .heartbeats
            .get(index)
            .map(|(_, heartbeat)| heartbeat.clone())
    }

    /// Waits until every launcher of `ids` has registered and heartbeated.
    fn wait_for_fleet(&self, ids: &[&str]) {
        eventually(TIMEOUT, "every launcher to register and heartbeat", || {
            ids.iter()
                .all(|id| self.registrations(id) >= 1 && self.heartbeats(id) >= 1)
                .then_some(())
        });
    }

    /// Chooses the launcher for `assignment` as ADR-057's admin does: among the launchers that
    /// heartbeat (one in the last second), the one with the most free capacity (ties by id),
    /// and records the intent.
    fn place(&self, assignment: &ProcessAssignment) -> String {
        let mut fleet = self.fleet();
        let now = Instant::now();
        let chosen = fleet
            .members
            .iter()
            .filter(|(_, member)| {
                member
                    .heartbeats
                    .last()
                    .is_some_and(|(at, _)| now.duration_since(*at) < Duration::from_secs(1))
            })
            .map(|(id, member)| {
                let free = member.max_processes - member.intended.len() as i32;
                (free, std::cmp::Reverse(id.clone()))
            })
            .filter(|(free, _)| *free > 0)
            .max()
            .map(|(_, std::cmp::Reverse(id))| id)
            .expect("a launcher with room");
        fleet
            .members
            .get_mut(&chosen)
            .expect("chosen among the members")
            .intended
            .insert(assignment.process_id.clone(), assignment.clone());
        chosen
    }

    /// Records that `assignment` is meant for `launcher`.
    fn intend(&self, launcher: &str, assignment: &ProcessAssignment) {
        self.fleet()
            .members
            .get_mut(launcher)
            .expect("a registered launcher")
            .intended
            .insert(assignment.process_id.clone(), assignment.clone());
    }

    fn address(&self, launcher: &str) -> String {
        self.fleet().members[launcher].address.clone()
    }

    /// Pushes `assignment` to `launcher` as the admin of `term`.
    async fn push(
        &self,
        launcher: &str,
        assignment: ProcessAssignment,
        term: Option<u64>,
    ) -> Result<ProcessAssignmentAck, Status> {
        let mut client = connect(&self.address(launcher)).await?;
        client
            .assign_process(with_credentials(assignment, term))
            .await
            .map(Response::into_inner)
    }

    /// Revokes `process_id` on `launcher` as the admin of `term`.
    async fn revoke(
        &self,
        launcher: &str,
        process_id: &str,
        term: Option<u64>,
    ) -> Result<ProcessRevocationAck, Status> {
        let mut client = connect(&self.address(launcher)).await?;
        let revocation = ProcessRevocation {
            launcher_id: launcher.to_string(),
            process_id: process_id.to_string(),
            graceful_timeout_seconds: 5,
        };
        client
            .revoke_process(with_credentials(revocation, term))
            .await
            .map(Response::into_inner)
    }
}

/// A request with the launchers' token and, when given, the admin's term.
fn with_credentials<T>(message: T, term: Option<u64>) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("header value"),
    );
    if let Some(term) = term {
        request.metadata_mut().insert(
            "x-prism-admin-term",
            term.to_string().parse().expect("header value"),
        );
    }
    request
}

async fn connect(address: &str) -> Result<ControlPlaneClient<tonic::transport::Channel>, Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|error| Status::invalid_argument(error.to_string()))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|error| Status::unavailable(format!("cannot connect to {address}: {error}")))?;
    Ok(ControlPlaneClient::new(channel))
}

#[tonic::async_trait]
impl ControlPlane for FleetAdmin {
    async fn register_launcher(
        &self,
        request: Request<LauncherRegistration>,
    ) -> Result<Response<LauncherRegistrationAck>, Status> {
        let registration = request.into_inner();
        let mut fleet = self.fleet();
        let answer = fleet
            .answers
            .get(&registration.launcher_id)
            .cloned()
            .unwrap_or(Answer::Intended);
        let term = fleet.term;
        let member = fleet
            .members
            .entry(registration.launcher_id.clone())
            .or_default();
        member.address = registration.address.clone();
        member.max_processes = registration.max_processes;
        member.registrations += 1;
        member
            .heartbeats_at_registration
            .push(member.heartbeats.len());
        let (initial_processes, marker) = match answer {
            Answer::Intended => (
                member.intended.values().cloned().collect(),
                Some("complete"),
            ),
            Answer::Only { ids, marker } => (
                ids.iter()
                    .filter_map(|id| member.intended.get(*id).cloned())
                    .collect(),
                marker,
            ),
        };
        let mut response = Response::new(LauncherRegistrationAck {
            success: true,
            message: "welcome".into(),
            initial_processes,
            assigned_capacity: registration.max_processes,
        });
        if let Some(term) = term {
            response.metadata_mut().insert(
                "x-prism-admin-term",
                term.to_string().parse().expect("header value"),
            );
        }
        if let Some(marker) = marker {
            response
                .metadata_mut()
                .insert("x-prism-initial-set", marker.parse().expect("header value"));
        }
        Ok(response)
    }

    async fn launcher_heartbeat(
        &self,
        request: Request<LauncherHeartbeatRequest>,
    ) -> Result<Response<HeartbeatAck>, Status> {
        let heartbeat = request.into_inner();
        let mut fleet = self.fleet();
        let forgotten = fleet.forget.remove(&heartbeat.launcher_id);
        let member = fleet
            .members
            .entry(heartbeat.launcher_id.clone())
            .or_default();
        member.heartbeats.push((Instant::now(), heartbeat));
        Ok(Response::new(HeartbeatAck {
            success: !forgotten,
            message: if forgotten {
                "unknown launcher; register again".into()
            } else {
                String::new()
            },
            server_timestamp: 0,
        }))
    }

    async fn assign_process(
        &self,
        _request: Request<ProcessAssignment>,
    ) -> Result<Response<ProcessAssignmentAck>, Status> {
        Err(Status::unimplemented(
            "the test admin's own assignments are pushed",
        ))
    }

    async fn revoke_process(
        &self,
        _request: Request<ProcessRevocation>,
    ) -> Result<Response<ProcessRevocationAck>, Status> {
        Err(Status::unimplemented(
            "the test admin's own revocations are pushed",
        ))
    }
}

/// Serves `admin` on the network's gateway until the returned sender is dropped; returns the
/// endpoint launchers register at.
async fn serve_admin(net: &TestNet, admin: FleetAdmin) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind((net.gateway, 0))
        .await
        .expect("bind the test admin on the bridge");
    let address = listener.local_addr().expect("admin address").to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ControlPlaneServer::new(admin))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .expect("the test admin serves");
    });
    (address, stop)
}

/// A utility that sleeps, as the admin assigns it.
fn sleeper(id: &str) -> ProcessAssignment {
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

/// Which ids a heartbeat reports running, with their pids.
fn running_in(heartbeat: &LauncherHeartbeatRequest) -> BTreeMap<String, u32> {
    heartbeat
        .process_health
        .iter()
        .filter(|(_, health)| health.status == "running")
        .map(|(id, health)| (id.clone(), health.pid as u32))
        .collect()
}

// =================================================================================================
// The tests
// =================================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_go_where_there_is_room_and_a_cut_off_host_keeps_its_own_until_it_is_back() {
    let Some(net) = network(3) else { return };
    let admin = FleetAdmin::new(Some(1));
    let (endpoint, _admin_stop) = serve_admin(&net, admin.clone()).await;
    let a = HostLauncher::start(&net, 0, &endpoint, &["--max-processes", "4"]);
    let b = HostLauncher::start(&net, 1, &endpoint, &["--max-processes", "3"]);
    let c = HostLauncher::start(&net, 2, &endpoint, &["--max-processes", "2"]);
    let ids = [&a, &b, &c].map(|host| host.launcher_id.clone());
    admin.wait_for_fleet(&ids.each_ref().map(String::as_str));
    for host in [&a, &b, &c] {
        assert_eq!(
            admin.address(&host.launcher_id),
            host.address,
            "each advertises its own host's address"
        );
    }

    // By free capacity: a (4 free), a (3, before b's 3 by id), b, a, b, c.
    let mut placed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for number in 1..=6 {
        let assignment = sleeper(&format!("p{number}"));
        let launcher = admin.place(&assignment);
        let ack = admin
            .push(&launcher, assignment, Some(1))
            .await
            .expect("assigned");
        assert!(ack.success, "{ack:?}");
        placed
            .entry(launcher)
            .or_default()
            .push(format!("p{number}"));
    }
    assert_eq!(
        placed,
        BTreeMap::from([
            (
                a.launcher_id.clone(),
                vec!["p1".to_string(), "p2".into(), "p4".into()]
            ),
            (b.launcher_id.clone(), vec!["p3".to_string(), "p5".into()]),
            (c.launcher_id.clone(), vec!["p6".to_string()]),
        ])
    );
    a.wait_running(&["p1", "p2", "p4"]);
    let on_b = b.wait_running(&["p3", "p5"]);
    c.wait_running(&["p6"]);
    assert_eq!(b.admin_link()["state"], "connected", "{}", b.admin_link());
    assert_eq!(b.admin_link()["term"], 1);

    // b is cut off: it notices, keeps running what it has, and its heartbeats stop.
    net.cut(1);
    eventually(TIMEOUT, "b to find admin unreachable", || {
        (b.admin_link()["state"] == "unreachable").then_some(())
    });
    let b_heartbeats = admin.heartbeats(&b.launcher_id);
    let a_heartbeats = admin.heartbeats(&a.launcher_id);
    eventually(TIMEOUT, "five more heartbeats of a", || {
        (admin.heartbeats(&a.launcher_id) >= a_heartbeats + 5).then_some(())
    });
    assert_eq!(
        admin.heartbeats(&b.launcher_id),
        b_heartbeats,
        "no heartbeat of b got through the cut"
    );
    for (id, pid) in &on_b {
        assert!(is_alive(*pid), "{id} kept running through the partition");
    }
    assert_eq!(
        b.wait_running(&["p3", "p5"]),
        on_b,
        "and was never restarted"
    );
    let link = b.admin_link();
    assert!(
        link["since_unix_ms"].as_i64().unwrap_or(0) > 0 && link["last_error"].is_string(),
        "{link}"
    );
    let table = b.status_table();
    assert!(
        table.contains("unreachable for") && table.contains("its processes keep running"),
        "{table}"
    );

    // Admin places around the silent host.
    let p7 = sleeper("p7");
    let chosen = admin.place(&p7);
    assert_ne!(
        chosen, b.launcher_id,
        "b does not heartbeat: it gets nothing"
    );
    admin.push(&chosen, p7, Some(1)).await.expect("assigned");

    // Healed: b registers again and its first heartbeat carries every process it runs.
    net.heal(1);
    eventually(TIMEOUT, "b to register again", || {
        (admin.registrations(&b.launcher_id) >= 2).then_some(())
    });
    let heartbeat = eventually(TIMEOUT, "b's first heartbeat after it", || {
        admin.first_heartbeat_after(&b.launcher_id, 2)
    });
    assert_eq!(running_in(&heartbeat), on_b, "{heartbeat:?}");
    let resources = heartbeat.resources.expect("resources");
    assert_eq!((resources.process_count, resources.max_processes), (2, 3));
    // The launcher's own view follows its registration's answer, which may have been lost in
    // the healing (admin counts it, the launcher times out and registers again).
    eventually(TIMEOUT, "b's link to show it connected again", || {
        let link = b.admin_link();
        (link["state"].as_str() == Some("connected")
            && link["registrations"]
                .as_u64()
                .is_some_and(|count| count >= 2))
        .then_some(())
    });
    assert_eq!(b.wait_running(&["p3", "p5"]), on_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_killed_in_the_middle_of_assignments_runs_each_process_once() {
    let Some(net) = network(3) else { return };
    let admin = FleetAdmin::new(Some(1));
    let (endpoint, _admin_stop) = serve_admin(&net, admin.clone()).await;
    let a = HostLauncher::start(&net, 0, &endpoint, &["--max-processes", "2"]);
    let mut b = HostLauncher::start(&net, 1, &endpoint, &["--max-processes", "12"]);
    let c = HostLauncher::start(&net, 2, &endpoint, &["--max-processes", "2"]);
    admin.wait_for_fleet(&[&a.launcher_id, &b.launcher_id, &c.launcher_id]);

    // Eight assignments, all for b (the most room): four that run, then four pushed at once,
    // and b is killed as soon as the first of those is acknowledged, the others on their way.
    let ids: Vec<String> = (1..=8).map(|number| format!("w{number}")).collect();
    for id in &ids[..4] {
        let assignment = sleeper(id);
        assert_eq!(admin.place(&assignment), b.launcher_id);
        admin
            .push(&b.launcher_id, assignment, Some(1))
            .await
            .expect("assigned");
    }
    let first_wave = b.wait_running(&["w1", "w2", "w3", "w4"]);
    let (acked, mut first_ack) = tokio::sync::mpsc::unbounded_channel();
    let mut pushes = Vec::new();
    for id in &ids[4..] {
        let assignment = sleeper(id);
        assert_eq!(admin.place(&assignment), b.launcher_id);
        let (admin, launcher, acked, id) = (
            admin.clone(),
            b.launcher_id.clone(),
            acked.clone(),
            id.clone(),
        );
        pushes.push(tokio::spawn(async move {
            let result = admin.push(&launcher, assignment, Some(1)).await;
            if result.is_ok() {
                let _ = acked.send(());
            }
            (id, result)
        }));
    }
    tokio::time::timeout(TIMEOUT, first_ack.recv())
        .await
        .expect("an acknowledgement in time")
        .expect("an acknowledgement");
    b.kill_9();
    let survivors = b.live_processes();
    let mut acknowledged = Vec::new();
    for push in pushes {
        let (id, result) = push.await.expect("a push task");
        if result.is_ok_and(|ack| ack.success) {
            acknowledged.push(id);
        }
    }
    eprintln!(
        "acknowledged before the kill: {acknowledged:?}; running at the kill: {:?}",
        survivors.keys().collect::<Vec<_>>()
    );
    for (id, pids) in &survivors {
        assert_eq!(pids.len(), 1, "{id} ran twice before the kill: {pids:?}");
    }
    for (id, pid) in &first_wave {
        assert_eq!(
            survivors.get(id),
            Some(&vec![*pid]),
            "{id} outlives the launcher"
        );
    }

    // b comes back: it adopts what survived, and the admin's complete set brings the rest.
    b.spawn();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let running = b.wait_running(&id_refs);
    for (id, pids) in &survivors {
        assert_eq!(
            Some(&pids[0]),
            running.get(id),
            "{id} was adopted, not started again"
        );
    }
    eventually(TIMEOUT, "exactly one process per id on the machine", || {
        ids.iter()
            .all(|id| processes_with_env("PROCESS_ID", id).len() == 1)
            .then_some(())
    });
    assert_eq!(
        b.live_processes()
            .into_iter()
            .map(|(id, pids)| (id, pids.len()))
            .collect::<BTreeMap<_, _>>(),
        ids.iter().map(|id| (id.clone(), 1)).collect(),
        "each process once, all on b"
    );
    assert!(a.live_processes().is_empty() && c.live_processes().is_empty());
    assert_eq!(admin.registrations(&b.launcher_id), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_admin_term_is_refused_on_every_host_and_after_a_restart() {
    let Some(net) = network(3) else { return };
    let admin = FleetAdmin::new(Some(5));
    let (endpoint, _admin_stop) = serve_admin(&net, admin.clone()).await;
    let mut hosts: Vec<HostLauncher> = (0..3)
        .map(|host| HostLauncher::start(&net, host, &endpoint, &[]))
        .collect();
    let ids: Vec<String> = hosts.iter().map(|host| host.launcher_id.clone()).collect();
    admin.wait_for_fleet(&ids.iter().map(String::as_str).collect::<Vec<_>>());
    for host in &hosts {
        eventually(TIMEOUT, "the registration's term", || {
            (host.admin_link()["term"] == 5).then_some(())
        });
    }

    // The current admin (term 5) assigns; a stale one (term 4) is refused everywhere, assigning
    // or revoking, and nothing changes.
    for host in &hosts {
        let kept = sleeper("kept");
        admin.intend(&host.launcher_id, &kept);
        admin
            .push(&host.launcher_id, kept, Some(5))
            .await
            .expect("term 5");
    }
    let kept: Vec<u32> = hosts
        .iter()
        .map(|host| host.wait_running(&["kept"])["kept"])
        .collect();
    for host in &hosts {
        let refused = admin
            .push(&host.launcher_id, sleeper("stale"), Some(4))
            .await
            .expect_err("a stale admin");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(
            refused.message().contains("term 4") && refused.message().contains("term 5"),
            "{}",
            refused.message()
        );
        let refused = admin
            .revoke(&host.launcher_id, "kept", Some(4))
            .await
            .expect_err("a stale admin");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(!host.rows().contains_key("stale"));
    }
    for (host, pid) in hosts.iter().zip(&kept) {
        assert_eq!(host.wait_running(&["kept"])["kept"], *pid, "undisturbed");
    }

    // A new leader (term 6) reaches host a: term 5 is stale there from now on, not elsewhere.
    let from_6 = sleeper("from-6");
    admin.intend(&hosts[0].launcher_id, &from_6);
    admin
        .push(&hosts[0].launcher_id, from_6, Some(6))
        .await
        .expect("term 6");
    let refused = admin
        .push(&hosts[0].launcher_id, sleeper("late-5"), Some(5))
        .await
        .expect_err("stale on a");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("term 5") && refused.message().contains("term 6"),
        "{}",
        refused.message()
    );
    admin
        .push(&hosts[1].launcher_id, sleeper("late-5"), Some(5))
        .await
        .expect("b has not seen term 6");
    let on_a = hosts[0].wait_running(&["kept", "from-6"]);

    // A stale leader (term 5) answers a's registration with an empty set marked complete: a
    // does not apply it, keeps everything, and registers again until a current admin answers.
    {
        let mut fleet = admin.fleet();
        fleet.term = Some(5);
        fleet.answers.insert(
            ids[0].clone(),
            Answer::Only {
                ids: vec![],
                marker: Some("complete"),
            },
        );
        fleet.forget.insert(ids[0].clone());
    }
    eventually(TIMEOUT, "a to refuse the stale answer", || {
        let link = hosts[0].admin_link();
        (link["state"] == "unreachable"
            && link["last_error"]
                .as_str()
                .is_some_and(|error| error.contains("stale admin") && error.contains("term 5")))
        .then_some(())
    });
    assert_eq!(
        hosts[0].wait_running(&["kept", "from-6"]),
        on_a,
        "nothing applied"
    );
    {
        let mut fleet = admin.fleet();
        fleet.term = Some(6);
        fleet.answers.remove(&ids[0]);
    }
    eventually(TIMEOUT, "a to register with the current admin", || {
        (hosts[0].admin_link()["state"] == "connected").then_some(())
    });
    assert_eq!(hosts[0].wait_running(&["kept", "from-6"]), on_a);

    // The newest term is durable: after a restart (with an admin that names no term, so only
    // the store can remember), term 5 is still refused on a.
    admin.fleet().term = None;
    let registered = admin.registrations(&ids[0]);
    hosts[0].stop();
    hosts[0].spawn();
    eventually(TIMEOUT, "a to register again", || {
        (admin.registrations(&ids[0]) > registered).then_some(())
    });
    assert_eq!(hosts[0].admin_link()["term"], 6);
    let refused = admin
        .push(&ids[0], sleeper("late-5"), Some(5))
        .await
        .expect_err("still stale after the restart");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_initial_set_keeps_every_admin_process_and_a_complete_one_stops_the_missing() {
    let Some(net) = network(3) else { return };
    let admin = FleetAdmin::new(None);
    let (endpoint, _admin_stop) = serve_admin(&net, admin.clone()).await;
    let a = HostLauncher::start(&net, 0, &endpoint, &[]);
    let b = HostLauncher::start(&net, 1, &endpoint, &[]);
    let c = HostLauncher::start(&net, 2, &endpoint, &[]);
    admin.wait_for_fleet(&[&a.launcher_id, &b.launcher_id, &c.launcher_id]);
    let mut before = BTreeMap::new();
    for (host, prefix) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        for number in 1..=2 {
            let assignment = sleeper(&format!("{prefix}{number}"));
            admin.intend(&host.launcher_id, &assignment);
            admin
                .push(&host.launcher_id, assignment, None)
                .await
                .expect("assigned");
        }
        let ids = [format!("{prefix}1"), format!("{prefix}2")];
        before.extend(host.wait_running(&[&ids[0], &ids[1]]));
    }

    // The admin "restarts" and answers as the upstream prism-admin does for a (an empty list,
    // nothing said), with an empty list marked complete for b, and with c1 alone (unmarked:
    // a non-empty list is the admin's whole word) for c.
    {
        let mut fleet = admin.fleet();
        fleet.answers.insert(
            a.launcher_id.clone(),
            Answer::Only {
                ids: vec![],
                marker: None,
            },
        );
        fleet.answers.insert(
            b.launcher_id.clone(),
            Answer::Only {
                ids: vec![],
                marker: Some("complete"),
            },
        );
        fleet.answers.insert(
            c.launcher_id.clone(),
            Answer::Only {
                ids: vec!["c1"],
                marker: None,
            },
        );
        // b and c learn from a heartbeat that the admin forgot them.
        fleet.forget.insert(b.launcher_id.clone());
        fleet.forget.insert(c.launcher_id.clone());
    }
    // a re-registers after its heartbeats failed: its link was cut and healed.
    net.cut(0);
    eventually(TIMEOUT, "a to find admin unreachable", || {
        (a.admin_link()["state"] == "unreachable").then_some(())
    });
    net.heal(0);
    for host in [&a, &b, &c] {
        eventually(TIMEOUT, "a second registration", || {
            (admin.registrations(&host.launcher_id) >= 2
                && host.admin_link()["state"] == "connected")
                .then_some(())
        });
    }

    // a keeps both, unconfirmed, same pids.
    let rows = a.rows();
    for id in ["a1", "a2"] {
        assert_eq!(
            rows[id]["pid"].as_u64(),
            Some(u64::from(before[id])),
            "{}",
            rows[id]
        );
        assert_eq!(rows[id]["unconfirmed"], true, "{}", rows[id]);
        assert!(is_alive(before[id]));
    }
    assert_eq!(a.admin_link()["unconfirmed"], 2, "{}", a.admin_link());
    let table = a.status_table();
    assert!(
        table.contains("admin v1 unconfirmed")
            && table.contains("2 admin processes are unconfirmed"),
        "{table}"
    );
    // b stops both; c stops c2 and keeps c1 (confirmed).
    for (host, gone) in [(&b, vec!["b1", "b2"]), (&c, vec!["c2"])] {
        eventually(TIMEOUT, "the unnamed processes to stop", || {
            let rows = host.rows();
            gone.iter()
                .all(|id| {
                    !rows.contains_key(*id) && processes_with_env("PROCESS_ID", id).is_empty()
                })
                .then_some(())
        });
    }
    let rows = c.rows();
    assert_eq!(rows["c1"]["pid"].as_u64(), Some(u64::from(before["c1"])));
    assert_eq!(rows["c1"]["unconfirmed"], false);
    assert_eq!(c.admin_link()["unconfirmed"], 0);

    // An authoritative answer for a (a1, marked complete): a2 goes, a1 is confirmed.
    {
        let mut fleet = admin.fleet();
        fleet.answers.insert(
            a.launcher_id.clone(),
            Answer::Only {
                ids: vec!["a1"],
                marker: Some("complete"),
            },
        );
        fleet.forget.insert(a.launcher_id.clone());
    }
    eventually(TIMEOUT, "a2 to stop and a1 to be confirmed", || {
        let rows = a.rows();
        (!rows.contains_key("a2")
            && rows
                .get("a1")
                .is_some_and(|row| row["unconfirmed"] == false))
        .then_some(())
    });
    assert_eq!(
        a.rows()["a1"]["pid"].as_u64(),
        Some(u64::from(before["a1"])),
        "a1 ran on undisturbed"
    );
    assert_eq!(a.admin_link()["unconfirmed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_disconnect_grace_admin_processes_stop_and_come_back_with_the_admin() {
    let Some(net) = network(2) else { return };
    let admin = FleetAdmin::new(None);
    let (endpoint, _admin_stop) = serve_admin(&net, admin.clone()).await;
    let graced = HostLauncher::start(&net, 0, &endpoint, &["--admin-disconnect-grace", "1s"]);
    let patient = HostLauncher::start(&net, 1, &endpoint, &[]);
    // Written beside the directory and moved in, so the watcher never reads half of it.
    let staged = graced.dir.path().join("local.yaml");
    std::fs::write(
        &staged,
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: local}\nspec:\n  binary: /bin/sleep\n  args: [\"600\"]\n",
    )
    .expect("a spec file");
    std::fs::rename(&staged, graced.dir.path().join("specs/local.yaml")).expect("move it in");
    admin.wait_for_fleet(&[&graced.launcher_id, &patient.launcher_id]);
    for host in [&graced, &patient] {
        for id in ["g1", "g2"] {
            let assignment = sleeper(id);
            admin.intend(&host.launcher_id, &assignment);
            admin
                .push(&host.launcher_id, assignment, None)
                .await
                .expect("assigned");
        }
    }
    let before = graced.wait_running(&["g1", "g2", "local"]);
    let patient_before = patient.wait_running(&["g1", "g2"]);
    assert_eq!(graced.admin_link()["disconnect_grace_ms"], 1000);

    // Both cut off: past a second, the graced host stops admin's processes (not its own file's);
    // the other keeps them.
    net.cut(0);
    net.cut(1);
    eventually(
        TIMEOUT,
        "admin's processes to stop on the graced host",
        || {
            let rows = graced.rows();
            let stopped = ["g1", "g2"].iter().all(|id| {
                rows.get(*id).is_some_and(|row| {
                    row["actual"] == "stopped"
                        && row["diff"] == "held"
                        && row["diff_detail"]
                            .as_str()
                            .is_some_and(|detail| detail.contains("--admin-disconnect-grace"))
                })
            });
            stopped.then_some(())
        },
    );
    assert!(["g1", "g2"].iter().all(|id| !is_alive(before[*id])));
    assert!(graced.admin_link()["processes_suspended"] == true);
    assert_eq!(graced.wait_running(&["local"])["local"], before["local"]);
    eventually(TIMEOUT, "the other host to notice too", || {
        (patient.admin_link()["state"] == "unreachable").then_some(())
    });
    assert_eq!(
        patient.wait_running(&["g1", "g2"]),
        patient_before,
        "no grace: they run on"
    );
    assert!(patient.admin_link()["processes_suspended"] == false);

    // Back: the admin's set (both, marked complete) starts them again.
    net.heal(0);
    net.heal(1);
    let after = graced.wait_running(&["g1", "g2"]);
    for id in ["g1", "g2"] {
        assert_ne!(after[id], before[id], "{id} is a new process");
    }
    assert!(graced.admin_link()["processes_suspended"] == false);
    assert_eq!(graced.wait_running(&["local"])["local"], before["local"]);
    let description = Command::new(LAUNCHER)
        .args(["describe", "g1", "--data-dir"])
        .arg(graced.data_dir())
        .output()
        .expect("describe");
    let text = String::from_utf8_lossy(&description.stdout);
    assert!(
        text.contains("prism-admin unreachable for longer than --admin-disconnect-grace"),
        "{text}"
    );
}
