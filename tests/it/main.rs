//! The integration suite, one binary: real Postgres, SQLite and Redis; wiremock as the provider where a
//! test needs exact control of its answers, the built-in stand-in where the service runs as a user would.

mod api;
mod auth;
mod batch;
mod body_timeout;
mod campaigns;
mod concurrency;
mod config_list;
mod console;
mod crash;
mod cross_site;
mod delivery;
mod demo;
mod flow;
#[macro_use]
mod helpers;
mod inbound;
mod mock_provider;
mod opt_outs;
mod outage;
mod receipt_store;
mod receipts;
mod retention;
mod schedule;
mod scheduler;
mod status_event_store;
mod status_events;
mod store;
