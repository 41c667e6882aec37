//! brightrun-worker: runs the jobs of a BrightRun project. Any number of workers on any number of
//! machines claim queued jobs from the same PostgreSQL with `FOR UPDATE SKIP LOCKED`, hold a lease
//! renewed by heartbeat and are fenced by an attempt number on every write (ARCHITECTURE.md §7).
//!
//! It validates uploaded datasets with brightrun-core and trains LoRA adapters through a
//! [`trainer::TrainerBackend`]: by default a real (small) model on the CPU with candle.
//!
//! Connections: PostgreSQL directly (the queue needs `SKIP LOCKED`, `LISTEN` and multi-statement
//! transactions, which PostgREST cannot give) as a role that owns the tables; Storage over HTTP
//! with the service_role key (the same API hosted Supabase serves). What it must not do: hold
//! business rules that belong in `migrations/` (prices come from the job's snapshot), or write
//! anything without its lease's fencing token.

pub mod dataset;
pub mod entrypoint;
pub mod notify;
pub mod queue;
pub mod remote;
pub mod runtime;
pub mod train_job;
pub mod trainer;
pub mod validate_job;

pub use queue::{Queue, QueueError, QueuePolicy};
pub use runtime::{Backend, WorkerConfig, run};
