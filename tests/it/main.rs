//! The integration suite, one binary: real Postgres, SQLite and Redis; wiremock as the provider where a
//! test needs exact control of its answers, the built-in stand-in where the service runs as a user would.

mod api;
mod auth;
mod batch;
mod concurrency;
mod console;
mod crash;
mod delivery;
mod demo;
mod helpers;
mod mock_provider;
mod outage;
mod retention;
mod scheduler;
mod store;
