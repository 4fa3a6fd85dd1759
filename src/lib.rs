//! insider-messaging: dispatches queued text messages to an SMS provider's webhook, exactly once per
//! message. Modules in the order a message travels: configured, parsed, stored, claimed, posted,
//! recorded, cached, listed.
#![forbid(unsafe_code)]

pub mod api;
pub mod cache;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod domain;
pub mod metrics;
pub mod mock_provider;
pub mod provider;
pub mod startup;
pub mod store;
pub mod telemetry;
