//! The ASC agent configuration object against the official default twin and twin schema in
//! `schemas/asc-twin/`, every rule, and malformed input.

use edgeguard::config::Config;
use edgeguard::pipeline::asc_config::{AgentConfiguration, ErrorType, OBJECT_NAME, Priority};
use edgeguard_tests::repo_root;
use edgeguard_tests::schema::asc_validator;
use serde_json::{Value, json};
use std::time::Duration;

fn twin_dir() -> std::path::PathBuf {
    repo_root().join("schemas/asc-twin")
}

fn read(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(twin_dir().join(name)).unwrap()).unwrap()
}

fn parse(object: Value) -> Result<AgentConfiguration, edgeguard::pipeline::asc_config::Refused> {
    AgentConfiguration::parse(&object, &AgentConfiguration::default())
}

#[test]
fn the_official_default_twin_is_the_default_and_reports_back_as_it_came() {
    let twin = read("azureiotsecurity_default.json");
    let config = AgentConfiguration::from_twin(&twin, &AgentConfiguration::default()).unwrap();
    assert_eq!(config, AgentConfiguration::default());
    assert!(
        config.check().is_empty(),
        "the defaults raise no ConfigurationError"
    );

    // Reported: every desired property with the same value, plus the properties the twin
    // leaves out (baselineCustomChecksEnabled), null strings omitted.
    let reported = config.to_reported();
    let desired = &twin["properties"]["desired"][OBJECT_NAME];
    for (key, value) in desired.as_object().unwrap() {
        assert_eq!(&reported[key], value, "{key}");
    }
    let extra: Vec<&String> = reported
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| desired.get(k.as_str()).is_none())
        .collect();
    assert_eq!(extra, ["baselineCustomChecksEnabled"]);
    // The reported object reads back to the same configuration.
    assert_eq!(parse(reported).unwrap(), config);
}

#[test]
fn agrees_with_the_official_twin_schema() {
    let schema = read("azureiotsecurity_schema.json");
    let properties = schema["properties"]["desired"]["properties"][OBJECT_NAME]["properties"]
        .as_object()
        .unwrap();
    let reported = AgentConfiguration::default().to_reported();
    // Every property of the schema is known, with the schema's default.
    for (key, definition) in properties {
        assert_eq!(
            reported[key]["value"], definition["default"],
            "default of {key}"
        );
    }

    // And the reported object (after a change, too) validates against the schema.
    let validator = jsonschema::options()
        .with_base_uri("json-schema:///azureiotsecurity_schema.json")
        .with_retriever(edgeguard_tests::schema::LocalSchemas(twin_dir()))
        .build(&schema)
        .unwrap();
    let changed = parse(json!({
        "highPriorityMessageFrequency": {"value": "PT90M"},
        "lowPriorityMessageFrequency": {"value": "P1D"},
        "eventPriorityLogin": {"value": "off"},
        "aggregationIntervalProcessCreate": {"value": "PT0.5S"},
    }))
    .unwrap();
    for config in [AgentConfiguration::default(), changed] {
        let mut twin_reported = config.to_reported();
        twin_reported
            .as_object_mut()
            .unwrap()
            .remove("baselineCustomChecksEnabled");
        let doc = json!({ "desired": { OBJECT_NAME: twin_reported } });
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{doc}");
    }
    // The validator is not vacuous.
    assert!(!validator.is_valid(
        &json!({ "desired": { OBJECT_NAME: { "eventPriorityLogin": { "value": "Sometimes" } } } })
    ));
}

#[test]
fn values_parse_with_the_agents_semantics() {
    let c = parse(json!({
        "highPriorityMessageFrequency": {"value": "PT1M30S"},
        "lowPriorityMessageFrequency": {"value": "P1W"},
        "snapshotFrequency": {"value": "P1M"},
        "maxLocalCacheSizeInBytes": {"value": 8192},
        "maxMessageSizeInBytes": {"value": 8192},
        "eventPriorityProcessCreate": {"value": "HIGH"},
        "eventPriorityLogin": {"value": "off"},
        "eventPriorityDiagnostic": {"value": "lOw"},
        "aggregationEnabledConnectionCreate": {"value": false},
        "aggregationIntervalProcessTerminate": {"value": "PT2H"},
        "hubResourceId": {"value": "/subscriptions/x/resourceGroups/y/providers/Microsoft.Devices/IotHubs/z"},
        "$version": 7,
    }))
    .unwrap();
    assert_eq!(c.high_priority_message_frequency, Duration::from_secs(90));
    assert_eq!(
        c.low_priority_message_frequency,
        Duration::from_secs(7 * 86400)
    );
    assert_eq!(
        c.snapshot_frequency,
        Duration::from_secs(30 * 86400),
        "a month is 30 days"
    );
    assert_eq!((c.max_local_cache_size, c.max_message_size), (8192, 8192));
    assert_eq!(c.priority("ProcessCreate"), Some(Priority::High));
    assert_eq!(c.priority("Login"), Some(Priority::Off));
    assert_eq!(c.priority("Diagnostic"), Some(Priority::Low));
    assert!(!c.aggregation("ConnectionCreate").unwrap().enabled);
    assert_eq!(
        c.aggregation("ProcessTerminate").unwrap().interval,
        Duration::from_secs(7200)
    );
    let reported = c.to_reported();
    assert_eq!(reported["highPriorityMessageFrequency"]["value"], "PT1M30S");
    assert_eq!(reported["lowPriorityMessageFrequency"]["value"], "P1W");
    assert_eq!(
        reported["eventPriorityProcessCreate"]["value"], "High",
        "priorities report as the schema spells them"
    );
    assert_eq!(
        reported["hubResourceId"]["value"],
        "/subscriptions/x/resourceGroups/y/providers/Microsoft.Devices/IotHubs/z"
    );

    // Null objects, keys and values mean the default; so does a missing object.
    assert_eq!(parse(Value::Null).unwrap(), AgentConfiguration::default());
    assert_eq!(
        parse(json!({"maxMessageSizeInBytes": null, "snapshotFrequency": {"value": null}}))
            .unwrap(),
        AgentConfiguration::default()
    );
    assert_eq!(
        AgentConfiguration::from_twin(&json!({"properties": {"desired": {}}}), &c).unwrap(),
        AgentConfiguration::default()
    );
}

