//! `insider-messaging config --list`: the environment variables each subcommand reads, as one JSON object
//! keyed by subcommand. The settings come from `VARIABLES`, a subcommand's own flags from its clap
//! definition (`#[arg(env = ...)]`, as the stand-in provider's), and `RUST_LOG` from the logger. The
//! deploy checks read this instead of the source.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Unset, Variable};
use crate::telemetry;

/// One variable, as the JSON shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    pub name: String,
    /// The text that applies when it is unset; `null` when none does (see `default_from`, `required`).
    pub default: Option<String>,
    /// The variable whose value applies when this one is unset.
    pub default_from: Option<String>,
    /// What its value is, in words.
    pub kind: String,
    pub doc: String,
    /// Unset, the subcommand refuses to start.
    pub required: bool,
    /// Never printed by the service.
    pub secret: bool,
}

impl From<&Variable> for Listed {
    fn from(variable: &Variable) -> Self {
        let (default, default_from) = match variable.unset {
            Unset::Default(text) => (Some(text.to_owned()), None),
            Unset::SameAs(other) => (None, Some(other.to_owned())),
            Unset::Required(_) | Unset::Off => (None, None),
        };
        Self {
            name: variable.name.to_owned(),
            default,
            default_from,
            kind: variable.kind.to_owned(),
            doc: variable.doc.to_owned(),
            required: matches!(variable.unset, Unset::Required(_)),
            secret: variable.secret,
        }
    }
}

/// Every subcommand of `cli` with what it reads: the settings `settings_of` names for it, the variables
/// behind its own flags, and `RUST_LOG`.
pub fn by_subcommand(
    cli: &clap::Command,
    settings_of: impl Fn(&str) -> Vec<Variable>,
) -> BTreeMap<String, Vec<Listed>> {
    cli.get_subcommands()
        .map(|subcommand| {
            let name = subcommand.get_name();
            let mut listed: Vec<Listed> = settings_of(name).iter().map(Listed::from).collect();
            listed.extend(subcommand.get_arguments().filter_map(from_flag));
            listed.push(log_filter());
            (name.to_owned(), listed)
        })
        .collect()
}

/// A flag that falls back to an environment variable, described by its clap definition.
fn from_flag(flag: &clap::Arg) -> Option<Listed> {
    let name = flag.get_env()?.to_str()?.to_owned();
    let defaults: Vec<_> = flag
        .get_default_values()
        .iter()
        .map(|value| value.to_string_lossy())
        .collect();
    Some(Listed {
        name,
        default: (!defaults.is_empty()).then(|| defaults.join(",")),
        default_from: None,
        kind: flag
            .get_value_names()
            .and_then(|names| names.first())
            .map_or_else(|| "text".to_owned(), |kind| kind.to_lowercase()),
        doc: flag.get_help().map(ToString::to_string).unwrap_or_default(),
        required: flag.is_required_set(),
        secret: flag.is_hide_env_values_set(),
    })
}

fn log_filter() -> Listed {
    Listed {
        name: telemetry::LOG_FILTER_VARIABLE.to_owned(),
        default: Some(telemetry::DEFAULT_LOG_FILTER.to_owned()),
        default_from: None,
        kind: "log filter".to_owned(),
        doc: "Which log lines are written: a level (`debug`), or per module (`insider_messaging=debug,info`)."
            .to_owned(),
        required: false,
        secret: false,
    }
}

