//! The README's "Write a collector" section, followed literally: its Cargo.toml and lib.rs
//! build with `cargo build --target wasm32-wasip2` and with `cargo component build`, and both
//! components load, honour the README's grants and collect on this machine.

use edgeguard::capabilities::{Capability, HostContext};
use edgeguard::config::{Config, Limits};
use edgeguard::sandbox::LoadedPlugin;
use edgeguard::wit::edgeguard::collector::types::Event;
use edgeguard_tests::{euid, repo_root, runtime, target_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fenced code blocks of the README section "Write a collector", in order, with their language.
fn readme_blocks() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split("\n## Write a collector")
        .nth(1)
        .expect("README has a `Write a collector` section");
    let section = section.split("\n## ").next().unwrap();
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```").filter(|l| !l.is_empty()) {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            blocks.push((lang.trim().to_owned(), body.join("\n") + "\n"));
        }
    }
    blocks
}

fn block<'a>(blocks: &'a [(String, String)], lang: &str, containing: &str) -> &'a str {
    &blocks
        .iter()
        .find(|(l, b)| l == lang && b.contains(containing))
        .unwrap_or_else(|| panic!("no {lang} block with `{containing}`"))
        .1
}

/// Writes the example crate as the README tells, pointing its SDK dependency at this checkout.
fn example_crate(dir: &Path) {
    let blocks = readme_blocks();
    let manifest = block(&blocks, "toml", "[package]")
        .replace("/path/to/edgeguard", repo_root().to_str().unwrap());
    let lib = block(&blocks, "rust", "export_collector!");
    assert!(
        lib.lines().count() <= 40,
        "the README collector is {} lines; the promise is at most 40",
        lib.lines().count()
    );
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/lib.rs"), lib).unwrap();
}

fn build(dir: &Path, args: &[&str]) {
    let tools = target_dir().join("tools-root/bin");
    let path = std::env::join_paths(std::iter::once(tools).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let out = Command::new("cargo")
        .current_dir(dir)
        .args(args)
        // Shared across runs so the SDK's dependencies build once.
        .env("CARGO_TARGET_DIR", target_dir().join("sdk-example"))
        .env("PATH", path)
        .env_remove("CARGO")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn load_and_collect(component: PathBuf) {
    let blocks = readme_blocks();
    let config = Config::parse(block(&blocks, "toml", "[[plugin]]"), "README")
        .expect("the README's configuration is valid");
    let entry = &config.plugins[0];
    let grants: Vec<Capability> = entry
        .grants
        .iter()
        .map(|g| Capability::from_name(g).unwrap())
        .collect();
    let (rt, _cache) = runtime();
    let loaded = LoadedPlugin::load_file(&rt, &entry.name, &component, &grants, &[])
        .await
        .unwrap();
    assert_eq!(loaded.info.name, "user-processes");
    let mut instance = loaded
        .instantiate(HostContext::new(Path::new("/")), &Limits::default(), "{}")
        .await
        .unwrap();
    let events = instance.collect().await.unwrap().unwrap();
    let Some(Event::Custom(c)) = events.first() else {
        panic!("expected a custom event, got {events:?}")
    };
    assert_eq!(c.name, "UserProcesses");
    let me = if euid() == 0 { "root" } else { "" };
    assert!(
        c.payload_json
            .iter()
            .any(|item| item.contains(&format!("\"User\":\"{me}"))
                && item.contains("\"Processes\":")),
        "{:?}",
        c.payload_json
    );
    let event = edgeguard::events::from_plugin(events[0].clone()).expect("valid custom event");
    assert_eq!(event.family, edgeguard::events::Family::Edgeguard);

    // Without the README's grant, the same component is refused by name.
    let err = LoadedPlugin::load_file(&rt, &entry.name, &component, &[], &[])
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("edgeguard:collector/processes"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readme_collector_builds_with_cargo_build() {
    let dir = tempfile::tempdir().unwrap();
    example_crate(dir.path());
    build(
        dir.path(),
        &["build", "--release", "--target", "wasm32-wasip2"],
    );
    load_and_collect(target_dir().join("sdk-example/wasm32-wasip2/release/user_processes.wasm"))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readme_collector_builds_with_cargo_component() {
    let dir = tempfile::tempdir().unwrap();
    example_crate(dir.path());
    // cargo-component's default target is wasm32-wasip1 plus the preview1 adapter.
    build(dir.path(), &["component", "build", "--release"]);
    load_and_collect(target_dir().join("sdk-example/wasm32-wasip1/release/user_processes.wasm"))
        .await;
}
