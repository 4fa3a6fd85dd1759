//! Settings: every knob of the service, read once from the environment (and `.env`) at start-up.
//!
//! Each field says its variable and default. Values are parsed into typed values here, so the rest of the
//! program never sees a raw string; a bad value stops start-up with one line naming the variable.

use std::{
    fmt,
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    time::Duration,
};

use awc::http::Uri;

use crate::dispatch::retry::RetryPolicy;

/// Every variable the service reads, in the order the README documents them.
pub const VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "REDIS_URL",
    "WEBHOOK_URL",
    "WEBHOOK_AUTH_KEY",
    "INTERVAL",
    "BATCH_SIZE",
    "WEBHOOK_CONCURRENCY",
    "AUTOSTART",
    "HTTP_ADDR",
    "CONTENT_MAX_CHARS",
    "LEASE",
    "REDIS_TTL",
    "WEBHOOK_TIMEOUT",
    "SHUTDOWN_GRACE",
    "BACKOFF_MIN",
    "BACKOFF_MAX",
    "MAX_RETRIES",
    "API_KEY",
    "SENT_RETENTION",
];

/// The embedded default: a file under `./data/`, created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/insider-messaging.db";

#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATABASE_URL` (default `sqlite://data/insider-messaging.db`): where the `messages` table lives.
    /// `postgres://` for several replicas; `sqlite://` for one instance, with no server to run.
    pub database_url: Secret,
    /// `REDIS_URL` (optional): where sent message ids are cached; unset means no cache.
    pub redis_url: Option<Secret>,
    /// `WEBHOOK_URL` (required): the provider endpoint messages are POSTed to.
    pub webhook_url: String,
    /// `WEBHOOK_AUTH_KEY` (optional): sent as `x-ins-auth-key`; never logged.
    pub webhook_auth_key: Option<Secret>,
    /// `INTERVAL` (default `2m`): time between two ticks of the scheduler.
    pub interval: Duration,
    /// `BATCH_SIZE` (default `2`): the most messages one tick claims.
    pub batch_size: NonZeroU32,
    /// `WEBHOOK_CONCURRENCY` (default: `BATCH_SIZE`): the most POSTs in flight at once on this instance,
    /// counted from claim to recorded result. A tick claims only what is free, so nothing claimed waits
    /// in memory while its lease runs out. The default keeps one tick's worth in flight.
    pub webhook_concurrency: NonZeroUsize,
    /// `AUTOSTART` (default `true`): start sending as soon as the service is up.
    pub autostart: bool,
    /// `HTTP_ADDR` (default `0.0.0.0:8080`): where the API listens; port 0 picks a free one.
    pub http_addr: SocketAddr,
    /// `CONTENT_MAX_CHARS` (default `160`): the most characters (not bytes) a message may hold.
    pub content_max_chars: NonZeroUsize,
    /// `LEASE` (default `30s`): how long a claim is owned before the rescuer may hand it to another sender.
    pub lease: Duration,
    /// `REDIS_TTL` (default `7d`): how long a sent message's id stays cached.
    pub redis_ttl: Duration,
    /// `WEBHOOK_TIMEOUT` (default `10s`): the longest one POST to the provider may take.
    pub webhook_timeout: Duration,
    /// `SHUTDOWN_GRACE` (default `20s`): how long shutdown waits for sends in flight.
    pub shutdown_grace: Duration,
    /// `BACKOFF_MIN` (default `1s`): the wait after a first failed attempt.
    pub backoff_min: Duration,
    /// `BACKOFF_MAX` (default `10m`): the longest wait between attempts, `Retry-After` included.
    pub backoff_max: Duration,
    /// `MAX_RETRIES` (default `10`): attempts a message gets before it is failed (a dead letter).
    pub max_retries: NonZeroU32,
    /// `API_KEY` (optional): when set, every route but health, metrics and docs requires it.
    pub api_key: Option<Secret>,
    /// `SENT_RETENTION` (optional, e.g. `30d`): sent messages older than this are deleted, with their
    /// history, a batch at a time every minute; unset keeps them for ever.
    pub sent_retention: Option<Duration>,
}

