//! Integration tests of the `brightrun` binary against a real brightrun-stack: the process is
//! started, killed mid-transfer and started again, through the fault-injection proxy.

#[path = "../../../brightrun-client/tests/client/proxy.rs"]
mod proxy;
mod session;
mod support;
mod transfers;
mod validate;
