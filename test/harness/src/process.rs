//! Child processes that never outlive the test binary.
//!
//! Every process is started as `setpriv --pdeathsig SIGKILL -- <program> …`
//! (util-linux), so the kernel kills it when its parent goes away. "Parent"
//! means the *thread* that forked it, so all forks happen on one dedicated
//! spawner thread that lives as long as the process (a static channel keeps it
//! waiting). A test that panics, a test binary that exits normally while
//! statics stay alive, and a test binary killed with SIGKILL all take their
//! children with them.
//!
//! [`ManagedProcess`] additionally stops its process on `Drop` (SIGTERM, then
//! SIGKILL after a grace period) and keeps its stdout/stderr in a log file,
//! whose tail ends up in readiness errors.
//!
//! [`run_dir`] hands out scratch directories under
//! `$TMPDIR/vmm-e2e/<pid>-<n>/`; directories of processes that no longer exist
//! are removed the first time it is called.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// How long [`ManagedProcess`] waits after SIGTERM before it sends SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Lines of a log shown in error messages.
pub const LOG_TAIL_LINES: usize = 40;

type SpawnReply = mpsc::Sender<io::Result<Child>>;

struct SpawnRequest {
    command: Command,
    reply: SpawnReply,
}

/// The spawner thread's inbox. Never dropped (a static), so the thread waits
/// for requests for as long as the process lives.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("vmm-testkit-spawner".into())
            .spawn(move || {
                for mut request in rx {
                    let result = request.command.spawn();
                    // The requester may have given up; nothing to do then
                    // (a Child that is dropped is not killed, but pdeathsig is set).
                    let _ = request.reply.send(result);
                }
            })
            .expect("start the vmm-testkit spawner thread");
        Mutex::new(tx)
    })
}

/// Path of `setpriv`, checked once.
fn setpriv() -> Result<&'static Path> {
    static SETPRIV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .map(|dir| dir.join("setpriv"))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    "`setpriv` (util-linux) is not on PATH: install it with `apt-get install util-linux`"
                        .to_string()
                })
        })
        .as_deref()
        .map_err(|e| anyhow!("{e}"))
}

/// A [`Command`] that runs `program` under `setpriv --pdeathsig SIGKILL`.
///
/// Configure arguments, environment and stdio as usual, then start it with
/// [`spawn_tied`] (never with `Command::spawn`, which would tie it to the
/// calling thread).
pub fn tied_command(program: impl AsRef<OsStr>) -> Result<Command> {
    let mut command = Command::new(setpriv()?);
    command.args(["--pdeathsig", "SIGKILL", "--"]).arg(program);
    Ok(command)
}

