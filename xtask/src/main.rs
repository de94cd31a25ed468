//! `cargo xtask <command>`: the developer entry points. Each does its own set-up on a fresh
//! Debian machine with rustup (wasm target, Debian packages, cargo tools), then its job.
//!
//!   cargo xtask run [ARGS]      build everything and run `edgeguard run [ARGS]` locally
//!                               (or `edgeguard ARGS` when ARGS starts with a subcommand)
//!   cargo xtask test            build everything and run the whole test suite
//!   cargo xtask bench           run the benchmarks
//!   cargo xtask envelope [MIN]  measure what ships: sizes, start to first message, RSS and
//!                               CPU over MIN minutes (10) of `edgeguard run`
//!   cargo xtask layers          check that host/src's modules import only downward
//!   cargo xtask plugins         build the built-in plugins only
//!   cargo xtask image [TAG]     build the IoT Edge module image (FROM scratch: the static
//!                               musl binary and the plugins); without a reachable Docker
//!                               engine, only its build context
//!
//! Build output goes to CARGO_TARGET_DIR when set, else `target/`. Plugins land in
//! `<target>/release/plugins/`, beside the `edgeguard` binary, where it looks by default.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

mod envelope;
mod layers;

/// The built-in plugins: crate directory under plugins/ → installed file name.
const BUILTIN_PLUGINS: &[&str] = &[
    "process",
    "network",
    "system",
    "login",
    "container",
    "manifest",
    "login-alerts",
    "process-alerts",
    "network-alerts",
    "container-alerts",
    "sigma",
];
/// Built-in plugins whose rules have unit tests that run natively (`crate-type` has `rlib`).
const NATIVE_TESTED: &[&str] = &[
    "login-alerts",
    "process-alerts",
    "network-alerts",
    "container-alerts",
    "sigma",
];
/// Plugins only the test suite builds (for wasm32-wasip2, never natively).
const TEST_PLUGINS: &[&str] = &["edgeguard-fault-plugin", "edgeguard-compat-plugin"];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => ("help", &[][..]),
    };
    match command {
        "run" => {
            setup_toolchain()?;
            build_all()?;
            let exe = target_dir().join("release/edgeguard");
            let mut cmd = Command::new(exe);
            // `cargo xtask run --once` means `edgeguard run --once`; `cargo xtask run plugin …` passes through.
            if rest.first().is_none_or(|a| a.starts_with('-')) {
                cmd.arg("run");
            }
            run(cmd.args(rest))
        }
        "test" => {
            setup_toolchain()?;
            static_checks()?;
            setup_test_tools()?;
            build_plugins()?;
            // The binary the tests run, built with the tests: one resolution of the workspace's
            // features, so the dependencies compile once for both (`-p edgeguard` alone
            // resolves them otherwise, and the test build would compile them all again).
            step("building edgeguard and its tests");
            run(cargo()
                .args(["build", "--release", "--bins", "--tests"])
                .args(test_packages()))?;
            // The image test builds the module image from this context under its own dockerd.
            stage_image()?;
            step("running the test suite");
            run(cargo()
                .args(["test", "--release"])
                .args(test_packages())
                .args(rest))
        }
        "bench" => {
            setup_toolchain()?;
            build_all()?;
            build_wasm(&["edgeguard-fault-plugin"])?;
            step("running the benchmarks");
            run(cargo().args(["bench", "-p", "edgeguard"]).args(rest))?;
            run(cargo().args(["bench", "-p", "edgeguard-tests", "--bench", "hot_swap"]))?;
            // The process sources it measures edgeguard against.
            install_packages(&["forkstat"])?;
            install_unstarted(&["auditd"])?;
            run(cargo().args(["bench", "-p", "edgeguard-tests", "--bench", "kernel_events"]))?;
            // Both binaries users run: the release build and the image's static one.
            stage_image()?;
            run(cargo().args(["bench", "-p", "edgeguard-tests", "--bench", "flood"]))?;
            run(cargo().args(["bench", "-p", "edgeguard-tests", "--bench", "startup"]))?;
            run(cargo().args(["bench", "-p", "edgeguard-tests", "--bench", "analysis"]))?;
            // The Edge Hub bench runs the suite's test bed: mosquitto and the workload simulator.
            install_packages(&["mosquitto"])?;
            run(cargo().args(["bench", "-p", "edgeguard-tests", "--bench", "edge_hub"]))
        }
        "layers" => {
            layers::check(&repo_root())?;
            eprintln!("host/src: every import points down");
            Ok(())
        }
        "plugins" => {
            setup_toolchain()?;
            build_plugins()
        }
        "envelope" => {
            // What ships (the image's static binary and plugins), and beside it what
            // `cargo xtask run` starts.
            setup_toolchain()?;
            build_all()?;
            let context = stage_image()?;
            let minutes = match rest.first() {
                Some(m) => m
                    .parse()
                    .with_context(|| format!("`{m}` is not a number of minutes"))?,
                None => 10.0,
            };
            let release = target_dir().join("release");
            envelope::measure(
                (&release.join("edgeguard"), &release.join("plugins")),
                &context,
                minutes,
            )
        }
        "image" => {
            setup_toolchain()?;
            let context = stage_image()?;
            let tag = rest
                .first()
                .cloned()
                .unwrap_or_else(|| format!("edgeguard:{}", env!("CARGO_PKG_VERSION")));
            if !succeeds(Command::new("docker").args([
                "version",
                "--format",
                "{{.Server.Version}}",
            ])) {
                eprintln!(
                    "no Docker engine reachable: the build context is {}; build it with\n  docker build -t {tag} {}",
                    context.display(),
                    context.display()
                );
                return Ok(());
            }
            step(&format!("docker build -t {tag}"));
            run(Command::new("docker")
                .arg("build")
                .arg("-t")
                .arg(&tag)
                .arg(&context))
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <run [ARGS…] | test | bench | envelope [MINUTES] | layers | plugins | image [TAG]>"
            );
            if command == "help" {
                Ok(())
            } else {
                bail!("unknown command `{command}`")
            }
        }
    }
}

