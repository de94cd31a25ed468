//! The module's SAS token (the MQTT password), built exactly as the official SDKs build it:
//! `sr` is the percent-encoded `{hub}/devices/{device}/modules/{module}`, the string to sign is
//! `sr + "\n" + expiry`, the workload API signs it with the module's key, and the digest is
//! percent-encoded into `SharedAccessSignature sr=…&sig=…&se=…`.

use super::EdgeEnvironment;
use super::workload::{WorkloadClient, WorkloadError};
pub use crate::net::http::percent_encode;
use base64::Engine;
use std::time::Duration;

/// Lifetime of a token: the SDKs' default.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// A SAS token and when to renew it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SasToken {
    /// The `SharedAccessSignature sr=…&sig=…&se=…` string, the MQTT password.
    pub password: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// How long the token was made for.
    pub lifetime: Duration,
}

impl SasToken {
    /// When to connect again with a fresh token: at 80% of its life, well before edgeHub's
    /// periodic re-authentication (every 5 minutes) could find it expired.
    pub fn renew_at(&self) -> u64 {
        self.expires_at - self.lifetime.as_secs() / 5
    }
}

/// The token's audience: the module identity on the IoT Hub (never the gateway).
pub fn resource_uri(env: &EdgeEnvironment) -> String {
    format!(
        "{}/devices/{}/modules/{}",
        env.iothub_hostname, env.device_id, env.module_id
    )
}

/// `sr` and the string the workload API signs, for a token expiring at `expires_at`.
pub fn string_to_sign(env: &EdgeEnvironment, expires_at: u64) -> (String, String) {
    let sr = percent_encode(&resource_uri(env));
    let to_sign = format!("{sr}\n{expires_at}");
    (sr, to_sign)
}

/// The password from a signature (the base64 digest the workload API returned).
pub fn password(sr: &str, digest_base64: &str, expires_at: u64) -> String {
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expires_at}",
        percent_encode(digest_base64)
    )
}

/// A fresh token, valid for `lifetime` from `now_unix`, signed by the workload API.
pub async fn module_token(
    workload: &WorkloadClient,
    env: &EdgeEnvironment,
    now_unix: u64,
    lifetime: Duration,
) -> Result<SasToken, WorkloadError> {
    let expires_at = now_unix + lifetime.as_secs();
    let (sr, to_sign) = string_to_sign(env, expires_at);
    let digest = workload.sign(to_sign.as_bytes()).await?;
    let digest = base64::engine::general_purpose::STANDARD.encode(digest);
    Ok(SasToken {
        password: password(&sr, &digest, expires_at),
        expires_at,
        lifetime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EdgeEnvironment {
        EdgeEnvironment {
            workload_uri: "unix:///var/run/iotedge/workload.sock".into(),
            module_id: "filter".into(),
            device_id: "edge-01".into(),
            iothub_hostname: "myhub.azure-devices.net".into(),
            gateway_hostname: "edge-01.local".into(),
            generation_id: "638000000000000000".into(),
            workload_api_version: "2018-06-28".into(),
        }
    }

    /// The worked example of the protocol reference, from the string to sign to the password.
    #[test]
    fn the_reference_worked_example() {
        let (sr, to_sign) = string_to_sign(&env(), 1767225600);
        assert_eq!(
            sr,
            "myhub.azure-devices.net%2Fdevices%2Fedge-01%2Fmodules%2Ffilter"
        );
        assert_eq!(
            to_sign,
            "myhub.azure-devices.net%2Fdevices%2Fedge-01%2Fmodules%2Ffilter\n1767225600"
        );
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(to_sign),
            "bXlodWIuYXp1cmUtZGV2aWNlcy5uZXQlMkZkZXZpY2VzJTJGZWRnZS0wMSUyRm1vZHVsZXMlMkZmaWx0ZXIKMTc2NzIyNTYwMA=="
        );
        assert_eq!(
            password(
                &sr,
                "YHRimujpb2vNpXNQ/3qUaDEbu7aCBuEBeKVCZDMOQ3Q=",
                1767225600
            ),
            "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fedge-01%2Fmodules%2Ffilter&sig=YHRimujpb2vNpXNQ%2F3qUaDEbu7aCBuEBeKVCZDMOQ3Q%3D&se=1767225600"
        );
    }

    #[test]
    fn renewal_comes_well_before_expiry() {
        let token = SasToken {
            password: String::new(),
            expires_at: 10_000,
            lifetime: TOKEN_TTL,
        };
        assert_eq!(token.renew_at(), 10_000 - 720);
        assert_eq!(percent_encode("a b+c/é"), "a%20b%2Bc%2F%C3%A9");
    }
}
