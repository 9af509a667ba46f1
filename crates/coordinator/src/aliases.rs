//! `--model-alias LOGICAL=SERVED`: one model under the names different servers
//! give it (`qwen2.5:7b` on Ollama nodes, `Qwen/Qwen2.5-7B-Instruct` on vLLM), so
//! that a request for either name can go to every node holding it, and the
//! fleet's lists show it once, under the logical name.
//!
//! Names are compared in canonical form (`name:tag`), as everywhere in routing.

use std::collections::HashMap;

use llm_router_common::canonical_model_name;

/// The aliases in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelAliases {
    /// Served name → logical name.
    to_logical: HashMap<String, String>,
    /// Logical name → the served names it stands for.
    served: HashMap<String, Vec<String>>,
}

impl ModelAliases {
    /// Aliases from `LOGICAL=SERVED` specs; the error names the spec that is wrong.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Self, String> {
        let mut aliases = Self::default();
        for spec in specs {
            let spec = spec.as_ref().trim();
            if spec.is_empty() {
                continue;
            }
            let Some((logical, served)) = spec.split_once('=') else {
                return Err(format!(
                    "model alias {spec:?} is not LOGICAL=SERVED (e.g. qwen2.5:7b=Qwen/Qwen2.5-7B-Instruct)"
                ));
            };
            let (logical, served) = (logical.trim(), served.trim());
            if logical.is_empty() || served.is_empty() || logical == served {
                return Err(format!(
                    "model alias {spec:?} needs two different names, LOGICAL=SERVED"
                ));
            }
            let (logical, served) = (canonical_model_name(logical), canonical_model_name(served));
            if let Some(other) = aliases.to_logical.get(&served)
                && *other != logical
            {
                return Err(format!(
                    "{served} is an alias of both {other} and {logical}; give it one"
                ));
            }
            aliases.to_logical.insert(served.clone(), logical.clone());
            let names = aliases.served.entry(logical).or_default();
            if !names.contains(&served) {
                names.push(served);
            }
        }
        Ok(aliases)
    }

    pub fn is_empty(&self) -> bool {
        self.to_logical.is_empty()
    }

    /// The logical name of `canonical` (itself when it is no alias).
    pub fn logical<'a>(&'a self, canonical: &'a str) -> &'a str {
        self.to_logical
            .get(canonical)
            .map_or(canonical, String::as_str)
    }

    /// Every name a request for `canonical` may be served under: itself, its
    /// logical name, and the logical name's other aliases.
    pub fn names_of(&self, canonical: &str) -> Vec<String> {
        let logical = self.logical(canonical).to_owned();
        let mut names = vec![canonical.to_owned()];
        if logical != canonical {
            names.push(logical.clone());
        }
        for served in self.served.get(&logical).into_iter().flatten() {
            if !names.contains(served) {
                names.push(served.clone());
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alias_links_both_names_both_ways() {
        let aliases = ModelAliases::parse(&["qwen2.5:7b=Qwen/Qwen2.5-7B-Instruct"]).unwrap();
        assert_eq!(
            aliases.logical("Qwen/Qwen2.5-7B-Instruct:latest"),
            "qwen2.5:7b"
        );
        assert_eq!(
            aliases.names_of("qwen2.5:7b"),
            ["qwen2.5:7b", "Qwen/Qwen2.5-7B-Instruct:latest"]
        );
        assert_eq!(
            aliases.names_of("Qwen/Qwen2.5-7B-Instruct:latest"),
            ["Qwen/Qwen2.5-7B-Instruct:latest", "qwen2.5:7b"]
        );
        assert_eq!(aliases.names_of("other:latest"), ["other:latest"]);
    }

    #[test]
    fn bad_specs_are_refused_with_the_spec() {
        for bad in ["no-equals", "=x", "a=a", "a= "] {
            let error = ModelAliases::parse(&[bad]).unwrap_err();
            assert!(error.contains(bad.trim()), "{bad}: {error}");
        }
        assert!(ModelAliases::parse(&["a=s", "b=s"]).is_err());
        assert!(ModelAliases::parse::<&str>(&[]).unwrap().is_empty());
    }
}
