//! One file per resource; `api/mod.rs` holds the route table.

pub mod batch;
pub mod console;
pub mod health;
pub mod messages;
pub mod metrics;
pub mod sending;
pub mod stats;
