//! A launcher that survives its own crash: adoption, orphan scans, children that outlive it,
//! and a chaos test of kills during churn.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

const TIMEOUT: Duration = Duration::from_secs(30);

fn sleeper_spec(name: &str, seconds: u32) -> String {
    format!("apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {{name: {name}}}\nspec:\n  binary: /bin/sleep\n  args: [\"{seconds}\"]\n  terminationGracePeriod: 2s\n")
}

/// Kills `pid` with SIGKILL and waits for it (the test's own children).
struct OwnChild(std::process::Child);

impl Drop for OwnChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_killed_launcher_adopts_its_children_and_still_sees_them_exit() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec("a.yaml", &sleeper_spec("a", 600));
    launcher.write_spec("b.yaml", &hello_spec("b", "x"));
    let a = launcher.wait_running("a", None, TIMEOUT);
    let b = launcher.wait_running("b", None, TIMEOUT);

    launcher.stop(Signal::SIGKILL, TIMEOUT);
    assert!(is_alive(a) && is_alive(b), "children outlive the launcher");
    launcher.spawn();
    assert_eq!(
        launcher.wait_running("a", None, TIMEOUT),
        a,
        "adopted, not restarted"
    );
    assert_eq!(launcher.wait_running("b", None, TIMEOUT), b);
    assert!(launcher
        .log()
        .contains("adopted a process of a previous launcher run"));
    assert_eq!(
        launcher.process("b").unwrap()["health"],
        "healthy",
        "probes resume"
    );

    // An adopted process is not our child: its exit comes through its pidfd.
    kill(Pid::from_raw(a as i32), Signal::SIGKILL).unwrap();
    let restarted = launcher.wait_running("a", Some(a), TIMEOUT);
    let row = launcher.process("a").unwrap();
    assert_eq!(row["restart_count"], 1, "{row}");
    assert!(
        row["last_exit"].as_str().unwrap().contains("unknown"),
        "{row}"
    );
    assert!(is_alive(restarted));
}

#[test]
fn keep_processes_leaves_children_for_the_next_launcher() {
    let mut launcher = TestLauncher::start_with(&["--keep-processes"]);
    launcher.write_spec("kept.yaml", &sleeper_spec("kept", 600));
    let pid = launcher.wait_running("kept", None, TIMEOUT);
    launcher.stop(Signal::SIGTERM, TIMEOUT);
    assert!(is_alive(pid), "left running");
    launcher.spawn();
    assert_eq!(
        launcher.wait_running("kept", None, TIMEOUT),
        pid,
        "adopted by the next launcher"
    );
}

#[test]
fn a_child_writing_to_stdout_keeps_running_across_launcher_kills() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec(
        "chatty.yaml",
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: chatty}\nspec:\n  binary: /bin/sh\n  args: [\"-c\", \"while true; do echo tick; sleep 0.02; done\"]\n",
    );
    let pid = launcher.wait_running("chatty", None, TIMEOUT);
    let log = launcher.data_dir().join("logs/chatty.log");
    let size = || std::fs::metadata(&log).map(|meta| meta.len()).unwrap_or(0);
    launcher.stop(Signal::SIGKILL, TIMEOUT);
    let while_down = size();
    eventually(TIMEOUT, "output while the launcher is down", || {
        (size() > while_down + 100).then_some(())
    });
    assert!(
        is_alive(pid),
        "no SIGPIPE: the child writes to a file, not to the launcher"
    );
    launcher.spawn();
    assert_eq!(launcher.wait_running("chatty", None, TIMEOUT), pid);
    let adopted_at = size();
    eventually(TIMEOUT, "output after adoption", || {
        (size() > adopted_at + 100).then_some(())
    });
}

