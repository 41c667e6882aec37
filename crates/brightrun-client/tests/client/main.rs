//! Integration tests of brightrun-client against a real brightrun-stack (see
//! `brightrun_stack::testing`): one binary, one module per area.

mod api;
mod download;
mod session;
mod support;
mod upload;
mod watch;
