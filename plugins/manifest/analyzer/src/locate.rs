//! Where a finding's path is in the text it came from: the line of the deepest key of the path
//! the document has (a path into createOptions ends at the `createOptions` key, whose value is
//! a string of JSON). For code-scanning services, which show a finding at its line.

use std::collections::HashMap;

/// The line (from 1) of every object key of `text`, by its path: the keys from the top joined
/// by `.`, array items adding nothing. The first of equal paths is kept. A text that is not
/// JSON gives what was read before the fault.
pub fn key_lines(text: &str) -> HashMap<String, usize> {
    let bytes = text.as_bytes();
    let mut lines = HashMap::new();
    // Open containers: an object with the key being read, or an array (None).
    let mut stack: Vec<Option<Option<String>>> = Vec::new();
    let mut pending: Option<(String, usize)> = None;
    let (mut i, mut line) = (0, 1);
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => line += 1,
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                let raw = text.get(start..=i.min(bytes.len() - 1)).unwrap_or("");
                pending = serde_json::from_str::<String>(raw).ok().map(|s| (s, line));
            }
            b':' => {
                if let (Some((key, at)), Some(Some(slot))) = (pending.take(), stack.last_mut()) {
                    *slot = Some(key);
                    let path: Vec<&str> = stack
                        .iter()
                        .filter_map(|f| f.as_ref()?.as_deref())
                        .collect();
                    lines.entry(path.join(".")).or_insert(at);
                }
            }
            b'{' => stack.push(Some(None)),
            b'[' => stack.push(None),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => pending = None,
            _ => {}
        }
        i += 1;
    }
    lines
}

/// The line of `path` (or of its longest prefix that is a key) among `lines`.
pub fn line_of(lines: &HashMap<String, usize>, path: &str) -> Option<usize> {
    let mut prefix = path;
    loop {
        if let Some(line) = lines.get(prefix) {
            return Some(*line);
        }
        prefix = &prefix[..prefix.rfind('.')?];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_dots_and_paths_into_strings_find_their_line() {
        let text = "{\n  \"modulesContent\": {\n    \"$edgeAgent\": {\n      \"properties.desired.modules.m\": {\n        \"settings\": {\"image\": \"a:{b}\",\n          \"createOptions\": \"{\\\"HostConfig\\\":{}}\"\n        }\n      }\n    },\n    \"list\": [{\"x\": 1}, {\"y\": 2}]\n  }\n}";
        let lines = key_lines(text);
        let at = |p: &str| line_of(&lines, p);
        assert_eq!(at("modulesContent"), Some(2));
        assert_eq!(
            at("modulesContent.$edgeAgent.properties.desired.modules.m.settings.image"),
            Some(5)
        );
        assert_eq!(
            at(
                "modulesContent.$edgeAgent.properties.desired.modules.m.settings.createOptions.HostConfig.Binds"
            ),
            Some(6)
        );
        assert_eq!(at("modulesContent.list.y"), Some(10));
        assert_eq!(at("elsewhere"), None);
        assert!(key_lines("{\"a\": [1, {\"b\": \"unterminated").contains_key("a"));
    }
}
