//! Settings: every knob of the service, read once from the environment (and `.env`) at start-up.
//!
//! The `settings!` table below is the one place where a variable's name, kind, default and meaning are
//! written. It declares the `Settings` fields and the `VARIABLES` list, and reading walks it in order.
//! `config --list` prints the list; tests hold the README's table and `.env.example` to it. Values are
//! parsed into typed values here, so nothing else sees a raw string, and a bad value stops start-up with
//! one line naming the variable.
//!
//! Only `main`, `startup` and `demo` use this module: `startup` hands each part what it needs, typed.

pub mod listing;
mod variable;

use std::{
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    time::Duration,
};

use awc::http::Uri;
use chrono_tz::Tz;

use self::variable::{
    ADDRESS, CACHE_TTL, COUNT, COUNT_U32, DATABASE, DURATION, HTTP_URL, KEY, PER_ROUND, PER_ROUND_U32,
    POSITIVE_DURATION, QUIET_WINDOW, RATE, REDIS, RETENTION, SWITCH, TIME_ZONE, Vars, WEBHOOK_SECRET, settings,
};
pub use self::variable::{Unset, Variable};
use crate::{dispatch::quiet_hours::QuietHours, secret::Secret};

/// The embedded default: a file under `./data/`, created on first start.
/// The day `RECIPIENT_DAILY_LIMIT` counts sends over.
const DAY: Duration = Duration::from_secs(24 * 3600);

pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/insider-messaging.db";

