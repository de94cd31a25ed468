//! Loading a plugin: validate the component, compile it (or take it from the cache), check its
//! imports against its grants, and prepare fast instantiation. Nothing here runs plugin code
//! except `describe`, after every check has passed.

use super::instance::{Fault, PluginInstance, Pre, Role};
use super::shape::Shape;
use crate::capabilities::{self, Capability, HostContext, HostState, ImportNeed};
use crate::runtime::Runtime;
use crate::runtime::artifact_cache::{CacheOutcome, sha256_hex};
use crate::runtime::limits::Limits;
use crate::wit::analyzer::AnalyzerPluginPre as AnalyzerPre;
use crate::wit::exports::edgeguard::collector::plugin::PluginInfo;
use crate::wit::{CollectorPre, WIT_PACKAGE, WIT_VERSION};
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::{Component, Linker};

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a component this host can run.
    #[error("plugin `{plugin}`: {reason}")]
    Invalid {
        /// The plugin's name.
        plugin: String,
        /// What is wrong.
        reason: String,
    },
    /// It imports a capability it is not granted.
    #[error(
        "plugin `{plugin}` imports `{import}`, but its configuration does not grant `{capability}` (granted: {granted})"
    )]
    NotGranted {
        /// The plugin's name.
        plugin: String,
        /// The import.
        import: String,
        /// The capability it needs.
        capability: &'static str,
        /// What it is granted.
        granted: String,
    },
    /// It imports something no plugin may have.
    #[error("plugin `{plugin}` imports `{import}`: {why}")]
    Refused {
        /// The plugin's name.
        plugin: String,
        /// The import.
        import: String,
        /// Why not.
        why: &'static str,
    },
    /// It imports something this host does not provide.
    #[error("plugin `{plugin}` imports `{import}`, which this host does not provide")]
    UnknownImport {
        /// The plugin's name.
        plugin: String,
        /// The import.
        import: String,
    },
    #[error(
        "plugin `{plugin}` was built against {found}; this host implements {WIT_PACKAGE}@{WIT_VERSION}"
    )]
    /// Built against an incompatible version of the contract.
    WitVersion {
        /// The plugin's name.
        plugin: String,
        /// The version it was built against.
        found: String,
    },
    /// It exports neither the collector nor the analyzer interface.
    #[error(
        "plugin `{plugin}` exports neither `{WIT_PACKAGE}/plugin` nor `{WIT_PACKAGE}/analyzer`: not an edgeguard collector or analyzer"
    )]
    NotACollector {
        /// The plugin's name.
        plugin: String,
    },
    /// Its self-description faulted.
    #[error("plugin `{plugin}`: describe() failed: {fault}")]
    Describe {
        /// The plugin's name.
        plugin: String,
        /// How.
        fault: Fault,
    },
}

/// A compiled, checked plugin, ready to instantiate any number of times.
pub struct LoadedPlugin {
    /// The name the configuration gives it.
    pub name: Arc<str>,
    /// Its self-description (for an analyzer: it emits `Alert` and `Recommendation`).
    pub info: PluginInfo,
    /// A collector or an analyzer, and what an analyzer wants.
    pub role: Role,
    /// The SHA-256 of its component.
    pub sha256: String,
    /// The component's size in bytes.
    pub size: usize,
    /// `edgeguard:collector@x.y.z` as the plugin was built.
    pub wit_version: String,
    /// What the component imports.
    pub imports: Vec<String>,
    /// Compiled now or taken from the cache.
    pub cache: CacheOutcome,
    /// What it is granted.
    pub grants: Vec<Capability>,
    /// The read-only host directories it sees.
    pub dirs: Vec<PathBuf>,
    pre: Pre,
    runtime: Runtime,
}

