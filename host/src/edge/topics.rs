//! The topic strings of edgeHub's MQTT surface and the property bags they carry: built for
//! what we send, parsed for what we receive (twin responses, desired patches, method calls).

use crate::net::http::percent_encode;

/// Answers to twin requests.
pub const TWIN_RESPONSES: &str = "$iothub/twin/res/#";
/// Patches of the desired properties.
pub const DESIRED_PATCHES: &str = "$iothub/twin/PATCH/properties/desired/#";
/// Direct method calls.
pub const METHOD_CALLS: &str = "$iothub/methods/POST/#";

/// Every subscription a module needs; `#` never matches `$` topics, so each is explicit.
pub const SUBSCRIPTIONS: [&str; 3] = [TWIN_RESPONSES, DESIRED_PATCHES, METHOD_CALLS];

/// The interface id that makes IoT Hub treat a message as a security message.
pub const SECURITY_INTERFACE_ID: &str = "urn:azureiot:Security:SecurityAgent:1";

/// The topic of a telemetry message of `device`/`module` with its system and application properties.
pub fn telemetry(device: &str, module: &str, properties: &[(&str, &str)]) -> String {
    format!(
        "devices/{device}/modules/{module}/messages/events/{}",
        property_bag(properties)
    )
}

/// The topic of a twin GET with request id `rid`.
pub fn twin_get(rid: &str) -> String {
    format!("$iothub/twin/GET/?$rid={rid}")
}

/// The topic of a reported-properties patch with request id `rid`.
pub fn twin_report(rid: &str) -> String {
    format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}")
}

/// The topic of the answer to method call `rid`.
pub fn method_response(status: u16, rid: &str) -> String {
    format!("$iothub/methods/res/{status}/?$rid={rid}")
}

/// `k1=v1&k2=v2`, keys and values percent-encoded as the SDKs do (`$` as `%24`, never `+`).
pub fn property_bag(properties: &[(&str, &str)]) -> String {
    properties
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A property bag back into pairs, percent-decoded; `None` for bad percent-encoding.
pub fn parse_bag(bag: &str) -> Option<Vec<(String, String)>> {
    bag.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What arrived on a `$iothub` topic.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// The answer to a twin request.
    TwinResponse {
        /// Its status code.
        status: u16,
        /// The request id it answers.
        rid: String,
    },
    /// A patch of the desired properties.
    DesiredPatch {
        /// The twin version it makes.
        version: Option<u64>,
    },
    /// A direct method call.
    MethodCall {
        /// The method.
        name: String,
        /// The request id the answer must carry.
        rid: String,
    },
}

/// Parses a topic we subscribed to; `None` for anything else (or malformed).
pub fn parse(topic: &str) -> Option<Inbound> {
    let query = |rest: &str| -> Option<Vec<(String, String)>> {
        let bag = rest.strip_prefix("?").unwrap_or(rest);
        parse_bag(bag)
    };
    let find = |pairs: &[(String, String)], key: &str| {
        pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    if let Some(rest) = topic.strip_prefix("$iothub/twin/res/") {
        let (status, rest) = rest.split_once('/')?;
        let pairs = query(rest)?;
        return Some(Inbound::TwinResponse {
            status: status.parse().ok()?,
            rid: find(&pairs, "$rid")?,
        });
    }
    if let Some(rest) = topic.strip_prefix("$iothub/twin/PATCH/properties/desired/") {
        let pairs = query(rest)?;
        return Some(Inbound::DesiredPatch {
            version: find(&pairs, "$version").and_then(|v| v.parse().ok()),
        });
    }
    if let Some(rest) = topic.strip_prefix("$iothub/methods/POST/") {
        let (name, rest) = rest.split_once('/')?;
        let pairs = query(rest)?;
        return Some(Inbound::MethodCall {
            name: name.to_owned(),
            rid: find(&pairs, "$rid")?,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_security_property_bag_is_encoded_as_the_sdks_encode_it() {
        let topic = telemetry(
            "edge-01",
            "edgeguard",
            &[
                ("$.ifid", SECURITY_INTERFACE_ID),
                ("$.ct", "application/json"),
                ("$.ce", "utf-8"),
                ("level", "a b+c"),
            ],
        );
        assert_eq!(
            topic,
            "devices/edge-01/modules/edgeguard/messages/events/%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1&%24.ct=application%2Fjson&%24.ce=utf-8&level=a%20b%2Bc"
        );
        let bag = topic.rsplit_once('/').unwrap().1;
        let pairs = parse_bag(bag).unwrap();
        assert_eq!(pairs[0], ("$.ifid".into(), SECURITY_INTERFACE_ID.into()));
        assert_eq!(pairs[3], ("level".into(), "a b+c".into()));
    }

    #[test]
    fn inbound_topics_parse_as_edgehub_and_iot_hub_send_them() {
        assert_eq!(
            parse("$iothub/twin/res/200/?$rid=7"),
            Some(Inbound::TwinResponse {
                status: 200,
                rid: "7".into()
            })
        );
        // IoT Hub appends the version to 204s; edgeHub does not.
        assert_eq!(
            parse("$iothub/twin/res/204/?$rid=8&$version=10"),
            Some(Inbound::TwinResponse {
                status: 204,
                rid: "8".into()
            })
        );
        assert_eq!(
            parse("$iothub/twin/PATCH/properties/desired/?$version=5"),
            Some(Inbound::DesiredPatch { version: Some(5) })
        );
        assert_eq!(
            parse("$iothub/methods/POST/collectNow/?$rid=505e09bb-0076"),
            Some(Inbound::MethodCall {
                name: "collectNow".into(),
                rid: "505e09bb-0076".into()
            })
        );
        assert_eq!(parse("$iothub/twin/res/200/"), None, "no $rid");
        assert_eq!(parse("$iothub/twin/res/abc/?$rid=1"), None);
        assert_eq!(parse("devices/d/modules/m/inputs/x/"), None);
        assert_eq!(parse("$iothub/twin/res/200/?$rid=%zz"), None);
    }
}
