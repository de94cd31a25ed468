//! The labels edgeAgent puts on every container it creates (its `CreateCommand`): they tell an
//! IoT Edge module from any other container and carry the module as the deployment gave it.

pub const OWNER_LABEL: &str = "net.azure-devices.edge.owner";
pub const OWNER: &str = "Microsoft.Azure.Devices.Edge.Agent";
/// The module's createOptions as the deployment gave them (a string of JSON).
pub const CREATE_OPTIONS: &str = "net.azure-devices.edge.normalizedCreateOptions";
pub const VERSION: &str = "net.azure-devices.edge.version";
pub const RESTART_POLICY: &str = "net.azure-devices.edge.restartPolicy";
pub const DESIRED_STATUS: &str = "net.azure-devices.edge.desiredStatus";

/// The value of `key` among a container's labels.
pub fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The IoT Edge module a container runs, when edgeAgent created it: edgeAgent names the
/// container after the module.
pub fn module_of<'a>(labels: &[(String, String)], container_name: &'a str) -> Option<&'a str> {
    (label(labels, OWNER_LABEL) == Some(OWNER)).then_some(container_name)
}
