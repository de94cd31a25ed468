//! A plugin in its sandbox: the loader checks a component (header, WIT version, imports against
//! its grants) and links only the granted capabilities; an instance runs it with bounded
//! memory, CPU time and output, turning every way it can misbehave into a [`Fault`].

pub mod instance;
pub mod loader;
pub mod shape;

pub use instance::{Fault, PluginInstance};
pub use loader::{LoadError, LoadedPlugin};
