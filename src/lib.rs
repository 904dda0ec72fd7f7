//! ecomlogs: the plain-Rust core (event model, generator, validator, Kafka and PostgreSQL stages).
//! The PyO3 layer lives in `py/` behind the `python` feature, so `cargo test --no-default-features`
//! builds and tests everything here without libpython.

pub mod config;
pub mod contract;
pub mod contract_check;
pub mod dead_letter;
pub mod dlq;
pub mod error;
pub mod event;
pub mod generate;
pub mod kafka;
pub mod load;
pub mod metrics;
pub mod options;
pub mod pg;
pub mod process;
pub mod produce;
pub mod resume;
pub mod sink;
pub mod stage;
pub mod validate;

#[cfg(feature = "python")]
mod py;
