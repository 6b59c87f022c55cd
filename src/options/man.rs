//! The man page, `fifo2kinesis.1`, in roff: its OPTIONS section made from the option
//! definitions (each with its variable and default), the other sections from the texts here.
//!
//! The page is committed at the root of the repository; `cargo run --example man >
//! fifo2kinesis.1` writes it again, and a test fails while the two differ. Texts are plain
//! prose, escaped for roff on the way out, with `--name` set in bold.

use std::fmt::Write as _;

use super::defs::{Category, Opt, Takes, OPTIONS};

/// Paragraphs of DESCRIPTION.
const DESCRIPTION: &[&str] = &[
    "fifo2kinesis reads lines from a named pipe (FIFO) and publishes them to an Amazon Kinesis \
     Data Stream, or with --delivery-stream to an Amazon Data Firehose delivery stream. Point syslog-ng or rsyslog at the FIFO, or any program that writes lines to a \
     file, and every line becomes a record. It is a drop-in replacement for the Go \
     fifo2kinesis: same options, same FIFO2KINESIS_* variables, same defaults.",
    "A line ends at a newline; one carriage return before it is removed, and its bytes are \
     passed on as they are. Empty lines are skipped. Lines are gathered into batches, each sent \
     as one PutRecords (or PutRecordBatch) request when it holds --buffer-queue-limit records, when the next record \
     would take it past --max-request-bytes, or --flush-interval after its first line arrived. \
     Records that fail are sent again with backoff; what cannot be delivered is kept in \
     --failed-attempts-dir and sent again later. When the last writer closes the FIFO, it is \
     opened again: writers may come and go, and no line already written is lost.",
    "Credentials are found where the AWS CLI finds them: the environment, the shared config and \
     credentials files, web identity, container credentials, then EC2 instance metadata (see \
     ENVIRONMENT). With --role-arn, that role is then assumed with STS. The log goes to \
     standard error, one line per message: a UTC timestamp, the level and the message. Keys, \
     secrets and tokens never appear in it.",
];

/// The paragraph that opens OPTIONS.
const OPTIONS_INTRO: &str = "Every option may also be set by its environment variable, shown \
     with it; the command line wins, and a blank variable counts as unset. Both --name value and \
     --name=value work. DURATION is a number of seconds (5, 1.5) or a number with ms, s, m or h \
     (250ms, 2m). BYTES is a number of bytes, or one with KiB, MiB or GiB (512KiB, 1MiB; K, KB, \
     M, MB, G and GB mean the same).";

const SIGNALS: &[(&str, &str)] = &[
    (
        "SIGTERM, SIGINT",
        "Stop: reading stops (after the rest of a line the last read cut in two), the pending \
         batch is flushed, and what is in memory is delivered for up to --shutdown-timeout; the \
         rest goes to --failed-attempts-dir. A second signal writes everything to the directory \
         at once. The end of standard input (--fifo-name -) stops the same way.",
    ),
    (
        "SIGHUP",
        "Open the FIFO's path again, for a FIFO that was replaced. The path is also checked \
         every second without a signal.",
    ),
    (
        "SIGUSR1",
        "Log the counters at once and rewrite --metrics-file.",
    ),
];

const FILES: &[(&str, &str)] = &[
    (
        "PATH.lock",
        "Beside the FIFO named by --fifo-name: a lock that keeps a second fifo2kinesis from \
         reading the same FIFO. It holds the pid of its holder and is never removed.",
    ),
    (
        "DIR/.lock",
        "The lock of the directory named by --failed-attempts-dir.",
    ),
    (
        "DIR/fifo2kinesis-YYYYMMDDhhmmss-SEQ-PID",
        "A batch kept in the failed-attempts directory, its lines joined by newlines (the Go \
         tool's format, whose files are replayed too). NAME.progress beside it records how far \
         its replay got; a file that cannot be read is renamed NAME.bad.",
    ),
    (
        "DIR/oversized/",
        "Lines too long for a record, one file per line.",
    ),
    (
        "~/.aws/config, ~/.aws/credentials",
        "The shared AWS configuration and credentials files, read for AWS_PROFILE.",
    ),
];

