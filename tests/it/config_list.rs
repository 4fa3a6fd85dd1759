//! `insider-messaging config --list`: the variables each subcommand reads, as the deploy checks read them.

use std::process::Command;

use insider_messaging::config::VARIABLES;
use serde_json::Value;

fn config_list() -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_insider-messaging"))
        .args(["config", "--list"])
        .env_clear()
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn entry<'a>(listing: &'a Value, subcommand: &str, name: &str) -> &'a Value {
    listing[subcommand]
        .as_array()
        .and_then(|entries| entries.iter().find(|entry| entry["name"] == name))
        .unwrap_or_else(|| panic!("{subcommand} does not list {name}"))
}

#[test]
fn config_list_names_every_variable_each_subcommand_reads() {
    let listing = config_list();
    let subcommands: Vec<&str> = listing.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        subcommands,
        ["config", "demo", "migrate", "mock-provider", "openapi", "serve"]
    );
    let names = |subcommand: &str| -> Vec<String> {
        listing[subcommand]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut serve: Vec<String> = VARIABLES.iter().map(|variable| variable.name.to_owned()).collect();
    serve.push("RUST_LOG".to_owned());
    assert_eq!(names("serve"), serve);
    assert_eq!(names("migrate"), ["DATABASE_URL", "RUST_LOG"]);
    assert!(
        !names("demo").contains(&"WEBHOOK_URL".to_owned()),
        "demo brings its own provider"
    );
    assert!(names("mock-provider").contains(&"MOCK_PROVIDER_FAIL_RATE".to_owned()));
}

#[test]
fn config_list_gives_defaults_kinds_and_secrets() {
    let listing = config_list();
    let grace = entry(&listing, "serve", "SHUTDOWN_GRACE");
    assert_eq!(
        (&grace["default"], &grace["kind"]),
        (&Value::from("20s"), &Value::from("duration"))
    );
    let webhook = entry(&listing, "serve", "WEBHOOK_URL");
    assert_eq!(
        (&webhook["default"], &webhook["required"]),
        (&Value::Null, &Value::Bool(true))
    );
    assert_eq!(entry(&listing, "serve", "API_KEY")["secret"], true);
    assert_eq!(
        entry(&listing, "serve", "WEBHOOK_CONCURRENCY")["default_from"],
        "BATCH_SIZE"
    );
    assert_eq!(
        entry(&listing, "demo", "INTERVAL")["default"],
        "1s",
        "the demo's own pace"
    );
    let addr = entry(&listing, "mock-provider", "MOCK_PROVIDER_ADDR");
    assert_eq!(
        (&addr["default"], &addr["kind"]),
        (&Value::from("127.0.0.1:9090"), &Value::from("ip:port"))
    );
    assert_eq!(
        entry(&listing, "mock-provider", "MOCK_PROVIDER_AUTH_KEY")["secret"],
        true
    );
    assert_eq!(entry(&listing, "openapi", "RUST_LOG")["default"], "info");
    let demo_key = entry(&listing, "demo", "CALLBACK_AUTH_KEY");
    assert_eq!(
        (&demo_key["secret"], &demo_key["default"]),
        (&Value::Bool(true), &Value::Null),
        "the demo sets a key, and does not show it"
    );
    assert_eq!(
        entry(&listing, "serve", "DATABASE_URL")["default"],
        "sqlite://data/insider-messaging.db",
        "a secret kind's default that is no secret is shown"
    );
}

/// The documents the binary prints are read through pipes: a reader that stops early (`| head`) ends the
/// output, not the binary with a panic. `openapi`'s is larger than a pipe's buffer (`config --list`,
/// printed the same way, is not).
#[test]
fn a_reader_that_stops_early_is_no_failure() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_insider-messaging"))
        .arg("openapi")
        .env_clear()
        .current_dir(std::env::temp_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe is closed here, with most of the document unread.
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
