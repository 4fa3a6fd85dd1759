//! The integration suite, one binary: real Postgres and Redis, wiremock as the provider.

mod api;
mod concurrency;
mod crash;
mod delivery;
mod helpers;
mod scheduler;
mod store;
