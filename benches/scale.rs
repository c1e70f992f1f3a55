//! The scale benchmark of BENCHMARKS-METHOD.md (run with
//! `cargo bench --bench scale -- --n 100,1000 [--runs 3] [--binary PATH] [--child c|nolibc|rust|PATH]
//! [--w3-seconds 30] [--smoke]`):
//! W1 cold start, W1b hot drop, W3 idle, W2 restart, `status` latency, W4 stop all and W4b shutdown
//! of a real `prism-launcher serve` running N tiny children, one spec file each: by default the C
//! program `benches/bench_child.c` built with `cc` (`--child rust` runs `prism-bench-child`, the
//! same in Rust; `--child nolibc`, on x86_64, `benches/bench_child_nolibc.c`, the same again with
//! no C library, whose exec costs the host little).
//!
//! Right before each run's W1, the same N children are started by `benches/floor_spawner.c`
//! (built with `cc`; `--no-floor` skips it): threads that only vfork and exec them, as the
//! launcher spawns, with nothing of a supervisor. That is W1's floor on this host at this moment
//! (W1 floor, timed as W1 is: from before the spawner's exec to the last child's own stamp), and
//! W1 less it is the launcher's own share (W1 over its floor), its start included. Both move
//! with the host, and their difference too: compare it over several runs.
//!
//! Every launcher of a run also runs one more child, the sentinel (`sentinel.yaml`, tag
//! `sentinel`), which no workload removes and which counts toward none of the N children the
//! figures wait for. During W4, once the stop has begun (the first child's SIGTERM report; the
//! launcher's directory watch waits for a few milliseconds of quiet before it reads the
//! renames), three more figures are taken together while the main thread keeps timing the stop:
//! one `status -o json` (W4 during: status -o json), one `GET /healthz` on the metrics address
//! (W4 during: /healthz), and a kill -9 of the sentinel to its replacement's start stamp
//! (W4 during: kill -9 -> replacement). A note says when one of them ended only after the last
//! child was gone (a stop shorter than the call, as at small N). After the settle time the
//! launcher's RSS is read again (W4 after: launcher RSS, all stopped): what a burst of N stops
//! leaves behind.
//!
//! Every child stamps CLOCK_MONOTONIC at the top of its `main` (the nolibc child, which has
//! none, at its first instruction) and reports it as a datagram to a unix socket the harness
//! binds; the harness reads the same clock, so stamps compare directly and no polling delay of the
//! harness enters the start and stop figures. Process exits and reaping are
//! seen by polling /proc (a resolution of about a millisecond).
//!
//! It is a benchmark, not a test: it prints a table (medians over the runs, with min–max) and one
//! JSON line per figure, and fails only when the launcher does not do what is asked in time.
//! Safety: it signals only processes it proves its own — its launcher by pid (an unreaped child of
//! its own), the launcher's children through a pidfd after checking that /proc/PID/environ carries
//! `PRISM_LAUNCHER_ID=<the unique id this run gave the launcher>`; on any failure or panic a guard
//! SIGKILLs the launcher and every such process. Never by name.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use prism_launcher::runtime::pidfd::{open_raw, send_signal_through};

const USAGE: &str =
    "usage: cargo bench --bench scale -- [--n 100,1000] [--runs 3] [--binary PATH] \
[--child c|nolibc|rust|PATH] [--w3-seconds 30] [--kills 20] [--port-range 20000-44999] [--memory-limit 64Mi] [--keep] \
[--no-floor] [--smoke]";

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Options {
    ns: Vec<usize>,
    runs: usize,
    launcher: PathBuf,
    child: PathBuf,
    /// Which child `child` is, for the report: `c`, `rust` or the path given.
    child_kind: String,
    /// `floor_spawner.c` built, when W1's floor is measured (`--no-floor`, or no `cc`: not).
    floor: Option<PathBuf>,
    w3: Duration,
    settle: Duration,
    kills: usize,
    /// The random pause before each kill of W2, in milliseconds.
    kill_pause_ms: (u64, u64),
    status_calls: usize,
    port_range: String,
    smoke: bool,
    /// Keep each run's temporary directory (spec files, the launchers' logs and stores).
    keep: bool,
}

fn parse_options() -> Result<Options> {
    let mut options = Options {
        ns: vec![100, 1000],
        runs: 3,
        launcher: PathBuf::from(env!("CARGO_BIN_EXE_prism-launcher")),
        child: PathBuf::new(),
        child_kind: "c".to_string(),
        floor: None,
        w3: Duration::from_secs(30),
        settle: Duration::from_secs(3),
        kills: 20,
        kill_pause_ms: (250, 1250),
        status_calls: 5,
        port_range: "20000-44999".to_string(),
        smoke: false,
        keep: false,
    };
    let (mut ns, mut runs, mut w3, mut kills) = (None, None, None, None);
    let mut with_floor = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| anyhow!("{name} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            // `cargo bench` passes --bench to every bench binary.
            "--bench" => {}
            "--smoke" => options.smoke = true,
            "--keep" => options.keep = true,
            "--no-floor" => with_floor = false,
            "--n" => {
                let text = value("--n")?;
                let parsed: Result<Vec<usize>> = text
                    .split(',')
                    .filter(|part| !part.trim().is_empty())
                    .map(|part| {
                        part.trim()
                            .replace('_', "")
                            .parse::<usize>()
                            .map_err(|_| anyhow!("--n: {part:?} is not a number"))
                    })
                    .collect();
                ns = Some(parsed?);
            }
            "--runs" => runs = Some(value("--runs")?.parse::<usize>().context("--runs")?),
            "--binary" => options.launcher = PathBuf::from(value("--binary")?),
            "--child" => options.child_kind = value("--child")?,
            "--w3-seconds" => {
                let seconds = value("--w3-seconds")?
                    .parse::<f64>()
                    .context("--w3-seconds")?;
                if !(seconds > 0.0 && seconds < 86_400.0) {
                    bail!("--w3-seconds must be positive");
                }
                w3 = Some(Duration::from_secs_f64(seconds));
            }
            "--kills" => kills = Some(value("--kills")?.parse::<usize>().context("--kills")?),
            "--port-range" => options.port_range = value("--port-range")?,
            "--memory-limit" => {
                let limit = value("--memory-limit")?;
                if MEMORY_LIMIT.set(limit).is_err() {
                    bail!("--memory-limit given twice");
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if options.smoke {
        options.ns = vec![20];
        options.runs = 1;
        options.w3 = Duration::from_secs(2);
        options.settle = Duration::from_millis(500);
        options.kills = 3;
        options.kill_pause_ms = (20, 120);
        options.status_calls = 2;
    }
    if let Some(ns) = ns {
        options.ns = ns;
    }
    if let Some(runs) = runs {
        options.runs = runs;
    }
    if let Some(w3) = w3 {
        options.w3 = w3;
    }
    if let Some(kills) = kills {
        options.kills = kills;
    }
    if options.ns.is_empty() || options.ns.contains(&0) {
        bail!("--n needs positive counts\n{USAGE}");
    }
    if options.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let (child, child_kind) = bench_child(&options.child_kind)?;
    options.child = child;
    options.child_kind = child_kind;
    for binary in [&options.launcher, &options.child] {
        if !binary.is_file() {
            bail!(
                "{} does not exist (build with `cargo build --release --bins`)",
                binary.display()
            );
        }
    }
    options.launcher = fs::canonicalize(&options.launcher)?;
    options.child = fs::canonicalize(&options.child)?;
    if with_floor {
        match build_c("floor_spawner.c", "prism-bench-floor", &["-pthread"]) {
            Ok(floor) => options.floor = Some(floor),
            Err(error) => eprintln!("note: {error:#}; W1's floor is not measured"),
        }
    }
    Ok(options)
}

/// The child to run, and which it is for the report: `c` is `benches/bench_child.c` built with
/// the machine's `cc` (the tiny C program the targets of issue 11 were measured with; a Rust
/// program's start costs about 40 % more on this machine, which a supervisor cannot help),
/// `nolibc` is `benches/bench_child_nolibc.c` (x86_64 Linux only: the same reports from a static
/// program with no C library, whose exec costs the host little, so that what remains of a start
/// is mostly the supervisor's), `rust` is `prism-bench-child`, anything else a path. Without a
/// working `cc`, `c` falls back to `rust` and says so; `nolibc` is an error, since nothing stands
/// in for it.
fn bench_child(kind: &str) -> Result<(PathBuf, String)> {
    let rust = PathBuf::from(env!("CARGO_BIN_EXE_prism-bench-child"));
    let child = match kind {
        "rust" => rust,
        "c" => match build_c("bench_child.c", "prism-bench-child-c", &[]) {
            Ok(binary) => binary,
            Err(error) => {
                eprintln!("note: {error:#}; using the Rust child");
                return Ok((rust, "rust".to_string()));
            }
        },
        "nolibc" => {
            if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
                bail!("--child nolibc: benches/bench_child_nolibc.c is for x86_64 Linux only");
            }
            build_c(
                "bench_child_nolibc.c",
                "prism-bench-child-nolibc",
                &[
                    "-static",
                    "-nostdlib",
                    "-fno-pie",
                    "-no-pie",
                    "-fno-stack-protector",
                ],
            )?
        }
        path => PathBuf::from(path),
    };
    Ok((child, kind.to_string()))
}

/// Builds `benches/<source>` with the machine's `cc` into the bench's target folder.
fn build_c(source: &str, binary: &str, flags: &[&str]) -> Result<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches")
        .join(source);
    let binary = Path::new(env!("CARGO_TARGET_TMPDIR")).join(binary);
    let status = Command::new("cc")
        .arg("-O2")
        .args(flags)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run cc to build {}", source.display()))?;
    if !status.success() {
        bail!("cc could not build {} ({status})", source.display());
    }
    Ok(binary)
}

// ---------------------------------------------------------------------------------------------
// Clock, /proc and signals

/// CLOCK_MONOTONIC in nanoseconds: the clock the children stamp with.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    (to_ns as f64 - from_ns as f64) / 1e6
}

