//! The `--help` text, made from the option definitions: every option by category, with its
//! one-line help, its variable and its default.

use std::fmt::Write as _;

use super::defs::{Category, Opt, Takes, OPTIONS};

/// Columns the text is wrapped to.
const WIDTH: usize = 80;
/// Where an option's help, variable and default start.
const INDENT: &str = "        ";

const INTRO: &str = "\
fifo2kinesis: reads lines from a named pipe and publishes them to Amazon Kinesis or Firehose

Usage: fifo2kinesis --fifo-name PATH --stream-name NAME [OPTIONS]
       fifo2kinesis --fifo-name PATH --delivery-stream NAME [OPTIONS]
       fifo2kinesis --fifo-name PATH --flush-handler logger [OPTIONS]

Every option may also be set by its environment variable; the command line wins, and a blank \
variable counts as unset. DURATION is seconds (5, 1.5) or a number with ms, s, m or h (250ms, \
2m); BYTES is a number of bytes or one with KiB, MiB or GiB (512KiB, 1MiB). The man page, \
fifo2kinesis(1), says more.
";

/// The `--help` text: every option with its variable and default, by category.
pub fn help_text() -> String {
    let mut out = String::new();
    for paragraph in INTRO.split("\n\n") {
        if paragraph.starts_with("Usage:") {
            out.push_str(paragraph);
            out.push('\n');
        } else {
            out.push_str(&wrap(paragraph.trim_end(), "", ""));
        }
        out.push('\n');
    }
    for category in Category::ALL {
        let _ = writeln!(out, "{}:", category.title());
        for opt in OPTIONS.iter().filter(|o| o.category == category) {
            out.push_str(&option(opt));
        }
        out.push('\n');
    }
    out.pop();
    out
}

/// One option: `  -x, --name VALUE`, its help, and its variable and default if it has them.
fn option(opt: &Opt) -> String {
    let short = match opt.short {
        Some(c) => format!("-{c}, "),
        None => "    ".into(),
    };
    let value = match opt.takes {
        Takes::Value(v) => format!(" {v}"),
        Takes::Switch | Takes::Action => String::new(),
    };
    let mut out = format!("  {short}--{}{value}\n", opt.long);
    out.push_str(&wrap(opt.help, INDENT, INDENT));
    if let Some(var) = opt.var {
        let _ = writeln!(out, "{INDENT}env:     {var}");
        let hang = format!("{INDENT}         ");
        out.push_str(&wrap(
            &opt.default_text(),
            &format!("{INDENT}default: "),
            &hang,
        ));
    }
    out
}

/// `text` in lines of at most [`WIDTH`] columns (a longer word gets a line of its own), the
/// first starting with `first`, the others with `indent`.
fn wrap(text: &str, first: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::from(first);
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::from(indent);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_fit_in_80_columns() {
        for line in help_text().lines() {
            assert!(line.len() <= WIDTH, "{line:?}");
        }
    }

    #[test]
    fn options_show_short_long_value_variable_and_default() {
        let help = help_text();
        assert!(help
            .contains("  -i, --flush-interval DURATION\n        Time after a batch's first line"));
        assert!(help.contains("        env:     FIFO2KINESIS_FLUSH_INTERVAL\n        default: 5\n"));
        assert!(help.contains("      --max-record-bytes BYTES\n"));
        assert!(help.contains("  -d, --debug\n"));
        assert!(help.contains("\nOther:\n      --help\n        Print this help"));
        assert!(help.ends_with("Print the version and exit\n"), "{help}");
    }

    #[test]
    fn wrapping_keeps_every_word_once() {
        let text = "a bb ccc dddd eeeee ".repeat(8);
        let wrapped = wrap(&text, "> ", "  ");
        assert!(wrapped.starts_with("> a bb"), "{wrapped}");
        assert!(wrapped
            .lines()
            .skip(1)
            .all(|l| l.starts_with("  ") && l.len() <= WIDTH));
        assert_eq!(
            wrapped.split_whitespace().collect::<Vec<_>>()[1..],
            text.split_whitespace().collect::<Vec<_>>()[..]
        );
        let long = "x".repeat(WIDTH + 1);
        assert_eq!(wrap(&format!("{long} y"), "", ""), format!("{long}\ny\n"));
    }
}
