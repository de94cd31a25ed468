//! The workload API client and the module's SAS token against the workload simulator: the
//! protocol reference's known answers computed with a real HMAC-SHA256, and every way the
//! security daemon can fail named as such.

use base64::Engine;
use edgeguard::edge::EdgeEnvironment;
use edgeguard::edge::sas::{TOKEN_TTL, module_token};
use edgeguard::edge::workload::{WorkloadClient, WorkloadError};
use edgeguard_tests::workload::{Fault, WorkloadSimulator};
use std::collections::HashMap;

/// The test key of the protocol reference's worked example.
const KEY: &str = "O+H9VTcdJP0TQkl7bh4nVG0OJNrEataMpuWB54D0VEc=";
const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

fn environment(workload_uri: &str, module: &str) -> EdgeEnvironment {
    let vars: HashMap<String, String> = [
        ("IOTEDGE_WORKLOADURI", workload_uri),
        ("IOTEDGE_MODULEID", module),
        ("IOTEDGE_DEVICEID", "edge-01"),
        ("IOTEDGE_IOTHUBHOSTNAME", "myhub.azure-devices.net"),
        ("IOTEDGE_GATEWAYHOSTNAME", "edge-01.local"),
        ("IOTEDGE_MODULEGENERATIONID", "638000000000000000"),
        ("IOTEDGE_AUTHSCHEME", "sasToken"),
        ("IOTEDGE_APIVERSION", "2022-08-03"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    EdgeEnvironment::from_vars(&vars).unwrap()
}

#[tokio::test]
async fn the_token_of_the_reference_worked_example() {
    let workload = WorkloadSimulator::start("filter", KEY, Some(PEM.into()));
    let env = environment(&workload.uri(), "filter");
    let client = WorkloadClient::new(&env);
    let token = module_token(&client, &env, 1767225600 - 3600, TOKEN_TTL)
        .await
        .unwrap();
    assert_eq!(
        token.password,
        "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fedge-01%2Fmodules%2Ffilter&sig=YHRimujpb2vNpXNQ%2F3qUaDEbu7aCBuEBeKVCZDMOQ3Q%3D&se=1767225600"
    );
    assert_eq!(token.expires_at, 1767225600);
    // The device-scope known answer of the azure_iot_sdk repository, signed the same way.
    let digest = client
        .sign(b"pontifex.azure-devices.net%2Fdevices%2FFirstDevice\n1593353305")
        .await
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD.encode(digest),
        "CKYVArtLm72J2UNWLb4V3XqPc679Ig3LX83G3nPExUc="
    );
    assert_eq!(workload.signs(), 2);
    assert_eq!(client.trust_bundle().await.unwrap(), PEM);
}

#[tokio::test]
async fn each_failure_of_the_security_daemon_is_named() {
    let workload = WorkloadSimulator::start("edgeguard", KEY, None);
    let client = WorkloadClient::new(&environment(&workload.uri(), "edgeguard"));
    match client.trust_bundle().await {
        Err(WorkloadError::Refused {
            what: "trust-bundle",
            status: 404,
            message,
        }) => assert_eq!(message, "trust bundle not found"),
        other => panic!("{other:?}"),
    }
    workload.set_fault(Fault::Status(500));
    let e = client.sign(b"x").await.unwrap_err();
    assert!(
        matches!(e, WorkloadError::Refused { status: 500, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("simulated failure"), "{e}");
    workload.set_fault(Fault::Garbage);
    let e = client.sign(b"x").await.unwrap_err();
    assert!(
        matches!(e, WorkloadError::Garbage { what: "sign", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("not JSON"), "{e}");
    workload.set_fault(Fault::ShortDigest);
    let e = client.sign(b"x").await.unwrap_err();
    assert!(
        e.to_string().contains("16 bytes, an HMAC-SHA256 has 32"),
        "{e}"
    );
    workload.set_fault(Fault::None);

    // Another module's identity is refused, as the daemon refuses a caller outside the module's container.
    let other = WorkloadClient::new(&environment(&workload.uri(), "intruder"));
    assert!(matches!(
        other.sign(b"x").await,
        Err(WorkloadError::Refused { status: 403, .. })
    ));

    let gone = environment(
        &format!(
            "unix://{}",
            workload.socket.with_file_name("absent.sock").display()
        ),
        "edgeguard",
    );
    let e = WorkloadClient::new(&gone).sign(b"x").await.unwrap_err();
    assert!(
        matches!(e, WorkloadError::Unreachable { .. }) && e.to_string().contains("absent.sock"),
        "{e}"
    );
}

/// The simulator enforces what the daemon enforces, so a client that passes is one the daemon takes.
#[tokio::test]
async fn the_simulator_enforces_the_daemon_rules() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let workload = WorkloadSimulator::start("edgeguard", KEY, Some(PEM.into()));
    let raw = async |request: &str| -> String {
        let mut stream = tokio::net::UnixStream::connect(&workload.socket)
            .await
            .unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let answer = raw("GET /trust-bundle HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("api-version not specified"),
        "{answer}"
    );
    let answer = raw(
        "GET /trust-bundle?api-version=2017-01-01 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.contains("invalid api-version"), "{answer}");
    let answer = raw("POST /modules/edgeguard/genid/1/sign?api-version=2018-06-28 HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}").await;
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
    let answer = raw("POST /modules/edgeguard/genid/1/sign?api-version=2018-06-28 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 1\r\nConnection: close\r\n\r\n{").await;
    assert!(answer.starts_with("HTTP/1.1 422"), "{answer}");
}
