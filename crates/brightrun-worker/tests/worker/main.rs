//! Integration tests of brightrun-worker against a real brightrun-stack.
