//! Integration tests of the `brightrun` binary against a real brightrun-stack: the process is
//! started, killed mid-transfer and started again, through the fault-injection proxy.

mod errors;
mod jobs;
mod session;
mod support;
mod transfers;
mod validate;
