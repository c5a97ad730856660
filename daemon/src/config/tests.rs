use super::*;
use crate::decode::WireFormat;

const MINIMAL: &str = r#"
    [kafka]
    brokers = "127.0.0.1:9092"
    [postgres]
    url = "postgres://tw@127.0.0.1/tw"
"#;

#[test]
fn minimal_config_takes_spec_defaults() {
    let c = Config::from_toml_str(MINIMAL).unwrap();
    assert_eq!(c.attribution.window_ms(), 72 * 3_600_000);
    assert_eq!(c.topics.routing.name, "llm.routing-decisions");
    assert_eq!(c.topics.feedback.name, "llm.feedback");
    assert_eq!(c.topics.tickets.name, "support.tickets");
    assert_eq!(c.topics.routing.format, WireFormat::Avro);
}

#[test]
fn unknown_key_is_named() {
    let err = Config::from_toml_str(&format!("{MINIMAL}\n[attribution]\nwindow_hour = 3\n")).unwrap_err().to_string();
    assert!(err.contains("window_hour"), "{err}");
}

#[test]
fn bad_value_names_key_and_reason() {
    let err = Config::from_toml_str(&format!("{MINIMAL}\n[attribution]\nwindow_hours = -1\n")).unwrap_err().to_string();
    assert!(err.contains("attribution.window_hours") && err.contains("positive"), "{err}");
    let err = Config::from_toml_str(&format!("{MINIMAL}\n[topics.routing]\nname = \"r\"\nformat = \"confluent\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("topics.routing.schema_ids"), "{err}");
    let err = Config::from_toml_str(&format!("{MINIMAL}\n[topics.routing]\nname = \"r\"\nformat = \"protobuf\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("protobuf"), "{err}");
}

#[test]
fn lateness_beyond_the_pending_wait_is_refused() {
    let cfg = |lateness: f64| {
        Config::from_toml_str(&format!(
            "{MINIMAL}\n[attribution]\npending_max_hours = 2\nallowed_lateness_seconds = {lateness}\n"
        ))
    };
    assert!(cfg(7200.0).is_ok());
    let err = cfg(7201.0).unwrap_err().to_string();
    assert!(err.contains("attribution.allowed_lateness_seconds") && err.contains("pending_max_hours"), "{err}");
}

#[test]
fn routing_targets_parse_with_a_default_tolerance_and_are_validated() {
    let c = Config::from_toml_str(&format!(
        "{MINIMAL}\n[routing.targets.\"router-2026-01\"]\ncheap_share = 0.62\n\
         [routing.targets.\"router-2026-02\"]\ncheap_share = 0.5\ntolerance = 0.1\n\
         [alerts.routed_share]\nfire_after = 4\n"
    ))
    .unwrap();
    let t = &c.routing.targets["router-2026-01"];
    assert_eq!((t.cheap_share, t.tolerance), (0.62, 0.05));
    assert_eq!(c.routing.targets["router-2026-02"].tolerance, 0.1);
    assert_eq!((c.alerts.routed_share.fire_after, c.alerts.routed_share.resolve_after), (4, 2));
    let err = Config::from_toml_str(&format!("{MINIMAL}\n[routing.targets.v1]\ncheap_share = 1.2\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("routing.targets.v1.cheap_share"), "{err}");
    let err = Config::from_toml_str(&format!("{MINIMAL}\n[routing.targets.v1]\ncheap_share = 0.6\ntolerance = 0\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("routing.targets.v1.tolerance"), "{err}");
    let err = Config::from_toml_str(&format!("{MINIMAL}\n[routing.targets.v1]\ncheap_share = 0.6\nshare = 1\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("share"), "{err}");
}

#[test]
fn example_config_is_valid() {
    let text = include_str!("../../../tierwatch.example.toml");
    Config::from_toml_str(text).unwrap();
}
