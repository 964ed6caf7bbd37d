//! Child processes of the control plane: spawning with a lifetime policy, stopping, identifying
//! them again later by pid and start time (so `testenv-down` never signals a recycled pid).
#![allow(unsafe_code)] // pre_exec hooks (prctl, setsid) and kill(2) need libc calls.

use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a spawned process lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed by the kernel when the spawning *thread* exits (PR_SET_PDEATHSIG), so a test binary
    /// that crashes or is killed leaves nothing behind. Spawn from a thread that lives as long as
    /// the process.
    Attached,
    /// A new session, detached from the caller; stopped explicitly (`ccplant-testenv down`).
    Detached,
}

#[derive(Debug)]
pub struct ManagedProcess {
    pub name: String,
    pub pid: i32,
    /// Kernel start time of the process (field 22 of /proc/PID/stat), to recognise it later.
    pub start_ticks: u64,
    pub log: PathBuf,
    child: Mutex<Option<Child>>,
    /// How it was started, for [`ManagedProcess::respawn`]; `None` for an adopted process.
    command: Option<(PathBuf, Vec<String>, Lifetime)>,
}

/// Makes the child started by `cmd` receive SIGKILL when the spawning *thread* exits
/// (`PR_SET_PDEATHSIG`), so no child outlives a crashed or killed parent.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the hook runs between fork and exec and only makes async-signal-safe calls.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

/// Sends `signal` (e.g. `libc::SIGTERM`) to `pid`; a process already gone is not an error.
pub fn send_signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Asks the kernel for a free loopback port.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Start time of `pid` in clock ticks since boot, if the process exists.
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after the last ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn is_zombie_or_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].chars().next())
            .is_none_or(|state| state == 'Z' || state == 'X'),
        Err(_) => true,
    }
}

impl ManagedProcess {
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
        lifetime: Lifetime,
    ) -> Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = launch(name, program, args, out, lifetime)?;
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        Ok(Self {
            name: name.to_string(),
            pid,
            start_ticks: process_start_ticks(pid).unwrap_or(0),
            log,
            child: Mutex::new(Some(child)),
            command: Some((program.to_path_buf(), args.to_vec(), lifetime)),
        })
    }

    /// Starts the process again with the same program, arguments and lifetime, after it exited
    /// or was stopped (a process still running is SIGKILLed first); its log continues. With
    /// [`Lifetime::Attached`], call it from a thread that lives as long as the process should.
    pub fn respawn(&mut self) -> Result<()> {
        let Some((program, args, lifetime)) = self.command.clone() else {
            bail!(
                "{} was adopted, not spawned here: it cannot be respawned",
                self.name
            );
        };
        self.wait_until(Instant::now());
        let out = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = launch(&self.name, &program, &args, out, lifetime)?;
        self.pid = i32::try_from(child.id()).context("pid out of range")?;
        self.start_ticks = process_start_ticks(self.pid).unwrap_or(0);
        *self.child.get_mut().unwrap_or_else(PoisonError::into_inner) = Some(child);
        Ok(())
    }

    /// A process started by another invocation, identified by pid and start time.
    pub fn adopt(name: &str, pid: i32, start_ticks: u64, log: PathBuf) -> Self {
        Self {
            name: name.to_string(),
            pid,
            start_ticks,
            log,
            child: Mutex::new(None),
            command: None,
        }
    }

    /// True when `pid` still denotes the process that was started (not a recycled pid).
    pub fn is_same_process_alive(&self) -> bool {
        process_start_ticks(self.pid) == Some(self.start_ticks) && !is_zombie_or_gone(self.pid)
    }

    /// The exit status if the process has exited (only known for processes this one spawned).
    pub fn exited(&self) -> Option<ExitStatus> {
        let mut guard = self.child.lock().ok()?;
        guard.as_mut()?.try_wait().ok().flatten()
    }

    fn signal(&self, sig: i32) {
        if self.is_same_process_alive() {
            send_signal(self.pid, sig);
        }
    }

    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits for the process to exit until `deadline`, then kills it and reaps it.
    pub fn wait_until(&mut self, deadline: Instant) {
        loop {
            let gone = match self.child.get_mut() {
                Ok(Some(child)) => child.try_wait().map(|s| s.is_some()).unwrap_or(true),
                _ => !self.is_same_process_alive(),
            };
            if gone {
                return;
            }
            if Instant::now() >= deadline {
                self.signal(libc::SIGKILL);
                if let Ok(Some(child)) = self.child.get_mut() {
                    let _ = child.wait();
                    return;
                }
                let hard = Instant::now() + Duration::from_secs(5);
                while self.is_same_process_alive() && Instant::now() < hard {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `lines` lines of the process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Spawns `program` with stdout and stderr into `log`, tied to the caller as `lifetime` says.
fn launch(
    name: &str,
    program: &Path,
    args: &[String],
    log: std::fs::File,
    lifetime: Lifetime,
) -> Result<Child> {
    let err = log.try_clone()?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .env_remove("KUBECONFIG");
    match lifetime {
        Lifetime::Attached => die_with_parent(&mut cmd),
        Lifetime::Detached => unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        },
    }
    cmd.spawn()
        .with_context(|| format!("starting {name} ({})", program.display()))
}

/// Fails with a clear message when `path` is not an executable file.
pub fn require_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        _ => bail!("{} is missing or not executable", path.display()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_respawned_process_is_a_new_one_whose_log_continues() {
        let dir =
            std::env::temp_dir().join(format!("ccplant-testenv-respawn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let args = ["-c".to_string(), "echo started; exec sleep 30".to_string()];
        let mut proc = ManagedProcess::spawn(
            "sleeper",
            Path::new("/bin/sh"),
            &args,
            &dir,
            Lifetime::Attached,
        )
        .unwrap();
        let first = proc.pid;
        wait_for_lines(&proc, 1);
        proc.terminate();
        proc.wait_until(Instant::now() + Duration::from_secs(5));
        assert!(proc.exited().is_some() || !proc.is_same_process_alive());

        proc.respawn().unwrap();
        assert_ne!(proc.pid, first);
        assert!(proc.is_same_process_alive());
        assert!(proc.exited().is_none());
        wait_for_lines(&proc, 2);
        // A running process is replaced, not duplicated.
        let second = proc.pid;
        proc.respawn().unwrap();
        assert!(process_start_ticks(second).is_none() || is_zombie_or_gone(second));
        wait_for_lines(&proc, 3);
        assert_eq!(proc.log_tail(10), "started\nstarted\nstarted");
        proc.terminate();
        proc.wait_until(Instant::now() + Duration::from_secs(5));
        assert!(!proc.is_same_process_alive());
        let adopted = ManagedProcess::adopt("x", 1, 0, dir.join("x.log"));
        let mut adopted = adopted;
        assert!(adopted.respawn().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn wait_for_lines(proc: &ManagedProcess, lines: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while proc.log_tail(10).lines().count() < lines && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
