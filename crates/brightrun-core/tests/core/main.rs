//! The integration tests of brightrun-core: one binary, one module per area.

mod chart;
mod convert;
mod corpus;
mod cost;
mod detect;
mod draft;
mod model;
mod parallel;
mod props;
mod structural;
mod tokenizer;
mod validator;
