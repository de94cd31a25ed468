//! Compiled plugins on disk, keyed by the component's content hash and the engine's
//! configuration, so a plugin is compiled once per engine build and loads in a fraction of a
//! millisecond afterwards.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded a compiled artifact from the cache.
    Hit,
    /// Compiled from source (and stored for next time).
    Miss,
}

pub struct ArtifactCache {
    dir: PathBuf,
    /// Hash of everything that makes an artifact (in)compatible: wasmtime's own view of the
    /// engine configuration and target, and its version.
    engine_key: String,
}

impl ArtifactCache {
    pub fn open(dir: &Path, engine: &wasmtime::Engine) -> anyhow::Result<ArtifactCache> {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create cache directory {}: {e}", dir.display()))?;
        // Artifacts are native code that is loaded without re-validation: keep the directory private.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = format!("{:016x}", h.finish());
        Ok(ArtifactCache { dir: dir.to_owned(), engine_key })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_for(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The component for `bytes`, from the cache or compiled now (and cached).
    pub fn load(&self, engine: &wasmtime::Engine, bytes: &[u8]) -> anyhow::Result<(Component, CacheOutcome)> {
        let digest = sha256_hex(bytes);
        let path = self.path_for(&digest);
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of this engine
            // configuration (the name carries its hash) into a directory only we may write.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, CacheOutcome::Hit)),
                Err(e) => tracing::warn!(path = %path.display(), "discarding unusable cached artifact: {e}"),
            }
        }
        let component = Component::new(engine, bytes)?;
        match component.serialize() {
            Ok(compiled) => {
                // Write then rename, so a crash never leaves a truncated artifact under the final name.
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                if let Err(e) = std::fs::write(&tmp, &compiled).and_then(|_| std::fs::rename(&tmp, &path)) {
                    tracing::warn!(path = %path.display(), "cannot store compiled artifact: {e}");
                    let _ = std::fs::remove_file(&tmp);
                }
            }
            Err(e) => tracing::warn!("cannot serialize compiled component: {e}"),
        }
        Ok((component, CacheOutcome::Miss))
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
