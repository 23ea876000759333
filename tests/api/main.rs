//! API integration tests: a real server on 127.0.0.1 with a real store, over HTTP. The
//! store is SQLite, or PostgreSQL with `COUNTERSIGN_TEST_STORE=postgres` (see `support`).

mod cluster;
mod support;

mod audit;
mod bad_input;
mod cli;
mod connectors;
mod console_e2e;
mod constitution;
mod export;
mod gate;
mod identity;
mod isolation;
mod members;
mod meta;
mod permissions;
mod pipeline;
mod postgres;
mod restart;
mod sessions;
mod stream;
mod tape;
mod tokens;
mod webhooks;
