//! `clock`: wall-clock and monotonic time.

use super::HostState;
use crate::wit::edgeguard::collector::clock::Host;

impl Host for HostState {
    async fn now_unix_nanos(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }

    async fn monotonic_nanos(&mut self) -> u64 {
        self.host.started.elapsed().as_nanos() as u64
    }
}