#[test]
fn an_orphan_with_our_launcher_id_is_reaped_and_a_look_alike_is_left_alone() {
    let launcher = TestLauncher::start_with(&["--orphan-scan-interval", "500ms"]);
    let spawn_with = |launcher_id: &str| {
        OwnChild(
            Command::new("/bin/sleep")
                .arg("600")
                .env("PRISM_LAUNCHER_ID", launcher_id)
                .env("PROCESS_ID", "planted")
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut orphan = spawn_with(&launcher.launcher_id);
    let look_alike = spawn_with("another-launcher");
    let bystander = OwnChild(Command::new("/bin/sleep").arg("600").spawn().unwrap());
    // Our own child: the launcher terminates it, we reap it.
    let status = eventually(TIMEOUT, "the orphan to be terminated", || {
        orphan.0.try_wait().ok().flatten()
    });
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15),
        "SIGTERM first"
    );
    // Logged once the launcher has seen the exit too, which may be just after the test does.
    eventually(TIMEOUT, "the termination to be logged", || {
        launcher
            .log()
            .contains("terminated orphaned process")
            .then_some(())
    });
    assert!(
        is_alive(look_alike.0.id()),
        "another launcher's process is never signalled"
    );
    assert!(
        is_alive(bystander.0.id()),
        "an unrelated process is never signalled"
    );
}

#[test]
fn chaos_kills_during_churn_leave_exactly_the_desired_processes() {
    let mut launcher = TestLauncher::start_with(&["--orphan-scan-interval", "1s"]);
    let bystander = OwnChild(Command::new("/bin/sleep").arg("600").spawn().unwrap());
    let look_alike = OwnChild(
        Command::new("/bin/sleep")
            .arg("600")
            .env("PRISM_LAUNCHER_ID", "another-launcher")
            .env("PROCESS_ID", "stable-0")
            .spawn()
            .unwrap(),
    );
    // Ten stable ids never change; ten churning ids are added, edited and removed.
    for n in 0..10 {
        launcher.write_spec(
            &format!("stable-{n}.yaml"),
            &sleeper_spec(&format!("stable-{n}"), 600),
        );
    }
    let stable: BTreeMap<String, u32> = (0..10)
        .map(|n| {
            let id = format!("stable-{n}");
            let pid = launcher.wait_running(&id, None, TIMEOUT);
            (id, pid)
        })
        .collect();
    let mut random = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    let mut next = move |bound: u64| {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random % bound
    };
    let mut churning: BTreeMap<String, u32> = BTreeMap::new();
    for round in 0..10 {
        for _ in 0..3 {
            let id = format!("churn-{}", next(10));
            match churning.get(&id) {
                Some(_) if next(2) == 0 => {
                    launcher.remove_spec(&format!("{id}.yaml"));
                    churning.remove(&id);
                }
                _ => {
                    let seconds = 600 + u32::try_from(round).unwrap();
                    launcher.write_spec(&format!("{id}.yaml"), &sleeper_spec(&id, seconds));
                    churning.insert(id, seconds);
                }
            }
        }
        // Chaos, not synchronisation: the kill lands at a random point of the churn.
        std::thread::sleep(Duration::from_millis(next(300)));
        launcher.stop(Signal::SIGKILL, TIMEOUT);
        launcher.spawn();
    }

    // Converged: each desired id runs exactly once, with the desired arguments.
    let desired: BTreeSet<String> = stable.keys().chain(churning.keys()).cloned().collect();
    eventually(
        Duration::from_secs(60),
        "exactly the desired processes",
        || {
            let mut running: BTreeMap<String, Vec<u32>> = BTreeMap::new();
            for pid in launcher.our_processes() {
                let env = environment(pid);
                running
                    .entry(env.get("PROCESS_ID")?.clone())
                    .or_default()
                    .push(pid);
            }
            let once = running.values().all(|pids| pids.len() == 1);
            let ids: BTreeSet<String> = running.keys().cloned().collect();
            (once && ids == desired).then_some(())
        },
    );
    for (id, seconds) in &churning {
        let pid = launcher.wait_running(id, None, TIMEOUT);
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(
            cmdline.contains(&seconds.to_string()),
            "{id} runs its latest spec: {cmdline:?}"
        );
    }
    for (id, pid) in &stable {
        assert_eq!(
            launcher.wait_running(id, None, TIMEOUT),
            *pid,
            "{id} was adopted through every kill"
        );
    }
    let zombies: Vec<u32> = launcher
        .our_processes()
        .into_iter()
        .filter(|pid| process_state(*pid) == Some('Z'))
        .collect();
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
    assert!(
        is_alive(bystander.0.id()) && is_alive(look_alike.0.id()),
        "nothing unrelated was touched"
    );
}

