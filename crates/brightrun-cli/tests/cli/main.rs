//! Integration tests of the `brightrun` binary against a real brightrun-stack: the process is
//! started, killed mid-transfer and started again, through the fault-injection proxy.

mod jobs;
#[path = "../../../brightrun-client/tests/client/proxy.rs"]
mod proxy;
mod session;
mod support;
// Shared with the client's transfer tests; the CLI tests use only some of it.
#[allow(dead_code)]
#[path = "../../../brightrun-client/tests/client/transfer_fixtures.rs"]
mod transfer_fixtures;
mod transfers;
mod validate;