impl Settings {
    /// Reads the process environment (after `load_dotenv`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds settings from any source of variables; unset and empty mean the same.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let required = |name: &'static str, what: &str| {
            var(name).ok_or_else(|| ConfigError {
                variable: name,
                problem: format!("is required: set it to {what}"),
            })
        };
        let duration = |name: &'static str, default: &str| {
            let raw = var(name).unwrap_or_else(|| default.to_owned());
            parse_duration(&raw).map_err(|problem| ConfigError {
                variable: name,
                problem,
            })
        };
        let number = |name: &'static str, default: usize| -> Result<NonZeroUsize, ConfigError> {
            match var(name) {
                None => NonZeroUsize::new(default).ok_or_else(|| ConfigError {
                    variable: name,
                    problem: "has a zero default".to_owned(),
                }),
                Some(raw) => raw.trim().parse::<NonZeroUsize>().map_err(|_| ConfigError {
                    variable: name,
                    problem: format!("expected a whole number of at least 1, got {raw:?}"),
                }),
            }
        };

        let database_url = database_url_from_lookup(&lookup)?;
        let webhook_url = required(
            "WEBHOOK_URL",
            "the provider's http(s) URL (or try `insider-messaging demo`, which brings a stand-in provider)",
        )?;
        parse_http_url(&webhook_url).map_err(|problem| ConfigError {
            variable: "WEBHOOK_URL",
            problem,
        })?;
        let batch_size = number("BATCH_SIZE", 2)?;
        let batch_size = u32::try_from(batch_size.get())
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| ConfigError {
                variable: "BATCH_SIZE",
                problem: format!("expected at most {}, got {batch_size}", u32::MAX),
            })?;
        let webhook_concurrency = match var("WEBHOOK_CONCURRENCY") {
            None => NonZeroUsize::new(batch_size.get() as usize).unwrap_or(NonZeroUsize::MIN),
            Some(_) => number("WEBHOOK_CONCURRENCY", 1)?,
        };
        let sent_retention = var("SENT_RETENTION")
            .map(|raw| {
                parse_duration(&raw)
                    .and_then(|retention| {
                        (retention >= Duration::from_secs(1))
                            .then_some(retention)
                            .ok_or_else(|| "expected at least 1s; leave it unset to keep sent messages".to_owned())
                    })
                    .map_err(|problem| ConfigError {
                        variable: "SENT_RETENTION",
                        problem,
                    })
            })
            .transpose()?;
        let http_addr_raw = var("HTTP_ADDR").unwrap_or_else(|| "0.0.0.0:8080".to_owned());
        let http_addr = http_addr_raw.trim().parse::<SocketAddr>().map_err(|_| ConfigError {
            variable: "HTTP_ADDR",
            problem: format!("expected an address such as 0.0.0.0:8080, got {http_addr_raw:?}"),
        })?;
        let autostart = match var("AUTOSTART") {
            None => true,
            Some(raw) => parse_bool(&raw).ok_or_else(|| ConfigError {
                variable: "AUTOSTART",
                problem: format!("expected true or false, got {raw:?}"),
            })?,
        };

        let settings = Settings {
            database_url,
            redis_url: var("REDIS_URL").map(Secret::new),
            webhook_url,
            webhook_auth_key: var("WEBHOOK_AUTH_KEY").map(Secret::new),
            interval: duration("INTERVAL", "2m")?,
            batch_size,
            webhook_concurrency,
            autostart,
            http_addr,
            content_max_chars: number("CONTENT_MAX_CHARS", 160)?,
            lease: duration("LEASE", "30s")?,
            redis_ttl: duration("REDIS_TTL", "7d")?,
            webhook_timeout: duration("WEBHOOK_TIMEOUT", "10s")?,
            shutdown_grace: duration("SHUTDOWN_GRACE", "20s")?,
            api_key: var("API_KEY").map(Secret::new),
            backoff_min: duration("BACKOFF_MIN", "1s")?,
            backoff_max: duration("BACKOFF_MAX", "10m")?,
            max_retries: NonZeroU32::new(u32::try_from(number("MAX_RETRIES", 10)?.get()).unwrap_or(u32::MAX))
                .unwrap_or(NonZeroU32::MIN),
            sent_retention,
        };
        if settings.backoff_min > settings.backoff_max {
            return Err(ConfigError {
                variable: "BACKOFF_MIN",
                problem: format!(
                    "must not exceed BACKOFF_MAX ({})",
                    humantime::format_duration(settings.backoff_max)
                ),
            });
        }
        for (variable, value) in [
            ("INTERVAL", settings.interval),
            ("LEASE", settings.lease),
            ("WEBHOOK_TIMEOUT", settings.webhook_timeout),
            ("BACKOFF_MIN", settings.backoff_min),
        ] {
            if value.is_zero() {
                return Err(ConfigError {
                    variable,
                    problem: "expected a duration above zero".to_owned(),
                });
            }
        }
        if settings.redis_ttl < Duration::from_secs(1) {
            return Err(ConfigError {
                variable: "REDIS_TTL",
                problem: "expected at least 1s (Redis expiry counts whole seconds)".to_owned(),
            });
        }
        Ok(settings)
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
            max_attempts: self.max_retries,
        }
    }

    /// Combinations that start but invite trouble; start-up logs each as a warning.
    pub fn risky_combinations(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.lease <= self.webhook_timeout {
            warnings.push(format!(
                "LEASE ({}) is not longer than WEBHOOK_TIMEOUT ({}): a slow send can outlive its claim \
                 and the message can be posted twice",
                humantime::format_duration(self.lease),
                humantime::format_duration(self.webhook_timeout),
            ));
        }
        if self.shutdown_grace < self.webhook_timeout {
            warnings.push(format!(
                "SHUTDOWN_GRACE ({}) is shorter than WEBHOOK_TIMEOUT ({}): shutdown may abandon sends in \
                 flight, which are then posted again after their lease",
                humantime::format_duration(self.shutdown_grace),
                humantime::format_duration(self.webhook_timeout),
            ));
        }
        warnings
    }
}

