//! Dataset uploads: validate, create_dataset, signed TUS upload streamed from disk, confirm.
