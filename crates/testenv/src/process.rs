//! Child processes of the control plane: spawning with a lifetime policy, stopping, identifying
//! them again later by pid and start time (so `testenv-down` never signals a recycled pid).
#![allow(unsafe_code)] // pre_exec hooks (prctl, setsid) and kill(2) need libc calls.

use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
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
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
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
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        let start_ticks = process_start_ticks(pid).unwrap_or(0);
        Ok(Self {
            name: name.to_string(),
            pid,
            start_ticks,
            log,
            child: Mutex::new(Some(child)),
        })
    }

    /// A process started by another invocation, identified by pid and start time.
    pub fn adopt(name: &str, pid: i32, start_ticks: u64, log: PathBuf) -> Self {
        Self {
            name: name.to_string(),
            pid,
            start_ticks,
            log,
            child: Mutex::new(None),
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

/// Fails with a clear message when `path` is not an executable file.
pub fn require_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        _ => bail!("{} is missing or not executable", path.display()),
    }
}
