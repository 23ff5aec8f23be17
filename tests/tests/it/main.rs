//! Black-box tests: the built `sygno` binary, driven over HTTP and its CLI.
//! Build it first (`cargo build --bin sygno`, which `scripts/test` does);
//! `SYGNO_BIN` may name another build. `TEST_LOG=1` shows the server's logs.

mod accuracy;
mod cli;
mod compat;
mod connections;
mod durability;
mod exact;
mod helpers;
mod idempotency;
mod infra;
mod metrics;
mod rebuild;
mod series;
mod sources;
