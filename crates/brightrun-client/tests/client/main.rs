//! Integration tests of brightrun-client against a real brightrun-stack (see
//! `brightrun_stack::testing`): one binary, one module per area.
