//! The JSON error body of the management API and of Ollama-style endpoints.

use serde::{Deserialize, Serialize};

/// `{"error": "..."}`: what every failing management request answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl ErrorBody {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            error: message.into(),
        }
    }
}
