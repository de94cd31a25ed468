//! The compiled-artifact cache: a second load is a hit, a changed plugin is recompiled; with
//! each way to compile (in-process, and in a child process as `edgeguard run` does).

use edgeguard::capabilities::Capability;
use edgeguard::runtime::CacheOutcome;
use edgeguard::sandbox::LoadedPlugin;
use edgeguard_tests::{compilers, component_of, plugin, runtime, runtime_with};

const GRANTS: [Capability; 2] = [Capability::Processes, Capability::Log];

fn artifacts(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn second_load_hits_and_changed_plugin_recompiles() {
    for compiler in compilers() {
        second_load_hits_and_changed_plugin_recompiles_with(compiler).await;
    }
}

async fn second_load_hits_and_changed_plugin_recompiles_with(
    compiler: edgeguard::runtime::Compiler,
) {
    let (rt, cache) = runtime_with(compiler);
    let bytes = std::fs::read(plugin("edgeguard-plugin-process")).unwrap();

    let first = LoadedPlugin::load(&rt, "process", bytes.clone(), &GRANTS, &[])
        .await
        .unwrap();
    assert_eq!(first.cache, CacheOutcome::Miss);
    assert_eq!(artifacts(cache.path()).len(), 1);

    let second = LoadedPlugin::load(&rt, "process", bytes.clone(), &GRANTS, &[])
        .await
        .unwrap();
    assert_eq!(second.cache, CacheOutcome::Hit);
    assert_eq!(second.sha256, first.sha256);

    // A new engine (a restart) over the same directory hits too.
    let restarted = edgeguard::runtime::Runtime::new(cache.path()).unwrap();
    let third = LoadedPlugin::load(&restarted, "process", bytes.clone(), &GRANTS, &[])
        .await
        .unwrap();
    assert_eq!(third.cache, CacheOutcome::Hit);

    // Same code, one more custom section: different content, so a different artifact.
    let mut changed = bytes.clone();
    let name = b"edgeguard-test";
    let payload = b"changed";
    changed.push(0); // custom section id
    changed.push((1 + name.len() + payload.len()) as u8);
    changed.push(name.len() as u8);
    changed.extend_from_slice(name);
    changed.extend_from_slice(payload);
    let recompiled = LoadedPlugin::load(&rt, "process", changed, &GRANTS, &[])
        .await
        .unwrap();
    assert_eq!(recompiled.cache, CacheOutcome::Miss);
    assert_ne!(recompiled.sha256, first.sha256);
    assert_eq!(artifacts(cache.path()).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_artifact_is_replaced_not_trusted() {
    for compiler in compilers() {
        let (rt, cache) = runtime_with(compiler);
        a_corrupt_artifact_is_replaced_not_trusted_in(&rt, cache.path()).await;
    }
}

async fn a_corrupt_artifact_is_replaced_not_trusted_in(
    rt: &edgeguard::runtime::Runtime,
    cache: &std::path::Path,
) {
    let bytes = std::fs::read(plugin("edgeguard-plugin-process")).unwrap();
    LoadedPlugin::load(rt, "process", bytes.clone(), &GRANTS, &[])
        .await
        .unwrap();
    let artifact = artifacts(cache).pop().unwrap();
    std::fs::write(&artifact, b"not an artifact").unwrap();
    let again = LoadedPlugin::load(rt, "process", bytes, &GRANTS, &[])
        .await
        .unwrap();
    assert_eq!(again.cache, CacheOutcome::Miss);
    assert!(
        std::fs::read(&artifact).unwrap().len() > 1000,
        "the artifact was rewritten"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_plugin_binaries_get_clear_errors() {
    let (rt, _cache) = runtime();
    let core_module = b"\0asm\x01\x00\x00\x00".to_vec();
    let err = LoadedPlugin::load(&rt, "core", core_module, &GRANTS, &[])
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("core WebAssembly module") && err.contains("wasm32-wasip2"),
        "{err}"
    );

    let err = LoadedPlugin::load(&rt, "junk", b"MZ\x90\x00 not wasm".to_vec(), &GRANTS, &[])
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not WebAssembly"), "{err}");

    let mut truncated = std::fs::read(plugin("edgeguard-plugin-process")).unwrap();
    truncated.truncate(truncated.len() / 2);
    let err = LoadedPlugin::load(&rt, "truncated", truncated, &GRANTS, &[])
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("plugin `truncated`: not a valid WebAssembly component"),
        "{err}"
    );
}

/// What the shape check lets through but Cranelift's validation refuses is refused with
/// wasmparser's words, by name, from either compiler, and leaves no artifact.
#[tokio::test(flavor = "multi_thread")]
async fn what_the_compiler_refuses_is_named() {
    // `i32.add` on an empty stack.
    let ill_typed = component_of(1, &[vec![0, 0x6a, 0x0b]]);
    for compiler in compilers() {
        let what = format!("{compiler:?}");
        let (rt, cache) = runtime_with(compiler);
        let err = LoadedPlugin::load(&rt, "ill-typed", ill_typed.clone(), &GRANTS, &[])
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("plugin `ill-typed`: not a valid WebAssembly component")
                && err.contains("type mismatch"),
            "{what}: {err}"
        );
        assert!(artifacts(cache.path()).is_empty(), "{what}");
        let left: Vec<_> = std::fs::read_dir(cache.path()).unwrap().flatten().collect();
        assert!(
            left.iter().all(|e| e.path().is_dir()),
            "{what}: no temporary file left: {left:?}"
        );
    }
}