#[test]
fn logs_tail_and_follow_through_the_cli_and_rotate_by_size() {
    // Logs are checked for rotation at each resync (no O(processes) timer runs more often).
    let mut launcher = TestLauncher::start_with(&[
        "--log-max-size",
        "4Ki",
        "--log-max-files",
        "2",
        "--resync-interval",
        "1s",
    ]);
    launcher.write_spec(
        "counter.yaml",
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: counter}\nspec:\n  binary: /bin/sh\n  args: [\"-c\", \"n=0; while true; do n=$((n+1)); echo \\\"line $n\\\"; sleep 0.01; done\"]\n",
    );
    launcher.wait_running("counter", None, TIMEOUT);
    // Three lines of the program's own (the instance's marker line comes first).
    let tail = eventually(TIMEOUT, "three lines of output", || {
        let output = launcher.cli(&["logs", "counter", "--tail", "3"]);
        let text = String::from_utf8(output.stdout).ok()?;
        (output.status.success()
            && text.lines().count() == 3
            && text.lines().all(|line| line.starts_with("line ")))
        .then_some(text)
    });
    assert!(
        tail.lines().all(|line| line.starts_with("line ")),
        "{tail:?}"
    );

    launcher.address();
    let data_dir = launcher.data_dir();
    let mut follower = OwnChild(
        Command::new(LAUNCHER)
            .args(["logs", "counter", "--follow", "--tail", "1", "--data-dir"])
            .arg(&data_dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = std::io::BufReader::new(follower.0.stdout.take().unwrap());
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0,
            "the follower ended"
        );
        seen.push(line);
    }
    let numbers: Vec<u64> = seen
        .iter()
        .filter_map(|line| line.trim().strip_prefix("line ")?.parse().ok())
        .collect();
    assert!(
        numbers.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "followed in order: {seen:?}"
    );

    let log = launcher.data_dir().join("logs/counter.log");
    eventually(TIMEOUT, "a rotation", || {
        log.with_extension("log.1").exists().then_some(())
    });
    assert!(
        !log.with_extension("log.3").exists(),
        "at most two rotated files"
    );
    let missing = launcher.cli(&["logs", "nobody"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no log for process nobody"));
}

#[test]
fn logs_are_read_from_the_data_directory_when_no_launcher_answers() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec(
        "talker.yaml",
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: talker}\nspec:\n  binary: /bin/sh\n  args: [\"-c\", \"echo first; echo second; echo last words; exec sleep 600\"]\n",
    );
    launcher.wait_running("talker", None, TIMEOUT);
    let log = launcher.data_dir().join("logs/talker.log");
    eventually(TIMEOUT, "the output in the log", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|text| text.contains("last words"))
    });
    launcher.stop(Signal::SIGTERM, TIMEOUT);

    let logs = |args: &[&str]| {
        Command::new(LAUNCHER)
            .args(args)
            .arg("--data-dir")
            .arg(launcher.data_dir())
            .args(["--timeout", "2s"])
            .output()
            .unwrap()
    };
    let output = logs(&["logs", "talker", "-n", "2"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "second\nlast words\n"
    );
    assert!(
        stderr.contains("reading") && stderr.contains("talker.log"),
        "{stderr}"
    );
    let missing = logs(&["logs", "nobody"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("no log file"), "{stderr}");
}

#[test]
fn a_second_launcher_on_the_same_data_dir_fails_at_once_with_a_clear_message() {
    let launcher = TestLauncher::start();
    let started = std::time::Instant::now();
    let output = Command::new(LAUNCHER)
        .arg("serve")
        .arg("--data-dir")
        .arg(launcher.data_dir())
        .arg("--specs-dir")
        .arg(launcher.specs_dir())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("in use by another running launcher"),
        "{stderr}"
    );
}