const EXIT_STATUS: &[(&str, &str)] = &[
    (
        "0",
        "Stopped cleanly (SIGTERM, SIGINT, the end of standard input) without losing a line; \
         also after --help and --version.",
    ),
    (
        "1",
        "A line was lost during the run: neither delivered nor kept in --failed-attempts-dir \
         (the log says how many, and the lines_dropped counter counts them); or a failure while \
         running.",
    ),
    (
        "2",
        "Wrong configuration, which restarting does not mend: a bad option or variable (one \
         line on standard error names it and says what it accepts), a --fifo-name that is not a \
         FIFO, a FIFO or directory locked by another fifo2kinesis, no region, no credentials.",
    ),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    ("FIFO2KINESIS_*", "The options, as listed under OPTIONS."),
    (
        "AWS_REGION, AWS_DEFAULT_REGION",
        "The region, when --region is not given.",
    ),
    (
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN",
        "Credentials; the session token for temporary ones.",
    ),
    (
        "AWS_PROFILE, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE",
        "The profile (default: default) and the files it is read from (default: ~/.aws/config \
         and ~/.aws/credentials). A profile may hold keys, a credential_process, a role_arn \
         with a source_profile or credential_source, or a web_identity_token_file.",
    ),
    (
        "AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN, AWS_ROLE_SESSION_NAME",
        "Web identity (EKS IRSA): the role is assumed with the token, read again at every \
         refresh.",
    ),
    (
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "Container credentials (ECS task roles, EKS Pod Identity): where to fetch them.",
    ),
    (
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "The token sent with the request for container credentials; the file is read again \
         at every refresh.",
    ),
    (
        "AWS_EC2_METADATA_DISABLED, AWS_EC2_METADATA_SERVICE_ENDPOINT, \
         AWS_EC2_METADATA_V1_DISABLED",
        "EC2 instance metadata (IMDSv2), for credentials and the region: true turns it off; \
         the endpoint moves it. When it refuses a session token (403 or 404), it is asked \
         without one (IMDSv1) unless AWS_EC2_METADATA_V1_DISABLED is true.",
    ),
    (
        "AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_KINESIS, AWS_ENDPOINT_URL_FIREHOSE, \
         AWS_ENDPOINT_URL_STS",
        "Endpoints, when --endpoint-url or --sts-endpoint-url is not given; \
         AWS_ENDPOINT_URL_FIREHOSE with --delivery-stream, AWS_ENDPOINT_URL_KINESIS without.",
    ),
    (
        "AWS_USE_FIPS_ENDPOINT, AWS_USE_DUALSTACK_ENDPOINT",
        "When true, the region's FIPS or dualstack endpoints are used.",
    ),
    (
        "AWS_CA_BUNDLE",
        "PEM certificates trusted besides the built-in roots, when --ca-bundle is not given.",
    ),
    (
        "HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY",
        "A proxy for the AWS endpoints (the metadata services are always reached directly).",
    ),
    (
        "HOME",
        "Where ~/.aws is; the user database's home directory without it.",
    ),
];

/// The page's date, for its footer; set it when the page changes in substance.
const DATE: &str = "2026-11-27";

/// Longest line written (for the page's source, not its rendering: roff fills the lines).
const LINE: usize = 80;

const SEE_ALSO: &str = ".BR mkfifo (1),\n.BR syslog\\-ng (8),\n.BR rsyslogd (8),\n.BR aws (1)\n";

