//! How a variable is described and read: its `Kind` (how its text becomes a typed value), what applies
//! when it is unset, and the `settings!` table that declares a `Settings` field and its entry in
//! `VARIABLES` in one row.

use std::{
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    str::FromStr,
    time::Duration,
};

use awc::http::Uri;
use chrono_tz::Tz;

use super::{ConfigError, VARIABLES};
use crate::{
    dispatch::quiet_hours::QuietHours,
    secret::{Secret, redact_url_credentials},
};

/// What applies when a variable is unset or blank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unset {
    /// This text, read as if the variable had been set to it.
    Default(&'static str),
    /// Whatever the named variable reads as, set or not.
    SameAs(&'static str),
    /// Start-up stops; the text says what to set it to.
    Required(&'static str),
    /// The setting is off: its field is `None`.
    Off,
}

/// One variable as `config --list` prints it; the README's table and `.env.example` are tested against
/// these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variable {
    pub name: &'static str,
    /// What its value is, in words.
    pub kind: &'static str,
    pub unset: Unset,
    /// Held in a `Secret`: never logged, never in an error.
    pub secret: bool,
    /// What it is for, in one line.
    pub doc: &'static str,
}

/// How a variable's text becomes a `T`. A parse error is the rest of the line after the variable's name.
pub struct Kind<T> {
    pub name: &'static str,
    pub secret: bool,
    pub parse: fn(&str) -> Result<T, String>,
}

pub const DURATION: Kind<Duration> = Kind {
    name: "duration",
    secret: false,
    parse: duration,
};
pub const POSITIVE_DURATION: Kind<Duration> = Kind {
    name: "duration above zero",
    secret: false,
    parse: |raw| duration(raw).and_then(|value| above_zero(value, "expected a duration above zero")),
};
pub const CACHE_TTL: Kind<Duration> = Kind {
    name: "duration of at least 1s",
    secret: false,
    parse: |raw| at_least_a_second(raw, "expected at least 1s (Redis expiry counts whole seconds)"),
};
pub const RETENTION: Kind<Duration> = Kind {
    name: "duration of at least 1s",
    secret: false,
    parse: |raw| at_least_a_second(raw, "expected at least 1s; leave it unset to keep sent messages"),
};
pub const COUNT: Kind<NonZeroUsize> = Kind {
    name: "whole number of at least 1",
    secret: false,
    parse: count,
};
/// The most messages one round may hold: claimed by a tick (`BATCH_SIZE`), or posted at once
/// (`WEBHOOK_CONCURRENCY`). Far above what two cores or a provider take; a value past it is a slip of
/// the keyboard, and the send slots' arithmetic overflowed on one near 2^64 (a panic at start-up).
const MOST_PER_ROUND: usize = 100_000;
/// Messages posted at once: `WEBHOOK_CONCURRENCY`.
pub const PER_ROUND: Kind<NonZeroUsize> = Kind {
    name: "whole number from 1 to 100000",
    secret: false,
    parse: per_round,
};
/// Messages one tick claims: `BATCH_SIZE`, a `LIMIT` of the claim.
pub const PER_ROUND_U32: Kind<NonZeroU32> = Kind {
    name: PER_ROUND.name,
    secret: false,
    parse: |raw| {
        let value = per_round(raw)?;
        Ok(u32::try_from(value.get())
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MIN))
    },
};

