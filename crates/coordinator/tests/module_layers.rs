//! The coordinator's top-level modules depend on each other without a cycle
//! (the core — registry, balancer, proxy — never reaches back into the HTTP
//! layer), read off the `crate::<module>` paths in their code. Comments and
//! `#[cfg(test)]` parts do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its code names.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tests.rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str();
            let module = first.to_string_lossy().trim_end_matches(".rs").to_owned();
            if ["lib", "main", "fuzz"].contains(&module.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let named = deps.entry(module.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (at, _) in line.match_indices("crate::") {
                    let rest = &line[at + "crate::".len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        named.insert(name);
                    }
                }
            }
        }
    }
    deps
}

/// Whether `to` can be reached from `from`.
fn reaches(deps: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_owned()];
    while let Some(module) = todo.pop() {
        for next in deps.get(&module).into_iter().flatten() {
            if next == to {
                return true;
            }
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    false
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let deps = dependencies();
    assert!(deps.contains_key("registry") && deps.contains_key("api"));
    let cyclic: Vec<String> = deps
        .iter()
        .flat_map(|(module, named)| {
            named
                .iter()
                .filter(|other| reaches(&deps, other, module))
                .map(move |other| format!("{module} -> {other} -> … -> {module}"))
        })
        .collect();
    assert!(cyclic.is_empty(), "module cycles:\n{}", cyclic.join("\n"));
}

#[test]
fn the_core_does_not_reach_the_http_layer() {
    let deps = dependencies();
    for core in ["registry", "balancer", "proxy", "history", "admission"] {
        for layer in ["api", "error", "server"] {
            assert!(
                !reaches(&deps, core, layer),
                "{core} depends on {layer}: {:?}",
                deps.get(core)
            );
        }
    }
}
