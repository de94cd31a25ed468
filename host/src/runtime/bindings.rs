//! Host bindings of the `edgeguard:collector` WIT package.

wasmtime::component::bindgen!({
    world: "collector",
    path: "../wit",
    imports: {
        // Reads /proc on the blocking pool; see capabilities::processes.
        "edgeguard:collector/processes.snapshot": async,
        // Connects to the kernel on first use.
        "edgeguard:collector/processes.events": async,
        "edgeguard:collector/sockets.snapshot": async,
        "edgeguard:collector/sockets.closed": async,
        "edgeguard:collector/logins.stat": async,
        "edgeguard:collector/logins.read-utmp": async,
        "edgeguard:collector/logins.read-lines": async,
        // The Docker daemon's API.
        "edgeguard:collector/containers.daemon": async,
        "edgeguard:collector/containers.inventory": async,
        "edgeguard:collector/containers.events": async,
    },
    exports: { default: async },
});

/// The WIT package version this host implements; plugins built against the same major
/// (for 0.x: the same minor) load.
pub const WIT_VERSION: &str = "0.1.2";
pub const WIT_PACKAGE: &str = "edgeguard:collector";