/// A utility that needs no port (so hundreds fit any port range), ending at SIGTERM.
fn worker_spec(name: &str) -> String {
    format!("apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {{name: {name}}}\nspec:\n  type: utility\n  binary: /bin/sleep\n  args: [\"600\"]\n  terminationGracePeriod: 20s\n")
}

/// Writes the spec files of `ids` into a staging folder, then renames them all into the spec
/// directory, as a deployment tool does.
fn drop_specs(launcher: &TestLauncher, ids: &[String]) {
    let staging = launcher.dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    for id in ids {
        std::fs::write(staging.join(format!("{id}.yaml")), worker_spec(id)).unwrap();
    }
    for id in ids {
        let file = format!("{id}.yaml");
        std::fs::rename(staging.join(&file), launcher.specs_dir().join(&file)).unwrap();
    }
}

/// Group leaders carrying the launcher's id, by the process id they carry.
fn leaders_by_id(launcher: &TestLauncher) -> BTreeMap<String, Vec<u32>> {
    let mut leaders: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for pid in launcher.our_processes() {
        let env = environment(pid);
        let leads_its_group = group_members(pid).contains(&pid);
        if let (Some(id), true) = (env.get("PROCESS_ID"), leads_its_group) {
            leaders.entry(id.clone()).or_default().push(pid);
        }
    }
    leaders
}