impl LoadedPlugin {
    /// Reads the component at `path` and loads it.
    pub async fn load_file(
        runtime: &Runtime,
        name: &str,
        path: &std::path::Path,
        grants: &[Capability],
        dirs: &[PathBuf],
    ) -> Result<LoadedPlugin, LoadError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| LoadError::Read {
                path: path.to_owned(),
                source,
            })?;
        Self::load(runtime, name, bytes, grants, dirs).await
    }

    /// Everything short of running the plugin with real capabilities.
    pub async fn load(
        runtime: &Runtime,
        name: &str,
        bytes: Vec<u8>,
        grants: &[Capability],
        dirs: &[PathBuf],
    ) -> Result<LoadedPlugin, LoadError> {
        let invalid = |reason: String| LoadError::Invalid {
            plugin: name.to_owned(),
            reason,
        };
        check_preamble(&bytes).map_err(invalid)?;
        // Read before compiling: what the host would refuse to run costs no compile.
        Shape::read(&bytes)
            .and_then(|shape| shape.check())
            .map_err(invalid)?;
        let sha256 = sha256_hex(&bytes);
        let size = bytes.len();
        // Compiling takes tens of milliseconds to seconds of CPU: in its own process, bounded
        // in time and memory (or, for a library user, off the scheduler's threads).
        let (component, cache) = runtime
            .compile(bytes, &sha256)
            .await
            .map_err(|e| invalid(e.to_string()))?;

        let (world, wit_version) =
            exported_world(&runtime.engine, &component).ok_or_else(|| {
                LoadError::NotACollector {
                    plugin: name.to_owned(),
                }
            })?;
        if !compatible(&wit_version) {
            return Err(LoadError::WitVersion {
                plugin: name.to_owned(),
                found: format!("{WIT_PACKAGE}@{wit_version}"),
            });
        }

        let imports: Vec<String> = component
            .component_type()
            .imports(&runtime.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        check_imports(name, &imports, grants)?;

        let mut linker: Linker<HostState> = Linker::new(&runtime.engine);
        capabilities::link_wasi(&mut linker).map_err(|e| invalid(format!("linking WASI: {e}")))?;
        capabilities::link(&mut linker, grants)
            .map_err(|e| invalid(format!("linking capabilities: {e}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(|pre| {
                Ok(match world {
                    World::Collector => Pre::Collector(CollectorPre::new(pre)?),
                    World::Analyzer => Pre::Analyzer(AnalyzerPre::new(pre)?),
                })
            })
            .map_err(|e| invalid(format!("does not match the {} world: {e:#}", world.name())))?;

        let name: Arc<str> = name.into();
        let (info, role) = describe(&runtime.engine, &pre, &name)
            .await
            .map_err(|fault| LoadError::Describe {
                plugin: name.to_string(),
                fault,
            })?;
        Ok(LoadedPlugin {
            name,
            info,
            role,
            sha256,
            size,
            wit_version: format!("{WIT_PACKAGE}@{wit_version}"),
            imports,
            cache,
            grants: grants.to_vec(),
            dirs: dirs.to_vec(),
            pre,
            runtime: runtime.clone(),
        })
    }

    /// A fresh instance with `init(config)` done.
    pub async fn instantiate(
        &self,
        host: Arc<HostContext>,
        limits: &Limits,
        config_json: &str,
    ) -> Result<PluginInstance, Fault> {
        let mut instance = PluginInstance::new(
            &self.runtime.engine,
            &self.pre,
            Arc::clone(&self.name),
            host,
            limits,
            &self.dirs,
        )
        .await?;
        instance.init(config_json).await?;
        Ok(instance)
    }

    /// Who its events come from.
    pub fn origin(&self) -> crate::events::Origin {
        crate::events::Origin {
            plugin: Arc::clone(&self.name),
            version: self.info.version.as_str().into(),
            digest: self.sha256.as_str().into(),
        }
    }

    /// The engine it was compiled for.
    pub fn engine(&self) -> &wasmtime::Engine {
        &self.runtime.engine
    }
}

/// Runs `describe` in a throw-away instance with default limits, no host data and no directories.
async fn describe(
    engine: &wasmtime::Engine,
    pre: &Pre,
    name: &Arc<str>,
) -> Result<(PluginInfo, Role), Fault> {
    let host = HostContext::new(std::path::Path::new("/nonexistent"));
    let mut instance =
        PluginInstance::new(engine, pre, Arc::clone(name), host, &Limits::default(), &[]).await?;
    instance.describe().await
}

/// A core module instead of a component is the most common mistake: say so plainly.
fn check_preamble(bytes: &[u8]) -> Result<(), String> {
    match bytes {
        [0, b'a', b's', b'm', _, _, 0x01, 0x00, ..] => Ok(()),
        [0, b'a', b's', b'm', 0x01, 0x00, 0x00, 0x00, ..] => Err(
            "is a core WebAssembly module, not a component: build it with `--target wasm32-wasip2` (or `cargo component build`)".into(),
        ),
        _ => Err("is not WebAssembly (no `\\0asm` header)".into()),
    }
}

/// The world a component implements, told by the interface it exports.
#[derive(Clone, Copy)]
enum World {
    Collector,
    Analyzer,
}

impl World {
    fn name(self) -> &'static str {
        match self {
            World::Collector => "collector",
            World::Analyzer => "analyzer",
        }
    }
}

