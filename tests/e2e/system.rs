//! The system collector: the real host's identity and accounts, and a prepared host root whose
//! every value is known, including supplementary group membership.

use edgeguard::capabilities::{Capability, HostContext};
use edgeguard::config::Limits;
use edgeguard::events::{Family, from_plugin};
use edgeguard::sandbox::LoadedPlugin;
use edgeguard_tests::{assert_refused, plugin, runtime};
use serde_json::Value;
use std::path::Path;

/// One collection of the system collector over `host_root`, as (name, family, payload).
async fn collect(host_root: &Path, config: &str) -> Vec<(String, Family, Vec<Value>)> {
    let (rt, _cache) = runtime();
    let loaded = LoadedPlugin::load_file(
        &rt,
        "system",
        &plugin("edgeguard-plugin-system"),
        &[Capability::System],
        &[],
    )
    .await
    .unwrap();
    let mut instance = loaded
        .instantiate(HostContext::new(host_root), &Limits::default(), config)
        .await
        .unwrap();
    let events = instance
        .collect()
        .await
        .expect("no fault")
        .expect("no plugin error");
    events
        .into_iter()
        .map(|e| from_plugin(e).unwrap())
        .map(|e| (e.name, e.family, e.payload))
        .collect()
}

fn payload<'a>(events: &'a [(String, Family, Vec<Value>)], name: &str) -> &'a [Value] {
    &events
        .iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .2
}

#[tokio::test(flavor = "multi_thread")]
async fn describes_this_host() {
    let events = collect(Path::new("/"), "{}").await;
    let info = &payload(&events, "SystemInformation")[0];
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap();
    let name = os_release
        .lines()
        .find_map(|l| l.strip_prefix("NAME="))
        .unwrap()
        .trim_matches('"');
    assert_eq!(info["OSName"], name);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(info["TotalPhysicalMemoryInKB"], total);
    assert_eq!(info["OsArchitecture"], std::env::consts::ARCH);
    let users = payload(&events, "LocalUsers");
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert_eq!(
        users.len(),
        passwd
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count()
    );
    let root = users.iter().find(|u| u["UserName"] == "root").unwrap();
    assert_eq!(
        (root["UserId"].as_str(), root["GroupIds"].as_str()),
        (Some("0"), Some("0"))
    );
    let heartbeat = events.iter().find(|(n, _, _)| n == "Heartbeat").unwrap();
    assert_eq!(
        heartbeat.1,
        Family::Edgeguard,
        "Heartbeat travels in the project's own messages"
    );
}

fn write(root: &Path, path: &str, text: &str) {
    let file = root.join(path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_everything_under_the_host_root() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write(
        r,
        "etc/os-release",
        "PRETTY_NAME=\"Yocto\"\nNAME=\"Poky (Yocto Project Reference Distro)\"\nVERSION_ID=4.0.9\nID=poky\n",
    );
    write(r, "etc/hostname", "gateway-17\n");
    write(r, "proc/sys/kernel/osrelease", "5.15.0-yocto-standard\n");
    write(
        r,
        "proc/sys/kernel/hostname",
        "ignored-when-etc-hostname-exists\n",
    );
    write(
        r,
        "proc/meminfo",
        "MemTotal:        1024000 kB\nMemFree:          100000 kB\nMemAvailable:     512000 kB\nSwapTotal:        256000 kB\nSwapFree:         128000 kB\n",
    );
    write(
        r,
        "proc/1/mounts",
        "/dev/mmcblk0p2 / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n",
    );
    write(r, "sys/class/dmi/id/bios_version", "U-Boot 2022.04\n");
    write(
        r,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nedge:x:1000:1000:Edge:/home/edge:/bin/bash\n# comment\nsvc:x:998:998::/nonexistent:/usr/sbin/nologin\n",
    );
    write(
        r,
        "etc/group",
        "root:x:0:\nedge:x:1000:\ndocker:x:999:edge,svc\nsudo:x:27:edge\nsvc:x:998:\n",
    );

    let events = collect(r, "{}").await;
    let info = &payload(&events, "SystemInformation")[0];
    assert_eq!(info["OSName"], "Poky (Yocto Project Reference Distro)");
    assert_eq!(info["OSVersion"], "4.0.9");
    assert_eq!(info["OSVendor"], "poky");
    assert_eq!(info["HostName"], "gateway-17");
    assert_eq!(info["BIOSVersion"], "U-Boot 2022.04");
    assert_eq!(info["BootDevice"], "/dev/mmcblk0p2");
    assert_eq!(info["TotalPhysicalMemoryInKB"], 1024000);
    assert_eq!(
        info["FreePhysicalMemoryInKB"], 512000,
        "available, not merely free"
    );
    assert_eq!(info["TotalVirtualMemoryInKB"], 1280000);
    assert_eq!(info["FreeVirtualMemoryInKB"], 640000);
    assert_eq!(
        info["ExtraDetails"]["KernelRelease"],
        "5.15.0-yocto-standard"
    );

    let users = payload(&events, "LocalUsers");
    assert_eq!(users.len(), 3);
    let edge = users.iter().find(|u| u["UserName"] == "edge").unwrap();
    assert_eq!(
        edge["GroupNames"], "edge;docker;sudo",
        "primary group first, then supplementary"
    );
    assert_eq!(edge["GroupIds"], "1000;999;27");
    let svc = users.iter().find(|u| u["UserName"] == "svc").unwrap();
    assert_eq!(svc["GroupNames"], "svc;docker");

    // Accounts can stay on the device.
    let events = collect(r, r#"{"users": false}"#).await;
    assert!(events.iter().all(|(n, _, _)| n != "LocalUsers"));
}

#[tokio::test]
async fn refused_without_the_system_grant() {
    assert_refused(
        "edgeguard-plugin-system",
        &[Capability::Log],
        "edgeguard:collector/system@0.1.5",
    )
    .await;
}