/// The man page, in roff.
pub fn man_page() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        ".TH FIFO2KINESIS 1 {DATE} \"fifo2kinesis {}\" \"User Commands\"",
        env!("CARGO_PKG_VERSION")
    );
    // Left-aligned, without hyphenation: option names, URLs and variables stay whole.
    out.push_str(".ad l\n.nh\n");
    out.push_str(".SH NAME\n");
    out.push_str(
        "fifo2kinesis \\- read lines from a named pipe and publish them to Amazon Kinesis\n",
    );
    out.push_str(&synopsis());
    out.push_str(".SH DESCRIPTION\n");
    for (i, paragraph) in DESCRIPTION.iter().enumerate() {
        if i > 0 {
            out.push_str(".PP\n");
        }
        out.push_str(&text(paragraph));
    }
    out.push_str(".SH OPTIONS\n");
    out.push_str(&text(OPTIONS_INTRO));
    for category in Category::ALL {
        let _ = writeln!(out, ".SS {}", category.title());
        for opt in OPTIONS.iter().filter(|o| o.category == category) {
            out.push_str(&option(opt));
        }
    }
    section(&mut out, "SIGNALS", SIGNALS);
    section(&mut out, "FILES", FILES);
    section(&mut out, "EXIT STATUS", EXIT_STATUS);
    section(&mut out, "ENVIRONMENT", ENVIRONMENT);
    out.push_str(".SH SEE ALSO\n");
    out.push_str(SEE_ALSO);
    out.push_str(".PP\n");
    out.push_str(&text(
        "https://github.com/acquia/fifo2kinesis, the Go original.",
    ));
    out
}

fn synopsis() -> String {
    let mut out = String::from(".SH SYNOPSIS\n");
    for (i, rest) in [
        "\\fB\\-\\-stream\\-name\\fR \\fINAME\\fR",
        "\\fB\\-\\-delivery\\-stream\\fR \\fINAME\\fR",
        "\\fB\\-\\-flush\\-handler logger\\fR",
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            out.push_str(".br\n");
        }
        let _ = writeln!(
            out,
            "\\fBfifo2kinesis \\-\\-fifo\\-name\\fR \\fIPATH\\fR {rest} [\\fIOPTIONS\\fR]"
        );
    }
    out.push_str(".br\n\\fBfifo2kinesis \\-\\-help\\fR | \\fB\\-\\-version\\fR\n");
    out
}

/// One option: its names as the tag, its paragraph, then its variable and default.
fn option(opt: &Opt) -> String {
    let mut tag = String::new();
    if let Some(c) = opt.short {
        let _ = write!(tag, "\\fB\\-{c}\\fR, ");
    }
    let _ = write!(tag, "\\fB\\-\\-{}\\fR", escape(opt.long));
    if let Takes::Value(v) = opt.takes {
        let _ = write!(tag, " \\fI{v}\\fR");
    }
    let mut out = format!(".TP\n{tag}\n{}", text(super::docs::doc(opt.id)));
    if let Some(var) = opt.var {
        let _ = write!(
            out,
            ".IP\nVariable: \\fB{}\\fR\n.br\n{}",
            escape(var),
            text(&format!("Default: {}", opt.default_text()))
        );
    }
    out
}

/// A section of tagged paragraphs.
fn section(out: &mut String, title: &str, items: &[(&str, &str)]) {
    let _ = writeln!(out, ".SH {title}");
    for (tag, body) in items {
        let _ = write!(out, ".TP\n\\fB{}\\fR\n{}", escape(tag), text(body));
    }
}

/// A paragraph of prose as roff text lines: escaped, `--name` in bold, each sentence on a
/// line of its own (so roff sets the space after it), lines broken at [`LINE`] bytes.
fn text(prose: &str) -> String {
    let mut out = String::new();
    for sentence in sentences(prose) {
        let mut line = String::new();
        for word in sentence.split(' ').map(word) {
            if !line.is_empty() && line.len() + 1 + word.len() > LINE {
                push_line(&mut out, &line);
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
        }
        push_line(&mut out, &line);
    }
    out
}

/// `prose` split after each `. ` that ends a sentence (the next word starts with a capital).
fn sentences(prose: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (at, _) in prose.match_indices(". ") {
        if prose[at + 2..].starts_with(|c: char| c.is_ascii_uppercase()) {
            out.push(&prose[start..=at]);
            start = at + 2;
        }
    }
    out.push(&prose[start..]);
    out
}

/// A text line; one starting with `.` or `'` would be read as a request.
fn push_line(out: &mut String, line: &str) {
    if line.starts_with(['.', '\'']) {
        out.push_str("\\&");
    }
    out.push_str(line);
    out.push('\n');
}

/// One word escaped, with a `--name` in it set in bold.
fn word(w: &str) -> String {
    let mut out = String::new();
    let mut rest = w;
    while let Some(at) = find_option(rest) {
        out.push_str(&escape(&rest[..at]));
        let len = 2 + rest[at + 2..]
            .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
            .unwrap_or(rest.len() - at - 2);
        // A trailing hyphen is punctuation, not part of the name.
        let name = rest[at..at + len].trim_end_matches('-');
        let _ = write!(out, "\\fB{}\\fR", escape(name));
        rest = &rest[at + name.len()..];
    }
    out.push_str(&escape(rest));
    out
}

/// Where the next `--name` starts: two hyphens after a non-word character, then a letter.
fn find_option(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    (0..bytes.len().saturating_sub(2)).find(|&i| {
        bytes[i] == b'-'
            && bytes[i + 1] == b'-'
            && bytes[i + 2].is_ascii_lowercase()
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'-'))
    })
}