#[test]
fn semantic_checks_raise_configuration_errors_but_apply() {
    let c = parse(json!({
        "maxLocalCacheSizeInBytes": {"value": 100000},
        "maxMessageSizeInBytes": {"value": 200000},
        "highPriorityMessageFrequency": {"value": "PT6H"},
        "lowPriorityMessageFrequency": {"value": "PT1H"},
    }))
    .unwrap();
    assert_eq!(
        c.max_message_size, 200000,
        "a semantic finding does not refuse the value"
    );
    let issues = c.check();
    let found: Vec<(&str, ErrorType)> = issues
        .iter()
        .map(|i| (i.name.as_str(), i.error_type))
        .collect();
    assert_eq!(
        found,
        [
            ("maxLocalCacheSizeInBytes", ErrorType::Conflict),
            ("maxMessageSizeInBytes", ErrorType::NotOptimal),
            ("highPriorityMessageFrequency", ErrorType::Conflict),
        ]
    );
    assert_eq!(issues[0].used, "100000");
    assert_eq!(issues[2].used, "PT6H");

    // As events, they are valid ASC ConfigurationError events.
    let validator = asc_validator();
    let events: Vec<Value> = issues
        .iter()
        .map(|i| serde_json::from_slice(&i.to_event().to_bytes()).unwrap())
        .collect();
    let message = json!({"AgentVersion": "0.1.0", "AgentId": "9c647395-b913-4997-a732-a7fe7303b649", "MessageSchemaVersion": "1.0", "Events": events});
    edgeguard_tests::schema::assert_valid(&validator, &message);
    assert_eq!(
        message["Events"][1]["Payload"][0]["ErrorType"],
        "NotOptimal"
    );
}