/// Spawns `command` from the long-lived spawner thread.
///
/// Use a command from [`tied_command`] so the child gets the parent-death
/// signal; the child's parent thread is then the spawner, which lives until the
/// test binary exits.
pub fn spawn_tied(command: Command) -> Result<Child> {
    let program = format!("{:?}", command.get_args().nth(3).unwrap_or_default());
    let (reply, answer) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(SpawnRequest { command, reply })
        .map_err(|_| anyhow!("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| anyhow!("the spawner thread is gone"))?
        .with_context(|| format!("spawn {program}"))
}

/// Output of a command run to completion, as text.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// `Ok(stdout)` when the command succeeded, else an error with both streams.
    pub fn ok(&self) -> Result<&str> {
        if self.success() {
            Ok(&self.stdout)
        } else {
            Err(anyhow!("{self}"))
        }
    }

    /// Stdout, panicking with the full output when the command failed.
    #[track_caller]
    pub fn expect_success(&self) -> &str {
        match self.ok() {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        }
    }

    /// Stderr, panicking with the full output when the command succeeded.
    #[track_caller]
    pub fn expect_failure(&self) -> &str {
        if self.success() {
            panic!("expected failure, but it succeeded: {self}");
        }
        &self.stderr
    }
}

impl std::fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs a command (tied to the test binary) to completion, feeding `stdin`
/// if given, and collects its output. `timeout` bounds the wait: the process
/// is killed when it runs longer.
pub fn run_tied(
    program: &Path,
    args: &[OsString],
    env: &[(OsString, OsString)],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<CmdOutput> {
    let mut command = tied_command(program)?;
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let printable = std::iter::once(program.as_os_str())
        .chain(args.iter().map(|a| a.as_os_str()))
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = spawn_tied(command)?;

    // Feed stdin and drain stdout/stderr on helper threads: no pipe deadlock.
    let feeder = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            }))
        }
        _ => None,
    };
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{printable}` did not finish within {timeout:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    Ok(CmdOutput {
        command: printable,
        status,
        stdout: String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned(),
    })
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// What to do with a managed process's stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdoutMode {
    /// Append to the log file (default).
    #[default]
    Log,
    /// Keep a pipe; read it with [`ManagedProcess::take_stdout`].
    Piped,
}

/// Builder for a [`ManagedProcess`].
#[derive(Debug, Clone)]
pub struct ProcessBuilder {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    current_dir: Option<PathBuf>,
    log_path: Option<PathBuf>,
    stdin_piped: bool,
    stdout: StdoutMode,
    grace: Duration,
    own_group: bool,
}

impl ProcessBuilder {
    /// `name` is used in messages and for the default log file name.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            current_dir: None,
            log_path: None,
            stdin_piped: false,
            stdout: StdoutMode::Log,
            grace: DEFAULT_GRACE,
            own_group: false,
        }
    }

    /// Starts it as the leader of a process group of its own, and stops it
    /// by signalling the whole group: for wrappers that do not pass SIGTERM
    /// on (`unshare --fork` ignores it), so the program inside ends on it
    /// and is reaped by the wrapper (its CPU time then counts as the
    /// wrapper's children's), instead of a SIGKILL after the grace period.
    pub fn own_process_group(mut self) -> Self {
        self.own_group = true;
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn envs<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Where stdout/stderr go (appended). Default: `<name>.log` in a fresh
    /// [`run_dir`].
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_path = Some(path.into());
        self
    }

    /// Keep stdin as a pipe for the life of the process (the process sees EOF
    /// when the [`ManagedProcess`] is dropped or the test binary dies).
    pub fn stdin_piped(mut self) -> Self {
        self.stdin_piped = true;
        self
    }

    pub fn stdout(mut self, mode: StdoutMode) -> Self {
        self.stdout = mode;
        self
    }

    /// Time between SIGTERM and SIGKILL when stopping.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn spawn(self) -> Result<ManagedProcess> {
        let log_path = match self.log_path {
            Some(path) => path,
            None => run_dir()?.join(format!("{}.log", self.name)),
        };
        if let Some(parent) = log_path.parent() {
            fs::create_dir_all(parent)?;
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        let mut command = tied_command(&self.program)?;
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin_piped {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(match self.stdout {
                StdoutMode::Log => Stdio::from(log.try_clone()?),
                StdoutMode::Piped => Stdio::piped(),
            })
            .stderr(Stdio::from(log));
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        if self.own_group {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        let started = Instant::now();
        let mut child = spawn_tied(command).with_context(|| format!("start {}", self.name))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        tracing::debug!(name = %self.name, pid = child.id(), log = %log_path.display(), "started");
        Ok(ManagedProcess {
            name: self.name,
            program: self.program,
            child,
            stdin,
            stdout,
            log_path,
            grace: self.grace,
            own_group: self.own_group,
            started,
        })
    }
}

/// A running child process that is stopped when dropped.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    program: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<std::process::ChildStdout>,
    log_path: PathBuf,
    grace: Duration,
    own_group: bool,
    started: Instant,
}

impl ManagedProcess {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Time since the process was started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The stdin pipe (when started with [`ProcessBuilder::stdin_piped`]).
    /// Dropping it sends EOF to the process.
    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.stdin.as_mut()
    }

    /// Takes the stdout pipe (when started with [`StdoutMode::Piped`]).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.stdout.take()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// `Some(status)` once the process has exited.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Ok while running; an error with the exit status and the log's tail once
    /// it exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(anyhow!(
                "{} exited with {status}; last lines of {}:\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail(LOG_TAIL_LINES)
            )),
        }
    }

    /// Polls `ready` every `interval` until it returns `Ok(true)`; fails when
    /// the process exits or `timeout` passes, naming the last probe error and
    /// quoting the log's tail.
    pub fn wait_ready(
        &mut self,
        what: &str,
        timeout: Duration,
        interval: Duration,
        mut ready: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last_error = String::from("not ready yet");
        loop {
            self.check_running()
                .with_context(|| format!("{} died while waiting for {what}", self.name))?;
            match ready() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_error = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} not ready ({what}) within {timeout:?}; last probe: {last_error}\nlast lines of {}:\n{}",
                    self.name,
                    self.log_path.display(),
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            std::thread::sleep(interval);
        }
    }

    /// The first line the process prints on stdout (started with
    /// [`StdoutMode::Piped`]): the JSON "ready" line of vcsim and of the UI
    /// server. Later lines are appended to its log. Fails when it exits or
    /// closes stdout first, or prints nothing within `timeout`, quoting the log.
    pub fn ready_line(&mut self, timeout: Duration) -> Result<String> {
        let stdout = self
            .take_stdout()
            .ok_or_else(|| anyhow!("{} stdout is not piped", self.name))?;
        let (tx, rx) = mpsc::channel::<io::Result<String>>();
        let log = self.log_path.clone();
        std::thread::Builder::new()
            .name(format!("{}-stdout", self.name))
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut first = String::new();
                let result = reader.read_line(&mut first).map(|_| first);
                let _ = tx.send(result);
                if let Ok(mut file) = File::options().append(true).open(&log) {
                    for line in reader.lines().map_while(Result::ok) {
                        let _ = writeln!(file, "{line}");
                    }
                }
            })?;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(line)) if !line.trim().is_empty() => return Ok(line.trim().to_owned()),
                Ok(Ok(_)) => {
                    self.check_running().with_context(|| {
                        format!("{} closed stdout without a ready line", self.name)
                    })?;
                    bail!("{} closed stdout without a ready line", self.name)
                }
                Ok(Err(e)) => return Err(e).with_context(|| format!("read {} stdout", self.name)),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.check_running()
                        .with_context(|| format!("{} died before it was ready", self.name))?;
                    if self.uptime() > timeout {
                        bail!(
                            "{} printed no ready line within {timeout:?}; last lines of {}:\n{}",
                            self.name,
                            self.log_path.display(),
                            self.log_tail(LOG_TAIL_LINES)
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("{} stdout reader vanished", self.name)
                }
            }
        }
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL; returns the exit
    /// status. Idempotent.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.stdin = None; // EOF first: some peers (vcsim) exit on it
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let term = rustix::process::Signal::TERM;
            let _ = if self.own_group {
                rustix::process::kill_process_group(pid, term)
            } else {
                rustix::process::kill_process(pid, term)
            };
        }
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(name = %self.name, pid = self.child.id(), "no exit after SIGTERM; SIGKILL");
        let _ = self.child.kill();
        Ok(self.child.wait()?)
    }

    /// SIGKILL at once and reap.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        self.stdin = None;
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let _ = self.child.kill();
        Ok(self.child.wait()?)
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(name = %self.name, "stopping failed: {e:#}");
        }
    }
}

/// The last `lines` lines of a text file (reads at most the last 64 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(64 * 1024);
        file.seek(SeekFrom::Start(start))?;
        let mut tail: VecDeque<String> = VecDeque::with_capacity(lines + 1);
        for line in BufReader::new(file).split(b'\n') {
            tail.push_back(String::from_utf8_lossy(&line?).into_owned());
            if tail.len() > lines {
                tail.pop_front();
            }
        }
        Ok(Vec::from(tail).join("\n"))
    };
    read().unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// Whether a process with this pid exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // state is the field after the parenthesised command name
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// The directory holding every run dir: `$TMPDIR/vmm-e2e`.
pub fn runs_root() -> PathBuf {
    std::env::temp_dir().join("vmm-e2e")
}

/// A fresh scratch directory `$TMPDIR/vmm-e2e/<pid>-<n>/` for this process.
///
/// The first call removes the run dirs of processes that no longer exist, so
/// crashed runs do not fill the disk. Directories of this process are kept
/// after it exits (for post-mortem logs) until the next run cleans them.
pub fn run_dir() -> Result<PathBuf> {
    static CLEANED: OnceLock<()> = OnceLock::new();
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let root = runs_root();
    CLEANED.get_or_init(|| remove_stale_run_dirs(&root));
    let dir = root.join(format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

fn remove_stale_run_dirs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !pid_alive(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A loopback TCP port that was free a moment ago. Ports handed out before by
/// this process are skipped; a peer that loses the race fails to bind, and the
/// starters retry with new ports.
pub fn free_port() -> Result<u16> {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    for _ in 0..64 {
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if !handed.contains(&port) {
            handed.push(port);
            return Ok(port);
        }
    }
    bail!("no free loopback port found")
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
pub fn port_open(port: u16) -> bool {
    address_open(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Whether something accepts TCP connections on `address`.
pub fn address_open(address: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok()
}

/// Whether a log says a listen address was taken (so starting again with
/// other ports may help).
pub fn log_says_address_in_use(path: &Path) -> bool {
    log_tail(path, 200).contains("address already in use")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_tied_collects_output_and_feeds_stdin() {
        let out = run_tied(
            Path::new("/bin/sh"),
            &["-c".into(), "cat; echo err >&2; exit 3".into()],
            &[],
            Some(b"hello"),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(out.stdout, "hello");
        assert_eq!(out.stderr.trim(), "err");
        assert_eq!(out.status.code(), Some(3));
        assert!(out.ok().unwrap_err().to_string().contains("err"));
    }

    #[test]
    fn run_tied_kills_on_timeout() {
        let err = run_tied(
            Path::new("sleep"),
            &["100".into()],
            &[],
            None,
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
    }

    #[test]
    fn dropping_a_managed_process_stops_it() {
        let dir = run_dir().unwrap();
        let p = ProcessBuilder::new("sleep", "sleep")
            .arg("1000")
            .log_file(dir.join("sleep.log"))
            .spawn()
            .unwrap();
        let pid = p.pid();
        assert!(pid_alive(pid));
        drop(p);
        assert!(!pid_alive(pid), "pid {pid} still alive after drop");
    }

    #[test]
    fn the_process_is_the_program_not_setpriv() {
        let dir = run_dir().unwrap();
        let mut p = ProcessBuilder::new("sleep", "sleep")
            .arg("1000")
            .log_file(dir.join("sleep.log"))
            .spawn()
            .unwrap();
        // setpriv execs the program, so the pid is the program's once exec ran.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let comm = fs::read_to_string(format!("/proc/{}/comm", p.pid())).unwrap();
            if comm.trim() == "sleep" {
                break;
            }
            assert!(Instant::now() < deadline, "comm stayed {comm}");
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = p.stop().unwrap();
        assert!(!status.success());
    }

    #[test]
    fn sigterm_stops_a_process_and_reports_how() {
        let dir = run_dir().unwrap();
        let mut p = ProcessBuilder::new("sh", "/bin/sh")
            .args(["-c", "echo started; exec sleep 1000"])
            .log_file(dir.join("sh.log"))
            .spawn()
            .unwrap();
        p.wait_ready(
            "started",
            Duration::from_secs(30),
            Duration::from_millis(10),
            || Ok(log_tail(&dir.join("sh.log"), 5).contains("started")),
        )
        .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(p.stop().unwrap().signal(), Some(15));
    }

    #[test]
    fn readiness_errors_quote_the_log() {
        let dir = run_dir().unwrap();
        let mut p = ProcessBuilder::new("failing", "/bin/sh")
            .args(["-c", "echo something went wrong >&2; exit 7"])
            .log_file(dir.join("failing.log"))
            .spawn()
            .unwrap();
        let err = p
            .wait_ready(
                "never",
                Duration::from_secs(30),
                Duration::from_millis(10),
                || Ok(false),
            )
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("something went wrong"), "{msg}");
        assert!(msg.contains("exit status: 7"), "{msg}");
    }

    #[test]
    fn readiness_timeout_quotes_the_log() {
        let dir = run_dir().unwrap();
        let mut p = ProcessBuilder::new("slow", "/bin/sh")
            .args(["-c", "echo still booting; exec sleep 1000"])
            .log_file(dir.join("slow.log"))
            .spawn()
            .unwrap();
        let err = p
            .wait_ready(
                "never",
                Duration::from_millis(300),
                Duration::from_millis(10),
                || Err(anyhow!("connection refused")),
            )
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("connection refused"), "{msg}");
        assert!(
            msg.contains("still booting") || msg.contains("slow.log"),
            "{msg}"
        );
    }

    #[test]
    fn stale_run_dirs_are_removed() {
        let root = std::env::temp_dir().join(format!("vmm-e2e-stale-test-{}", std::process::id()));
        // pid_max is at most 2^22, so this pid cannot exist.
        let stale = root.join("99999999-0");
        let live = root.join(format!("{}-0", std::process::id()));
        fs::create_dir_all(&stale).unwrap();
        fs::create_dir_all(&live).unwrap();
        remove_stale_run_dirs(&root);
        assert!(!stale.exists());
        assert!(live.exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn free_ports_differ() {
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn pid_alive_sees_this_process() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(99_999_999));
    }
}
