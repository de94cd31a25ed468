//! The IoT Edge layer: what a module needs to speak to its runtime, written against the
//! protocol itself (the `azure_iot_sdk` crate is device-only, QoS 0 and unmaintained).
//!
//! - [`environment`]: the `IOTEDGE_*` variables edgeAgent gives a module;
//! - [`workload`]: the security daemon's workload API (sign, trust bundle) over its socket;
//! - [`sas`]: the module's SAS token, signed by the workload API, as the official SDKs build it.

pub mod environment;
pub mod sas;
pub mod workload;

pub use environment::EdgeEnvironment;
