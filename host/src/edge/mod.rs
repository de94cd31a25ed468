//! The IoT Edge layer: what a module needs to speak to its runtime, written against the
//! protocol itself (the `azure_iot_sdk` crate is device-only, QoS 0 and unmaintained).
//!
//! - [`environment`]: the `IOTEDGE_*` variables edgeAgent gives a module;
//! - [`workload`]: the security daemon's workload API (sign, trust bundle) over its socket;
//! - [`sas`]: the module's SAS token, signed by the workload API, as the official SDKs build it;
//! - [`hub`]: the MQTT link to edgeHub (TLS, reconnects, token renewal, PUBACK tracking);
//! - [`topics`]: edgeHub's topic strings and property bags;
//! - [`sink`]: security messages as module telemetry, acknowledged on PUBACK;
//! - [`twin`]: the desired properties document (versions, merge patches).
//!
//! What the twin asks for is resolved by [`crate::control`]; the module at work (twin and direct
//! methods) is [`crate::app::module`].

pub mod config;
pub mod environment;
pub mod hub;
pub mod sas;
pub mod sink;
pub mod topics;
pub mod twin;
pub mod workload;

pub use environment::EdgeEnvironment;