fn per_round(raw: &str) -> Result<NonZeroUsize, String> {
    let value = count(raw)?;
    (value.get() <= MOST_PER_ROUND)
        .then_some(value)
        .ok_or_else(|| format!("expected at most {MOST_PER_ROUND}, got {value}"))
}
/// A count that must also fit the database's and the retry policy's 32 bits.
pub const COUNT_U32: Kind<NonZeroU32> = Kind {
    name: "whole number of at least 1",
    secret: false,
    parse: |raw| {
        let value = count(raw)?;
        u32::try_from(value.get())
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| format!("expected at most {}, got {value}", u32::MAX))
    },
};
pub const SWITCH: Kind<bool> = Kind {
    name: "true or false",
    secret: false,
    parse: |raw| match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("expected true or false, got {raw:?}")),
    },
};
pub const ADDRESS: Kind<SocketAddr> = Kind {
    name: "ip:port",
    secret: false,
    parse: |raw| {
        raw.trim()
            .parse()
            .map_err(|_| format!("expected an address such as 0.0.0.0:8080, got {raw:?}"))
    },
};
/// Shown in an error without the `user:password@` it may carry.
pub const HTTP_URL: Kind<Uri> = Kind {
    name: "http(s) URL",
    secret: false,
    parse: |raw| {
        let shown = redact_url_credentials(raw);
        let uri = raw
            .parse::<Uri>()
            .map_err(|_| format!("expected an http(s) URL, got {shown:?}"))?;
        match (uri.scheme_str(), uri.host()) {
            (Some("http" | "https"), Some(_)) => {}
            (Some("http" | "https"), None) => {
                return Err(format!("expected an http(s) URL with a host, got {shown:?}"));
            }
            _ => {
                return Err(format!(
                    "expected a URL starting with http:// or https://, got {shown:?}"
                ));
            }
        }
        // `Uri` takes what the HTTP client's own parser refuses (a port of 99999, or of `+80`): ask it.
        reqwest::Url::parse(raw)
            .map(|_| uri)
            .map_err(|error| format!("expected a URL the HTTP client can use ({error}), got {shown:?}"))
    },
};
/// Messages a second or a minute (`100/s`, `6000/m`), read as messages a second.
pub const QUIET_WINDOW: Kind<QuietHours> = Kind {
    name: "a window of local time, e.g. 21:00-08:00",
    secret: false,
    parse: QuietHours::parse,
};
pub const TIME_ZONE: Kind<Tz> = Kind {
    name: "an IANA time zone, e.g. Europe/Istanbul",
    secret: false,
    parse: |raw| {
        raw.trim()
            .parse::<Tz>()
            .map_err(|_| format!("expected an IANA time zone such as Europe/Istanbul, got {raw:?}"))
    },
};
pub const RATE: Kind<f64> = Kind {
    name: "messages per second or minute, e.g. 100/s",
    secret: false,
    parse: |raw| {
        let invalid = || format!("expected a rate such as 100/s or 6000/m, got {raw:?}");
        let (count, per) = raw.trim().split_once('/').ok_or_else(invalid)?;
        let count: f64 = count.trim().parse().map_err(|_| invalid())?;
        let seconds = match per.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            _ => return Err(invalid()),
        };
        (count.is_finite() && count > 0.0)
            .then_some(count / seconds)
            .ok_or_else(|| format!("expected a rate above zero, got {raw:?}"))
    },
};
/// It may carry a password, so it is a secret.
pub const DATABASE: Kind<Secret> = Kind {
    name: "postgres:// or sqlite:// URL",
    secret: true,
    parse: |raw| {
        // The drivers' own reading, so that a URL they refuse (a port of letters) is told here, naming the
        // variable; their errors name what is wrong, not the URL.
        let read = if ["postgres://", "postgresql://"]
            .iter()
            .any(|scheme| raw.starts_with(scheme))
        {
            sqlx::postgres::PgConnectOptions::from_str(raw).map(drop)
        } else if raw.starts_with("sqlite:") {
            sqlx::sqlite::SqliteConnectOptions::from_str(raw).map(drop)
        } else {
            return Err("expected a URL starting with postgres://, postgresql:// or sqlite://".to_owned());
        };
        read.map(|()| Secret::new(raw))
            .map_err(|error| format!("expected a usable database URL: {}", without(raw, &error.to_string())))
    },
};
/// It may carry a password, so it is a secret.
pub const REDIS: Kind<Secret> = Kind {
    name: "redis:// URL",
    secret: true,
    parse: |raw| {
        use deadpool_redis::redis::IntoConnectionInfo;
        raw.into_connection_info().map(|_| Secret::new(raw)).map_err(|error| {
            format!(
                "expected a Redis URL such as redis://host:6379/0: {}",
                without(raw, &error.to_string())
            )
        })
    },
};

/// `message` with `secret` (a URL that may hold a password) taken out, should a driver quote it.
fn without(secret: &str, message: &str) -> String {
    if secret.is_empty() {
        message.to_owned()
    } else {
        message.replace(secret, "[redacted]")
    }
}
/// A Standard Webhooks signing secret: `whsec_` then base64 of the key (as Svix and the spec's
/// libraries print it). Kept whole; the signer decodes it.
pub const WEBHOOK_SECRET: Kind<Secret> = Kind {
    name: "whsec_ and base64 of at least 24 bytes",
    secret: true,
    parse: |raw| {
        let raw = raw.trim();
        let key = raw
            .strip_prefix("whsec_")
            .ok_or_else(|| "expected a secret starting with whsec_ (the value itself is not shown)".to_owned())?;
        match base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key) {
            Ok(bytes) if bytes.len() >= 24 => Ok(Secret::new(raw)),
            Ok(_) => Err("expected whsec_ and base64 of at least 24 bytes, got fewer".to_owned()),
            Err(_) => Err("expected whsec_ and base64 (the value itself is not shown)".to_owned()),
        }
    },
};
/// A key that travels in a header: ours to the provider, or the clients' and the provider's to us. Kept
/// trimmed (clients send it trimmed, and a key read from a file ends with a newline, which no header
/// carries), and printable ASCII only: a key with `é` would start and then refuse every request, the
/// right key included, and a provider key with a newline failed every POST as a provider outage.
pub const KEY: Kind<Secret> = Kind {
    name: "printable ASCII text (surrounding spaces dropped)",
    secret: true,
    parse: |raw| {
        let key = raw.trim();
        match key.chars().position(|c| !matches!(c, ' '..='~')) {
            None => Ok(Secret::new(key)),
            Some(at) => Err(format!(
                "expected printable ASCII only (a header carries no other characters); character {} is not \
                 (the value itself is not shown)",
                at + 1
            )),
        }
    },
};

