//! The integration tests: one binary, a module per area, sharing one build of the support
//! code. Each test runs the built daemon against fakes and peers on 127.0.0.1.
//!
//! A quick subset while editing: `cargo test --test it daemon::` (or any module name).

mod support;

mod aggregate;
mod answers;
mod backlog;
mod credentials;
mod daemon;
mod durable;
mod endpoints;
mod faults;
mod firehose;
mod kinesalite;
mod moto;
mod operations;
mod syslog;
