//! Compiled plugins on disk, keyed by the component's content hash and the engine's
//! configuration, so a plugin is compiled once per engine build and loads in a fraction of a
//! millisecond afterwards. Components fetched from a URL are kept here too, by digest. What no
//! collector uses is garbage-collected, keeping the most recently used few for swaps back.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;

/// Where a compiled plugin came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded a compiled artifact from the cache.
    Hit,
    /// Compiled from source (and stored for next time).
    Miss,
}

/// Compiled plugins and fetched components on disk, by content hash.
pub struct ArtifactCache {
    dir: PathBuf,
    /// Hash of everything that makes an artifact (in)compatible: wasmtime's own view of the
    /// engine configuration and target, and its version.
    engine_key: String,
}

impl ArtifactCache {
    /// The cache in `dir`, for artifacts of `engine`'s configuration.
    pub fn open(dir: &Path, engine: &wasmtime::Engine) -> anyhow::Result<ArtifactCache> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create cache directory {}: {e}", dir.display()))?;
        // Artifacts are native code that is loaded without re-validation: keep the directory private.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = format!("{:016x}", h.finish());
        Ok(ArtifactCache {
            dir: dir.to_owned(),
            engine_key,
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the compiled artifact of the component `digest` is kept.
    pub fn artifact_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The compiled component `digest`, if the cache has it and it loads.
    pub fn cached(&self, engine: &wasmtime::Engine, digest: &str) -> Option<Component> {
        let path = self.artifact_path(digest);
        if !path.exists() {
            return None;
        }
        touch(&path);
        // SAFETY: the file was written by `Component::serialize` or `precompile_component` of
        // this engine configuration (the name carries its hash; wasmtime checks its header)
        // into a directory only we may write.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "discarding unusable cached artifact: {e}");
                None
            }
        }
    }

    /// Compiles `bytes` (whose digest is `digest`) on this thread, and caches the artifact.
    pub fn compile_here(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
        digest: &str,
    ) -> anyhow::Result<Component> {
        let component = Component::new(engine, bytes)?;
        let path = self.artifact_path(digest);
        match component.serialize() {
            Ok(compiled) => {
                // A crash never leaves a truncated artifact under the final name.
                if let Err(e) = crate::files::write_atomic(&path, &compiled) {
                    tracing::warn!(path = %path.display(), "cannot store compiled artifact: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot serialize compiled component: {e}"),
        }
        Ok(component)
    }
}

impl ArtifactCache {
    fn component_path(&self, digest: &str) -> PathBuf {
        self.dir.join("components").join(format!("{digest}.wasm"))
    }

    /// A fetched component kept under its digest, if it is here and intact.
    pub fn component(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.component_path(digest);
        let bytes = std::fs::read(&path).ok()?;
        if sha256_hex(&bytes) != digest {
            tracing::warn!(path = %path.display(), "discarding a kept component whose bytes changed");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        touch(&path);
        Some(bytes)
    }

    /// Keeps a fetched (and verified) component under its digest.
    pub fn keep_component(&self, digest: &str, bytes: &[u8]) {
        let path = self.component_path(digest);
        if let Err(e) = crate::files::write_atomic(&path, bytes) {
            tracing::warn!(path = %path.display(), "cannot keep the fetched component: {e}");
        }
    }

    /// Removes what no collector uses: artifacts of other engine builds, and of the digests not
    /// `in_use` all but the `keep_unused` most recently used. Returns the files removed.
    pub fn collect_garbage(
        &self,
        in_use: &std::collections::HashSet<String>,
        keep_unused: usize,
    ) -> usize {
        let mut by_digest: std::collections::HashMap<
            String,
            (std::time::SystemTime, Vec<PathBuf>),
        > = Default::default();
        let mut removed = 0;
        let mut remove = |path: &Path| {
            if std::fs::remove_file(path).is_ok() {
                removed += 1;
            }
        };
        let entries = |dir: &Path| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect::<Vec<_>>()
        };
        for path in entries(&self.dir)
            .into_iter()
            .chain(entries(&self.dir.join("components")))
        {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let digest = if let Some(stem) = name.strip_suffix(".cwasm") {
                match stem.split_once('-') {
                    Some((digest, engine)) if engine == self.engine_key => digest,
                    // Compiled by another engine build: this one can never load it.
                    Some(_) => {
                        remove(&path);
                        continue;
                    }
                    None => continue,
                }
            } else if let Some(digest) = name.strip_suffix(".wasm") {
                digest
            } else {
                continue;
            };
            if in_use.contains(digest) {
                continue;
            }
            let used = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            let slot = by_digest
                .entry(digest.to_owned())
                .or_insert((used, Vec::new()));
            slot.0 = slot.0.max(used);
            slot.1.push(path);
        }
        let mut unused: Vec<_> = by_digest.into_values().collect();
        unused.sort_by_key(|u| std::cmp::Reverse(u.0));
        for (_, paths) in unused.into_iter().skip(keep_unused) {
            paths.iter().for_each(|p| remove(p));
        }
        removed
    }
}

/// Marks a file as just used (its modification time orders garbage collection).
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// The SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn garbage_collection_keeps_what_is_used_and_the_most_recent_unused() {
        let dir = tempfile::tempdir().unwrap();
        let engine = wasmtime::Engine::new(&crate::runtime::engine::engine_config()).unwrap();
        let cache = ArtifactCache::open(dir.path(), &engine).unwrap();
        let digest = |n: u8| format!("{n:02x}").repeat(32);
        let make = |path: PathBuf, age_secs: u64| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"x").unwrap();
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
                .unwrap();
        };
        // In use, old; unused at ages 10, 20, 30, 40 s (one also kept as a fetched component);
        // compiled by another engine build.
        make(cache.artifact_path(&digest(1)), 1000);
        for (n, age) in [(2, 10), (3, 20), (4, 30), (5, 40)] {
            make(cache.artifact_path(&digest(n)), age);
        }
        make(cache.component_path(&digest(4)), 30);
        make(
            dir.path()
                .join(format!("{}-0123456789abcdef.cwasm", digest(6))),
            1,
        );
        let in_use = std::collections::HashSet::from([digest(1)]);

        assert_eq!(
            cache.collect_garbage(&in_use, 2),
            4,
            "the other build's artifact, and digests 4 (two files) and 5"
        );
        for (n, kept) in [(1, true), (2, true), (3, true), (4, false), (5, false)] {
            assert_eq!(cache.artifact_path(&digest(n)).exists(), kept, "digest {n}");
        }
        assert!(!cache.component_path(&digest(4)).exists());
        assert_eq!(cache.collect_garbage(&in_use, 0), 2);
        assert!(
            cache.artifact_path(&digest(1)).exists(),
            "what is in use stays"
        );
    }
}