/// Text with roff's special characters escaped: backslashes, hyphens (as minus signs, so
/// that options can be copied), and anything beyond ASCII.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c if c.is_ascii() => out.push(c),
            c => {
                let _ = write!(out, "\\[u{:04X}]", c as u32);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGENERATE: &str = "cargo run --example man > fifo2kinesis.1";

    #[test]
    fn the_committed_man_page_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fifo2kinesis.1");
        let committed = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e}; write it with `{REGENERATE}`"));
        let generated = man_page();
        if committed != generated {
            let line = committed
                .lines()
                .zip(generated.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(committed.lines().count().min(generated.lines().count()));
            panic!(
                "fifo2kinesis.1 is not the man page the option definitions make (first \
                 difference at line {}); write it again with `{REGENERATE}`",
                line + 1
            );
        }
    }

    #[test]
    fn options_in_prose_are_bold_and_hyphens_are_minus_signs() {
        assert_eq!(
            text("see --max-record-bytes, not a--b or ---x; 0600-ish"),
            "see \\fB\\-\\-max\\-record\\-bytes\\fR, not a\\-\\-b or \\-\\-\\-x; 0600\\-ish\n"
        );
        assert_eq!(text("--name-."), "\\fB\\-\\-name\\fR\\-.\n");
        assert_eq!(text(".NAME.tmp"), "\\&.NAME.tmp\n");
        assert_eq!(text("One. Two, e.g. three."), "One.\nTwo, e.g. three.\n");
        assert_eq!(text("'quoted"), "\\&'quoted\n");
        let long = "word ".repeat(40);
        let wrapped = text(long.trim_end());
        assert_eq!(wrapped.split_whitespace().count(), 40);
        assert!(wrapped.lines().all(|l| l.len() <= LINE), "{wrapped}");
        assert_eq!(escape("a\\b\u{2014}"), "a\\eb\\[u2014]");
    }

    #[test]
    fn every_option_has_its_paragraph_variable_and_default() {
        let page = man_page();
        assert!(page.contains(
            ".TP\n\\fB\\-i\\fR, \\fB\\-\\-flush\\-interval\\fR \\fIDURATION\\fR\nHow long after"
        ));
        assert!(
            page.contains(".IP\nVariable: \\fBFIFO2KINESIS_FLUSH_INTERVAL\\fR\n.br\nDefault: 5\n")
        );
        assert!(page.contains(".TP\n\\fB\\-\\-help\\fR\nPrint a summary"));
    }

    /// Every `AWS_*` variable the sources name is in ENVIRONMENT.
    #[test]
    fn environment_lists_every_aws_variable_the_sources_read() {
        let environment: String = ENVIRONMENT.iter().map(|(tag, _)| *tag).collect();
        let mut sources = Vec::new();
        rust_files(
            concat!(env!("CARGO_MANIFEST_DIR"), "/src").as_ref(),
            &mut sources,
        );
        for file in sources {
            let code = std::fs::read_to_string(&file).unwrap();
            for (at, _) in code.match_indices("\"AWS_") {
                let rest = &code[at + 1..];
                let len = rest
                    .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(rest.len());
                let (name, after) = rest.split_at(len);
                assert!(
                    !after.starts_with('"') || environment.contains(name),
                    "{} reads {name}: add it to ENVIRONMENT in src/options/man.rs",
                    file.display()
                );
            }
        }
    }

    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
}
