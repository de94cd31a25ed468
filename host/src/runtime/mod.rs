//! The WebAssembly engine: one wasmtime engine and its epoch ticker, a content-addressed cache
//! of compiled plugins, the bounded compiler that fills it, and the limits a store enforces
//! (memory, CPU time per call). Nothing here knows what a plugin may reach: that is [`crate::capabilities`], and checking and running
//! a plugin against its grants is [`crate::sandbox`].

pub mod artifact_cache;
pub mod compiler;
pub mod engine;
pub mod limits;

pub use artifact_cache::{ArtifactCache, CacheOutcome};
pub use compiler::{CompileBounds, CompileError, Compiler};
pub use engine::Runtime;
