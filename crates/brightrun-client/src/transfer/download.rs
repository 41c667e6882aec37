//! Adapter downloads: signed URLs, Range resume from `.part`, parallel segments, SHA-256, atomic rename.