#[test]
fn a_bad_update_is_refused_whole_and_names_every_bad_key() {
    let current = parse(
        json!({"maxMessageSizeInBytes": {"value": 65536}, "eventPriorityLogin": {"value": "Low"}}),
    )
    .unwrap();
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"maxMessageSizeInBytes": {"value": "65536"}}),
            "maxMessageSizeInBytes",
            "expected an integer",
        ),
        (
            json!({"maxMessageSizeInBytes": {"value": 65536.5}}),
            "maxMessageSizeInBytes",
            "non-negative integer",
        ),
        (
            json!({"maxMessageSizeInBytes": {"value": -8192}}),
            "maxMessageSizeInBytes",
            "non-negative integer",
        ),
        (
            json!({"maxMessageSizeInBytes": {"value": 4096}}),
            "maxMessageSizeInBytes",
            "out of range",
        ),
        (
            json!({"maxMessageSizeInBytes": {"value": 300000}}),
            "maxMessageSizeInBytes",
            "out of range",
        ),
        (
            json!({"maxLocalCacheSizeInBytes": {"value": 18446744073709551615u64}}),
            "maxLocalCacheSizeInBytes",
            "out of range",
        ),
        (
            json!({"maxLocalCacheSizeInBytes": {"value": 1e300}}),
            "maxLocalCacheSizeInBytes",
            "non-negative integer",
        ),
        (
            json!({"highPriorityMessageFrequency": {"value": "PT0S"}}),
            "highPriorityMessageFrequency",
            "longer than zero",
        ),
        (
            json!({"highPriorityMessageFrequency": {"value": "-PT5M"}}),
            "highPriorityMessageFrequency",
            "must start with P",
        ),
        (
            json!({"highPriorityMessageFrequency": {"value": "PT-5M"}}),
            "highPriorityMessageFrequency",
            "not a valid ISO-8601",
        ),
        (
            json!({"highPriorityMessageFrequency": {"value": "5 minutes"}}),
            "highPriorityMessageFrequency",
            "must start with P",
        ),
        (
            json!({"highPriorityMessageFrequency": {"value": 300}}),
            "highPriorityMessageFrequency",
            "ISO-8601 duration string",
        ),
        (
            json!({"snapshotFrequency": {"value": "P99999999Y"}}),
            "snapshotFrequency",
            "too long",
        ),
        (
            json!({"eventPriorityLogin": {"value": "Urgent"}}),
            "eventPriorityLogin",
            "expected \"Off\", \"Low\" or \"High\"",
        ),
        (
            json!({"eventPriorityLogin": {"value": true}}),
            "eventPriorityLogin",
            "expected \"Off\"",
        ),
        (
            json!({"aggregationEnabledProcessCreate": {"value": "yes"}}),
            "aggregationEnabledProcessCreate",
            "true or false",
        ),
        (
            json!({"eventPriorityProcesCreate": {"value": "Low"}}),
            "eventPriorityProcesCreate",
            "unknown property",
        ),
        (
            json!({"aggregationEnabledLogin": {"value": true}}),
            "aggregationEnabledLogin",
            "unknown property",
        ),
        (
            json!({"maxMessageSizeInBytes": 65536}),
            "maxMessageSizeInBytes",
            "wrapped as {\"value\": ...}",
        ),
        (
            json!({"maxMessageSizeInBytes": {"value": 65536, "unit": "bytes"}}),
            "maxMessageSizeInBytes",
            "unexpected member(s) unit",
        ),
        (json!([1, 2]), OBJECT_NAME, "must be an object"),
    ];
    for (update, key, expect) in cases {
        let refused = AgentConfiguration::parse(&update, &current).expect_err(&update.to_string());
        let issue = &refused.issues[0];
        assert_eq!(issue.name, key, "{update}");
        assert_eq!(issue.error_type, ErrorType::TypeMismatch);
        assert!(
            issue.message.contains(expect),
            "{update}: {}",
            issue.message
        );
    }

    // One bad property among good ones refuses all of them; each bad one is named; the
    // refusal reports the values in force.
    let refused = AgentConfiguration::parse(
        &json!({
            "eventPriorityLogin": {"value": "High"},
            "maxMessageSizeInBytes": {"value": "big"},
            "snapshotFrequency": {"value": "PT0S"},
        }),
        &current,
    )
    .unwrap_err();
    let names: Vec<&str> = refused.issues.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["maxMessageSizeInBytes", "snapshotFrequency"]);
    assert_eq!(refused.issues[0].used, "65536", "the value in force");
    assert_eq!(
        current.priority("Login"),
        Some(Priority::Low),
        "nothing of the refused update applied"
    );
    let event: Value = serde_json::from_slice(&refused.issues[0].to_event().to_bytes()).unwrap();
    assert!(
        event["Payload"][0]["Message"]
            .as_str()
            .unwrap()
            .contains("refused whole")
    );
}

#[test]
fn the_local_file_takes_the_same_object_bare_or_wrapped() {
    let config = Config::parse(
        "[asc]\nhighPriorityMessageFrequency = \"PT30S\"\nmaxMessageSizeInBytes = { value = 65536 }\neventPriorityLogin = \"off\"\n",
        "test",
    )
    .unwrap();
    let settings = config.pipeline_settings().unwrap();
    assert_eq!(
        settings.asc.high_priority_message_frequency,
        Duration::from_secs(30)
    );
    assert_eq!(settings.asc.max_message_size, 65536);
    assert_eq!(settings.asc.priority("Login"), Some(Priority::Off));

    for (text, key) in [
        (
            "[asc]\nmaxMessageSizeInBytes = \"big\"",
            "asc.maxMessageSizeInBytes",
        ),
        (
            "[asc]\nhighPriorityMessageFrequency = \"PT0S\"",
            "asc.highPriorityMessageFrequency",
        ),
        ("[asc]\nnoSuchThing = 1", "asc.noSuchThing"),
        (
            "[events.Heartbeat]\npriority = \"sometimes\"",
            "events.Heartbeat.priority",
        ),
        ("[events.Login]\npriority = \"High\"", "events.Login"),
        (
            "[events.ProcessCreate]\naggregate = false",
            "events.ProcessCreate",
        ),
        ("[events.Mine]\naggregate = true", "events.Mine"),
        (
            "[events.Mine]\naggregate_by = [\"A when B\"]",
            "events.Mine.aggregate_by",
        ),
        ("[pipeline]\nmax_in_flight = 0", "pipeline.max_in_flight"),
        ("[output]\nsink = \"file\"", "output.file"),
        ("[output]\nsink = \"carrier-pigeon\"", "sink"),
    ] {
        let error = Config::parse(text, "test").expect_err(text).to_string();
        assert!(error.contains(key), "{text}: {error}");
    }
    // The embedded default is valid and differs from the ASC defaults only where it says so.
    let embedded = Config::embedded_default().pipeline_settings().unwrap();
    assert_eq!(
        embedded.asc.high_priority_message_frequency,
        Duration::from_secs(5)
    );
    assert_eq!(
        embedded.asc.max_message_size,
        AgentConfiguration::default().max_message_size
    );
}
