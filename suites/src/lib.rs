//! The rave cases, one module per suite, and the catalog that names them,
//! says where they apply and how each is proven able to fail.
#![deny(missing_docs)]

pub mod catalog;
pub mod failure;
pub mod http_health;
pub mod p2_observability;
pub mod runner;
pub mod security;
pub mod systemd_services;
