//! Typed PostgREST and RPC calls for every product operation.
