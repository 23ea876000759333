//! API integration tests: a real server on 127.0.0.1 with a real SQLite file, over HTTP.

mod support;

mod connectors;
mod export;
mod gate;
mod identity;
mod stream;
