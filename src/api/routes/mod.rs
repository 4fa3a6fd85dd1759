//! One file per job over a resource; `api/mod.rs` holds the route table.

pub mod batch;
pub mod campaigns;
pub mod console;
pub mod events;
pub mod health;
pub mod inbound;
pub mod listing;
pub mod messages;
pub mod metrics;
pub mod operator;
pub mod receipts;
pub mod opt_outs;
mod page;
pub mod sending;
pub mod stats;