/// When the first, the middle and the last of `stamps` came after `t0`: where a start's time
/// went (before the first child, or between them).
fn spread(t0: u64, stamps: &[Stamp]) -> String {
    let mut after: Vec<f64> = stamps
        .iter()
        .map(|stamp| ms_between(t0, stamp.ns))
        .collect();
    after.sort_by(f64::total_cmp);
    match (after.first(), after.get(after.len() / 2), after.last()) {
        (Some(first), Some(middle), Some(last)) => {
            format!("first child at {first:.1} ms, half at {middle:.1}, last at {last:.1}")
        }
        _ => "no child".to_string(),
    }
}

/// A wait's deadline: 60 s plus 5 ms per process.
fn deadline_for(n: usize) -> Instant {
    Instant::now() + Duration::from_secs(60) + Duration::from_millis(5 * n as u64)
}

fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// The CPU's model name, from `/proc/cpuinfo`: figures from hosts of one size but another CPU
/// differ (a child's start costs twice as much where the hypervisor traps `cpuid`).
fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "?".to_string())
}

/// Whether the kernel's DAMON reclaims pages behind the processes' backs (a running kdamond,
/// with the actions of its schemes): its pageout stalls an exiting and a starting child for
/// milliseconds at a time, the tail of W2 on such a host (BENCHMARKS.md).
fn host_reclaim() -> String {
    let kdamonds = Path::new("/sys/kernel/mm/damon/admin/kdamonds");
    let Ok(entries) = fs::read_dir(kdamonds) else {
        return "no DAMON".to_string();
    };
    let mut running = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        if read_trimmed(&dir.join("state").to_string_lossy()) != "on" {
            continue;
        }
        let mut actions: Vec<String> = fs::read_dir(dir.join("contexts"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|context| {
                fs::read_dir(context.path().join("schemes"))
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|scheme| read_trimmed(&scheme.path().join("action").to_string_lossy()))
            .filter(|action| action != "?")
            .collect();
        actions.sort();
        actions.dedup();
        running.push(if actions.is_empty() {
            "monitoring only".to_string()
        } else {
            actions.join("+")
        });
    }
    if running.is_empty() {
        "DAMON off".to_string()
    } else {
        format!("DAMON on ({})", running.join(", "))
    }
}

/// Whether the process carries `PRISM_LAUNCHER_ID=<id>` in its environment (zombies have none).
fn carries_launcher_id(pid: i32, id: &str) -> bool {
    let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let wanted = format!("PRISM_LAUNCHER_ID={id}");
    environ
        .split(|byte| *byte == 0)
        .any(|entry| entry == wanted.as_bytes())
}

/// Sends `signal` to `pid` only if it is, at the moment of the signal, a process carrying this
/// run's launcher id: the pidfd pins the process, the environ check proves it ours, and a pidfd
/// signal never reaches a later process that reused the pid. Returns the CLOCK_MONOTONIC stamp
/// taken just before the signal, if it was sent.
fn signal_if_ours(pid: i32, id: &str, signal: libc::c_int) -> Option<u64> {
    let signal = Signal::try_from(signal).ok()?;
    let pidfd = open_raw(u32::try_from(pid).ok()?).ok()?;
    if !carries_launcher_id(pid, id) {
        return None;
    }
    let stamp = monotonic_ns();
    send_signal_through(pidfd.as_fd(), signal, 0)
        .is_ok()
        .then_some(stamp)
}

/// Live processes (not the harness) carrying `PRISM_LAUNCHER_ID=<id>`.
fn processes_with_launcher_id(id: &str) -> Vec<i32> {
    let own = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != own && carries_launcher_id(*pid, id))
        .collect()
}

