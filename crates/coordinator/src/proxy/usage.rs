//! Token counts from the end of a response: Ollama's final counters
//! (`prompt_eval_count`, `eval_count`, `eval_duration`) or OpenAI's `usage`.

use std::time::Duration;

use serde::Deserialize;

use super::record::Usage;

/// The counters a JSON document may carry; everything else in it is skipped
/// unread (no tree of values is built).
#[derive(Deserialize)]
struct Counters {
    /// OpenAI's.
    usage: Option<OpenAiUsage>,
    /// Ollama's.
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
    eval_duration: Option<u64>,
}

#[derive(Deserialize)]
struct OpenAiUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl Counters {
    /// The usage these counters give, if they are there.
    fn usage(self) -> Option<Usage> {
        if let Some(usage) = self.usage {
            return Some(Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                generation_time: None,
            });
        }
        if self.eval_count.is_some() || self.prompt_eval_count.is_some() {
            return Some(Usage {
                prompt_tokens: self.prompt_eval_count,
                completion_tokens: self.eval_count,
                generation_time: self.eval_duration.map(Duration::from_nanos),
            });
        }
        None
    }
}

/// Usage in one JSON document (a whole answer, an NDJSON line or an SSE
/// event's data); `Err` if it is not one JSON object.
fn from_json(document: &[u8]) -> Result<Option<Usage>, serde_json::Error> {
    serde_json::from_slice::<Counters>(document).map(Counters::usage)
}

/// Finds the usage in the end of a response body: the whole body if it is one
/// JSON document, else the last NDJSON line or SSE event that carries it.
pub fn parse_tail(tail: &[u8]) -> Usage {
    if let Ok(usage) = from_json(tail) {
        return usage.unwrap_or_default();
    }
    for line in tail.rsplit(|b| *b == b'\n') {
        let line = line.trim_ascii();
        let line = line.strip_prefix(b"data:").map_or(line, <[u8]>::trim_ascii);
        if line.is_empty() || line == b"[DONE]" || line.first() != Some(&b'{') {
            continue;
        }
        if let Ok(Some(usage)) = from_json(line) {
            return usage;
        }
    }
    Usage::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_final_line_gives_counts_and_generation_time() {
        let tail = b"{\"done\":false}\n{\"done\":true,\"prompt_eval_count\":12,\"eval_count\":40,\"eval_duration\":2000000000}\n";
        let usage = parse_tail(tail);
        assert_eq!(usage.prompt_tokens, Some(12));
        assert_eq!(usage.completion_tokens, Some(40));
        assert_eq!(usage.tokens_per_second(), Some(20.0));
    }

    #[test]
    fn openai_usage_in_a_whole_answer_or_the_last_sse_event() {
        let whole = br#"{"object":"chat.completion","usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
        assert_eq!(parse_tail(whole).completion_tokens, Some(7));
        let sse = b"data: {\"choices\":[]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":9}}\n\ndata: [DONE]\n\n";
        assert_eq!(parse_tail(sse).completion_tokens, Some(9));
    }

    #[test]
    fn no_counters_means_no_usage() {
        assert_eq!(parse_tail(b"{\"done\":false}\n"), Usage::default());
        assert_eq!(parse_tail(b"garbage"), Usage::default());
    }
}
