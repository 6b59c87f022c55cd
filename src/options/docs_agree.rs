//! `--help`, the man page and the README's "## Options" table name the same options, with the
//! same short letters, value names, variables and defaults as the definitions.
//!
//! Each document is read back on its own, as a reader sees it (the committed `fifo2kinesis.1`
//! and `README.md`, the text `--help` prints), so a document edited by hand, or a generator
//! that drops something, is caught. A disagreement names the option and the document.

use std::collections::BTreeMap;

use super::defs::{Takes, OPTIONS};

/// One option as a document shows it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Entry {
    short: Option<char>,
    value: Option<String>,
    var: Option<String>,
    default: Option<String>,
}

/// Options by long name (without `--`).
type Listing = BTreeMap<String, Entry>;

/// What the definitions say.
fn definitions() -> Listing {
    OPTIONS
        .iter()
        .map(|o| {
            let entry = Entry {
                short: o.short,
                value: match o.takes {
                    Takes::Value(v) => Some(v.to_string()),
                    Takes::Switch | Takes::Action => None,
                },
                var: o.var.map(String::from),
                default: o.var.map(|_| o.default_text()),
            };
            (o.long.to_string(), entry)
        })
        .collect()
}

/// Reads `-x, --name VALUE` (also `--name` alone, or `--name VALUE` without a short form).
fn names(text: &str) -> (String, Entry) {
    let mut entry = Entry::default();
    let mut long = String::new();
    for part in text.split(", ") {
        let mut words = part.split_whitespace();
        let name = words.next().unwrap_or_default();
        if let Some(l) = name.strip_prefix("--") {
            long = l.to_string();
            entry.value = words.next().map(String::from);
        } else if let Some(s) = name.strip_prefix('-') {
            entry.short = s.chars().next();
        }
    }
    (long, entry)
}

/// Words joined by single spaces.
fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `--help` text: `  -x, --name VALUE` lines, then indented help, `env:` and `default:`
/// (which may go on over lines indented further).
fn from_help(help: &str) -> Listing {
    let mut out = Listing::new();
    let mut current: Option<(String, Entry)> = None;
    let mut in_default = false;
    for line in help.lines() {
        let body = line.trim_start();
        let indent = line.len() - body.len();
        if (2..8).contains(&indent) && body.starts_with('-') {
            out.extend(current.take());
            current = Some(names(body));
            in_default = false;
        } else if let Some((_, entry)) = current.as_mut() {
            if let Some(var) = body.strip_prefix("env:") {
                entry.var = Some(var.trim().to_string());
            } else if let Some(default) = body.strip_prefix("default:") {
                entry.default = Some(squeeze(default));
                in_default = true;
            } else if in_default && indent > 8 {
                let d = entry.default.get_or_insert_with(String::new);
                *d = squeeze(&format!("{d} {body}"));
            } else {
                in_default = false;
            }
        }
    }
    out.extend(current);
    out
}

/// Roff text as it reads: font changes and `\&` dropped, `\-` and `\e` turned back.
fn unroff(s: &str) -> String {
    s.replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
        .replace("\\&", "")
        .replace("\\-", "-")
        .replace("\\e", "\\")
}

/// The man page's OPTIONS section: `.TP`, the names, a paragraph, then `Variable:` and
/// `Default:` (which may go on over several text lines).
fn from_man(page: &str) -> Listing {
    let section = page
        .split("\n.SH ")
        .find(|s| s.starts_with("OPTIONS\n"))
        .expect("the man page has an OPTIONS section");
    let mut out = Listing::new();
    for item in section.split("\n.TP\n").skip(1) {
        let mut lines = item.lines();
        let (long, mut entry) = names(&unroff(lines.next().unwrap_or_default()));
        let mut in_default = false;
        for line in lines {
            let text = unroff(line);
            if line.starts_with('.') {
                in_default = false;
            } else if let Some(var) = text.strip_prefix("Variable:") {
                entry.var = Some(var.trim().to_string());
            } else if let Some(default) = text.strip_prefix("Default:") {
                entry.default = Some(squeeze(default));
                in_default = true;
            } else if in_default {
                let d = entry.default.get_or_insert_with(String::new);
                *d = squeeze(&format!("{d} {text}"));
            }
        }
        out.insert(long, entry);
    }
    out
}

/// The README's "## Options" table: `| flags | variable | default | meaning |`.
fn from_readme(readme: &str) -> Listing {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Options\n"))
        .expect("README.md has a \"## Options\" section");
    let mut out = Listing::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<String> = row
            .split('|')
            .map(|c| squeeze(&c.replace('`', "")))
            .collect();
        let (long, mut entry) = names(&cells[1]);
        entry.var = Some(cells[2].clone()).filter(|v| !v.is_empty());
        entry.default = Some(cells[3].clone()).filter(|d| !d.is_empty());
        out.insert(long, entry);
    }
    out
}

