//! The WebAssembly side: one engine, a content-addressed cache of compiled plugins, the loader
//! that checks a component against its grants, and live instances with bounded memory, CPU
//! time and output.

pub mod artifact_cache;
pub mod bindings;
pub mod engine;
pub mod instance;
pub mod limits;
pub mod loader;

pub use artifact_cache::{ArtifactCache, CacheOutcome};
pub use engine::Runtime;
pub use instance::{Fault, PluginInstance};
pub use loader::{LoadError, LoadedPlugin};
