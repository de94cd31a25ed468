//! Messages to edgeHub as module telemetry, acknowledged on PUBACK (edgeHub acknowledges once
//! it has stored the message).
//!
//! The property bag: every message carries its id, content type and encoding (so routes can
//! query the body) and the queue that sent it (`MessagePriority`, as the C# agent). ASC
//! messages carry the interface id that makes IoT Hub treat them as security messages; each
//! family has its own output name, so routes can tell them apart.

use super::hub::HubLink;
use super::topics::{self, SECURITY_INTERFACE_ID};
use crate::events::Family;
use crate::output::{Message, Sending, Sink, SinkError};
use rumqttc::QoS;

/// The output of ASC security messages.
pub const SECURITY_OUTPUT: &str = "security";
/// The output of the project's own message family.
pub const EDGEGUARD_OUTPUT: &str = "edgeguard";

/// Security messages as module telemetry, acknowledged on PUBACK.
pub struct EdgeHubSink {
    link: HubLink,
}

impl EdgeHubSink {
    /// A sink sending over `link`.
    pub fn new(link: HubLink) -> EdgeHubSink {
        EdgeHubSink { link }
    }
}

/// The telemetry topic of one message, property bag included.
pub fn message_topic(device: &str, module: &str, message: &Message) -> String {
    let id = message.id.to_string();
    let mut properties = vec![
        ("$.mid", id.as_str()),
        ("$.ct", "application/json"),
        ("$.ce", "utf-8"),
    ];
    match message.family {
        Family::Asc => {
            properties.extend([("$.ifid", SECURITY_INTERFACE_ID), ("$.on", SECURITY_OUTPUT)]);
        }
        Family::Edgeguard => properties.push(("$.on", EDGEGUARD_OUTPUT)),
    }
    let priority = match message.priority {
        crate::pipeline::asc_config::Priority::High => "High",
        _ => "Low",
    };
    properties.push(("MessagePriority", priority));
    topics::telemetry(device, module, &properties)
}

impl Sink for EdgeHubSink {
    fn describe(&self) -> String {
        let env = self.link.environment();
        format!(
            "edgeHub at {} as {}/{}",
            env.gateway_hostname, env.device_id, env.module_id
        )
    }

    fn send(&mut self, message: Message) -> Sending<'_> {
        Box::pin(async move {
            let env = self.link.environment();
            let topic = message_topic(&env.device_id, &env.module_id, &message);
            let ack = self
                .link
                .publish(topic, message.body, QoS::AtLeastOnce)
                .await
                .map_err(|e| SinkError::Refused(e.to_string()))?;
            let ack = ack.expect("QoS 1 publishes are acknowledged");
            let acknowledgement: crate::output::Acknowledgement =
                Box::pin(async move { ack.await.map_err(|_| SinkError::Gone) });
            Ok(acknowledgement)
        })
    }
}