#[test]
fn a_launcher_killed_during_a_burst_of_starts_never_leaves_two_processes_for_one_id() {
    let mut launcher = TestLauncher::start();
    let seed = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(std::process::id());
    let mut random = seed;
    let mut next = move |bound: u64| {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random % bound
    };
    let mut ids: Vec<String> = Vec::new();
    // One burst of 200 starts, then smaller ones that land on a launcher busy adopting.
    for (round, size) in [200u64, 50, 50, 50].into_iter().enumerate() {
        let burst: Vec<String> = (0..size).map(|n| format!("burst-{round}-{n}")).collect();
        drop_specs(&launcher, &burst);
        ids.extend(burst);
        // Chaos, not synchronisation: once the burst has begun, the kill lands at a random
        // point of it (its spawns take a few milliseconds each, their intents written before them).
        // A child's log file is opened just before its spawn: the first one marks the start.
        let prefix = format!("burst-{round}-");
        let logs = launcher.data_dir().join("logs");
        let deadline = Instant::now() + TIMEOUT;
        while !std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        {
            assert!(
                Instant::now() < deadline,
                "the burst of round {round} never began"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(next(size / 2)));
        launcher.stop(Signal::SIGKILL, TIMEOUT);
        let seen = leaders_by_id(&launcher);
        let doubled: Vec<&String> = seen
            .iter()
            .filter(|(_, pids)| pids.len() > 1)
            .map(|(id, _)| id)
            .collect();
        assert!(
            doubled.is_empty(),
            "two processes for one id while the launcher is down: {doubled:?} (seed {seed:#x})"
        );
        launcher.spawn();
    }
    let desired: BTreeSet<String> = ids.iter().cloned().collect();
    let leaders = eventually(Duration::from_secs(60), "every id to run", || {
        let leaders = leaders_by_id(&launcher);
        (leaders.keys().cloned().collect::<BTreeSet<_>>() == desired).then_some(leaders)
    });
    let doubled: Vec<(&String, &Vec<u32>)> =
        leaders.iter().filter(|(_, pids)| pids.len() > 1).collect();
    assert!(
        doubled.is_empty(),
        "two processes for one id: {doubled:?} (seed {seed:#x})"
    );
    let log = launcher.log();
    assert!(
        !log.contains("found orphaned processes"),
        "every process a killed launcher started was adopted, none left as an orphan:\n{log}"
    );
}

#[test]
fn shutdown_after_adoption_takes_as_long_as_the_children_need() {
    let mut launcher = TestLauncher::start();
    let ids: Vec<String> = (0..4).map(|n| format!("adoptee-{n}")).collect();
    drop_specs(&launcher, &ids);
    let pids: Vec<u32> = ids
        .iter()
        .map(|id| launcher.wait_running(id, None, TIMEOUT))
        .collect();
    launcher.stop(Signal::SIGKILL, TIMEOUT);
    launcher.spawn();
    for (id, pid) in ids.iter().zip(&pids) {
        assert_eq!(launcher.wait_running(id, None, TIMEOUT), *pid, "adopted");
    }
    // Their grace is 20 s; `sleep` ends at the first SIGTERM.
    let took = launcher.stop(Signal::SIGTERM, TIMEOUT);
    assert!(
        took < Duration::from_secs(5),
        "shutdown waited for adopted children's exits, not their grace ({took:?})"
    );
    assert!(pids.iter().all(|pid| !is_alive(*pid)));
    let log = launcher.log();
    assert!(!log.contains("shutdown timed out"), "{log}");
    assert!(!log.contains(" ERROR "), "no error logged:\n{log}");
}

#[test]
fn a_thousand_spec_files_removed_at_once_leave_no_process_and_no_zombie() {
    let mut launcher = TestLauncher::start();
    let steady = "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: steady}\nspec:\n  type: utility\n  binary: /bin/sleep\n  args: [\"600\"]\n";
    launcher.write_spec("steady.yaml", steady);
    let ids: Vec<String> = (0..1000).map(|n| format!("many-{n}")).collect();
    drop_specs(&launcher, &ids);
    eventually(Duration::from_secs(60), "a thousand processes", || {
        (leaders_by_id(&launcher).len() == 1001).then_some(())
    });
    let steady_pid = launcher.wait_running("steady", None, TIMEOUT);

    let away = launcher.dir.path().join("away");
    std::fs::create_dir_all(&away).unwrap();
    for id in &ids {
        let file = format!("{id}.yaml");
        std::fs::rename(launcher.specs_dir().join(&file), away.join(&file)).unwrap();
    }
    // While a thousand stop, the launcher answers and restarts what crashes.
    let status = launcher.cli(&["status", "-o", "json", "--timeout", "5s"]);
    assert!(status.status.success(), "status answers during the stop");
    kill(Pid::from_raw(steady_pid as i32), Signal::SIGKILL).unwrap();
    let restarted = launcher.wait_running("steady", Some(steady_pid), TIMEOUT);

    eventually(
        Duration::from_secs(60),
        "every removed process to be gone",
        || (launcher.our_processes() == vec![restarted]).then_some(()),
    );
    // Exits are reaped as the launcher gets to them (a thousand SIGCHLDs under a loaded test
    // machine take a moment); none stays a zombie.
    let launcher_pid = launcher.launcher_pid();
    eventually(TIMEOUT, "every exited child to be reaped", || {
        launcher_children(launcher_pid)
            .into_iter()
            .all(|pid| process_state(pid) != Some('Z'))
            .then_some(())
    });
    eventually(TIMEOUT, "only steady to be left in status", || {
        let status = launcher.status();
        (status["processes"].as_array()?.len() == 1).then_some(())
    });
}

/// The children of the launcher (all its threads'), zombies included.
fn launcher_children(launcher: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{launcher}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}
