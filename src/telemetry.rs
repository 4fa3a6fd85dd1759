//! Logging: one `env_logger` set up once (`RUST_LOG` picks the level, `info` by default), with log
//! lines carrying key-value fields. Phone numbers reach logs only through `PhoneNumber`, whose `Display`
//! masks them; secrets only through `secret::Secret`, whose `Debug` prints nothing.

use std::{error::Error, fmt::Write};

/// The variable the logger reads its filter from, in every subcommand.
pub const LOG_FILTER_VARIABLE: &str = "RUST_LOG";
pub const DEFAULT_LOG_FILTER: &str = "info";

/// Starts the logger; a second call (tests start many applications) is a no-op.
pub fn init() {
    let _ =
        env_logger::Builder::from_env(env_logger::Env::default().filter_or(LOG_FILTER_VARIABLE, DEFAULT_LOG_FILTER))
            // sqlx warns of a `DATABASE_URL` parameter it does not know with its value, which may be a
            // password (`?sslpassword=`): not shown, unless RUST_LOG names that module itself.
            .filter_module("sqlx_postgres::options::parse", log::LevelFilter::Error)
            .format_timestamp_millis()
            .try_init();
}

/// `outer: cause: root cause`, for one log line that tells the whole story.
pub fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}
