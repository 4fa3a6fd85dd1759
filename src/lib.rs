//! insider-messaging: dispatches queued text messages to an SMS provider's webhook, exactly once per
//! message.
//!
//! The modules are listed in the order a message travels: configured (`config`), parsed (`domain`),
//! stored (`store`), claimed, posted and recorded (`dispatch`, speaking the provider's contract from
//! `provider`), cached (`cache`), listed (`api`). After them come what every stage shares (`metrics`,
//! `secret`, `telemetry`), what wires the stages together (`startup`), and the binary's other commands
//! (`demo`, `mock_provider`).
#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
pub mod store;
pub mod dispatch;
pub mod provider;
pub mod cache;
pub mod api;

pub mod metrics;
pub mod secret;
pub mod telemetry;
pub mod startup;

pub mod demo;
pub mod mock_provider;