/// Reaps `pid` if it is a zombie child of the harness (the harness is a child subreaper, so the
/// children of a launcher it killed come to it); harmless for any other pid.
fn reap_if_ours(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on a specific pid with WNOHANG; ECHILD when it is not our child.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// Whether /proc/PID is gone (exited and reaped). A zombie is not gone.
fn is_gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether the process exists and is not a zombie.
fn is_live(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3, utime 14, stime 15 (1-based) → indices 11 and 12 here.
    let utime: u64 = fields.get(11).ok_or_else(|| anyhow!("no utime"))?.parse()?;
    let stime: u64 = fields.get(12).ok_or_else(|| anyhow!("no stime"))?.parse()?;
    Ok(utime + stime)
}

/// A `Key:   123 kB` line of a /proc file, in KiB.
fn proc_kib(path: &str, key: &str) -> Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .ok_or_else(|| anyhow!("no {key} in {path}"))
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Threads in use on the host (each takes a pid), from /proc/loadavg's `running/total`.
fn threads_in_use() -> usize {
    read_trimmed("/proc/loadavg")
        .split_whitespace()
        .nth(3)
        .and_then(|field| field.split('/').nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn raise_nofile_limit() -> String {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return "?".to_string();
        }
        let before = limit.rlim_cur;
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                limit.rlim_cur = before;
            }
        }
        if before == limit.rlim_cur {
            format!("{}", limit.rlim_cur)
        } else {
            format!("{} (raised from {before})", limit.rlim_cur)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The children's reports

#[derive(Debug, Clone, Copy)]
struct Stamp {
    pid: i32,
    ns: u64,
}

#[derive(Default)]
struct Events {
    /// Tag (process id) → its `start` reports in arrival order.
    starts: HashMap<String, Vec<Stamp>>,
    terms: HashMap<String, Vec<Stamp>>,
    malformed: usize,
}

impl Events {
    fn summary(&self) -> String {
        let children = |reports: &HashMap<String, Vec<Stamp>>| {
            reports.keys().filter(|tag| *tag != SENTINEL).count()
        };
        format!(
            "{} processes reported a start, {} a term (the sentinel not counted)",
            children(&self.starts),
            children(&self.terms)
        )
    }

    /// The `term` reports of the N children (every tag but the sentinel's).
    fn child_terms(&self) -> impl Iterator<Item = &Vec<Stamp>> {
        self.terms
            .iter()
            .filter(|(tag, _)| *tag != SENTINEL)
            .map(|(_, stamps)| stamps)
    }
}

struct Collector {
    events: Mutex<Events>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Collector {
    fn lock(&self) -> MutexGuard<'_, Events> {
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn clear(&self) {
        let mut events = self.lock();
        events.starts.clear();
        events.terms.clear();
    }

    /// Waits until `ready` answers, at most until `deadline`.
    fn wait<T>(
        &self,
        deadline: Instant,
        what: &str,
        mut ready: impl FnMut(&Events) -> Option<T>,
    ) -> Result<T> {
        let mut events = self.lock();
        loop {
            if let Some(answer) = ready(&events) {
                return Ok(answer);
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("timed out waiting for {what} ({})", events.summary());
            }
            let wait = (deadline - now).min(Duration::from_millis(200));
            events = self
                .changed
                .wait_timeout(events, wait)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    fn receive(self: Arc<Self>, socket: UnixDatagram) {
        let mut buffer = [0u8; 512];
        while !self.stop.load(Ordering::Relaxed) {
            let Ok(length) = socket.recv(&mut buffer) else {
                continue; // the read timeout: look at the stop flag again
            };
            let text = String::from_utf8_lossy(&buffer[..length]);
            let mut fields = text.split_whitespace();
            let parsed = (|| {
                let kind = fields.next()?;
                let pid = fields.next()?.parse::<i32>().ok()?;
                let ns = fields.next()?.parse::<u64>().ok()?;
                let tag = fields.next()?.to_string();
                Some((kind.to_string(), Stamp { pid, ns }, tag))
            })();
            let mut events = self.lock();
            match parsed {
                Some((kind, stamp, tag)) if kind == "start" => {
                    events.starts.entry(tag).or_default().push(stamp)
                }
                Some((kind, stamp, tag)) if kind == "term" => {
                    events.terms.entry(tag).or_default().push(stamp)
                }
                _ => events.malformed += 1,
            }
            drop(events);
            self.changed.notify_all();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The launcher under test, and the guard that ends it and its children

struct Launcher {
    /// What the process is, for messages: "launcher", or "floor spawner" (`run_floor`).
    role: &'static str,
    child: Child,
    id: String,
    data_dir: PathBuf,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Launcher {
    /// Spawns `serve`; returns it with the CLOCK_MONOTONIC stamp taken just before the spawn.
    fn spawn(options: &Options, root: &Path, name: &str, specs_dir: &Path) -> Result<(Self, u64)> {
        let data_dir = root.join(format!("data-{name}"));
        let patterns_dir = root.join("patterns");
        fs::create_dir_all(&data_dir)?;
        fs::create_dir_all(&patterns_dir)?;
        let log = root.join(format!("launcher-{name}.log"));
        let log_file = fs::File::create(&log)?;
        let id = unique_launcher_id(name);
        let mut command = Command::new(&options.launcher);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--specs-dir")
            .arg(specs_dir)
            .arg("--patterns-dir")
            .arg(&patterns_dir)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--port-range", &options.port_range, "--launcher-id", &id])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .current_dir(root);
        let t0 = monotonic_ns();
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", options.launcher.display()))?;
        let launcher = Launcher {
            role: "launcher",
            child,
            id,
            data_dir,
            log,
            exit: None,
        };
        Ok((launcher, t0))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs (reaping it when it exited).
    fn running(&mut self) -> bool {
        if self.exit.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
            }
        }
        self.exit.is_none()
    }

    /// The last lines of its log and whether it runs: the context of a failed wait.
    fn describe(&mut self) -> String {
        let state = if self.running() {
            format!("{} pid {} still runs", self.role, self.pid())
        } else {
            format!("{} exited: {:?}", self.role, self.exit)
        };
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n    ");
        format!("{state}; last lines of its log:\n    {tail}")
    }

    /// A failed wait, with what the launcher was doing.
    fn failed(&mut self, error: anyhow::Error) -> anyhow::Error {
        anyhow!("{error:#}\n  {}", self.describe())
    }

    fn read_address(&mut self, file: &str, deadline: Instant) -> Result<String> {
        let path = self.data_dir.join(file);
        loop {
            if let Ok(text) = fs::read_to_string(&path) {
                let text = text.trim();
                if !text.is_empty() {
                    return Ok(text.to_string());
                }
            }
            if !self.running() {
                bail!(
                    "the launcher exited before writing {}: {}",
                    path.display(),
                    self.describe()
                );
            }
            if Instant::now() >= deadline {
                bail!("no {} in time: {}", path.display(), self.describe());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for `GET /readyz` = 200; returns the gRPC address and the metrics address.
    fn wait_ready(&mut self, deadline: Instant) -> Result<(String, String)> {
        let metrics = self.read_address("metrics.addr", deadline)?;
        loop {
            if http_status(&metrics, "/readyz").is_ok_and(|status| status == 200) {
                break;
            }
            if !self.running() {
                bail!(
                    "the launcher exited before it was ready: {}",
                    self.describe()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "/readyz at {metrics} never answered 200: {}",
                    self.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok((self.read_address("launcher.addr", deadline)?, metrics))
    }

    /// SIGKILLs the launcher and then every process carrying its id, and waits until they are
    /// gone (reaping those that came to the harness). Returns how many children it had to kill.
    fn kill_all(&mut self, known: &[i32]) -> usize {
        if self.running() {
            // An unreaped child of ours: its pid cannot have been reused.
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exit = Some(status);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut killed: Vec<i32> = Vec::new();
        let mut quiet_rounds = 0;
        while Instant::now() < deadline {
            let found = processes_with_launcher_id(&self.id);
            for pid in &found {
                if signal_if_ours(*pid, &self.id, libc::SIGKILL).is_some() && !killed.contains(pid)
                {
                    killed.push(*pid);
                }
            }
            for pid in known.iter().chain(killed.iter()) {
                reap_if_ours(*pid);
            }
            let remaining = known
                .iter()
                .chain(killed.iter())
                .filter(|pid| !is_gone(**pid))
                .count();
            if found.is_empty() && remaining == 0 {
                quiet_rounds += 1;
                if quiet_rounds >= 3 {
                    break;
                }
            } else {
                quiet_rounds = 0;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        killed.len()
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        let killed = self.kill_all(&[]);
        if killed > 0 {
            eprintln!(
                "  guard: SIGKILLed {killed} leftover processes of {} {}",
                self.role, self.id
            );
        }
    }
}

/// W1's floor: `floor` (`benches/floor_spawner.c`) starts the same `n` children with vfork from
/// as many threads as the host has cores, each with a log file of its own and a process group,
/// and nothing of a supervisor (no records, no store, no pidfds); it prints the latest stamp its
/// children reported from `main`, then ends and reaps them. Timed as W1: from just before the
/// spawner's exec to that stamp. It
/// runs with a unique `PRISM_LAUNCHER_ID` that its children inherit, so that the launcher's guard
/// ends the spawner and every child of it whatever happens.
fn run_floor(options: &Options, floor: &Path, root: &Path, n: usize) -> Result<f64> {
    let socket = root.join("floor.sock");
    // A unix socket's path has room for 107 bytes: refused here with the remedy, rather than
    // by the spawner.
    if socket.as_os_str().len() >= 100 {
        bail!(
            "W1 floor: the socket path {} is too long for a unix socket; set TMPDIR to a shorter directory",
            socket.display()
        );
    }
    let logs = root.join("floor-logs");
    fs::create_dir_all(&logs)?;
    let log = root.join("floor.log");
    // As many as the cores, as the launcher's spawns; the spawner takes at most 16.
    let threads = std::thread::available_parallelism().map_or(2, |cores| cores.get().min(16));
    let id = unique_launcher_id("floor");
    let t0 = monotonic_ns();
    let child = Command::new(floor)
        .arg(n.to_string())
        .arg(threads.to_string())
        .arg(&options.child)
        .arg(&socket)
        .arg(&logs)
        .arg("vfork")
        .env("PRISM_LAUNCHER_ID", &id)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log)?)
        .stderr(fs::File::create(root.join("floor.err"))?)
        .current_dir(root)
        .spawn()
        .with_context(|| format!("spawning {}", floor.display()))?;
    let mut spawner = Launcher {
        role: "floor spawner",
        child,
        id,
        data_dir: root.to_path_buf(),
        log: log.clone(),
        exit: None,
    };
    let deadline = deadline_for(n);
    while spawner.running() {
        if Instant::now() >= deadline {
            return Err(spawner.failed(anyhow!("W1 floor: the spawner did not finish in time")));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = fs::read_to_string(&log)?;
    let errors = fs::read_to_string(root.join("floor.err")).unwrap_or_default();
    if !spawner.exit.is_some_and(|status| status.success()) {
        bail!(
            "W1 floor: the spawner failed ({:?}): {} {}",
            spawner.exit,
            report.trim(),
            errors.trim()
        );
    }
    let last_stamp = report
        .split_once("last stamp ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<u64>().ok())
        .filter(|stamp| *stamp > t0)
        .ok_or_else(|| {
            anyhow!(
                "W1 floor: no stamp after the spawner's start in its report {:?}",
                report.trim()
            )
        })?;
    Ok(ms_between(t0, last_stamp))
}

fn unique_launcher_id(name: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    format!("bench-{name}-{}-{count}-{nanos}", std::process::id())
}

/// A bare HTTP/1.1 GET; returns the status code.
fn http_status(address: &str, path: &str) -> Result<u16> {
    let socket_address: std::net::SocketAddr = address.parse()?;
    let mut stream = TcpStream::connect_timeout(&socket_address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("no HTTP status from {address}{path}"))
}

// ---------------------------------------------------------------------------------------------
// Spec files

fn tag(i: usize) -> String {
    format!("p-{i}")
}

/// The tag (and process id) of the sentinel: one more child in every launcher, never removed,
/// never one of the N.
const SENTINEL: &str = "sentinel";

/// `--memory-limit`: every child declares it (`resources.memoryLimit`), to measure what
/// enforcing it costs.
static MEMORY_LIMIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The spec of the process `name`, whose child reports with the tag `name`.
fn spec_text(name: &str, child: &Path, socket: &Path) -> String {
    let resources = MEMORY_LIMIT.get().map_or_else(String::new, |limit| {
        format!("  resources: {{memoryLimit: {limit}}}\n")
    });
    format!(
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {{name: {name}}}\nspec:\n  type: utility\n  \
         binary: {child:?}\n  args: [{socket:?}, \"{name}\"]\n  terminationGracePeriod: 5s\n{resources}",
        child = child.display().to_string(),
        socket = socket.display().to_string(),
    )
}

fn write_specs(dir: &Path, n: usize, child: &Path, socket: &Path) -> Result<()> {
    for i in 0..n {
        fs::write(
            dir.join(format!("p-{i}.yaml")),
            spec_text(&tag(i), child, socket),
        )?;
    }
    Ok(())
}

/// Writes `sentinel.yaml`, which stays in `dir` for the launcher's whole life.
fn write_sentinel(dir: &Path, child: &Path, socket: &Path) -> Result<()> {
    let path = dir.join(format!("{SENTINEL}.yaml"));
    fs::write(&path, spec_text(SENTINEL, child, socket))
        .with_context(|| format!("writing {}", path.display()))
}

/// Waits until the sentinel has reported a start since the last clear; returns its latest.
fn wait_sentinel_started(collector: &Collector, deadline: Instant) -> Result<Stamp> {
    collector.wait(deadline, "the sentinel to start", |events| {
        events
            .starts
            .get(SENTINEL)
            .and_then(|stamps| stamps.last().copied())
    })
}

/// The sentinel's current pid: its latest start.
fn sentinel_pid(collector: &Collector) -> Result<i32> {
    collector
        .lock()
        .starts
        .get(SENTINEL)
        .and_then(|stamps| stamps.last())
        .map(|stamp| stamp.pid)
        .ok_or_else(|| anyhow!("the sentinel never started"))
}

fn rename_all(from: &Path, to: &Path, n: usize) -> Result<()> {
    for i in 0..n {
        let name = format!("p-{i}.yaml");
        fs::rename(from.join(&name), to.join(&name))
            .with_context(|| format!("renaming {name} into {}", to.display()))?;
    }
    Ok(())
}

/// Waits until every tag has reported a start; returns tag → its first start.
fn wait_all_started(collector: &Collector, n: usize, deadline: Instant) -> Result<Vec<Stamp>> {
    collector.wait(deadline, &format!("{n} children to start"), |events| {
        (0..n)
            .map(|i| {
                events
                    .starts
                    .get(&tag(i))
                    .and_then(|stamps| stamps.first().copied())
            })
            .collect::<Option<Vec<Stamp>>>()
    })
}

/// The current pid of every tag: its latest start.
fn current_pids(collector: &Collector, n: usize) -> Result<Vec<i32>> {
    let events = collector.lock();
    (0..n)
        .map(|i| {
            events
                .starts
                .get(&tag(i))
                .and_then(|stamps| stamps.last())
                .map(|stamp| stamp.pid)
                .ok_or_else(|| anyhow!("p-{i} never started"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// One run

#[derive(Debug, Default, Clone)]
struct RunResult {
    /// W1's floor right before W1, when measured (`run_floor`).
    floor_ms: Option<f64>,
    w1_ms: f64,
    w1b_ms: f64,
    rss_mib: f64,
    pss_mib: f64,
    cpu_percent: f64,
    w2_ms: Vec<f64>,
    status_table_ms: f64,
    status_json_ms: f64,
    w4_term_ms: f64,
    w4_gone_ms: f64,
    w4_during_status_ms: f64,
    w4_during_healthz_ms: f64,
    w4_during_restart_ms: f64,
    w4_after_rss_mib: f64,
    w4b_term_ms: f64,
    w4b_children_gone_ms: f64,
    w4b_launcher_exit_ms: f64,
    notes: Vec<String>,
}

struct Rng(u64);

impl Rng {
    fn new() -> Self {
        Rng(monotonic_ns() ^ (u64::from(std::process::id()) << 32) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

fn run_once(
    options: &Options,
    collector: &Collector,
    socket: &Path,
    root: &Path,
    n: usize,
) -> Result<RunResult> {
    let mut result = RunResult::default();
    let specs = root.join("specs");
    let staging = root.join("staging");
    let specs_w1 = root.join("specs-w1");
    for dir in [&specs, &staging, &specs_w1] {
        fs::create_dir_all(dir)?;
    }

    if let Some(floor) = &options.floor {
        let floor_ms = run_floor(options, floor, root, n)?;
        eprintln!("    W1 floor {floor_ms:.1} ms (a bare vfork spawner, the same {n} children)");
        result.floor_ms = Some(floor_ms);
    }

    // W1 cold start: the files (and the sentinel's) are there before the launcher is exec'd.
    collector.clear();
    write_specs(&specs_w1, n, &options.child, socket)?;
    write_sentinel(&specs_w1, &options.child, socket)?;
    let (mut cold, t0) = Launcher::spawn(options, root, "w1", &specs_w1)?;
    let firsts = match wait_all_started(collector, n, deadline_for(n)) {
        Ok(firsts) => firsts,
        Err(error) => return Err(cold.failed(error)),
    };
    result.w1_ms = ms_between(t0, firsts.iter().map(|stamp| stamp.ns).max().unwrap_or(t0));
    let mut pids: Vec<i32> = firsts.iter().map(|stamp| stamp.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    let live = pids
        .iter()
        .filter(|pid| is_live(**pid) && carries_launcher_id(**pid, &cold.id))
        .count();
    if pids.len() != n || live != n {
        bail!(
            "W1: {n} children expected, {} distinct pids reported, {live} of them alive",
            pids.len()
        );
    }
    eprintln!(
        "    W1 cold start {:.1} ms ({n} distinct live children; {})",
        result.w1_ms,
        spread(t0, &firsts)
    );
    // The sentinel runs too (it is no part of the figure).
    match wait_sentinel_started(collector, deadline_for(1)) {
        Ok(sentinel) => pids.push(sentinel.pid),
        Err(error) => return Err(cold.failed(error)),
    }
    cold.kill_all(&pids);
    drop(cold);

    // W1b hot drop: a ready launcher whose spec directory holds only the sentinel's file (the
    // sentinel started); the N files are renamed in.
    collector.clear();
    write_sentinel(&specs, &options.child, socket)?;
    let (mut launcher, _) = Launcher::spawn(options, root, "w1b", &specs)?;
    let (address, metrics) = launcher.wait_ready(deadline_for(0))?;
    if let Err(error) = wait_sentinel_started(collector, deadline_for(1)) {
        return Err(launcher.failed(error));
    }
    write_specs(&staging, n, &options.child, socket)?;
    let t0 = monotonic_ns();
    rename_all(&staging, &specs, n)?;
    let firsts = match wait_all_started(collector, n, deadline_for(n)) {
        Ok(firsts) => firsts,
        Err(error) => return Err(launcher.failed(error)),
    };
    result.w1b_ms = ms_between(t0, firsts.iter().map(|stamp| stamp.ns).max().unwrap_or(t0));
    eprintln!(
        "    W1b hot drop {:.1} ms ({})",
        result.w1b_ms,
        spread(t0, &firsts)
    );

    // W3 idle: settle, then only sleep.
    std::thread::sleep(options.settle);
    let pid = launcher.pid();
    let ticks_before = cpu_ticks(pid)?;
    let window_start = Instant::now();
    std::thread::sleep(options.w3);
    let ticks_after = cpu_ticks(pid)?;
    let window = window_start.elapsed().as_secs_f64();
    result.cpu_percent =
        (ticks_after - ticks_before) as f64 / clock_ticks_per_second() / window * 100.0;
    result.rss_mib = proc_kib(&format!("/proc/{pid}/status"), "VmRSS")? as f64 / 1024.0;
    result.pss_mib = proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss")? as f64 / 1024.0;
    eprintln!(
        "    W3 idle RSS {:.1} MiB, PSS {:.1} MiB, CPU {:.2} % over {window:.1} s",
        result.rss_mib, result.pss_mib, result.cpu_percent
    );

    // W2 restart: distinct children, each kill -9'd once after a random pause.
    let mut rng = Rng::new();
    let mut order: Vec<usize> = (0..n).collect();
    let kills = options.kills.min(n);
    for k in 0..kills {
        let j = k + rng.below((n - k) as u64) as usize;
        order.swap(k, j);
    }
    for &i in &order[..kills] {
        let (low, high) = options.kill_pause_ms;
        std::thread::sleep(Duration::from_millis(low + rng.below(high - low + 1)));
        let name = tag(i);
        let (victim, seen) = {
            let events = collector.lock();
            let stamps = events
                .starts
                .get(&name)
                .ok_or_else(|| anyhow!("{name} never started"))?;
            (
                stamps.last().map(|stamp| stamp.pid).unwrap_or(0),
                stamps.len(),
            )
        };
        let Some(t_kill) = signal_if_ours(victim, &launcher.id, libc::SIGKILL) else {
            bail!("W2: {name} (pid {victim}) is not a live process of this launcher");
        };
        let replacement = collector.wait(
            deadline_for(0),
            &format!("{name}'s replacement"),
            |events| {
                events
                    .starts
                    .get(&name)
                    .filter(|stamps| stamps.len() > seen)
                    .and_then(|stamps| stamps.last().copied())
            },
        );
        let replacement = match replacement {
            Ok(replacement) => replacement,
            Err(error) => return Err(launcher.failed(error)),
        };
        result.w2_ms.push(ms_between(t_kill, replacement.ns));
    }
    eprintln!("    W2 restart {}", summarize_samples(&result.w2_ms));

    // status latency, table and JSON, alternating.
    let mut table = Vec::new();
    let mut json = Vec::new();
    for _ in 0..options.status_calls {
        table.push(time_status(
            options,
            &address,
            false,
            Listing::Exactly(n + 1),
        )?);
        json.push(time_status(
            options,
            &address,
            true,
            Listing::Exactly(n + 1),
        )?);
    }
    result.status_table_ms = median(&table);
    result.status_json_ms = median(&json);
    eprintln!(
        "    status {:.1} ms, status -o json {:.1} ms",
        result.status_table_ms, result.status_json_ms
    );

    // W4 stop all: every file renamed out at once (the sentinel's stays). While the main thread
    // times the stop, three threads wait for it to begin and then take the "during" figures.
    let pids = current_pids(collector, n)?;
    let sentinel = sentinel_pid(collector)?;
    let id = launcher.id.clone();
    collector.clear();
    let t0 = monotonic_ns();
    rename_all(&specs, &staging, n)?;
    let during = During {
        collector,
        over: AtomicBool::new(false),
        abandon: AtomicBool::new(false),
        deadline: deadline_for(n),
    };
    let (stopped, [status, healthz, restart]) = std::thread::scope(|scope| {
        let status = scope.spawn(|| {
            during.measure(|| {
                let listing = Listing::Sentinel { at_most: n + 1 };
                time_status(options, &address, true, listing)
            })
        });
        let healthz = scope.spawn(|| during.measure(|| time_healthz(&metrics)));
        let restart = scope.spawn(|| during.restart_sentinel(sentinel, &id));
        let stopped = wait_stopped(collector, &mut launcher, &pids, false);
        during.finish(stopped.is_ok());
        let joined = [status, healthz, restart].map(|handle| {
            handle
                .join()
                .unwrap_or_else(|_| Err(anyhow!("a W4 during thread panicked")))
        });
        (stopped, joined)
    });
    let stopped = match stopped {
        Ok(stopped) => stopped,
        Err(error) => return Err(launcher.failed(error)),
    };
    result.w4_term_ms = stopped
        .last_term
        .map_or(f64::NAN, |stamp| ms_between(t0, stamp));
    result.w4_gone_ms = ms_between(t0, stopped.gone);
    if stopped.terms < n {
        result.notes.push(format!(
            "W4: only {} of {n} children reported SIGTERM (the rest were killed)",
            stopped.terms
        ));
    }
    eprintln!(
        "    W4 stop all: last term {:.1} ms, all reaped {:.1} ms",
        result.w4_term_ms, result.w4_gone_ms
    );
    // The sentinel now runs as the replacement (the W4b collector.clear() forgets its stamps).
    let sentinel = restart.as_ref().ok().and_then(|measured| measured.pid);
    let mut spans = Vec::new();
    for (what, measured, figure) in [
        ("status -o json", status, &mut result.w4_during_status_ms),
        ("/healthz", healthz, &mut result.w4_during_healthz_ms),
        (
            "kill -9 -> replacement",
            restart,
            &mut result.w4_during_restart_ms,
        ),
    ] {
        let measured = match measured {
            Ok(measured) => measured,
            Err(error) => {
                let error = error.context(format!("W4 during: {what}"));
                return Err(launcher.failed(error));
            }
        };
        *figure = measured.ms;
        if !measured.stop_begun {
            result.notes.push(format!(
                "W4 during: {what} was taken after the stop, no child having reported SIGTERM"
            ));
        } else if measured.ended > stopped.gone {
            result.notes.push(format!(
                "W4 during: {what} ended {:.1} ms after the last child was gone",
                ms_between(stopped.gone, measured.ended)
            ));
        }
        spans.push(format!(
            "{what} {:.2} ms (at {:.1}–{:.1} ms)",
            measured.ms,
            ms_between(t0, measured.began),
            ms_between(t0, measured.ended)
        ));
    }
    eprintln!("    W4 during: {}", spans.join(", "));

    // W4 after: what the launcher keeps once the burst of stops is over (only the sentinel runs).
    std::thread::sleep(options.settle);
    let pid = launcher.pid();
    result.w4_after_rss_mib = proc_kib(&format!("/proc/{pid}/status"), "VmRSS")? as f64 / 1024.0;
    eprintln!(
        "    W4 after: RSS {:.1} MiB with only the sentinel left",
        result.w4_after_rss_mib
    );

    // W4b shutdown: the files back in, all started, then SIGTERM to the launcher.
    collector.clear();
    rename_all(&staging, &specs, n)?;
    if let Err(error) = wait_all_started(collector, n, deadline_for(n)) {
        return Err(launcher.failed(error));
    }
    let pids = current_pids(collector, n)?;
    collector.clear();
    let t0 = monotonic_ns();
    // SAFETY: kill(2) of our own unreaped child (its pid cannot have been reused).
    if unsafe { libc::kill(launcher.pid() as i32, libc::SIGTERM) } != 0 {
        bail!("W4b: cannot signal the launcher");
    }
    let stopped = match wait_stopped(collector, &mut launcher, &pids, true) {
        Ok(stopped) => stopped,
        Err(error) => return Err(launcher.failed(error)),
    };
    result.w4b_term_ms = stopped
        .last_term
        .map_or(f64::NAN, |stamp| ms_between(t0, stamp));
    result.w4b_children_gone_ms = ms_between(t0, stopped.gone);
    result.w4b_launcher_exit_ms = stopped
        .exited
        .map_or(f64::NAN, |stamp| ms_between(t0, stamp));
    match launcher.exit {
        Some(status) if status.success() => {}
        other => result
            .notes
            .push(format!("W4b: the launcher exited with {other:?}")),
    }
    if stopped.terms < n {
        result.notes.push(format!(
            "W4b: only {} of {n} children reported SIGTERM (the rest were killed)",
            stopped.terms
        ));
    }
    eprintln!(
        "    W4b shutdown: last term {:.1} ms, children gone {:.1} ms, launcher exited {:.1} ms",
        result.w4b_term_ms, result.w4b_children_gone_ms, result.w4b_launcher_exit_ms
    );
    let leftovers = processes_with_launcher_id(&launcher.id);
    if !leftovers.is_empty() {
        result.notes.push(format!(
            "{} processes of the launcher outlived its shutdown",
            leftovers.len()
        ));
    }
    let mut known = pids;
    known.extend(sentinel);
    launcher.kill_all(&known);
    Ok(result)
}

/// When the children of a stop were gone, and what they reported.
struct Stopped {
    /// The latest `term` stamp; None when not every child reported one (some were SIGKILLed).
    last_term: Option<u64>,
    terms: usize,
    /// When the last of them was gone from /proc (exited and reaped).
    gone: u64,
    /// When the launcher exited (only waited for when `shutdown`).
    exited: Option<u64>,
}

/// Polls /proc until every pid is gone (and, for a shutdown, the launcher exited), then collects
/// the children's `term` stamps (a report can arrive just after its sender is gone).
fn wait_stopped(
    collector: &Collector,
    launcher: &mut Launcher,
    pids: &[i32],
    shutdown: bool,
) -> Result<Stopped> {
    let n = pids.len();
    let deadline = deadline_for(n);
    let mut remaining: Vec<i32> = pids.to_vec();
    let (mut gone, mut exited) = (None, None);
    loop {
        if gone.is_none() {
            // Checks from the back and stops at the first live one: cheap while many remain.
            while let Some(pid) = remaining.last() {
                reap_if_ours(*pid);
                if !is_gone(*pid) {
                    break;
                }
                remaining.pop();
            }
            if remaining.is_empty() {
                gone = Some(monotonic_ns());
            }
        }
        let running = launcher.running();
        if shutdown && exited.is_none() && !running {
            exited = Some(monotonic_ns());
        }
        if !shutdown && !running {
            bail!("the launcher exited while its children were being stopped");
        }
        if let Some(gone) = gone {
            if !shutdown || exited.is_some() {
                let all_terms = collector.wait(
                    Instant::now() + Duration::from_secs(1),
                    "the SIGTERM reports",
                    |events| (events.child_terms().count() >= n).then_some(()),
                );
                let events = collector.lock();
                let stamps = events.child_terms().filter_map(|stamps| stamps.first());
                return Ok(Stopped {
                    last_term: all_terms.ok().and(stamps.map(|stamp| stamp.ns).max()),
                    terms: events.child_terms().count(),
                    gone,
                    exited,
                });
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out: {} of {n} children still in /proc, the launcher {} ({})",
                remaining.len(),
                if running { "still runs" } else { "exited" },
                collector.lock().summary()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What a `status -o json` must list.
#[derive(Debug, Clone, Copy)]
enum Listing {
    /// Exactly this many processes (the N children and the sentinel).
    Exactly(usize),
    /// The sentinel among at most this many (during a stop, the count is on its way down).
    Sentinel { at_most: usize },
}

/// Wall time of one `prism-launcher status` (table or `-o json`), in ms.
fn time_status(options: &Options, address: &str, json: bool, listing: Listing) -> Result<f64> {
    let mut command = Command::new(&options.launcher);
    command.args(["status", "--addr", address]);
    if json {
        command.args(["-o", "json"]);
    }
    command
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let child = command.spawn().context("running status")?;
    // Our own unreaped child: the pidfd is of it.
    let pidfd = open_raw(child.id()).ok();
    // A thread waits (and reads the output), so the wait can have a deadline.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = sender.send((started.elapsed(), output));
    });
    let answer = match receiver.recv_timeout(Duration::from_secs(30)) {
        Ok(answer) => answer,
        Err(_) => {
            if let Some(pidfd) = &pidfd {
                let _ = send_signal_through(pidfd.as_fd(), Signal::SIGKILL, 0);
            }
            bail!("`status` did not answer within 30 s");
        }
    };
    let (elapsed, output) = answer;
    let output = output.context("waiting for status")?;
    if !output.status.success() {
        bail!(
            "status failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    if json {
        let value: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("status -o json is not JSON")?;
        let processes = value.get("processes").and_then(|list| list.as_array());
        let count = processes.map(|list| list.len());
        match listing {
            Listing::Exactly(n) if count != Some(n) => {
                bail!("status -o json lists {count:?} processes, {n} expected")
            }
            Listing::Sentinel { at_most } => {
                let lists_sentinel = processes.is_some_and(|list| {
                    list.iter().any(|process| {
                        process.get("id").and_then(|id| id.as_str()) == Some(SENTINEL)
                    })
                });
                if !lists_sentinel || count.is_none_or(|count| count > at_most) {
                    bail!(
                        "status -o json lists {count:?} processes (at most {at_most} expected), \
                         the sentinel {}",
                        if lists_sentinel {
                            "among them"
                        } else {
                            "not among them"
                        }
                    );
                }
            }
            Listing::Exactly(_) => {}
        }
    }
    Ok(elapsed.as_secs_f64() * 1000.0)
}

/// Wall time of one `GET /healthz` on the metrics address, in ms; it must answer 200.
fn time_healthz(metrics: &str) -> Result<f64> {
    let started = Instant::now();
    let status = http_status(metrics, "/healthz")?;
    let elapsed = started.elapsed();
    if status != 200 {
        bail!("GET /healthz at {metrics} answered {status}");
    }
    Ok(elapsed.as_secs_f64() * 1000.0)
}

/// One "W4 during" figure, with when it was taken (CLOCK_MONOTONIC).
struct Measured {
    ms: f64,
    began: u64,
    ended: u64,
    /// Whether a child had reported its SIGTERM when it began (else W4 was over).
    stop_begun: bool,
    /// The sentinel's replacement, for the restart.
    pid: Option<i32>,
}

/// What the threads of the "W4 during" figures share with the one timing the stop.
struct During<'a> {
    collector: &'a Collector,
    /// Set when the stop is over (every child gone).
    over: AtomicBool,
    /// Set when the stop failed: the figures are not taken.
    abandon: AtomicBool,
    deadline: Instant,
}

impl During<'_> {
    /// Waits until a child reported its SIGTERM (the stop has begun) or the stop is over;
    /// returns whether it had begun.
    fn wait_for_stop(&self) -> Result<bool> {
        let answer = self
            .collector
            .wait(self.deadline, "W4 to begin", |events| {
                if self.abandon.load(Ordering::Relaxed) {
                    Some(None)
                } else if events.child_terms().next().is_some() {
                    Some(Some(true))
                } else {
                    self.over.load(Ordering::Relaxed).then_some(Some(false))
                }
            })?;
        answer.ok_or_else(|| anyhow!("abandoned: W4 failed"))
    }

    /// Once the stop has begun, times `call`.
    fn measure(&self, call: impl FnOnce() -> Result<f64>) -> Result<Measured> {
        let stop_begun = self.wait_for_stop()?;
        let began = monotonic_ns();
        let ms = call()?;
        Ok(Measured {
            ms,
            began,
            ended: monotonic_ns(),
            stop_begun,
            pid: None,
        })
    }

    /// Once the stop has begun, kill -9s the sentinel (as W2 does its victims) and waits for its
    /// replacement's start stamp.
    fn restart_sentinel(&self, victim: i32, id: &str) -> Result<Measured> {
        let stop_begun = self.wait_for_stop()?;
        let seen = self
            .collector
            .lock()
            .starts
            .get(SENTINEL)
            .map_or(0, Vec::len);
        let Some(t_kill) = signal_if_ours(victim, id, libc::SIGKILL) else {
            bail!("the sentinel (pid {victim}) is not a live process of this launcher");
        };
        let replacement =
            self.collector
                .wait(deadline_for(0), "the sentinel's replacement", |events| {
                    if self.abandon.load(Ordering::Relaxed) {
                        return Some(None);
                    }
                    events
                        .starts
                        .get(SENTINEL)
                        .filter(|stamps| stamps.len() > seen)
                        .and_then(|stamps| stamps.last().copied())
                        .map(Some)
                })?;
        let replacement = replacement.ok_or_else(|| anyhow!("abandoned: W4 failed"))?;
        Ok(Measured {
            ms: ms_between(t_kill, replacement.ns),
            began: t_kill,
            ended: replacement.ns,
            stop_begun,
            pid: Some(replacement.pid),
        })
    }

    /// Tells the threads the stop is over (or failed), under the collector's lock so that none
    /// misses the wake-up.
    fn finish(&self, succeeded: bool) {
        let events = self.collector.lock();
        let flag = if succeeded { &self.over } else { &self.abandon };
        flag.store(true, Ordering::Relaxed);
        drop(events);
        self.collector.changed.notify_all();
    }
}

// ---------------------------------------------------------------------------------------------
// Figures

/// The values measured, in order: a figure a run could not take (NaN) is left out, so that it
/// moves neither a median nor an end of the range.
fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = values
        .iter()
        .copied()
        .filter(|value| value.is_finite())
        .collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted
}

fn median(values: &[f64]) -> f64 {
    let sorted = sorted(values);
    match sorted.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => sorted[len / 2],
        len => (sorted[len / 2 - 1] + sorted[len / 2]) / 2.0,
    }
}

/// Nearest-rank percentile.
fn percentile(values: &[f64], p: f64) -> f64 {
    let sorted = sorted(values);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summarize_samples(samples: &[f64]) -> String {
    format!(
        "median {:.2} ms, p95 {:.2} ms, max {:.2} ms ({} kills)",
        median(samples),
        percentile(samples, 95.0),
        sorted(samples).last().copied().unwrap_or(f64::NAN),
        samples.len()
    )
}

fn number(value: f64) -> String {
    if !value.is_finite() {
        "-".to_string()
    } else if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

struct Row {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    n: usize,
    per_run: Vec<f64>,
    samples: Option<Vec<f64>>,
}

/// The figures of a run: key (in the JSON), label (in the table), unit, and how to read it.
type Figure = (
    &'static str,
    &'static str,
    &'static str,
    fn(&RunResult) -> f64,
);

#[rustfmt::skip]
const FIGURES: &[Figure] = &[
    ("w1_floor", "W1 floor: bare vfork spawner", "ms", |r| r.floor_ms.unwrap_or(f64::NAN)),
    ("w1_cold_start", "W1 cold start: exec -> all alive", "ms", |r| r.w1_ms),
    ("w1_over_floor", "W1 over its floor", "ms", |r| r.floor_ms.map_or(f64::NAN, |floor| r.w1_ms - floor)),
    ("w1b_hot_drop", "W1b hot drop: rename -> all alive", "ms", |r| r.w1b_ms),
    ("w3_rss", "W3 idle launcher RSS", "MiB", |r| r.rss_mib),
    ("w3_pss", "W3 idle launcher PSS", "MiB", |r| r.pss_mib),
    ("w3_cpu", "W3 idle launcher CPU", "% core", |r| r.cpu_percent),
    ("w2_restart_median", "W2 kill -9 -> replacement, median", "ms", |r| median(&r.w2_ms)),
    ("w2_restart_p95", "W2 kill -9 -> replacement, p95", "ms", |r| percentile(&r.w2_ms, 95.0)),
    ("w2_restart_max", "W2 kill -9 -> replacement, max", "ms", |r| percentile(&r.w2_ms, 100.0)),
    ("status_table", "status (table)", "ms", |r| r.status_table_ms),
    ("status_json", "status -o json", "ms", |r| r.status_json_ms),
    ("w4_stop_all_term", "W4 stop all: last SIGTERM stamp", "ms", |r| r.w4_term_ms),
    ("w4_stop_all_reaped", "W4 stop all: all reaped", "ms", |r| r.w4_gone_ms),
    ("w4_during_status_json", "W4 during: status -o json", "ms", |r| r.w4_during_status_ms),
    ("w4_during_healthz", "W4 during: /healthz", "ms", |r| r.w4_during_healthz_ms),
    ("w4_during_restart", "W4 during: kill -9 -> replacement", "ms", |r| r.w4_during_restart_ms),
    ("w4_after_rss", "W4 after: launcher RSS, all stopped", "MiB", |r| r.w4_after_rss_mib),
    ("w4b_shutdown_term", "W4b shutdown: last SIGTERM stamp", "ms", |r| r.w4b_term_ms),
    ("w4b_shutdown_children", "W4b shutdown: children gone", "ms", |r| r.w4b_children_gone_ms),
    ("w4b_shutdown_launcher", "W4b shutdown: launcher exited", "ms", |r| r.w4b_launcher_exit_ms),
];

/// The rows of `runs`' figures; a figure no run measured (the floor under `--no-floor`) has none.
fn rows_for(n: usize, runs: &[RunResult]) -> Vec<Row> {
    FIGURES
        .iter()
        .filter(|&&(_, _, _, figure)| runs.iter().any(|run| !figure(run).is_nan()))
        .map(|&(key, label, unit, figure)| Row {
            key,
            label,
            unit,
            n,
            per_run: runs.iter().map(figure).collect(),
            // Every W2 sample of every run goes with the median's JSON line.
            samples: (key == "w2_restart_median").then(|| {
                runs.iter()
                    .flat_map(|run| run.w2_ms.iter().copied())
                    .collect()
            }),
        })
        .collect()
}

fn json_numbers(values: &[f64]) -> serde_json::Value {
    serde_json::Value::Array(
        values
            .iter()
            .map(|value| serde_json::json!((value * 1000.0).round() / 1000.0))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Header

fn git_commit(dir: &Path) -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    match run(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|text| !text.is_empty());
            if dirty {
                format!("{commit} (with uncommitted changes)")
            } else {
                commit
            }
        }
        None => "unknown".to_string(),
    }
}

/// UTC date and time, from the days-to-civil algorithm (no date crate needed).
fn utc_now() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0);
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

// ---------------------------------------------------------------------------------------------

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(error) => {
            eprintln!("scale benchmark: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool> {
    let options = parse_options()?;
    let started = Instant::now();
    // Children of a launcher the harness kills come to the harness, which reaps them at once
    // (the host's init may reap late).
    // SAFETY: prctl with plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let nofile = raise_nofile_limit();
    let pid_max: usize = read_trimmed("/proc/sys/kernel/pid_max")
        .parse()
        .unwrap_or(32_768);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let launcher_dir = options.launcher.parent().unwrap_or(Path::new("."));
    let launcher_commit = git_commit(launcher_dir);
    let harness_commit = git_commit(Path::new(env!("CARGO_MANIFEST_DIR")));

    println!("# prism-launcher scale benchmark (benches/scale.rs, BENCHMARKS-METHOD.md)");
    println!("date:      {}", utc_now());
    let cpu = cpu_model();
    let reclaim = host_reclaim();
    println!(
        "machine:   {cores} cores (nproc), {cpu}, kernel {}, pid_max {pid_max}, RLIMIT_NOFILE {nofile}, host reclaim: {reclaim}",
        read_trimmed("/proc/sys/kernel/osrelease")
    );
    println!(
        "launcher:  {} (commit {launcher_commit})",
        options.launcher.display()
    );
    println!(
        "harness:   commit {harness_commit}; child {} ({})",
        options.child_kind,
        options.child.display()
    );
    println!(
        "settings:  N = {:?}, runs = {}, W3 window {:.0} s after a {:.1} s settle, W2 {} kills with {}–{} ms pauses{}",
        options.ns,
        options.runs,
        options.w3.as_secs_f64(),
        options.settle.as_secs_f64(),
        options.kills,
        options.kill_pause_ms.0,
        options.kill_pause_ms.1,
        if options.smoke { " (smoke)" } else { "" }
    );
    println!();

    let mut all_rows = Vec::new();
    let mut ok = true;
    // The runs' directories are deleted only once every run is done: on an ext4 without a
    // journal (this project's standard machine), the kernel skips inodes deleted in the last
    // minute (five when their block is still dirty) when it makes a file, so one run's thousands
    // of deleted files made the next run's log files cost a scan each (W1 653 ms after a
    // deletion against 433 before, BENCHMARKS.md).
    let mut finished_runs = Vec::new();
    for &n in &options.ns {
        let in_use = threads_in_use();
        if n + options.kills + in_use + 512 > pid_max {
            println!(
                "N={n}: skipped: {n} children + {in_use} threads in use + a margin exceed pid_max {pid_max}"
            );
            continue;
        }
        let mut runs = Vec::new();
        for run in 1..=options.runs {
            eprintln!("N={n}, run {run}/{}", options.runs);
            match run_with_socket(&options, n, &mut finished_runs) {
                Ok(result) => {
                    for note in &result.notes {
                        println!("note: N={n} run {run}: {note}");
                    }
                    runs.push(result);
                }
                Err(error) => {
                    ok = false;
                    println!("N={n} run {run}: FAILED: {error:#}");
                }
            }
        }
        if !runs.is_empty() {
            all_rows.extend(rows_for(n, &runs));
        }
    }

    println!();
    if all_rows.is_empty() {
        println!("no figures");
        return Ok(false);
    }
    println!(
        "{:<36} {:>6} {:>9} {:>17} {:<7} runs",
        "workload", "N", "median", "min–max", "unit"
    );
    for row in &all_rows {
        let low = sorted(&row.per_run).first().copied().unwrap_or(f64::NAN);
        let high = sorted(&row.per_run).last().copied().unwrap_or(f64::NAN);
        println!(
            "{:<36} {:>6} {:>9} {:>17} {:<7} {}",
            row.label,
            row.n,
            number(median(&row.per_run)),
            format!("{}–{}", number(low), number(high)),
            row.unit,
            sorted(&row.per_run).len()
        );
    }
    println!();
    let date = utc_now();
    for row in &all_rows {
        let mut line = serde_json::json!({
            "bench": "scale",
            "workload": row.key,
            "n": row.n,
            "unit": row.unit,
            "median": (median(&row.per_run) * 1000.0).round() / 1000.0,
            "min": (sorted(&row.per_run).first().copied().unwrap_or(f64::NAN) * 1000.0).round() / 1000.0,
            "max": (sorted(&row.per_run).last().copied().unwrap_or(f64::NAN) * 1000.0).round() / 1000.0,
            "runs": json_numbers(&row.per_run),
            "launcher_commit": launcher_commit,
            "launcher": options.launcher.display().to_string(),
            "child": options.child_kind,
            "cores": cores,
            "cpu": cpu,
            "host_reclaim": reclaim,
            "kernel": read_trimmed("/proc/sys/kernel/osrelease"),
            "date": date,
        });
        if let Some(samples) = &row.samples {
            line["samples"] = json_numbers(samples);
            line["p95_all_samples"] =
                serde_json::json!((percentile(samples, 95.0) * 1000.0).round() / 1000.0);
        }
        println!("{line}");
    }
    println!();
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    Ok(ok)
}

/// One run in a fresh temporary directory with its own datagram socket; the directory joins
/// `finished_runs`, for deletion after the last run.
fn run_with_socket(
    options: &Options,
    n: usize,
    finished_runs: &mut Vec<tempfile::TempDir>,
) -> Result<RunResult> {
    let root = tempfile::Builder::new().prefix("prism-bench-").tempdir()?;
    let socket_path = root.path().join("reports.sock");
    let socket = UnixDatagram::bind(&socket_path).context("binding the report socket")?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let collector = Arc::new(Collector {
        events: Mutex::new(Events::default()),
        changed: Condvar::new(),
        stop: AtomicBool::new(false),
    });
    let receiver = {
        let collector = Arc::clone(&collector);
        std::thread::spawn(move || collector.receive(socket))
    };
    let result = run_once(options, &collector, &socket_path, root.path(), n);
    collector.stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    if options.keep {
        eprintln!("    kept {}", root.keep().display());
    } else {
        finished_runs.push(root);
    }
    let malformed = collector.lock().malformed;
    let mut result = result?;
    if malformed > 0 {
        result.notes.push(format!("{malformed} malformed reports"));
    }
    Ok(result)
}