/// `500ms`, `30s`, `2m`, `1h 30m`, `7d`: the forms humantime accepts.
/// The longest duration a setting takes. Postgres counts times from 4713 BC to 294276 AD, and a claim
/// subtracts `PRIORITY_AGING` from now: `10000y`, a way of saying "never", failed every claim.
/// A year as humantime reads `y`: 365.25 days.
const LONGEST: Duration = Duration::from_secs(100 * 31_557_600);

fn duration(raw: &str) -> Result<Duration, String> {
    let value = humantime::parse_duration(raw.trim())
        .map_err(|_| format!("expected a duration such as 500ms, 30s or 2m, got {raw:?}"))?;
    (value <= LONGEST)
        .then_some(value)
        .ok_or_else(|| format!("expected at most 100y, got {raw:?}"))
}

fn above_zero(value: Duration, problem: &str) -> Result<Duration, String> {
    (!value.is_zero()).then_some(value).ok_or_else(|| problem.to_owned())
}

fn at_least_a_second(raw: &str, problem: &str) -> Result<Duration, String> {
    let value = duration(raw)?;
    (value >= Duration::from_secs(1))
        .then_some(value)
        .ok_or_else(|| problem.to_owned())
}

fn count(raw: &str) -> Result<NonZeroUsize, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("expected a whole number of at least 1, got {raw:?}"))
}

/// What a `Settings` field holds for a variable of kind `T`: the value itself (a variable with a default,
/// or a required one), or an `Option` of it (a variable that may stay unset).
pub trait FieldOf<T>: Sized {
    /// `None` when the field cannot stand for "unset".
    fn from_value(value: Option<T>) -> Option<Self>;
}

impl<T> FieldOf<T> for T {
    fn from_value(value: Option<T>) -> Option<T> {
        value
    }
}

impl<T> FieldOf<T> for Option<T> {
    fn from_value(value: Option<T>) -> Option<Option<T>> {
        Some(value)
    }
}

/// A source of variables read through `VARIABLES`: unset and blank mean the same, and a variable's
/// `Unset` applies in their place.
pub struct Vars<L> {
    lookup: L,
}

impl<L: Fn(&str) -> Option<String>> Vars<L> {
    pub fn new(lookup: L) -> Self {
        Self { lookup }
    }

    /// `name` read as a `kind`, or what its `Unset` says; an error names the variable.
    pub fn read<T, F: FieldOf<T>>(&self, name: &'static str, kind: &Kind<T>) -> Result<F, ConfigError> {
        let error = |problem| ConfigError {
            variable: name,
            problem,
        };
        let value = self
            .text(name)
            .map(|raw| (kind.parse)(&raw))
            .transpose()
            .map_err(error)?;
        F::from_value(value).ok_or_else(|| match unset_of(name) {
            Some(Unset::Required(what)) => error(format!("is required: set it to {what}")),
            _ => error("has no value: give it a default, or make its field an Option".to_owned()),
        })
    }

    /// The text `name` reads as: its own when set, else its default (or its `SameAs` variable's).
    fn text(&self, name: &str) -> Option<String> {
        let set = (self.lookup)(name).filter(|value| !value.trim().is_empty());
        set.or_else(|| match unset_of(name)? {
            Unset::Default(text) => Some(text.to_owned()),
            Unset::SameAs(other) => self.text(other),
            Unset::Required(_) | Unset::Off => None,
        })
    }
}

fn unset_of(name: &str) -> Option<Unset> {
    VARIABLES
        .iter()
        .find(|variable| variable.name == name)
        .map(|variable| variable.unset)
}

/// Declares `Settings` and `VARIABLES` from one table, and `Settings::read`, which reads every variable
/// in the table's order (so the first bad one is the one reported). A row is a one-line doc comment and
/// `field: FieldType = "NAME" as KIND, Unset::...;`; an `Unset::Off` row has an `Option` field.
macro_rules! settings {
    ($(
        #[doc = $doc:literal]
        $field:ident: $ty:ty = $name:literal as $kind:path, $unset:expr;
    )+) => {
        /// Every knob of the service, parsed; `from_env` or `from_lookup` builds it.
        #[derive(Debug, Clone)]
        pub struct Settings {
            $(#[doc = concat!("`", $name, "`:", $doc)] pub $field: $ty,)+
        }

        /// Every variable `Settings` reads, in the table's order (the README's too).
        pub const VARIABLES: &[Variable] = &[$(
            Variable {
                name: $name,
                kind: $kind.name,
                unset: $unset,
                secret: $kind.secret,
                doc: $doc.trim_ascii(),
            },
        )+];

        impl Settings {
            fn read(vars: &Vars<impl Fn(&str) -> Option<String>>) -> Result<Self, ConfigError> {
                Ok(Self { $($field: vars.read($name, &$kind)?,)+ })
            }
        }
    };
}
pub(super) use settings;
