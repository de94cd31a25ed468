//! Judgement of one container's security-relevant settings, whether a deployment asks for them
//! (a module's createOptions, which is Docker's create request) or the daemon reports them
//! (`docker inspect`). Both use Docker's field names, so an issue's field (`HostConfig.Privileged`)
//! reads the same in a manifest and in an inspection.

use crate::Severity;
use serde_json::Value;

/// Capabilities that hand a container most of the host.
const DANGEROUS_CAPS: [&str; 10] = [
    "ALL",
    "SYS_ADMIN",
    "SYS_MODULE",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "NET_ADMIN",
    "DAC_READ_SEARCH",
    "SYS_BOOT",
    "MAC_ADMIN",
    "BPF",
];

/// Host paths a container should not see: the severity of binding the path itself, and of a
/// path below it (None: nothing to say of those). The most specific entry that holds a bind's
/// source judges it: all of `/dev` is every device, one node below it is one device.
const SENSITIVE_PATHS: [(&str, Severity, Option<Severity>); 22] = [
    ("/", Severity::High, None),
    ("/etc", Severity::High, Some(Severity::Medium)),
    ("/etc/shadow", Severity::High, None),
    ("/etc/gshadow", Severity::High, None),
    ("/etc/sudoers", Severity::High, None),
    ("/etc/sudoers.d", Severity::High, Some(Severity::High)),
    ("/etc/ssh", Severity::High, Some(Severity::High)),
    ("/etc/aziot", Severity::High, Some(Severity::High)),
    ("/etc/iotedge", Severity::High, Some(Severity::High)),
    ("/root", Severity::High, Some(Severity::High)),
    ("/proc", Severity::High, Some(Severity::Medium)),
    ("/sys", Severity::High, Some(Severity::Low)),
    ("/dev", Severity::High, Some(Severity::Low)),
    ("/boot", Severity::High, Some(Severity::Medium)),
    ("/var/lib", Severity::High, Some(Severity::Medium)),
    ("/var/lib/docker", Severity::High, Some(Severity::High)),
    ("/var/lib/aziot", Severity::High, Some(Severity::High)),
    ("/var/lib/iotedge", Severity::High, Some(Severity::High)),
    ("/run", Severity::High, None),
    ("/var/run", Severity::High, None),
    ("/run/iotedge", Severity::High, Some(Severity::High)),
    ("/var/run/iotedge", Severity::High, Some(Severity::High)),
];

/// Host files a container may well read: the clock's zone. Bound read-only, nothing to say.
const HARMLESS_READ_ONLY: [&str; 2] = ["/etc/localtime", "/etc/timezone"];

/// How bad it is to bind the host path `source`, and what to say: None when nothing.
pub fn judge_bind(source: &str, read_only: bool) -> Option<(Severity, String)> {
    let normal = if source.len() > 1 {
        source.trim_end_matches('/')
    } else {
        source
    };
    let how = if read_only { " (read-only)" } else { "" };
    // Wherever it lives (rootless daemons, custom hosts), a daemon's socket is root.
    let daemon = match normal {
        n if n.ends_with("/docker.sock") => Some("the Docker daemon's"),
        n if n.ends_with("/containerd.sock") => Some("containerd's"),
        _ => None,
    };
    if let Some(daemon) = daemon {
        return Some((
            Severity::High,
            format!(
                "binds {daemon} socket {normal}{how}: control of every container, and root on the host"
            ),
        ));
    }
    if read_only && HARMLESS_READ_ONLY.contains(&normal) {
        return None;
    }
    let below = |p: &str| {
        p == "/"
            || normal
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let (path, at, under) = SENSITIVE_PATHS
        .iter()
        .filter(|(p, _, _)| *p == normal || below(p))
        .max_by_key(|(p, _, _)| p.len())?;
    if *path == normal {
        return Some((*at, format!("binds the host's {path}{how}")));
    }
    under.map(|severity| {
        (
            severity,
            format!("binds {normal}{how}, inside the host's {path}"),
        )
    })
}

/// A container's settings that matter to its isolation.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub network_mode: String,
    pub pid_mode: String,
    pub ipc_mode: String,
    pub binds: Vec<Bind>,
    /// Host device paths.
    pub devices: Vec<String>,
    pub security_opt: Vec<String>,
    /// None when the settings say nothing of logging (a createOptions without LogConfig).
    pub log: Option<Log>,
}

