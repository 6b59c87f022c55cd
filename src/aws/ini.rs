//! The AWS shared config and credentials files: an INI dialect.
//!
//! Rules, as the AWS SDKs read these files:
//! - `[name]` opens a section; whitespace inside the brackets is trimmed;
//! - `key = value` sets a property; keys are compared without regard to case; the first `=`
//!   splits; surrounding whitespace is trimmed;
//! - a line starting with `#` or `;` is a comment, and so is a ` #` or ` ;` (preceded by
//!   whitespace) inside a value;
//! - an indented line continues the previous property (nested settings such as `s3 =`): it is
//!   kept out of the plain properties;
//! - properties before any section, and lines that are none of these, are ignored;
//! - a repeated section adds to the first; a repeated key keeps the last value.

use std::collections::HashMap;

/// The sections of one file, in order, with their properties (keys lowercased).
pub type Sections = Vec<(String, HashMap<String, String>)>;

/// Parses one file's text.
pub fn parse(text: &str) -> Sections {
    let mut sections: Sections = Vec::new();
    let mut current: Option<usize> = None;
    for raw in text.lines() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let indented = line.len() != trimmed.len();
        if let Some(inner) = trimmed.strip_prefix('[') {
            let Some(end) = inner.find(']') else { continue };
            let name = inner[..end].trim().to_string();
            current = Some(match sections.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    sections.push((name, HashMap::new()));
                    sections.len() - 1
                }
            });
            continue;
        }
        if indented {
            continue;
        }
        let (Some(i), Some((key, value))) = (current, trimmed.split_once('=')) else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() {
            continue;
        }
        sections[i]
            .1
            .insert(key, strip_comment(value).trim().to_string());
    }
    sections
}

/// Removes a trailing ` # comment` or ` ; comment`.
fn strip_comment(value: &str) -> &str {
    let bytes = value.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if (b == b'#' || b == b';') && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return &value[..i];
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_comments_and_continuations() {
        let text = "\
top = ignored
# comment
; another
[default]
aws_access_key_id = AKID   # trailing comment
Region=us-west-2
s3 =
  max_concurrent_requests = 20
[ profile dev ]
role_arn=arn:aws:iam::1:role/x;not-a-comment
credential_process = /bin/echo a=b
[default]
output = json
garbage line
";
        let s = parse(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0, "default");
        assert_eq!(s[0].1["aws_access_key_id"], "AKID");
        assert_eq!(s[0].1["region"], "us-west-2");
        assert_eq!(s[0].1["s3"], "");
        assert!(!s[0].1.contains_key("max_concurrent_requests"));
        assert_eq!(s[0].1["output"], "json");
        assert_eq!(s[1].0, "profile dev");
        assert_eq!(s[1].1["role_arn"], "arn:aws:iam::1:role/x;not-a-comment");
        assert_eq!(s[1].1["credential_process"], "/bin/echo a=b");
        assert!(!s
            .iter()
            .any(|(n, p)| n == "default" && p.contains_key("top")));
    }
}
