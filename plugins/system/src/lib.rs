//! System collector: periodic snapshots of the host's identity and memory (SystemInformation)
//! and local accounts with their groups (LocalUsers), and a Heartbeat that tells the back end the
//! agent is alive even when nothing happens.
//!
//! Snapshots are periodic by nature, so each collection sends them whole; `users` can be
//! turned off for hosts whose account database is not to leave the device.

use edgeguard_sdk::prelude::*;
use edgeguard_sdk::{LocalUser, SystemInformation};
use edgeguard_sdk::{config_bool, config_keys};

struct SystemCollector {
    users: bool,
}

impl Collector for SystemCollector {
    fn describe() -> PluginInfo {
        PluginInfo::new("system", env!("CARGO_PKG_VERSION"))
            .emits(["SystemInformation", "LocalUsers", "Heartbeat"])
            .needs(["system"])
            .group(PriorityGroup::Low)
            .about("system information, local users and a heartbeat")
    }

    fn new(config: Config) -> Result<Self, CollectError> {
        config_keys(&config, &["users"])?;
        Ok(SystemCollector {
            users: config_bool(&config, "users", true)?,
        })
    }

    fn collect(&mut self, _max_events: u32) -> Result<Vec<Event>, CollectError> {
        let os = system::info()?;
        let memory = system::memory()?;
        let mut events = vec![Event::SystemInformation(SystemInformation {
            os_name: os.os_name,
            os_version: os.os_version,
            os_vendor: os.os_vendor,
            os_architecture: Some(os.architecture),
            host_name: Some(os.host_name),
            bios_version: os.bios_version,
            boot_device: os.boot_device,
            total_physical_memory_kb: Some(memory.total_kb),
            free_physical_memory_kb: Some(memory.available_kb),
            // Virtual memory as the kernel can back it: RAM plus swap.
            total_virtual_memory_kb: Some(memory.total_kb + memory.swap_total_kb),
            free_virtual_memory_kb: Some(memory.available_kb + memory.swap_free_kb),
            extra: vec![("KernelRelease".to_owned(), os.kernel_release)],
        })];
        if self.users {
            let users = system::users()?
                .into_iter()
                .map(|u| LocalUser {
                    user_name: u.name,
                    user_id: u.uid,
                    group_names: u.groups.iter().map(|g| g.name.clone()).collect(),
                    group_ids: u.groups.iter().map(|g| g.gid).collect(),
                    extra: vec![("Home".to_owned(), u.home), ("Shell".to_owned(), u.shell)],
                })
                .collect();
            events.push(Event::LocalUsers(users));
        }
        events.push(Event::Heartbeat);
        Ok(events)
    }
}

edgeguard_sdk::export_collector!(SystemCollector);