settings! {
    /// Where the `messages` table lives: `sqlite://` for one instance, `postgres://` for several replicas.
    database_url: Secret = "DATABASE_URL" as DATABASE, Unset::Default(DEFAULT_DATABASE_URL);
    /// Where sent message ids are cached; unset, nothing is cached.
    redis_url: Option<Secret> = "REDIS_URL" as REDIS, Unset::Off;
    /// The provider endpoint messages are POSTed to.
    webhook_url: Uri = "WEBHOOK_URL" as HTTP_URL, Unset::Required(
        "the provider's http(s) URL (or try `insider-messaging demo`, which brings a stand-in provider)"
    );
    /// Sent as `x-ins-auth-key`; unset, no header is sent.
    webhook_auth_key: Option<Secret> = "WEBHOOK_AUTH_KEY" as KEY, Unset::Off;
    /// Time between two ticks of the scheduler.
    interval: Duration = "INTERVAL" as POSITIVE_DURATION, Unset::Default("2m");
    /// The most messages one tick claims.
    batch_size: NonZeroU32 = "BATCH_SIZE" as PER_ROUND_U32, Unset::Default("2");
    /// The most POSTs in flight at once on this instance.
    webhook_concurrency: NonZeroUsize = "WEBHOOK_CONCURRENCY" as PER_ROUND, Unset::SameAs("BATCH_SIZE");
    /// A cap on the whole cluster's sends, e.g. `100/s` or `6000/m`; unset, no cap.
    rate_limit: Option<f64> = "RATE_LIMIT" as RATE, Unset::Off;
    /// A message due for longer than this counts as one priority higher, so high cannot starve low.
    priority_aging: Duration = "PRIORITY_AGING" as POSITIVE_DURATION, Unset::Default("10m");
    /// `low` messages wait while it is inside this window (e.g. `21:00-08:00`) in the recipient's time.
    quiet_hours: Option<QuietHours> = "QUIET_HOURS" as QUIET_WINDOW, Unset::Off;
    /// The recipients' time zone for quiet hours when neither the message nor its number says one.
    quiet_hours_tz: Tz = "QUIET_HOURS_TZ" as TIME_ZONE, Unset::Default("UTC");
    /// A non-`high` message to a number already sent this many in the last 24 hours waits; unset, no cap.
    recipient_daily_limit: Option<NonZeroU32> = "RECIPIENT_DAILY_LIMIT" as COUNT_U32, Unset::Off;
    /// Start sending as soon as the service is up (a new database; then the cluster's switch wins).
    autostart: bool = "AUTOSTART" as SWITCH, Unset::Default("true");
    /// Where the API listens; port 0 picks a free one.
    http_addr: SocketAddr = "HTTP_ADDR" as ADDRESS, Unset::Default("0.0.0.0:8080");
    /// The most characters (not bytes) a message may hold.
    content_max_chars: NonZeroUsize = "CONTENT_MAX_CHARS" as COUNT, Unset::Default("160");
    /// How long a claim is owned before a tick may rescue it.
    lease: Duration = "LEASE" as POSITIVE_DURATION, Unset::Default("30s");
    /// How long a sent message's id stays cached.
    redis_ttl: Duration = "REDIS_TTL" as CACHE_TTL, Unset::Default("7d");
    /// The longest one POST may wait for the provider's status line.
    webhook_timeout: Duration = "WEBHOOK_TIMEOUT" as POSITIVE_DURATION, Unset::Default("10s");
    /// How long shutdown waits for sends in flight.
    shutdown_grace: Duration = "SHUTDOWN_GRACE" as DURATION, Unset::Default("20s");
    /// The shortest wait after a failed attempt (the first waits 1 to 2 times it); it doubles per attempt, with jitter.
    backoff_min: Duration = "BACKOFF_MIN" as POSITIVE_DURATION, Unset::Default("1s");
    /// The longest wait between attempts, `Retry-After` included.
    backoff_max: Duration = "BACKOFF_MAX" as DURATION, Unset::Default("10m");
    /// Attempts a message gets before it is failed (a dead letter).
    max_retries: NonZeroU32 = "MAX_RETRIES" as COUNT_U32, Unset::Default("10");
    /// Sent messages older than this go with their history, and events and receipts as old; unset, all kept.
    sent_retention: Option<Duration> = "SENT_RETENTION" as RETENTION, Unset::Off;
    /// When set, every route but health, metrics, docs and the console requires it; unset, all are open.
    api_key: Option<Secret> = "API_KEY" as KEY, Unset::Off;
    /// Sent by the provider on `POST /receipts` and `POST /inbound`; unset, receipts refused, replies take `API_KEY`.
    callback_auth_key: Option<Secret> = "CALLBACK_AUTH_KEY" as KEY, Unset::Off;
    /// A receipt that matches no sent message for this long is counted unmatched.
    receipt_match_window: Duration = "RECEIPT_MATCH_WINDOW" as POSITIVE_DURATION, Unset::Default("1h");
    /// A sent message with no final receipt after this long shows `no_receipt`.
    receipt_timeout: Duration = "RECEIPT_TIMEOUT" as POSITIVE_DURATION, Unset::Default("48h");
    /// Where status events (sent, failed, delivered, undelivered) are POSTed; unset, none are written.
    status_webhook_url: Option<Uri> = "STATUS_WEBHOOK_URL" as HTTP_URL, Unset::Off;
    /// Signs status events (Standard Webhooks); required with `STATUS_WEBHOOK_URL`.
    status_webhook_secret: Option<Secret> = "STATUS_WEBHOOK_SECRET" as WEBHOOK_SECRET, Unset::Off;
    /// A status event not acknowledged within this long of its change is marked failed.
    status_webhook_max_age: Duration = "STATUS_WEBHOOK_MAX_AGE" as POSITIVE_DURATION, Unset::Default("3d");
}

