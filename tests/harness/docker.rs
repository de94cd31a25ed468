//! A real Docker daemon for the tests: Debian's `dockerd` on a private socket, data root and
//! exec root, without touching the host's iptables or bridge, and a busybox image made with
//! `docker import` from the static busybox (no registry is reachable). `cargo xtask test`
//! installs docker.io and busybox-static when they are missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The image every test container runs.
pub const BUSYBOX: &str = "edgeguard-test/busybox:1";

pub struct Dockerd {
    dir: tempfile::TempDir,
    command: Command,
    child: Child,
    pub socket: PathBuf,
    /// Where the daemon also serves its API on TCP, when asked to.
    pub tcp: Option<String>,
}

impl Dockerd {
    /// Starts a daemon and imports [`BUSYBOX`] (also tagged `latest`). With `tcp`, the daemon
    /// also listens on a loopback port without TLS, as a carelessly exposed daemon does.
    pub fn start(tcp: bool) -> Dockerd {
        let dockerd = ["/usr/sbin/dockerd", "/usr/bin/dockerd"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("dockerd is missing: `cargo xtask test` installs Debian's docker.io");
        // A short path: the daemon's Unix sockets (containerd's among them) must fit in 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("eg-dockerd")
            .tempdir_in("/tmp")
            .unwrap();
        let socket = dir.path().join("docker.sock");
        let tcp = tcp.then(|| {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            format!("127.0.0.1:{port}")
        });
        let mut command = Command::new(dockerd);
        command
            .arg(format!("--host=unix://{}", socket.display()))
            .arg(format!("--data-root={}", dir.path().join("root").display()))
            .arg(format!("--exec-root={}", dir.path().join("exec").display()))
            .arg(format!(
                "--pidfile={}",
                dir.path().join("docker.pid").display()
            ))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("dockerd.log")).unwrap());
        if let Some(address) = &tcp {
            command.arg(format!("--host=tcp://{address}"));
        }
        let child = command.spawn().expect("cannot start dockerd");
        let daemon = Dockerd {
            dir,
            command,
            child,
            socket,
            tcp,
        };
        daemon.wait_ready();
        daemon.import_busybox();
        daemon
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(self.socket.exists() && self.try_docker(&["version"]).status.success()) {
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60 s; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the daemon (its containers stay, as on a host's restart of the service) and
    /// starts it again on the same socket and data.
    pub fn restart(&mut self) {
        self.stop();
        self.command.stderr(
            std::fs::OpenOptions::new()
                .append(true)
                .open(self.dir.path().join("dockerd.log"))
                .unwrap(),
        );
        self.child = self.command.spawn().expect("cannot restart dockerd");
        self.wait_ready();
    }

    fn stop(&mut self) {
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Runs the docker CLI against this daemon.
    pub fn try_docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
            .expect("the docker CLI is missing")
    }

    /// Runs the docker CLI against this daemon and returns its output; panics when it fails.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = self.try_docker(args);
        assert!(
            out.status.success(),
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn import_busybox(&self) {
        let rootfs = self.dir.path().join("busybox-rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "/bin/busybox is missing: `cargo xtask test` installs Debian's busybox-static"
        );
        std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "true", "false", "id", "cat"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Command::new("docker")
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .args(["import", "-", BUSYBOX])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(tar.wait().unwrap().success(), "tar of the busybox root");
        assert!(
            out.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.docker(&["tag", BUSYBOX, "edgeguard-test/busybox:latest"]);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first, so that the daemon leaves no mount behind; then the daemon itself.
        let ids = self.try_docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.try_docker(&["rm", "-f", id]);
        }
        self.stop();
    }
}
