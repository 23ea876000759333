//! Countersign: a governance gateway for AI-agent actions.
//!
//! See `docs/ARCHITECTURE.md` for how the pieces fit. In short: the pure core
//! ([`canonical`], [`audit`], [`permissions`], [`secrets`], [`ids`], [`names`]) has no
//! I/O; [`store`] remembers; [`server`] speaks HTTP; [`cli`] is the command line.

pub mod approval;
pub mod audit;
pub mod call_url;
pub mod canonical;
pub mod checkpoint;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod console;
pub mod constitution;
pub mod csv;
pub mod demo;
pub mod error;
pub mod export_file;
pub mod gate;
pub mod ids;
pub mod memory;
pub mod model;
pub mod names;
pub mod permissions;
pub mod secrets;
pub mod server;
pub mod simulation;
pub mod store;
pub mod vault;
pub mod webhook;