impl Settings {
    /// Reads the process environment (after `load_dotenv`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds settings from any source of variables; unset and empty mean the same.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let settings = Self::read(&Vars::new(lookup))?;
        match (&settings.status_webhook_url, &settings.status_webhook_secret) {
            (Some(_), None) => {
                return Err(ConfigError {
                    variable: "STATUS_WEBHOOK_SECRET",
                    problem: "is required with STATUS_WEBHOOK_URL: events are always signed".to_owned(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError {
                    variable: "STATUS_WEBHOOK_URL",
                    problem: "is required with STATUS_WEBHOOK_SECRET".to_owned(),
                });
            }
            _ => {}
        }
        if settings.backoff_min > settings.backoff_max {
            return Err(ConfigError {
                variable: "BACKOFF_MIN",
                problem: format!(
                    "must not exceed BACKOFF_MAX ({})",
                    humantime::format_duration(settings.backoff_max)
                ),
            });
        }
        Ok(settings)
    }

    /// Combinations that start but invite trouble; start-up logs each as a warning.
    pub fn risky_combinations(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.api_key.is_none() {
            warnings.push(format!(
                "API_KEY is unset (or blank): the API is open, and anyone who can reach {} can enqueue, \
                 retry, cancel and stop sending; set API_KEY unless only trusted clients can connect",
                self.http_addr,
            ));
        }
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
        if let Some(retention) = self.sent_retention {
            if self.recipient_daily_limit.is_some() && retention < DAY {
                warnings.push(format!(
                    "SENT_RETENTION ({}) is shorter than the day RECIPIENT_DAILY_LIMIT counts over: sends \
                     deleted before their day is out no longer count, and a number gets more than its cap",
                    humantime::format_duration(retention),
                ));
            }
            if self.callback_auth_key.is_some() && retention < self.receipt_timeout {
                warnings.push(format!(
                    "SENT_RETENTION ({}) is shorter than RECEIPT_TIMEOUT ({}): a message can be deleted \
                     while it awaits its receipt, which then matches nothing",
                    humantime::format_duration(retention),
                    humantime::format_duration(self.receipt_timeout),
                ));
            }
        }
        warnings
    }
}

/// The entries of `VARIABLES` with these names, in the list's order.
pub fn variables_named(names: &[&str]) -> Vec<Variable> {
    VARIABLES
        .iter()
        .filter(|variable| names.contains(&variable.name))
        .copied()
        .collect()
}

/// Loads `.env` of the working directory into the environment when there is one; variables already set
/// win. Called first thing, so that `RUST_LOG` in `.env` reaches the logger too. Not `dotenvy::dotenv`,
/// which also takes the first `.env` of a parent directory: a service started in `/srv/app` would read
/// `/srv/.env`, written for something else.
pub fn load_dotenv() -> Result<(), ConfigError> {
    if let Ok(contents) = std::fs::read_to_string(".env")
        // Ours only, and only where the environment does not set it (its value wins).
        && let Some(name) = substituted_in(
            &contents,
            |name| VARIABLES.iter().any(|variable| variable.name == name) && std::env::var_os(name).is_none(),
            |name| std::env::var_os(name).is_some(),
        )
    {
        return Err(ConfigError {
            variable: ".env",
            problem: format!(
                "gives {name} a value with a `$`, which .env reads as a variable to put in its place (a key \
                 `abc$def` would become `abc`): put the value in single quotes, or write `\\$`"
            ),
        });
    }
    match dotenvy::from_path(".env") {
        Ok(_) => Ok(()),
        // A missing .env is the normal case in production; a malformed one is not silently skipped.
        Err(error) if error.not_found() => Ok(()),
        // dotenvy's own text quotes the line it choked on, and with an unclosed quote the rest of the
        // file: keys and passwords. Say where, not what.
        Err(dotenvy::Error::LineParse(_, _)) => Err(ConfigError {
            variable: ".env",
            problem: "has a line that could not be parsed (not shown: it may hold a secret); look for an \
                      unclosed quote, or a value with spaces not in quotes"
                .to_owned(),
        }),
        Err(error) => Err(ConfigError {
            variable: ".env",
            problem: format!("could not be read: {error}"),
        }),
    }
}

/// The first variable of `.env`'s text, of those `checked` names, whose value holds a `$` that `.env`
/// substitutes with nothing: one outside single quotes and not escaped, naming no variable that is
/// `defined` (in the environment) or set earlier in the file. dotenvy would take it and the name after it
/// out of the value: a key or a password with a `$` cut short, silently. Values are read as
/// dotenvy reads them: a quote left open goes on over the next lines, and an unquoted `#` after a space
/// (or first) starts a comment.
fn substituted_in(contents: &str, checked: impl Fn(&str) -> bool, defined: impl Fn(&str) -> bool) -> Option<&str> {
    let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
    let mut earlier = std::collections::HashSet::new();
    // The quote a value left open at the end of its line, and whose value it is.
    let mut open: Option<(char, &str)> = None;
    for line in contents.lines() {
        let (name, value) = match open {
            Some((_, name)) => (name, line),
            None => {
                let line = line.trim_start();
                let line = line.strip_prefix("export ").unwrap_or(line);
                if line.starts_with('#') {
                    continue;
                }
                let Some((name, value)) = line.split_once('=') else {
                    continue;
                };
                (name.trim(), value)
            }
        };
        let (mut single, mut double) = (
            open.is_some_and(|(q, _)| q == '\''),
            open.is_some_and(|(q, _)| q == '"'),
        );
        let (mut escaped, mut after_space, mut substituted) = (false, open.is_none(), false);
        for (at, c) in value.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if !single => escaped = true,
                '\'' if !double => single = !single,
                '"' if !single => double = !double,
                // The rest of the line is a comment.
                '#' if !single && !double && after_space => break,
                // A variable set before (in the environment, or earlier in the file) is meant to be put
                // there; one set nowhere, or a `$` naming none, takes away what stands in the value.
                '$' if !single => {
                    let referred = referred_to(&value[at + 1..]);
                    substituted |= referred.is_empty() || !(defined(referred) || earlier.contains(referred));
                }
                _ => {}
            }
            after_space = c.is_whitespace();
        }
        if substituted && checked(name) {
            return Some(name);
        }
        open = match (single, double) {
            (true, _) => Some(('\'', name)),
            (_, true) => Some(('"', name)),
            _ => None,
        };
        if open.is_none() {
            earlier.insert(name);
        }
    }
    None
}