/// The world and the version of `edgeguard:collector/plugin@x.y.z` (a collector) or
/// `edgeguard:collector/analyzer@x.y.z` (an analyzer) the component exports.
fn exported_world(engine: &wasmtime::Engine, component: &Component) -> Option<(World, String)> {
    component
        .component_type()
        .exports(engine)
        .find_map(|(name, _)| {
            let rest = name.strip_prefix(WIT_PACKAGE)?;
            let (world, version) = if let Some(v) = rest.strip_prefix("/plugin") {
                (World::Collector, v)
            } else {
                (World::Analyzer, rest.strip_prefix("/analyzer")?)
            };
            Some((
                world,
                version
                    .strip_prefix('@')
                    .unwrap_or("unversioned")
                    .to_owned(),
            ))
        })
}

/// Semver compatibility as the component linker applies it: same major, and for 0.x the same minor.
fn compatible(version: &str) -> bool {
    let parts = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parts(version), parts(WIT_VERSION)) {
        (Some((0, minor)), Some((0, ours))) => minor == ours,
        (Some((major, _)), Some((ours, _))) => major == ours,
        _ => false,
    }
}

fn check_imports(plugin: &str, imports: &[String], grants: &[Capability]) -> Result<(), LoadError> {
    for import in imports {
        match capabilities::import_need(import) {
            ImportNeed::Baseline => {}
            ImportNeed::Grant(capability) if grants.contains(&capability) => {}
            ImportNeed::Grant(capability) => {
                let granted = grants.iter().map(|g| g.name()).collect::<Vec<_>>();
                return Err(LoadError::NotGranted {
                    plugin: plugin.to_owned(),
                    import: import.clone(),
                    capability: capability.name(),
                    granted: if granted.is_empty() {
                        "nothing".into()
                    } else {
                        granted.join(", ")
                    },
                });
            }
            ImportNeed::Refused(why) => {
                return Err(LoadError::Refused {
                    plugin: plugin.to_owned(),
                    import: import.clone(),
                    why,
                });
            }
            ImportNeed::Unknown => {
                return Err(LoadError::UnknownImport {
                    plugin: plugin.to_owned(),
                    import: import.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(compatible("0.1.0"));
        assert!(compatible("0.1.7"));
        assert!(!compatible("0.2.0"));
        assert!(!compatible("1.0.0"));
        assert!(!compatible("unversioned"));
    }

    #[test]
    fn preamble() {
        assert!(check_preamble(b"\0asm\x0d\x00\x01\x00").is_ok());
        assert!(
            check_preamble(b"\0asm\x01\x00\x00\x00")
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        assert!(
            check_preamble(b"hello")
                .unwrap_err()
                .contains("not WebAssembly")
        );
    }
}
