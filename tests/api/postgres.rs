//! PostgreSQL-only tests (see below).