/// The name a `$` followed by `after` refers to, as dotenvy reads it: `{name}`, or the letters and
/// digits that follow.
fn referred_to(after: &str) -> &str {
    match after.strip_prefix('{') {
        Some(braced) => braced.split('}').next().unwrap_or_default(),
        None => {
            let end = after.find(|c: char| !c.is_alphanumeric()).unwrap_or(after.len());
            &after[..end]
        }
    }
}

/// `DATABASE_URL` alone, for commands that need nothing else (`migrate`).
pub fn database_url_from_env() -> Result<Secret, ConfigError> {
    Vars::new(|name: &str| std::env::var(name).ok()).read("DATABASE_URL", &DATABASE)
}

/// A variable that stops start-up; its `Display` is the one line the operator sees.
#[derive(Debug, thiserror::Error)]
#[error("{variable} {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
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
        assert!(s.api_key.is_none());
        assert!(s.callback_auth_key.is_none());
        assert_eq!(s.receipt_match_window, Duration::from_secs(3600));
        assert_eq!(s.receipt_timeout, Duration::from_secs(48 * 3600));
        let warnings = s.risky_combinations();
        assert!(
            warnings.len() == 1 && warnings[0].starts_with("API_KEY is unset"),
            "{warnings:?}"
        );
    }

    #[test]
    fn an_open_api_is_warned_about_and_a_blank_key_leaves_it_open() {
        for blank in ["", "   ", "\t"] {
            let s = settings(&[("API_KEY", blank)]).unwrap();
            assert!(s.api_key.is_none(), "{blank:?}");
            assert!(s.risky_combinations()[0].contains("the API is open"), "{blank:?}");
        }
        let s = settings(&[("API_KEY", "k")]).unwrap();
        assert!(s.risky_combinations().is_empty());
    }

    #[test]
    fn a_padded_api_key_is_kept_without_its_spaces() {
        let s = settings(&[("API_KEY", " padded-key ")]).unwrap();
        assert_eq!(s.api_key.unwrap().expose(), "padded-key");
    }

    #[test]
    fn a_dollar_that_dotenv_would_substitute_is_found_and_named() {
        for (contents, named) in [
            ("API_KEY=abc$def\n", Some("API_KEY")),
            (
                "# a comment $HOME\nWEBHOOK_AUTH_KEY=\"abc$def\"\n",
                Some("WEBHOOK_AUTH_KEY"),
            ),
            ("export DATABASE_URL=postgres://u:p${x}@h/db\n", Some("DATABASE_URL")),
            ("API_KEY='abc$def'\n", None),
            ("API_KEY=abc\\$def\n", None),
            ("API_KEY=abc # costs $5\n", None),
            ("INTERVAL=2m\n\nBATCH_SIZE=2\n", None),
            // A single-quoted value over two lines, a `=` and a `$` on the second.
            ("NOTE='line one\nx=y$z'\nAPI_KEY=k\n", None),
            ("NOTE=\"line one\nx=y$z\"\n", Some("NOTE")),
            ("\u{feff}# price=$5\nAPI_KEY=k\n", None),
            ("KEY=#note $5\n", None),
            ("API_KEY=ok\r\nWEBHOOK_AUTH_KEY=a$b\r\n", Some("WEBHOOK_AUTH_KEY")),
        ] {
            assert_eq!(substituted_in(contents, |_| true, |_| false), named, "{contents:?}");
        }
        let read: Vec<(String, String)> = dotenvy::from_read_iter("NOTE='line one\nx=y$z'\n".as_bytes())
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            read,
            [("NOTE".to_owned(), "line one\nx=y$z".to_owned())],
            "one value over two lines"
        );
        let read: Vec<String> = dotenvy::from_read_iter("PGPASS=x\nURL=u:${PGPASS}@h\nKEY=p@ss$!\n".as_bytes())
            .map(|pair| pair.unwrap().1)
            .collect();
        assert_eq!(
            read,
            ["x", "u:x@h", "p@ss!"],
            "a set variable is put in; a `$` naming none is dropped"
        );
        // Only the variables asked about: another tool's, or one the environment sets, is not ours to refuse.
        let ours = |name: &str| name == "API_KEY" || name == "DATABASE_URL";
        let nothing = |_: &str| false;
        assert_eq!(
            substituted_in("OTHER_TOOL_URL=postgres://${PGUSER}@h/db\n", ours, nothing),
            None
        );
        assert_eq!(substituted_in("API_KEY=a$b\n", ours, nothing), Some("API_KEY"));
        // A variable set before is meant: from the environment, or earlier in the file.
        let url = "DATABASE_URL=postgres://u:${PGPASS}@h/db\n";
        assert_eq!(substituted_in(url, ours, |name| name == "PGPASS"), None);
        assert_eq!(substituted_in(&format!("PGPASS=x\n{url}"), ours, nothing), None);
        assert_eq!(substituted_in(url, ours, nothing), Some("DATABASE_URL"));
        assert_eq!(
            substituted_in("API_KEY=p@ss$!\n", ours, |_| true),
            Some("API_KEY"),
            "a `$` naming nothing"
        );
        // The model holds to dotenvy's reading: where it names nothing, each `$` is kept as written.
        for (contents, value) in [
            ("API_KEY='abc$def'\n", "abc$def"),
            ("API_KEY=abc\\$def\n", "abc$def"),
            ("API_KEY=abc # costs $5\n", "abc"),
            ("API_KEY=#note $5\n", ""),
        ] {
            let read: Vec<(String, String)> = dotenvy::from_read_iter(contents.as_bytes())
                .map(Result::unwrap)
                .collect();
            assert_eq!(read, [("API_KEY".to_owned(), value.to_owned())], "{contents:?}");
        }
    }

    #[test]
    fn a_round_of_more_than_a_hundred_thousand_is_refused() {
        for variable in ["BATCH_SIZE", "WEBHOOK_CONCURRENCY"] {
            let error = settings(&[(variable, "18446744073709551615")]).unwrap_err();
            assert_eq!(error.variable, variable);
            assert!(error.problem.contains("at most 100000"), "{error}");
            assert!(settings(&[(variable, "100001")]).is_err());
        }
        let s = settings(&[("BATCH_SIZE", "100000"), ("WEBHOOK_CONCURRENCY", "100000")]).unwrap();
        assert_eq!((s.batch_size.get(), s.webhook_concurrency.get()), (100_000, 100_000));
    }

    #[test]
    fn a_key_a_header_cannot_carry_is_refused_without_showing_it() {
        for (variable, key) in [
            ("API_KEY", "clé-secrète"),
            ("CALLBACK_AUTH_KEY", "ключ"),
            ("API_KEY", "a\tb"),
        ] {
            let error = settings(&[(variable, key)]).unwrap_err();
            assert_eq!(error.variable, variable);
            assert!(error.problem.contains("printable ASCII"), "{error}");
            assert!(!error.to_string().contains(key), "{error}");
        }
        let error = settings(&[("WEBHOOK_AUTH_KEY", "provider\nkey")]).unwrap_err();
        assert_eq!(error.variable, "WEBHOOK_AUTH_KEY");
        let s = settings(&[("WEBHOOK_AUTH_KEY", "from-a-file\n")]).unwrap();
        assert_eq!(
            s.webhook_auth_key.unwrap().expose(),
            "from-a-file",
            "a file's last newline is no part of it"
        );
        let s = settings(&[("API_KEY", "p@ss word~!")]).unwrap();
        assert_eq!(s.api_key.unwrap().expose(), "p@ss word~!");
    }

    #[test]
    fn a_url_that_is_refused_never_shows_its_password() {
        let cases = [
            ("WEBHOOK_URL", "ftp://user:hunter2@host/"),
            ("WEBHOOK_URL", "http://user:hunter2@/hook"),
            ("WEBHOOK_URL", "user:hunter2@host"),
            ("DATABASE_URL", "mysql://user:hunter2@host/db"),
            ("WEBHOOK_URL", "htps://sms.example/send?api_key=hunter2"),
            ("STATUS_WEBHOOK_URL", "ftp://u:hunter2/x@h/"),
        ];
        for (variable, value) in cases {
            let error = settings(&[(variable, value)]).unwrap_err().to_string();
            assert!(error.starts_with(variable), "{error}");
            assert!(!error.contains("hunter2"), "{variable}={value}: {error}");
        }
        let error = settings(&[("WEBHOOK_URL", "ftp://user:hunter2@host/")])
            .unwrap_err()
            .to_string();
        assert!(error.ends_with(r#"got "ftp://[redacted]@host""#), "{error}");
    }

    /// What the drivers and the HTTP client would refuse only at start-up, after migrating, is refused
    /// with the other settings (exit code 2), naming the variable and never its password.
    #[test]
    fn urls_the_clients_cannot_use_are_refused_with_the_settings() {
        let cases = [
            (
                "DATABASE_URL",
                "postgres://u:hunter2@127.0.0.1:notaport/x",
                "usable database URL",
            ),
            ("REDIS_URL", "http://u:hunter2@x", "Redis URL"),
            ("WEBHOOK_URL", "http://u:hunter2@h:99999/sms", "port"),
            ("WEBHOOK_URL", "http://u:hunter2@h:+80/sms", "port"),
            ("WEBHOOK_URL", "ftp://h/sms", "http:// or https://"),
        ];
        for (variable, value, expected) in cases {
            let error = settings(&[(variable, value)]).unwrap_err().to_string();
            assert!(error.starts_with(variable), "{error}");
            assert!(error.contains(expected), "{variable}={value}: {error}");
            assert!(!error.contains("hunter2"), "{variable}={value}: {error}");
        }
        for (variable, value) in [
            ("DATABASE_URL", "postgresql://u:p@[::1]:5432/db?sslmode=disable"),
            ("DATABASE_URL", "sqlite://data/x.db"),
            ("DATABASE_URL", "sqlite::memory:"),
            ("REDIS_URL", "redis://:p@127.0.0.1:6379/0"),
            ("WEBHOOK_URL", "https://u:p@[::1]:8443/sms"),
            ("WEBHOOK_URL", "http://[::1]/sms"),
            ("WEBHOOK_URL", "http://example.com:/sms"),
        ] {
            assert!(settings(&[(variable, value)]).is_ok(), "{variable}={value}");
        }
    }

    #[test]
    fn human_durations_are_understood() {
        let s = settings(&[("INTERVAL", "500ms"), ("LEASE", "1m 30s"), ("PRIORITY_AGING", "100y")]).unwrap();
        assert_eq!(s.interval, Duration::from_millis(500));
        assert_eq!(s.lease, Duration::from_secs(90));
        assert_eq!(
            s.priority_aging,
            Duration::from_secs(3_155_760_000),
            "the longest taken"
        );
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
            (
                "WEBHOOK_URL",
                "ftp://x/y",
                "WEBHOOK_URL expected a URL starting with http:// or https://",
            ),
            (
                "DATABASE_URL",
                "mysql://x",
                "DATABASE_URL expected a URL starting with postgres://",
            ),
            ("REDIS_TTL", "10ms", "REDIS_TTL expected at least 1s"),
            // "Never", said as a long time: past what Postgres's time arithmetic holds.
            ("PRIORITY_AGING", "10000y", "PRIORITY_AGING expected at most 100y"),
            ("SENT_RETENTION", "500y", "SENT_RETENTION expected at most 100y"),
            ("MAX_RETRIES", "0", "MAX_RETRIES expected a whole number of at least 1"),
            ("BACKOFF_MIN", "1h", "BACKOFF_MIN must not exceed BACKOFF_MAX"),
            (
                "WEBHOOK_CONCURRENCY",
                "0",
                "WEBHOOK_CONCURRENCY expected a whole number of at least 1",
            ),
            ("SENT_RETENTION", "forever", "SENT_RETENTION expected a duration"),
            ("SENT_RETENTION", "0s", "SENT_RETENTION expected at least 1s"),
            ("RATE_LIMIT", "100", "RATE_LIMIT expected a rate such as 100/s"),
            ("RATE_LIMIT", "100/d", "RATE_LIMIT expected a rate such as 100/s"),
            ("RATE_LIMIT", "0/s", "RATE_LIMIT expected a rate above zero"),
            (
                "STATUS_WEBHOOK_SECRET",
                "hunter2",
                "STATUS_WEBHOOK_SECRET expected a secret starting with whsec_",
            ),
            (
                "STATUS_WEBHOOK_SECRET",
                "whsec_c2hvcnQ=",
                "STATUS_WEBHOOK_SECRET expected whsec_ and base64 of at least 24",
            ),
            (
                "STATUS_WEBHOOK_URL",
                "http://127.0.0.1:9/events",
                "STATUS_WEBHOOK_SECRET is required with STATUS_WEBHOOK_URL",
            ),
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
    fn a_rate_limit_is_read_per_second_or_per_minute() {
        assert_eq!(settings(&[]).unwrap().rate_limit, None);
        assert_eq!(settings(&[("RATE_LIMIT", "200/s")]).unwrap().rate_limit, Some(200.0));
        assert_eq!(
            settings(&[("RATE_LIMIT", " 6000 / m ")]).unwrap().rate_limit,
            Some(100.0)
        );
        assert_eq!(settings(&[("RATE_LIMIT", "0.5/s")]).unwrap().rate_limit, Some(0.5));
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
    fn a_retention_shorter_than_what_the_daily_cap_and_the_receipts_count_over_is_warned_about() {
        let s = settings(&[
            ("SENT_RETENTION", "12h"),
            ("RECIPIENT_DAILY_LIMIT", "3"),
            ("CALLBACK_AUTH_KEY", "c"),
            ("API_KEY", "k"),
        ])
        .unwrap();
        let warnings = s.risky_combinations();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("RECIPIENT_DAILY_LIMIT"), "{}", warnings[0]);
        assert!(warnings[1].contains("RECEIPT_TIMEOUT (2days)"), "{}", warnings[1]);
        let s = settings(&[
            ("SENT_RETENTION", "30d"),
            ("RECIPIENT_DAILY_LIMIT", "3"),
            ("CALLBACK_AUTH_KEY", "c"),
            ("API_KEY", "k"),
        ])
        .unwrap();
        assert!(s.risky_combinations().is_empty());
    }

    #[test]
    fn a_lease_shorter_than_the_timeout_is_warned_about() {
        let s = settings(&[("LEASE", "5s"), ("WEBHOOK_TIMEOUT", "10s"), ("API_KEY", "k")]).unwrap();
        let warnings = s.risky_combinations();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("LEASE (5s)"), "{}", warnings[0]);
    }
}
