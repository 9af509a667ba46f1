//! Coordinator (to be written).
