//! The identity and endpoints edgeAgent hands a module through its environment.

use std::collections::HashMap;

/// The variables a module needs; `IOTEDGE_APIVERSION` is optional (edgeAgent copies its own).
const REQUIRED: [&str; 7] = [
    "IOTEDGE_WORKLOADURI",
    "IOTEDGE_MODULEID",
    "IOTEDGE_DEVICEID",
    "IOTEDGE_IOTHUBHOSTNAME",
    "IOTEDGE_GATEWAYHOSTNAME",
    "IOTEDGE_MODULEGENERATIONID",
    "IOTEDGE_AUTHSCHEME",
];

/// The workload API version used when the environment names none: the oldest every security
/// daemon knows, and what the C and Node SDKs send.
pub const DEFAULT_WORKLOAD_API_VERSION: &str = "2018-06-28";

/// What edgeAgent tells a module about itself through `IOTEDGE_*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeEnvironment {
    /// `unix:///var/run/iotedge/workload.sock` or `http://host:port`.
    pub workload_uri: String,
    /// `IOTEDGE_MODULEID`.
    pub module_id: String,
    /// `IOTEDGE_DEVICEID`.
    pub device_id: String,
    /// The IoT Hub: the SAS audience and the MQTT user name, never the host connected to.
    pub iothub_hostname: String,
    /// edgeHub: the host to connect to and the name its certificate is checked against.
    pub gateway_hostname: String,
    /// `IOTEDGE_MODULEGENERATIONID`: which generation of the module's identity signs.
    pub generation_id: String,
    /// `IOTEDGE_APIVERSION`, or the oldest the workload API accepts.
    pub workload_api_version: String,
}

/// Why this process is not (or not a usable) IoT Edge module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvironmentError {
    /// A variable edgeAgent always sets is missing.
    #[error("not an IoT Edge module: {0} is not set")]
    Missing(&'static str),
    /// An authentication scheme other than SAS tokens.
    #[error("{0}={1:?}: only `sasToken` is supported, as in every official SDK")]
    AuthScheme(&'static str, String),
    /// A workload URI that is neither a Unix socket nor http.
    #[error("{0}={1:?}: expected unix:///path or http://host:port")]
    WorkloadUri(&'static str, String),
}

impl EdgeEnvironment {
    /// Whether this process looks like an IoT Edge module (edge mode starts by itself then).
    pub fn present(vars: &HashMap<String, String>) -> bool {
        vars.contains_key("IOTEDGE_WORKLOADURI") && vars.contains_key("IOTEDGE_MODULEID")
    }

    /// The environment `vars` describe (the process's, or a test's).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<EdgeEnvironment, EnvironmentError> {
        let get = |name: &'static str| {
            vars.get(name)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or(EnvironmentError::Missing(name))
        };
        for name in REQUIRED {
            get(name)?;
        }
        let scheme = get("IOTEDGE_AUTHSCHEME")?;
        if scheme != "sasToken" {
            return Err(EnvironmentError::AuthScheme("IOTEDGE_AUTHSCHEME", scheme));
        }
        let workload_uri = get("IOTEDGE_WORKLOADURI")?;
        if !(workload_uri.starts_with("unix:///") || workload_uri.starts_with("http://")) {
            return Err(EnvironmentError::WorkloadUri(
                "IOTEDGE_WORKLOADURI",
                workload_uri,
            ));
        }
        Ok(EdgeEnvironment {
            workload_uri,
            module_id: get("IOTEDGE_MODULEID")?,
            device_id: get("IOTEDGE_DEVICEID")?,
            iothub_hostname: get("IOTEDGE_IOTHUBHOSTNAME")?,
            gateway_hostname: get("IOTEDGE_GATEWAYHOSTNAME")?,
            generation_id: get("IOTEDGE_MODULEGENERATIONID")?,
            workload_api_version: vars
                .get("IOTEDGE_APIVERSION")
                .filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or_else(|| DEFAULT_WORKLOAD_API_VERSION.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module_env() -> HashMap<String, String> {
        [
            (
                "IOTEDGE_WORKLOADURI",
                "unix:///var/run/iotedge/workload.sock",
            ),
            ("IOTEDGE_MODULEID", "edgeguard"),
            ("IOTEDGE_DEVICEID", "edge-01"),
            ("IOTEDGE_IOTHUBHOSTNAME", "myhub.azure-devices.net"),
            ("IOTEDGE_GATEWAYHOSTNAME", "edge-01.local"),
            ("IOTEDGE_MODULEGENERATIONID", "638000000000000000"),
            ("IOTEDGE_AUTHSCHEME", "sasToken"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn reads_a_module_environment() {
        let mut vars = module_env();
        let env = EdgeEnvironment::from_vars(&vars).unwrap();
        assert_eq!(
            (env.device_id.as_str(), env.workload_api_version.as_str()),
            ("edge-01", DEFAULT_WORKLOAD_API_VERSION)
        );
        vars.insert("IOTEDGE_APIVERSION".into(), "2022-08-03".into());
        assert_eq!(
            EdgeEnvironment::from_vars(&vars)
                .unwrap()
                .workload_api_version,
            "2022-08-03"
        );
        assert!(EdgeEnvironment::present(&vars));
    }

    #[test]
    fn names_what_is_wrong() {
        let mut vars = module_env();
        vars.remove("IOTEDGE_GATEWAYHOSTNAME");
        assert_eq!(
            EdgeEnvironment::from_vars(&vars),
            Err(EnvironmentError::Missing("IOTEDGE_GATEWAYHOSTNAME"))
        );
        let mut vars = module_env();
        vars.insert("IOTEDGE_AUTHSCHEME".into(), "x509".into());
        assert!(
            EdgeEnvironment::from_vars(&vars)
                .unwrap_err()
                .to_string()
                .contains("sasToken")
        );
        let mut vars = module_env();
        vars.insert("IOTEDGE_WORKLOADURI".into(), "https://x".into());
        assert!(matches!(
            EdgeEnvironment::from_vars(&vars),
            Err(EnvironmentError::WorkloadUri(..))
        ));
        assert!(!EdgeEnvironment::present(&HashMap::new()));
    }
}
