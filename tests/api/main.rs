//! API integration tests: a real server on 127.0.0.1 with a real SQLite file, over HTTP.

mod support;

mod audit;
mod bad_input;
mod cli;
mod connectors;
mod console_e2e;
mod export;
mod gate;
mod identity;
mod isolation;
mod members;
mod meta;
mod permissions;
mod restart;
mod sessions;
mod stream;
mod tape;
mod tokens;
mod webhooks;
