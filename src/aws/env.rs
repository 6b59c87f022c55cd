//! A snapshot of the environment variables, read once at start-up.
//!
//! Blank values count as unset, as the AWS SDKs treat them. Tests build one from pairs.

use std::collections::HashMap;
use std::ffi::OsString;

/// Environment variables by name.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The process's environment (variables that are not valid UTF-8 are left out).
    pub fn from_process() -> Env {
        Env::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// An environment holding `pairs`.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The trimmed value of `name`, or `None` if it is unset or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Whether `name` holds `true` (any case).
    pub fn is_true(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The value as the configuration parser wants it.
    pub fn os(&self, name: &str) -> Option<OsString> {
        self.vars.get(name).map(OsString::from)
    }
}
