//! Mock inference node (to be written).
