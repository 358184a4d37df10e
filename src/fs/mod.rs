//! The FUSE filesystem (placeholder).