/// A host path seen by the container, and the field that puts it there.
#[derive(Clone, Debug)]
pub struct Bind {
    pub source: String,
    pub read_only: bool,
    pub field: &'static str,
}

#[derive(Clone, Debug)]
pub struct Log {
    /// Empty means the daemon's default, `json-file` unless configured otherwise.
    pub driver: String,
    pub options: Vec<(String, String)>,
}

/// A finding about one container, with its field relative to the container's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    /// A stable identifier of the kind of issue, e.g. `privileged`.
    pub code: &'static str,
    pub field: String,
    pub message: String,
    pub remediation: &'static str,
    /// The ASC recommendation type this corresponds to, if any.
    pub recommendation: Option<&'static str>,
}

fn issue(
    severity: Severity,
    code: &'static str,
    field: impl Into<String>,
    message: impl Into<String>,
    remediation: &'static str,
    recommendation: Option<&'static str>,
) -> Issue {
    Issue {
        severity,
        code,
        field: field.into(),
        message: message.into(),
        remediation,
        recommendation,
    }
}

impl Settings {
    /// The settings a Docker create request (a module's createOptions) asks for.
    pub fn from_create_options(options: &Value) -> Settings {
        let host = options.get("HostConfig");
        let get = |key: &str| host.and_then(|h| h.get(key));
        let string = |key: &str| {
            get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let strings = |key: &str| {
            get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let binds = strings("Binds").into_iter().map(|b| {
            let mut parts = b.split(':');
            let source = parts.next().unwrap_or_default().to_owned();
            let read_only = parts
                .nth(1)
                .is_some_and(|options| options.split(',').any(|o| o == "ro"));
            Bind {
                source,
                read_only,
                field: "HostConfig.Binds",
            }
        });
        let mounts = get("Mounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|m| {
                m.get("Type")
                    .and_then(Value::as_str)
                    .is_none_or(|t| t == "bind")
            })
            .filter_map(|m| {
                Some(Bind {
                    source: m.get("Source")?.as_str()?.to_owned(),
                    read_only: m.get("ReadOnly") == Some(&Value::Bool(true)),
                    field: "HostConfig.Mounts",
                })
            });
        let log = get("LogConfig").map(|c| Log {
            driver: c
                .get("Type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            options: c
                .get("Config")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect(),
        });
        Settings {
            privileged: get("Privileged") == Some(&Value::Bool(true)),
            cap_add: strings("CapAdd"),
            network_mode: string("NetworkMode"),
            pid_mode: string("PidMode"),
            ipc_mode: string("IpcMode"),
            binds: binds.chain(mounts).collect(),
            devices: get("Devices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|d| d.get("PathOnHost")?.as_str().map(str::to_owned))
                .collect(),
            security_opt: strings("SecurityOpt"),
            log,
        }
    }
}

/// Everything wrong with `settings`.
pub fn check(settings: &Settings) -> Vec<Issue> {
    let mut out = Vec::new();
    if settings.privileged {
        out.push(issue(Severity::High, "privileged", "HostConfig.Privileged", "runs privileged: every device and capability of the host",
            "drop Privileged; grant only the capabilities and devices the module needs (CapAdd, Devices)", Some("IoT_PrivilegedDockerOptions")));
    }
    for cap in &settings.cap_add {
        let bare = cap.trim_start_matches("CAP_").to_ascii_uppercase();
        if DANGEROUS_CAPS.contains(&bare.as_str()) {
            out.push(issue(
                Severity::High,
                "dangerous-capability",
                "HostConfig.CapAdd",
                format!("adds capability {cap}, which gives the container control over the host"),
                "remove the capability, or replace it by a narrower one",
                Some("IoT_PrivilegedDockerOptions"),
            ));
        }
    }
    for (mode, key, code, what) in [
        (
            &settings.network_mode,
            "NetworkMode",
            "host-network",
            "the host's network namespace",
        ),
        (
            &settings.pid_mode,
            "PidMode",
            "host-pid",
            "the host's process namespace",
        ),
        (
            &settings.ipc_mode,
            "IpcMode",
            "host-ipc",
            "the host's IPC namespace",
        ),
    ] {
        if mode == "host" {
            let severity = if key == "IpcMode" {
                Severity::Medium
            } else {
                Severity::High
            };
            out.push(issue(
                severity,
                code,
                format!("HostConfig.{key}"),
                format!("shares {what}"),
                "use the default (a private namespace) unless the module truly needs the host's",
                (key == "NetworkMode").then_some("IoT_PrivilegedDockerOptions"),
            ));
        }
    }
    for bind in &settings.binds {
        if let Some((severity, message)) = judge_bind(&bind.source, bind.read_only) {
            out.push(issue(
                severity,
                "sensitive-bind",
                bind.field,
                message,
                "bind only the directories the module needs, read-only where it can",
                None,
            ));
        }
    }
    for device in &settings.devices {
        out.push(issue(
            Severity::Medium,
            "host-device",
            "HostConfig.Devices",
            format!("is given the host device {device}"),
            "give only the devices the module needs, with the narrowest cgroup permissions (r, rw)",
            None,
        ));
    }
    for opt in &settings.security_opt {
        let normal = opt.replace(':', "=");
        // (`label=disable`, which the engine adds to every privileged container, is left to the
        // `privileged` finding.)
        if normal == "seccomp=unconfined" || normal == "apparmor=unconfined" {
            out.push(issue(Severity::Medium, "unconfined", "HostConfig.SecurityOpt", format!("turns a kernel confinement off ({opt})"), "remove the option: the engine's default profiles allow what ordinary workloads need", None));
        }
    }
    match &settings.log {
        None => out.push(issue(Severity::Low, "no-log-rotation", "HostConfig.LogConfig", "no log options: the engine's default may keep logs without bound",
            "set LogConfig with the local driver or json-file with max-size and max-file (or set them in the Docker daemon's configuration)", Some("IoT_EdgeLoggingOptions"))),
        Some(log) => {
            let driver = if log.driver.is_empty() { "json-file" } else { log.driver.as_str() };
            let rotated = log.options.iter().any(|(k, _)| k == "max-size");
            if driver == "none" {
                out.push(issue(Severity::Low, "logging-disabled", "HostConfig.LogConfig.Type", "logging is disabled", "use the local driver, or json-file with rotation", Some("IoT_EdgeLoggingOptions")));
            } else if driver == "json-file" && !rotated {
                out.push(issue(Severity::Low, "no-log-rotation", "HostConfig.LogConfig.Config", "json-file logs without max-size grow without bound", "set max-size and max-file", Some("IoT_EdgeLoggingOptions")));
            }
        }
    }
    out
}

/// An image reference that does not say what runs: no tag, or `latest`. A digest or an image
/// id is exact.
pub fn check_image(image: &str) -> Option<Issue> {
    if image.contains("@sha256:") || image.starts_with("sha256:") {
        return None;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    let message = match last.split_once(':').map(|(_, t)| t) {
        None => format!("image `{image}` has no tag: it runs whatever `latest` is when pulled"),
        Some("latest") => {
            format!("image `{image}` uses `latest`: what runs changes without a deployment")
        }
        Some(_) => return None,
    };
    Some(issue(
        Severity::Medium,
        "unpinned-image",
        "Image",
        message,
        "pin a version tag, or better a digest (image@sha256:...), so that a deployment says exactly what runs",
        None,
    ))
}

/// What only a created container tells: the user its process runs as (its own `Config.User`,
/// else the image's) and whether its root filesystem is writable. `remapped` says that the
/// daemon maps container root to an unprivileged host user (userns-remap or rootless).
pub fn check_process(
    user: &str,
    image_user: &str,
    readonly_rootfs: bool,
    remapped: bool,
) -> Vec<Issue> {
    let mut out = Vec::new();
    let effective = if user.is_empty() { image_user } else { user };
    let name = effective.split(':').next().unwrap_or_default();
    if !remapped && (name.is_empty() || name == "0" || name == "root") {
        let field = if user.is_empty() {
            "Config.User (image default)"
        } else {
            "Config.User"
        };
        out.push(issue(Severity::Medium, "runs-as-root", field, "runs as root: a container escape lands as root on the host",
            "set a non-root USER in the image or User in the create options, or run the daemon with userns-remap", None));
    }
    if !readonly_rootfs {
        out.push(issue(
            Severity::Low,
            "writable-rootfs",
            "HostConfig.ReadonlyRootfs",
            "its root filesystem is writable: an intruder can change its binaries",
            "set ReadonlyRootfs and give writable tmpfs or volumes only where the module writes",
            None,
        ));
    }
    out
}

/// The daemon's API on TCP: remote root for whoever reaches it, unless it demands client
/// certificates.
pub fn check_daemon(tcp_listeners: &[String], tls_verify: bool) -> Option<Issue> {
    if tcp_listeners.is_empty() {
        return None;
    }
    let loopback_only = tcp_listeners
        .iter()
        .all(|l| l.starts_with("127.") || l.starts_with("[::1]"));
    let (severity, how) = match (tls_verify, loopback_only) {
        (false, false) => (
            Severity::High,
            "without client certificates: anyone who reaches it is root on this device",
        ),
        (false, true) => (
            Severity::Medium,
            "on loopback without client certificates: any local process (or a browser page) is root on this device",
        ),
        (true, _) => (Severity::Low, "with client certificates (--tlsverify)"),
    };
    Some(issue(
        severity,
        "daemon-tcp",
        "daemon.hosts",
        format!(
            "the Docker daemon listens on TCP {} {how}",
            tcp_listeners.join(", ")
        ),
        "serve the API on its Unix socket only; for remote management use SSH (DOCKER_HOST=ssh://) or --tlsverify with client certificates",
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codes(issues: &[Issue]) -> Vec<&str> {
        issues.iter().map(|i| i.code).collect()
    }

    #[test]
    fn create_options_and_inspection_read_alike() {
        let options = json!({"HostConfig": {"Privileged": true, "Binds": ["/:/host:ro"], "Devices": [{"PathOnHost": "/dev/mem"}], "SecurityOpt": ["seccomp:unconfined"], "LogConfig": {"Type": "json-file"}}});
        let issues = check(&Settings::from_create_options(&options));
        assert_eq!(
            codes(&issues),
            [
                "privileged",
                "sensitive-bind",
                "host-device",
                "unconfined",
                "no-log-rotation"
            ]
        );
        assert_eq!(issues[1].message, "binds the host's / (read-only)");
    }

    #[test]
    fn binds_are_graded_by_the_most_specific_sensitive_path() {
        let grade = |source: &str, ro: bool| judge_bind(source, ro).map(|(s, _)| s);
        assert_eq!(grade("/", false), Some(Severity::High));
        assert_eq!(grade("/dev", false), Some(Severity::High));
        assert_eq!(grade("/dev/", true), Some(Severity::High));
        assert_eq!(grade("/dev/ttyUSB0", false), Some(Severity::Low));
        assert_eq!(grade("/sys/class/gpio", false), Some(Severity::Low));
        assert_eq!(grade("/proc/sys", false), Some(Severity::Medium));
        assert_eq!(grade("/etc/shadow", true), Some(Severity::High));
        assert_eq!(grade("/etc/ssh/sshd_config", true), Some(Severity::High));
        assert_eq!(grade("/etc/mosquitto", true), Some(Severity::Medium));
        assert_eq!(grade("/etc/localtime", true), None);
        assert_eq!(grade("/etc/localtime", false), Some(Severity::Medium));
        assert_eq!(
            grade("/var/lib/docker/volumes", false),
            Some(Severity::High)
        );
        assert_eq!(grade("/var/lib/mydata", false), Some(Severity::Medium));
        assert_eq!(grade("/var/run/docker.sock", false), Some(Severity::High));
        assert_eq!(
            grade("/home/u/.docker/run/docker.sock", false),
            Some(Severity::High)
        );
        assert_eq!(grade("/run/udev", true), None);
        assert_eq!(grade("/var/run", false), Some(Severity::High));
        assert_eq!(grade("/devices", false), None);
        assert_eq!(grade("/data/app", false), None);
        assert_eq!(grade("${DATA_DIR}", false), None);
    }

    #[test]
    fn root_is_judged_on_the_effective_user() {
        assert_eq!(codes(&check_process("", "", true, false)), ["runs-as-root"]);
        assert_eq!(
            codes(&check_process("", "1000", true, false)),
            Vec::<&str>::new()
        );
        assert_eq!(
            codes(&check_process("0:0", "1000", false, false)),
            ["runs-as-root", "writable-rootfs"]
        );
        assert_eq!(
            codes(&check_process("", "", true, true)),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn a_tcp_daemon_is_worse_off_loopback_and_without_tls() {
        assert_eq!(check_daemon(&[], false), None);
        assert_eq!(
            check_daemon(&["0.0.0.0:2375".into()], false)
                .unwrap()
                .severity,
            Severity::High
        );
        assert_eq!(
            check_daemon(&["127.0.0.1:2375".into()], false)
                .unwrap()
                .severity,
            Severity::Medium
        );
        assert_eq!(
            check_daemon(&["0.0.0.0:2376".into()], true)
                .unwrap()
                .severity,
            Severity::Low
        );
    }
}
