//! Everything fifo2kinesis says to AWS besides PutRecords itself: credentials, STS, instance
//! and container metadata, SigV4 signing, and the HTTP clients that reach them.

pub mod chain;
pub mod container;
pub mod credentials;
pub mod env;
pub mod http;
pub mod imds;
pub mod ini;
pub mod process;
pub mod profile;
pub mod sigv4;
pub mod sts;
