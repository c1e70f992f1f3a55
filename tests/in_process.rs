//! A whole launcher run in-process through `prism_launcher::app::run`, on listeners the test
//! binds to `127.0.0.1:0`: a spec file is started, a killed child is restarted, and a shutdown
//! stops the child and returns.
//!
//! This is its own test binary, not a module of `tests/integration`: a running launcher is a
//! child subreaper and reaps every exited child of its process, which would steal the exit
//! statuses of the processes the other tests start and wait for.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prism_launcher::api::client::{fetch_status, ProcessView, Target};
use prism_launcher::app::{self, Config, Listeners};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[path = "integration/kill_ours.rs"]
mod kill_ours;

const TIMEOUT: Duration = Duration::from_secs(20);

/// Polls `condition` until it returns `Some` or `TIMEOUT` passes.
async fn eventually<T, F, Fut>(what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Kills every process carrying `launcher_id` when dropped, so a failing test leaves nothing.
struct KillOnDrop {
    launcher_id: String,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in prism_launcher::runtime::procfs::all_pids() {
            kill_ours::kill_if_carrying(pid, "PRISM_LAUNCHER_ID", &self.launcher_id);
        }
    }
}

async fn process(address: &str, id: &str) -> Option<ProcessView> {
    let status = fetch_status(&Target::tcp(address), Duration::from_secs(2))
        .await
        .ok()?;
    status
        .processes
        .into_iter()
        .find(|process| process.id == id)
}

fn is_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z ") && !stat.contains(") X "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_runs_in_process_restarts_a_killed_child_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let specs = dir.path().join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    std::fs::create_dir_all(dir.path().join("patterns")).unwrap();
    let launcher_id = format!("in-process-{}", std::process::id());
    let _guard = KillOnDrop {
        launcher_id: launcher_id.clone(),
    };
    let config = Config {
        data_dir: dir.path().join("data"),
        specs_dir: specs.clone(),
        patterns_dir: dir.path().join("patterns"),
        launcher_id: Some(launcher_id),
        port_range: 23000..=23049,
        ..Config::default()
    };
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = grpc.local_addr().unwrap().to_string();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let prepared = app::prepare(config).unwrap();
    let unix = Some(prepared.bind_socket().unwrap());
    let launcher = tokio::spawn(app::run(
        prepared,
        Listeners {
            grpc,
            metrics,
            unix,
        },
        async {
            let _ = stopped.await;
        },
    ));

    write_spec(&specs, "sleeper", "/bin/sleep", "600");
    let first = eventually("the sleeper to run", || async {
        process(&address, "sleeper")
            .await
            .filter(|row| row.actual == "running")
            .and_then(|row| row.pid)
    })
    .await;
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    let second = eventually("the sleeper to be restarted", || async {
        process(&address, "sleeper")
            .await
            .filter(|row| row.actual == "running")
            .and_then(|row| row.pid)
            .filter(|pid| *pid != first)
    })
    .await;

    stop.send(()).unwrap();
    let ended = tokio::time::timeout(TIMEOUT, launcher)
        .await
        .expect("the launcher stops within its grace periods")
        .expect("the launcher task does not panic");
    assert!(ended.is_ok(), "{ended:?}");
    assert!(!is_alive(second), "the child is stopped at shutdown");
    assert!(
        !dir.path().join("data").join(app::ADDRESS_FILE).exists(),
        "the address file is removed"
    );
}

fn write_spec(dir: &Path, name: &str, binary: &str, argument: &str) {
    let staging = dir.join(format!(".{name}.yaml"));
    std::fs::write(
        &staging,
        format!(
            "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {{name: {name}}}\nspec:\n  binary: {binary}\n  args: [\"{argument}\"]\n  terminationGracePeriod: 2s\n"
        ),
    )
    .unwrap();
    std::fs::rename(staging, dir.join(format!("{name}.yaml"))).unwrap();
}
