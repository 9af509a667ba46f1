//! Deterministic embedding vectors: the same text always gives the same unit
//! vector, different texts give different ones.

use crate::hashing::{fnv1a64, splitmix64, unit_f64};

/// A unit-length vector of `dim` values in `[-1, 1]` derived from `text`.
pub fn embed_text(text: &str, dim: usize) -> Vec<f32> {
    let mut state = fnv1a64(text.as_bytes());
    let mut vector: Vec<f32> = (0..dim)
        .map(|_| {
            state = splitmix64(state);
            (unit_f64(state) * 2.0 - 1.0) as f32
        })
        .collect();
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for v in &mut vector {
            *v /= norm;
        }
    }
    vector
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_unit_vectors_of_the_asked_dimension() {
        let a = embed_text("why is the sky blue?", 8);
        assert_eq!(a.len(), 8);
        assert_eq!(a, embed_text("why is the sky blue?", 8));
        assert_ne!(a, embed_text("why is the grass green?", 8));
        let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
