//! `system`: the host's OS identity, memory and local accounts, all read under the host root
//! (`etc/os-release`, `proc/sys/kernel`, `proc/meminfo`, `etc/passwd`, `etc/group`), so that a
//! containerised edgeguard describes the host, not its own image.

use super::HostState;
use crate::wit::edgeguard::collector::system::{Group, Host, MemoryInfo, OsInfo, User};
use crate::wit::edgeguard::collector::types::HostError;
use std::collections::HashMap;
use std::path::Path;

impl Host for HostState {
    async fn info(&mut self) -> Result<OsInfo, HostError> {
        read_os_info(&self.host.host_root)
    }

    async fn memory(&mut self) -> Result<MemoryInfo, HostError> {
        read_memory(&self.host.host_root)
    }

    async fn users(&mut self) -> Result<Vec<User>, HostError> {
        read_users(&self.host.host_root)
    }
}

fn read(host_root: &Path, relative: &str) -> Result<String, HostError> {
    let path = host_root.join(relative);
    std::fs::read_to_string(&path).map_err(|e| super::read_error(&path, e))
}

pub fn read_os_info(host_root: &Path) -> Result<OsInfo, HostError> {
    let release = read(host_root, "etc/os-release")
        .or_else(|_| read(host_root, "usr/lib/os-release"))
        .unwrap_or_default();
    let field = |key: &str| {
        release
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .filter(|v| !v.is_empty())
    };
    let kernel = |name: &str| {
        read(host_root, &format!("proc/sys/kernel/{name}")).map(|s| s.trim().to_owned())
    };
    // The machine name is the running kernel's: the same for the host and any container on it.
    // SAFETY: uname fills the struct we pass.
    let architecture = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&raw mut u) == 0 {
            std::ffi::CStr::from_ptr(u.machine.as_ptr())
                .to_string_lossy()
                .into_owned()
        } else {
            String::new()
        }
    };
    Ok(OsInfo {
        os_name: field("NAME"),
        os_version: field("VERSION").or_else(|| field("VERSION_ID")),
        os_vendor: field("ID"),
        architecture,
        kernel_release: kernel("osrelease")?,
        host_name: read(host_root, "etc/hostname")
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .map_or_else(|| kernel("hostname"), Ok)?,
        bios_version: read(host_root, "sys/class/dmi/id/bios_version")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
        boot_device: read(host_root, "proc/1/mounts")
            .or_else(|_| read(host_root, "proc/mounts"))
            .ok()
            .and_then(|m| {
                m.lines().find_map(|l| {
                    let mut f = l.split_whitespace();
                    let (device, mount) = (f.next()?, f.next()?);
                    (mount == "/").then(|| device.to_owned())
                })
            }),
    })
}

pub fn read_memory(host_root: &Path) -> Result<MemoryInfo, HostError> {
    let text = read(host_root, "proc/meminfo")?;
    let kb = |key: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')?
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse()
                .ok()
        })
    };
    let total = kb("MemTotal").ok_or_else(|| HostError::Io("meminfo has no MemTotal".into()))?;
    Ok(MemoryInfo {
        total_kb: total,
        // MemAvailable (kernels since 3.14) is what can be used without swapping; MemFree is less.
        available_kb: kb("MemAvailable").or_else(|| kb("MemFree")).unwrap_or(0),
        swap_total_kb: kb("SwapTotal").unwrap_or(0),
        swap_free_kb: kb("SwapFree").unwrap_or(0),
    })
}

pub fn read_users(host_root: &Path) -> Result<Vec<User>, HostError> {
    let passwd = read(host_root, "etc/passwd")?;
    let group_text = read(host_root, "etc/group").unwrap_or_default();
    // gid → name, and user name → supplementary groups.
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut members: HashMap<&str, Vec<Group>> = HashMap::new();
    for line in group_text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split(':').collect();
        let (Some(name), Some(Ok(gid))) = (f.first(), f.get(2).map(|g| g.parse::<u32>())) else {
            continue;
        };
        names.insert(gid, (*name).to_owned());
        for user in f
            .get(3)
            .into_iter()
            .flat_map(|m| m.split(','))
            .filter(|u| !u.is_empty())
        {
            members.entry(user).or_default().push(Group {
                name: (*name).to_owned(),
                gid,
            });
        }
    }
    Ok(passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let (name, uid, gid) = (
                *f.first()?,
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse::<u32>().ok()?,
            );
            let mut groups = vec![Group {
                name: names.get(&gid).cloned().unwrap_or_else(|| gid.to_string()),
                gid,
            }];
            groups.extend(
                members
                    .get(name)
                    .into_iter()
                    .flatten()
                    .filter(|g| g.gid != gid)
                    .cloned(),
            );
            Some(User {
                name: name.to_owned(),
                uid,
                groups,
                home: f.get(5).unwrap_or(&"").to_string(),
                shell: f.get(6).unwrap_or(&"").to_string(),
            })
        })
        .collect())
}