/// What the test command checks before the suite: the code is formatted, the host's module
/// graph points down, and clippy (with the workspace's lints) has nothing to say.
fn static_checks() -> Result<()> {
    add_components(&["rustfmt", "clippy"])?;
    step("cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--check"]))?;
    step("checking the host's layers");
    layers::check(&repo_root())?;
    // In the release profile: its build scripts and proc macros are the ones the build reuses.
    step("cargo clippy --release --workspace --all-targets -- -D warnings");
    run(cargo().args([
        "clippy",
        "--release",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

/// Adds the rustup components missing from the toolchain (a minimal profile has neither).
fn add_components(components: &[&str]) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
        .context("rustup is required")?;
    let installed = String::from_utf8_lossy(&installed.stdout).into_owned();
    for component in components {
        if !installed
            .lines()
            .any(|l| l.starts_with(&format!("{component}-")) || l == *component)
        {
            step(&format!("adding the {component} component"));
            run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    Ok(())
}

/// The workspace less what only builds for WebAssembly (and the SDK, a plugin-side crate).
fn test_packages() -> Vec<String> {
    let mut args = vec!["--workspace".to_string()];
    let excluded = BUILTIN_PLUGINS
        .iter()
        .filter(|p| !NATIVE_TESTED.contains(p))
        .map(|p| format!("edgeguard-plugin-{p}"))
        .chain(TEST_PLUGINS.iter().map(|p| p.to_string()))
        .chain([
            "edgeguard-sdk".to_string(),
            "edgeguard-analyzer-sdk".to_string(),
        ]);
    for crate_name in excluded {
        args.extend(["--exclude".to_string(), crate_name]);
    }
    args
}

fn repo_root() -> PathBuf {
    // Cargo says where the package is when it runs it; the path compiled in is where it was
    // built, which a build directory shared by two clones (see `target_dir`) may not be.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .parent()
        .expect("xtask lives in the repository")
        .to_owned()
}

/// Where builds go: CARGO_TARGET_DIR if set; else, for root, a directory outside the clone that
/// later clones reuse (wasmtime takes minutes to build cold); else `target/`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let shared = Path::new(SHARED_TARGET_DIR);
    if std::fs::create_dir_all(shared).is_ok() {
        shared.to_owned()
    } else {
        repo_root().join("target")
    }
}

const SHARED_TARGET_DIR: &str = "/var/cache/edgeguard-build/target";

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(repo_root())
        .env("CARGO_TARGET_DIR", target_dir());
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![tools_bin()];
    paths.extend(std::env::split_paths(&path));
    c.env("PATH", std::env::join_paths(paths).expect("PATH entries"));
    c
}

fn step(what: &str) {
    eprintln!("==> {what}");
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The wasm32-wasip2 target for plugins.
fn setup_toolchain() -> Result<()> {
    add_target("wasm32-wasip2")
}

fn add_target(target: &str) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is required")?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == target)
    {
        step(&format!("adding the {target} target"));
        run(Command::new("rustup").args(["target", "add", target]))?;
    }
    Ok(())
}

/// Tools the test suite drives: cargo-component and its default target (plugin authors'
/// second build path).
fn setup_test_tools() -> Result<()> {
    // The real servers the tests start: a Docker daemon (with a busybox image made from the
    // static busybox, since no registry is reachable), mosquitto (the Edge Hub test bed) and
    // auditd (an operator's audit daemon beside edgeguard's audit source).
    install_packages(&["docker.io", "busybox-static", "mosquitto"])?;
    install_unstarted(&["auditd"])?;
    add_target("wasm32-wasip1")?;
    if !succeeds(cargo().args(["component", "--version"])) {
        step("installing cargo-component (once; cached in the tools directory)");
        run(cargo()
            .args(["install", "--locked", "--root"])
            .arg(tools_root())
            .arg("cargo-component")
            // Unoptimised: it builds two small crates in a test, and compiles in half the time.
            .arg("--debug")
            .env("CARGO_TARGET_DIR", target_dir().join("tools")))?;
    }
    Ok(())
}

/// Installs the Debian packages of `packages` that are not installed yet.
fn install_packages(packages: &[&str]) -> Result<()> {
    let installed = |p: &&str| {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", p])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).ends_with("install ok installed"))
    };
    let missing: Vec<&str> = packages.iter().filter(|p| !installed(p)).copied().collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    // A fresh machine may have no package lists yet, or stale ones.
    if !install() {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        if !install() {
            bail!(
                "cannot install {} with apt-get (the test suite needs them; run as root on Debian)",
                missing.join(" ")
            );
        }
    }
    Ok(())
}

/// Installs packages whose daemons the tests start themselves: Debian starts a service it
/// installs unless `policy-rc.d` says no (as container images do), and a system auditd would
/// hold the audit daemon's place the tests give out.
fn install_unstarted(packages: &[&str]) -> Result<()> {
    let policy = Path::new("/usr/sbin/policy-rc.d");
    if policy.exists() {
        return install_packages(packages);
    }
    std::fs::write(
        policy,
        "#!/bin/sh\n# edgeguard's test setup: install without starting\nexit 101\n",
    )
    .context("writing /usr/sbin/policy-rc.d")?;
    std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let installed = install_packages(packages);
    std::fs::remove_file(policy).context("removing /usr/sbin/policy-rc.d")?;
    installed
}

/// cargo-component is installed beside the build output, so a reused target directory keeps it.
fn tools_root() -> PathBuf {
    target_dir().join("tools-root")
}

pub fn tools_bin() -> PathBuf {
    tools_root().join("bin")
}

/// Plugins build in their own target directory, which the test harness shares: a test that
/// builds a plugin never waits on the lock of the directory `cargo test` itself holds.
fn wasm_target_dir() -> PathBuf {
    target_dir().join("wasm")
}

fn build_all() -> Result<()> {
    build_plugins()?;
    step("building edgeguard");
    run(cargo().args(["build", "--release", "-p", "edgeguard"]))
}

fn build_wasm(packages: &[&str]) -> Result<()> {
    let mut cmd = cargo();
    cmd.env("CARGO_TARGET_DIR", wasm_target_dir());
    cmd.args(["build", "--profile", "plugin", "--target", "wasm32-wasip2"]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    run(&mut cmd)
}

/// The module image's build context: `deploy/Dockerfile`, the static binary, the plugins.
/// Returns its directory (`<target>/image`).
fn stage_image() -> Result<PathBuf> {
    const MUSL: &str = "x86_64-unknown-linux-musl";
    add_target(MUSL)?;
    // ring's C and assembly parts, for musl.
    install_packages(&["musl-tools"])?;
    build_plugins()?;
    step("building the static edgeguard binary (musl, the `dist` profile: small and stripped)");
    run(cargo().args([
        "build",
        "--profile",
        "dist",
        "--target",
        MUSL,
        "-p",
        "edgeguard",
    ]))?;
    let context = target_dir().join("image");
    if context.exists() {
        std::fs::remove_dir_all(&context)?;
    }
    std::fs::create_dir_all(context.join("plugins"))?;
    std::fs::copy(
        repo_root().join("deploy/Dockerfile"),
        context.join("Dockerfile"),
    )?;
    let binary = target_dir().join(MUSL).join("dist/edgeguard");
    std::fs::copy(&binary, context.join("edgeguard"))
        .with_context(|| format!("copying {}", binary.display()))?;
    let mut size = std::fs::metadata(&binary)?.len();
    for p in BUILTIN_PLUGINS {
        let file = format!("{p}.wasm");
        std::fs::copy(
            target_dir().join("release/plugins").join(&file),
            context.join("plugins").join(&file),
        )?;
        size += std::fs::metadata(context.join("plugins").join(&file))?.len();
    }
    step(&format!(
        "image context ready at {} ({:.1} MB of content)",
        context.display(),
        size as f64 / 1e6
    ));
    Ok(context)
}

fn build_plugins() -> Result<()> {
    step("building the built-in plugins (wasm32-wasip2)");
    let packages: Vec<String> = BUILTIN_PLUGINS
        .iter()
        .map(|p| format!("edgeguard-plugin-{p}"))
        .collect();
    build_wasm(&packages.iter().map(String::as_str).collect::<Vec<_>>())?;
    let dest = target_dir().join("release/plugins");
    std::fs::create_dir_all(&dest)?;
    for p in BUILTIN_PLUGINS {
        // Cargo names the artifact after the crate, dashes made underscores.
        let built = wasm_target_dir().join(format!(
            "wasm32-wasip2/plugin/edgeguard_plugin_{}.wasm",
            p.replace('-', "_")
        ));
        std::fs::copy(&built, dest.join(format!("{p}.wasm")))
            .with_context(|| format!("copying {}", built.display()))?;
    }
    Ok(())
}