/// Every way `listing` (from `document`) differs from the definitions, one line each.
fn disagreements(document: &str, listing: &Listing) -> Vec<String> {
    let want = definitions();
    let mut out = Vec::new();
    for (long, def) in &want {
        match listing.get(long) {
            None => out.push(format!("--{long}: missing from {document}")),
            Some(got) => {
                for (field, got, def) in [
                    ("short form", shown(&got.short), shown(&def.short)),
                    ("value name", shown(&got.value), shown(&def.value)),
                    ("variable", shown(&got.var), shown(&def.var)),
                    ("default", shown(&got.default), shown(&def.default)),
                ] {
                    if got != def {
                        out.push(format!(
                            "--{long}: {document} says {field} {got}, the definitions {def}"
                        ));
                    }
                }
            }
        }
    }
    for long in listing.keys().filter(|l| !want.contains_key(*l)) {
        out.push(format!(
            "--{long}: in {document}, but no such option is defined"
        ));
    }
    out
}

/// A field as a message shows it.
fn shown<T: std::fmt::Display>(v: &Option<T>) -> String {
    match v {
        Some(v) => format!("\"{v}\""),
        None => "(none)".into(),
    }
}

fn read(file: &str) -> String {
    let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn help_man_page_and_readme_agree_with_the_definitions() {
    let mut problems = disagreements("--help", &from_help(&super::help_text()));
    problems.extend(disagreements(
        "fifo2kinesis.1 (regenerate: cargo run --example man > fifo2kinesis.1)",
        &from_man(&read("fifo2kinesis.1")),
    ));
    problems.extend(disagreements(
        "README.md's Options table",
        &from_readme(&read("README.md")),
    ));
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn each_reader_sees_what_a_document_shows() {
    let help = "\
Batches:
  -i, --flush-interval DURATION
        Time after a batch's first line
        env:     FIFO2KINESIS_FLUSH_INTERVAL
        default: AWS_X, then
                 the region's
      --help
        Print this help
";
    let entry = |short, value: Option<&str>, var: Option<&str>, default: Option<&str>| Entry {
        short,
        value: value.map(String::from),
        var: var.map(String::from),
        default: default.map(String::from),
    };
    let interval = entry(
        Some('i'),
        Some("DURATION"),
        Some("FIFO2KINESIS_FLUSH_INTERVAL"),
        Some("AWS_X, then the region's"),
    );
    let listing = from_help(help);
    assert_eq!(listing["flush-interval"], interval);
    assert_eq!(listing["help"], Entry::default());

    let man =
        ".SH OPTIONS\nIntro.\n.SS Batches\n.TP\n\\fB\\-i\\fR, \\fB\\-\\-flush\\-interval\\fR \
               \\fIDURATION\\fR\nHow long.\n.IP\nVariable: \\fBFIFO2KINESIS_FLUSH_INTERVAL\\fR\n\
               .br\nDefault: AWS_X, then\nthe region's\n.SS Other\n.TP\n\\fB\\-\\-help\\fR\n\
               Print.\n.SH SIGNALS\n.TP\nSIGHUP\n";
    let listing = from_man(&format!(".TH X 1\n{man}"));
    assert_eq!(listing["flush-interval"], interval);
    assert_eq!(listing.len(), 2);

    let readme = "## Options\n\n| flag | v | d | m |\n|---|---|---|---|\n\
                  | `-i`, `--flush-interval DURATION` | `FIFO2KINESIS_FLUSH_INTERVAL` | \
                  `AWS_X`, then the region's | Time. |\n| `--help` | | | Help. |\n\n## Next\n\
                  | `--not-here` | | | |\n";
    let listing = from_readme(&format!("# T\n\n{readme}"));
    assert_eq!(listing["flush-interval"], interval);
    assert_eq!(listing["help"], Entry::default());
    assert_eq!(listing.len(), 2);
}

#[test]
fn a_disagreement_names_the_option_and_the_document() {
    let mut listing = definitions();
    listing.get_mut("stats-interval").unwrap().default = Some("30s".into());
    listing.get_mut("region").unwrap().short = None;
    listing.remove("debug");
    listing.insert("bogus".into(), Entry::default());
    let problems = disagreements("README", &listing);
    assert_eq!(
        problems,
        [
            "--debug: missing from README",
            "--region: README says short form (none), the definitions \"R\"",
            "--stats-interval: README says default \"30s\", the definitions \"60s\"",
            "--bogus: in README, but no such option is defined",
        ]
    );
}
