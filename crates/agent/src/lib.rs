//! Agent (to be written).