/// Loads `.env` into the environment when there is one; variables already set win. Called first thing,
/// so that `RUST_LOG` in `.env` reaches the logger too.
pub fn load_dotenv() -> Result<(), ConfigError> {
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        // A missing .env is the normal case in production; a malformed one is not silently skipped.
        Err(error) if error.not_found() => Ok(()),
        Err(error) => Err(ConfigError {
            variable: ".env",
            problem: format!("could not be read: {error}"),
        }),
    }
}

/// `DATABASE_URL` alone, for commands that need nothing else (`migrate`).
pub fn database_url_from_env() -> Result<Secret, ConfigError> {
    database_url_from_lookup(|name| std::env::var(name).ok())
}

fn database_url_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Secret, ConfigError> {
    let url = lookup("DATABASE_URL")
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    if !["postgres://", "postgresql://", "sqlite:"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
    {
        return Err(ConfigError {
            variable: "DATABASE_URL",
            problem: "expected a URL starting with postgres://, postgresql:// or sqlite://".to_owned(),
        });
    }
    Ok(Secret::new(url))
}

/// A value that must never reach a log line or an error body: `Debug` and `Display` print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A variable that stops start-up; its `Display` is the one line the operator sees.
#[derive(Debug, thiserror::Error)]
#[error("{variable} {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

/// `500ms`, `30s`, `2m`, `1h 30m`, `7d`: the forms humantime accepts.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|_| format!("expected a duration such as 500ms, 30s or 2m, got {raw:?}"))
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn parse_http_url(raw: &str) -> Result<(), String> {
    let uri = raw
        .parse::<Uri>()
        .map_err(|_| format!("expected an http(s) URL, got {raw:?}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(()),
        _ => Err(format!("expected an http(s) URL with a host, got {raw:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut map: HashMap<String, String> = HashMap::from([
            ("DATABASE_URL".to_owned(), "postgres://postgres@127.0.0.1/db".to_owned()),
            ("WEBHOOK_URL".to_owned(), "http://127.0.0.1:9/hook".to_owned()),
        ]);
        for (name, value) in vars {
            map.insert((*name).to_owned(), (*value).to_owned());
        }
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.interval, Duration::from_secs(120));
        assert_eq!(s.batch_size.get(), 2);
        assert_eq!(s.webhook_concurrency.get(), 2, "one tick's worth in flight");
        assert_eq!(s.sent_retention, None);
        assert!(s.autostart);
        assert_eq!(s.http_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(s.content_max_chars.get(), 160);
        assert_eq!(s.lease, Duration::from_secs(30));
        assert_eq!(s.redis_ttl, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(s.webhook_timeout, Duration::from_secs(10));
        assert_eq!(s.shutdown_grace, Duration::from_secs(20));
        assert_eq!(
            (s.backoff_min, s.backoff_max),
            (Duration::from_secs(1), Duration::from_secs(600))
        );
        assert_eq!(s.max_retries.get(), 10);
        assert!(s.redis_url.is_none());
        assert!(s.risky_combinations().is_empty());
    }

    #[test]
    fn human_durations_are_understood() {
        let s = settings(&[("INTERVAL", "500ms"), ("LEASE", "1m 30s")]).unwrap();
        assert_eq!(s.interval, Duration::from_millis(500));
        assert_eq!(s.lease, Duration::from_secs(90));
    }

    #[test]
    fn a_bad_value_names_its_variable_and_what_was_expected() {
        let cases = [
            ("INTERVAL", "soon", "INTERVAL expected a duration"),
            ("INTERVAL", "0s", "INTERVAL expected a duration above zero"),
            ("BATCH_SIZE", "0", "BATCH_SIZE expected a whole number of at least 1"),
            ("BATCH_SIZE", "-3", "BATCH_SIZE expected a whole number"),
            ("AUTOSTART", "maybe", "AUTOSTART expected true or false"),
            ("HTTP_ADDR", "localhost", "HTTP_ADDR expected an address"),
            ("WEBHOOK_URL", "ftp://x/y", "WEBHOOK_URL expected an http(s) URL"),
            (
                "DATABASE_URL",
                "mysql://x",
                "DATABASE_URL expected a URL starting with postgres://",
            ),
            ("REDIS_TTL", "10ms", "REDIS_TTL expected at least 1s"),
            ("MAX_RETRIES", "0", "MAX_RETRIES expected a whole number of at least 1"),
            ("BACKOFF_MIN", "1h", "BACKOFF_MIN must not exceed BACKOFF_MAX"),
            (
                "WEBHOOK_CONCURRENCY",
                "0",
                "WEBHOOK_CONCURRENCY expected a whole number of at least 1",
            ),
            ("SENT_RETENTION", "forever", "SENT_RETENTION expected a duration"),
            ("SENT_RETENTION", "0s", "SENT_RETENTION expected at least 1s"),
        ];
        for (variable, value, expected) in cases {
            let error = settings(&[(variable, value)]).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{variable}={value}: {error}");
        }
    }

    #[test]
    fn webhook_concurrency_follows_the_batch_size_unless_set() {
        assert_eq!(
            settings(&[("BATCH_SIZE", "300")]).unwrap().webhook_concurrency.get(),
            300
        );
        let s = settings(&[("BATCH_SIZE", "300"), ("WEBHOOK_CONCURRENCY", "800")]).unwrap();
        assert_eq!((s.batch_size.get(), s.webhook_concurrency.get()), (300, 800));
        let s = settings(&[("SENT_RETENTION", "30d")]).unwrap();
        assert_eq!(s.sent_retention, Some(Duration::from_secs(30 * 24 * 3600)));
    }

    #[test]
    fn a_missing_webhook_url_points_at_the_demo() {
        let error = Settings::from_lookup(|_| None).unwrap_err().to_string();
        assert!(error.starts_with("WEBHOOK_URL is required"), "{error}");
        assert!(error.contains("insider-messaging demo"), "{error}");
    }

    #[test]
    fn the_database_defaults_to_the_embedded_file() {
        let s =
            Settings::from_lookup(|name| (name == "WEBHOOK_URL").then(|| "http://127.0.0.1:9/".to_owned())).unwrap();
        assert_eq!(s.database_url.expose(), DEFAULT_DATABASE_URL);
    }

    #[test]
    fn secrets_never_print() {
        let s = settings(&[("WEBHOOK_AUTH_KEY", "hunter2"), ("REDIS_URL", "redis://:pw@h")]).unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("hunter2"));
        assert!(!printed.contains(":pw@"));
        assert_eq!(s.webhook_auth_key.unwrap().expose(), "hunter2");
    }

    #[test]
    fn a_lease_shorter_than_the_timeout_is_warned_about() {
        let s = settings(&[("LEASE", "5s"), ("WEBHOOK_TIMEOUT", "10s")]).unwrap();
        let warnings = s.risky_combinations();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("LEASE (5s)"), "{}", warnings[0]);
    }
}