/// The README's and `.env.example`'s view of the list, held to it here: whoever changes a default or adds
/// a variable is told which lines to change.
#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::VARIABLES;

    fn read(file: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }

    /// The README's default cell: what `config --list` prints as `default` (or `default_from`), in
    /// backticks, or a word when neither applies.
    fn default_cell(variable: &Variable) -> String {
        match variable.unset {
            Unset::Default(text) => format!("`{text}`"),
            Unset::SameAs(other) => format!("`{other}`"),
            Unset::Required(_) => "required".to_owned(),
            Unset::Off => "unset".to_owned(),
        }
    }

    #[test]
    fn the_readme_table_has_every_variable_with_its_default() {
        const START: &str = "<!-- settings:start -->";
        const END: &str = "<!-- settings:end -->";
        let readme = read("README.md");
        let table = readme
            .split_once(START)
            .and_then(|(_, rest)| rest.split_once(END))
            .map(|(table, _)| table)
            .unwrap_or_else(|| panic!("README.md has no {START} … {END} section"));
        // `| `NAME` | default | meaning |`: the meaning may hold `|` only inside code, which we do not split.
        let rows: BTreeMap<&str, (&str, &str)> = table
            .lines()
            .filter_map(|line| {
                let cells = line.trim().strip_prefix("| `")?.strip_suffix('|')?;
                let (name, rest) = cells.split_once("` |")?;
                let (default, meaning) = rest.split_once(" | ")?;
                Some((name, (default.trim(), meaning.trim())))
            })
            .collect();
        let found: BTreeSet<(&str, &str)> = rows.iter().map(|(name, (default, _))| (*name, *default)).collect();
        let defaults: Vec<String> = VARIABLES.iter().map(default_cell).collect();
        let expected: BTreeSet<(&str, &str)> = VARIABLES
            .iter()
            .zip(&defaults)
            .map(|(variable, default)| (variable.name, default.as_str()))
            .collect();
        if found != expected {
            let mut wanted = String::from("| Variable | Default | Meaning |\n| --- | --- | --- |\n");
            for (variable, default) in VARIABLES.iter().zip(&defaults) {
                let meaning = rows.get(variable.name).map_or(variable.doc, |(_, meaning)| meaning);
                wanted.push_str(&format!("| `{}` | {default} | {meaning} |\n", variable.name));
            }
            panic!(
                "README.md's settings table differs from config::VARIABLES \
                 (missing or wrong: {:?}; not in the list: {:?}). Paste this between the markers:\n\n{wanted}",
                expected.difference(&found).collect::<Vec<_>>(),
                found.difference(&expected).collect::<Vec<_>>(),
            );
        }
    }

    #[test]
    fn env_example_shows_every_variable_with_its_default() {
        let example = read(".env.example");
        // `NAME=value`, set or commented out.
        let lines: Vec<(&str, &str)> = example
            .lines()
            .filter_map(|line| line.trim_start_matches(['#', ' ']).split_once('='))
            .filter(|(name, _)| !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
            .collect();
        let default_of = |name: &str| {
            VARIABLES
                .iter()
                .find(|variable| variable.name == name)
                .and_then(|variable| match variable.unset {
                    Unset::Default(text) => Some(text),
                    _ => None,
                })
        };
        let mut problems = Vec::new();
        for variable in VARIABLES {
            let values: Vec<&str> = lines
                .iter()
                .filter(|(name, _)| *name == variable.name)
                .map(|(_, value)| *value)
                .collect();
            let default = match variable.unset {
                Unset::Default(text) => Some(text),
                Unset::SameAs(other) => default_of(other),
                Unset::Required(_) | Unset::Off => None,
            };
            if values.is_empty() {
                problems.push(format!("{} is missing", variable.name));
            } else if let Some(default) = default.filter(|default| !values.contains(default)) {
                problems.push(format!(
                    "{}: shows {values:?}, the default is {default:?}",
                    variable.name
                ));
            }
        }
        for (name, _) in &lines {
            if !VARIABLES.iter().any(|variable| variable.name == *name) {
                problems.push(format!("{name} is not a setting"));
            }
        }
        assert!(
            problems.is_empty(),
            ".env.example is out of step with config::VARIABLES: {problems:#?}"
        );
    }

    #[test]
    fn a_variable_lists_its_default_or_what_stands_in_for_one() {
        let listed = |name: &str| Listed::from(VARIABLES.iter().find(|variable| variable.name == name).unwrap());
        let interval = listed("INTERVAL");
        assert_eq!((interval.default.as_deref(), interval.required), (Some("2m"), false));
        let concurrency = listed("WEBHOOK_CONCURRENCY");
        assert_eq!(
            (concurrency.default, concurrency.default_from.as_deref()),
            (None, Some("BATCH_SIZE"))
        );
        let webhook = listed("WEBHOOK_URL");
        assert_eq!((webhook.default, webhook.required), (None, true));
        let key = listed("API_KEY");
        assert_eq!((key.default, key.required, key.secret), (None, false, true));
    }
}
