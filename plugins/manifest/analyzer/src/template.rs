//! Placeholders of deployment templates, which the template tools replace before a deployment
//! exists: `${MODULES.SampleModule}` and `${MODULES.SampleModule.debug}` (iotedgedev, VS Code),
//! `${VAR}` and `$VAR` for variables of a `.env` file or a pipeline (`$CONTAINER_REGISTRY_PASSWORD`).
//! edgeHub's own names (`$upstream`, `$edgeHub`) are lower-case and not placeholders.

/// The first placeholder in `text`, if any.
pub fn placeholder(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find('$').map(|p| p + i) {
        let rest = &text[at + 1..];
        if let Some(inner) = rest.strip_prefix('{') {
            if let Some(end) = inner.find('}').filter(|end| *end > 0) {
                return Some(&text[at..at + end + 3]);
            }
        } else {
            let len = rest
                .bytes()
                .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
                .count();
            // An upper-case name of two characters or more, started by a letter or `_`.
            if len >= 2 && !bytes[at + 1].is_ascii_digit() {
                return Some(&text[at..at + 1 + len]);
            }
        }
        i = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::placeholder;

    #[test]
    fn template_tokens_are_found_and_edgehub_names_are_not() {
        assert_eq!(
            placeholder("${MODULES.SampleModule}"),
            Some("${MODULES.SampleModule}")
        );
        assert_eq!(placeholder("acr.io/x:${TAG}-amd64"), Some("${TAG}"));
        assert_eq!(
            placeholder("$CONTAINER_REGISTRY_PASSWORD_myacr"),
            Some("$CONTAINER_REGISTRY_PASSWORD_")
        );
        assert_eq!(
            placeholder("FROM /messages/modules/$MODULE/outputs/* INTO $upstream"),
            Some("$MODULE")
        );
        assert_eq!(placeholder("FROM /messages/* INTO $upstream"), None);
        assert_eq!(
            placeholder("FROM /* INTO BrokeredEndpoint(\"/modules/m/inputs/in\")"),
            None
        );
        assert_eq!(placeholder("price: $5, ${}"), None);
        assert_eq!(placeholder("$A"), None);
    }
}
