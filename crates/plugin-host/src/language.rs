//! Which language a component was written in, as far as its `producers`
//! custom sections say (the tool-conventions' "producers section", which
//! the toolchains write into each core module and the component). Only
//! what they say: a component built otherwise is of no known language.

use wasmparser::{KnownCustom, Parser, Payload};

/// The language `component` was written in, if its producers sections
/// name it: `JavaScript` (ComponentizeJS), `Python` (componentize-py),
/// `Rust` (rustc or wit-bindgen's Rust generator), `Go` (TinyGo or Go),
/// `C` or `C++` (only when nothing else is named: other toolchains link
/// C into their runtimes).
pub fn source_language(component: &[u8]) -> Option<&'static str> {
    let mut named: Vec<(String, String)> = Vec::new();
    for payload in Parser::new(0).parse_all(component) {
        let Ok(Payload::CustomSection(section)) = payload else {
            continue;
        };
        let KnownCustom::Producers(fields) = section.as_known() else {
            continue;
        };
        for field in fields.into_iter().flatten() {
            for value in field.values.into_iter().flatten() {
                named.push((field.name.to_string(), value.name.to_ascii_lowercase()));
            }
        }
    }
    let has = |field: &str, names: &[&str]| named.iter().any(|(f, n)| f == field && names.contains(&n.as_str()));
    let tool = |names: &[&str]| has("processed-by", names) || has("sdk", names);
    if has("language", &["javascript"]) || tool(&["componentizejs", "componentize-js"]) {
        Some("JavaScript")
    } else if has("language", &["python"]) || tool(&["componentize-py"]) {
        Some("Python")
    } else if has("language", &["go"]) || tool(&["tinygo", "go"]) {
        Some("Go")
    } else if has("language", &["rust"]) || tool(&["rustc", "wit-bindgen-rust"]) {
        Some("Rust")
    } else if has("language", &["c++", "c_plus_plus", "c_plus_plus_14", "c_plus_plus_17"]) {
        Some("C++")
    } else if has("language", &["c", "c99", "c11", "c17"]) {
        Some("C")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component of one core module whose producers section names
    /// `field` = `value`.
    fn producing(field: &str, value: &str) -> Vec<u8> {
        wat::parse_str(format!("(component (core module (@producers ({field} \"{value}\" \"1.0\"))))")).unwrap()
    }

    #[test]
    fn the_language_is_what_the_producers_sections_say() {
        assert_eq!(source_language(agentauth_plugins::SOFTWARE_AGENT_DCR), Some("Rust"));
        assert_eq!(source_language(&producing("processed-by", "ComponentizeJS")), Some("JavaScript"));
        assert_eq!(source_language(&producing("processed-by", "componentize-py")), Some("Python"));
        assert_eq!(source_language(&producing("language", "Rust")), Some("Rust"));
        assert_eq!(source_language(&producing("language", "C11")), Some("C"));
        assert_eq!(source_language(&producing("processed-by", "wit-component")), None);
        assert_eq!(source_language(b"\0asm not at all"), None);
        assert_eq!(source_language(&wat::parse_str("(component)").unwrap()), None);
    }
}
