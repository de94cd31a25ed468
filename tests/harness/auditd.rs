//! A real audit daemon for the tests: Debian's `auditd` in the foreground with a private
//! configuration and log, and the `execve` rules an operator (or the ASC agents' rules file)
//! loads with `auditctl`. The kernel's audit state is one per host, so tests that change it
//! hold [`exclusive`] while they run; what a test changed is restored when its guard goes.
//! `cargo xtask test` installs auditd when it is missing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The key of the operator's rules the harness loads.
pub const RULE_KEY: &str = "operator-exec";

/// One test at a time changes the kernel's audit state; the state it found comes back after.
pub fn exclusive() -> AuditState {
    static ONE: Mutex<()> = Mutex::new(());
    let guard = ONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    AuditState {
        before: Status::now(),
        _guard: guard,
    }
}

/// Held while a test owns the audit subsystem.
pub struct AuditState {
    before: Status,
    _guard: MutexGuard<'static, ()>,
}

impl Drop for AuditState {
    fn drop(&mut self) {
        delete_operator_rules();
        let b = &self.before;
        auditctl(&["-b", &b.backlog_limit.to_string()]);
        auditctl(&["--backlog_wait_time", &b.backlog_wait_time.to_string()]);
        auditctl(&["-e", &b.enabled.to_string()]);
    }
}

/// The kernel's audit state, as `auditctl -s` prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub enabled: u32,
    /// The registered daemon; 0 when none is.
    pub pid: u32,
    pub backlog_limit: u32,
    pub backlog_wait_time: u32,
}

impl Status {
    pub fn now() -> Status {
        let text = auditctl(&["-s"]);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(name)?
                        .strip_prefix(' ')?
                        .split(' ')
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or_else(|| panic!("`auditctl -s` printed no {name}: {text}"))
        };
        Status {
            enabled: field("enabled"),
            pid: field("pid"),
            backlog_limit: field("backlog_limit"),
            backlog_wait_time: field("backlog_wait_time"),
        }
    }
}

/// The rules loaded, one per line as `auditctl -l` lists them.
pub fn rules() -> Vec<String> {
    let text = auditctl(&["-l"]);
    text.lines()
        .filter(|l| *l != "No rules")
        .map(str::to_owned)
        .collect()
}

/// Runs `auditctl`; its output. A failing call panics with what it said.
pub fn auditctl(args: &[&str]) -> String {
    let out = Command::new("auditctl")
        .args(args)
        .output()
        .expect("auditctl is missing: `cargo xtask test` installs Debian's auditd");
    assert!(
        out.status.success(),
        "auditctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The operator's `execve` rule for `arch`, as the ASC agents' audit rules have it, after
/// `-a` (add) or `-d` (delete).
fn operator_rule(op: &str, arch: &str) -> Vec<String> {
    let arch = format!("arch={arch}");
    [
        op,
        "always,exit",
        "-F",
        &arch,
        "-S",
        "execve,execveat",
        "-k",
        RULE_KEY,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Loads the operator's `execve` rules, 64- and 32-bit.
pub fn add_operator_rules() {
    for arch in ["b64", "b32"] {
        let rule = operator_rule("-a", arch);
        auditctl(&rule.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

/// Deletes the operator's rules, if still in.
pub fn delete_operator_rules() {
    for arch in ["b64", "b32"] {
        let _ = Command::new("auditctl")
            .args(operator_rule("-d", arch))
            .output();
    }
}

/// A running `auditd`, stopped when dropped.
pub struct Auditd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Attempts it took to register (systemd restarts an auditd that could not).
    pub attempts: u32,
}

impl Auditd {
    /// Starts auditd as systemd does (`-n`, restarted when it exits because it could not
    /// register, as `Restart=on-failure` does), and waits until the kernel has it as the
    /// audit daemon. It enables auditing, as it does by default.
    pub fn start() -> Auditd {
        Auditd::start_as("auditd")
    }

    /// [`Auditd::start`] with the program under another name, so that its exec record does
    /// not say what it is.
    pub fn start_as(name: &str) -> Auditd {
        let dir = tempfile::Builder::new()
            .prefix("eg-auditd")
            .tempdir_in("/tmp")
            .unwrap();
        let log = dir.path().join("audit.log");
        std::fs::create_dir(dir.path().join("plugins.d")).unwrap();
        let conf = format!(
            "local_events = yes\n\
             write_logs = yes\n\
             log_file = {}\n\
             log_group = root\n\
             log_format = RAW\n\
             flush = INCREMENTAL_ASYNC\n\
             freq = 50\n\
             max_log_file = 0\n\
             max_log_file_action = IGNORE\n\
             space_left = 2\n\
             space_left_action = IGNORE\n\
             admin_space_left = 1\n\
             admin_space_left_action = IGNORE\n\
             disk_full_action = IGNORE\n\
             disk_error_action = IGNORE\n\
             use_libwrap = no\n\
             q_depth = 4000\n\
             overflow_action = IGNORE\n\
             plugin_dir = {}\n\
             end_of_event_timeout = 2\n",
            log.display(),
            dir.path().join("plugins.d").display()
        );
        let conf_file = dir.path().join("auditd.conf");
        std::fs::write(&conf_file, conf).unwrap();
        // auditd refuses a configuration others may write.
        std::fs::set_permissions(
            &conf_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .unwrap();
        let program = ["/usr/sbin/auditd", "/sbin/auditd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("auditd is missing: `cargo xtask test` installs Debian's auditd");
        let program = if name == "auditd" {
            program
        } else {
            let copy = dir.path().join(name);
            std::fs::copy(&program, &copy).unwrap();
            copy
        };
        let mut auditd = Auditd {
            dir,
            child: None,
            attempts: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            auditd.attempts += 1;
            let mut child = Command::new(&program)
                .args(["-n", "-s", "enable", "-c"])
                .arg(auditd.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(auditd.dir.path().join("auditd.err")).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
            let pid = child.id();
            let registered = loop {
                if Status::now().pid == pid {
                    break true;
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if registered {
                auditd.child = Some(child);
                return auditd;
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                Instant::now() < deadline && auditd.attempts < 10,
                "auditd did not register as the audit daemon in {} attempts: {}",
                auditd.attempts,
                auditd.stderr()
            );
            // systemd's RestartSec.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    /// What auditd wrote to its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("auditd.err")).unwrap_or_default()
    }

    /// Stops it as systemd does (SIGTERM) and waits: its log is whole after.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        self.stop();
    }
}
