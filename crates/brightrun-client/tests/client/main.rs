//! Integration tests of brightrun-client against a real brightrun-stack (see
//! `brightrun_stack::testing`): one binary, one module per area.

mod api;
mod download;
mod proxy;
mod session;
mod support;
mod transfer_fixtures;
mod upload;
mod watch;
