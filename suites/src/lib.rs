//! The rave cases, one module per suite, each case's check and its fault
//! side by side; the checks several cases share; the catalog that puts the
//! suites together; the plan both front ends run them by; and shards
//! balanced by measured durations.
#![deny(missing_docs)]

pub mod alert_cycle;
pub mod case;
pub mod catalog;
pub mod checks;
pub mod dashboards;
pub mod durations;
pub mod http_health;
pub mod nft;
pub mod p2_observability;
pub mod plan;
pub mod security;
pub mod shard;
pub mod systemd_services;
