//! Named profiles from the AWS shared files, resolved into a description of where credentials
//! come from ([`Source`]).
//!
//! The profile is `AWS_PROFILE` (default `default`). The config file is `AWS_CONFIG_FILE` or
//! `~/.aws/config`, with sections `[profile NAME]` (only `[default]` may go without the prefix,
//! and `[profile default]` wins over it); the credentials file is `AWS_SHARED_CREDENTIALS_FILE`
//! or `~/.aws/credentials`, with sections `[NAME]`, and its values win over the config file's.
//!
//! In a profile, `role_arn` means assuming that role: with `web_identity_token_file`, by web
//! identity; otherwise over exactly one of `source_profile` (followed, with loop detection; a
//! profile naming itself uses its own static keys) or `credential_source` (`Environment`,
//! `Ec2InstanceMetadata`, `EcsContainer`). Without `role_arn`: `credential_process`, else static
//! keys. Every error names the profile and the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::credentials::Credentials;
use super::env::Env;
use super::ini::{self, Sections};
use super::sts::{check_external_id, check_role_arn, check_session_name};
use super::Error;

/// Where a profile's credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Static keys in the profile.
    Static(Credentials),
    /// Run this command with `sh -c` and read its JSON output.
    Process(String),
    /// STS AssumeRoleWithWebIdentity with a token read from a file.
    WebIdentity {
        /// The role to assume.
        role_arn: String,
        /// The token file, read afresh at every refresh.
        token_file: PathBuf,
        /// The session name, if set.
        session_name: Option<String>,
    },
    /// A `credential_source` outside the files.
    Named(NamedSource),
    /// STS AssumeRole over the credentials of `base`.
    AssumeRole {
        /// The role to assume.
        role_arn: String,
        /// The external ID, if the role requires one.
        external_id: Option<String>,
        /// The session name, if set.
        session_name: Option<String>,
        /// Where the credentials used to assume the role come from.
        base: Box<Source>,
    },
}

/// The values `credential_source` may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamedSource {
    /// The `AWS_ACCESS_KEY_ID` family.
    Environment,
    /// EC2 instance metadata.
    Ec2InstanceMetadata,
    /// The container credentials endpoint.
    EcsContainer,
}

/// The two shared files, read.
#[derive(Clone, Debug, Default)]
pub struct ProfileFiles {
    config_path: PathBuf,
    credentials_path: PathBuf,
    config: Sections,
    credentials: Sections,
}

/// One profile's merged properties.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    props: HashMap<String, String>,
    /// Which file defines it, for messages.
    pub file: String,
}

impl Profile {
    /// A property, if set and not blank.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }
}

/// The home directory: `HOME`, else the user database's entry.
pub fn home_dir(env: &Env) -> Option<PathBuf> {
    env.get("HOME").map(PathBuf::from).or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.dir)
    })
}

fn expand_home(path: &str, env: &Env) -> PathBuf {
    match (path.strip_prefix("~/"), home_dir(env)) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(path),
    }
}

impl ProfileFiles {
    /// Reads the files the environment names (missing files are empty).
    pub fn load(env: &Env) -> Result<ProfileFiles, Error> {
        let home = home_dir(env).unwrap_or_default();
        let config_path = env
            .get("AWS_CONFIG_FILE")
            .map(|p| expand_home(p, env))
            .unwrap_or_else(|| home.join(".aws/config"));
        let credentials_path = env
            .get("AWS_SHARED_CREDENTIALS_FILE")
            .map(|p| expand_home(p, env))
            .unwrap_or_else(|| home.join(".aws/credentials"));
        Ok(ProfileFiles {
            config: read_sections("config file", &config_path)?,
            credentials: read_sections("credentials file", &credentials_path)?,
            config_path,
            credentials_path,
        })
    }

    /// Files from text, for tests.
    #[cfg(test)]
    pub fn from_text(config: &str, credentials: &str) -> ProfileFiles {
        ProfileFiles {
            config_path: PathBuf::from("config"),
            credentials_path: PathBuf::from("credentials"),
            config: ini::parse(config),
            credentials: ini::parse(credentials),
        }
    }

    /// Both files' paths, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} and {}",
            self.config_path.display(),
            self.credentials_path.display()
        )
    }

    /// The merged profile `name`, if either file has it.
    pub fn profile(&self, name: &str) -> Option<Profile> {
        let prefixed = format!("profile {name}");
        let from_config = self
            .config
            .iter()
            .find(|(n, _)| *n == prefixed)
            .or_else(|| {
                if name == "default" {
                    self.config.iter().find(|(n, _)| n == "default")
                } else {
                    None
                }
            });
        let from_credentials = self.credentials.iter().find(|(n, _)| n == name);
        if from_config.is_none() && from_credentials.is_none() {
            return None;
        }
        let mut props = from_config.map(|(_, p)| p.clone()).unwrap_or_default();
        let mut files = Vec::new();
        if from_config.is_some() {
            files.push(self.config_path.display().to_string());
        }
        if let Some((_, p)) = from_credentials {
            props.extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
            files.push(self.credentials_path.display().to_string());
        }
        Some(Profile {
            props,
            file: files.join(" and "),
        })
    }

    /// Where profile `name`'s credentials come from; `Ok(None)` if it has none.
    pub fn resolve(&self, name: &str) -> Result<Option<Source>, Error> {
        let Some(profile) = self.profile(name) else {
            return Ok(None);
        };
        self.resolve_profile(name, &profile, &mut Vec::new())
    }

    fn resolve_profile(
        &self,
        name: &str,
        p: &Profile,
        visited: &mut Vec<String>,
    ) -> Result<Option<Source>, Error> {
        let err = |problem: String| Error::Profile {
            profile: name.to_string(),
            files: p.file.clone(),
            problem,
        };
        visited.push(name.to_string());
        if let Some(role_arn) = p.get("role_arn") {
            check_role_arn(role_arn).map_err(|e| err(format!("role_arn {e}")))?;
            let session_name = p.get("role_session_name").map(String::from);
            if let Some(n) = &session_name {
                check_session_name(n).map_err(|e| err(format!("role_session_name {e}")))?;
            }
            if let Some(token_file) = p.get("web_identity_token_file") {
                return Ok(Some(Source::WebIdentity {
                    role_arn: role_arn.into(),
                    token_file: PathBuf::from(token_file),
                    session_name,
                }));
            }
            let base = match (p.get("source_profile"), p.get("credential_source")) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        "role_arn with both source_profile and credential_source; keep one".into(),
                    ))
                }
                (None, None) => {
                    return Err(err(
                        "role_arn needs source_profile or credential_source".into()
                    ))
                }
                (None, Some(cs)) => Source::Named(parse_named_source(cs).map_err(err)?),
                (Some(src), None) => self.source_profile(name, p, src, visited)?,
            };
            let external_id = p.get("external_id");
            if let Some(id) = external_id {
                check_external_id(id).map_err(|e| err(format!("external_id {e}")))?;
            }
            return Ok(Some(Source::AssumeRole {
                role_arn: role_arn.into(),
                external_id: external_id.map(String::from),
                session_name,
                base: Box::new(base),
            }));
        }
        if let Some(cmd) = p.get("credential_process") {
            return Ok(Some(Source::Process(cmd.into())));
        }
        static_keys(p).map_err(err)
    }

    fn source_profile(
        &self,
        name: &str,
        p: &Profile,
        src: &str,
        visited: &mut Vec<String>,
    ) -> Result<Source, Error> {
        let err = |problem: String| Error::Profile {
            profile: name.to_string(),
            files: p.file.clone(),
            problem,
        };
        let Some(sp) = self.profile(src) else {
            return Err(err(format!("source_profile \"{src}\" not found")));
        };
        if visited.iter().any(|v| v == src) {
            // A profile may name itself (or an earlier one) to use its static keys; any other
            // way back is a loop.
            return match static_keys(&sp) {
                Ok(Some(s)) => Ok(s),
                _ => Err(err(format!(
                    "source_profile chain loops: {} -> {src}",
                    visited.join(" -> ")
                ))),
            };
        }
        match self.resolve_profile(src, &sp, visited)? {
            Some(s) => Ok(s),
            None => Err(err(format!("source_profile \"{src}\" has no credentials"))),
        }
    }
}

fn read_sections(what: &'static str, path: &Path) -> Result<Sections, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(ini::parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(Error::File {
            what,
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn static_keys(p: &Profile) -> Result<Option<Source>, String> {
    match (p.get("aws_access_key_id"), p.get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => {
            let token = p.get("aws_session_token").map(String::from);
            Ok(Some(Source::Static(Credentials::new(
                id, secret, token, None, "profile",
            ))))
        }
        (Some(_), None) => Err("aws_access_key_id without aws_secret_access_key".into()),
        (None, Some(_)) => Err("aws_secret_access_key without aws_access_key_id".into()),
        (None, None) => Ok(None),
    }
}

fn parse_named_source(s: &str) -> Result<NamedSource, String> {
    match s {
        "Environment" => Ok(NamedSource::Environment),
        "Ec2InstanceMetadata" => Ok(NamedSource::Ec2InstanceMetadata),
        "EcsContainer" => Ok(NamedSource::EcsContainer),
        _ => Err(format!("credential_source \"{s}\" is not one of Environment, Ec2InstanceMetadata, EcsContainer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(id: &str) -> Source {
        Source::Static(Credentials::new(id, "secret", None, None, "profile"))
    }

    #[test]
    fn default_profile_sections_and_precedence() {
        let f = ProfileFiles::from_text(
            "[default]\nregion = us-east-1\naws_access_key_id = FROMCONFIG\naws_secret_access_key = s\n[profile default]\nregion = eu-west-1\n",
            "",
        );
        // [profile default] wins over [default].
        assert_eq!(
            f.profile("default").unwrap().get("region"),
            Some("eu-west-1")
        );
        assert_eq!(f.resolve("default").unwrap(), None);
        let f = ProfileFiles::from_text(
            "[default]\nregion = us-east-1\n[dev]\naws_access_key_id = NOPREFIX\naws_secret_access_key = s\n",
            "[default]\naws_access_key_id = FROMCREDS\naws_secret_access_key = secret\n[profile dev]\nx = y\n",
        );
        assert_eq!(f.resolve("default").unwrap(), Some(keys("FROMCREDS")));
        assert_eq!(
            f.profile("default").unwrap().get("region"),
            Some("us-east-1")
        );
        // Neither "[dev]" in the config file nor "[profile dev]" in the credentials file count.
        assert!(f.profile("dev").is_none());
    }

    #[test]
    fn role_chains_follow_source_profiles() {
        let f = ProfileFiles::from_text(
            "[profile ci]\nrole_arn = arn:aws:iam::1:role/ci\nsource_profile = base\nexternal_id = ext\nrole_session_name = s1\n\
             [profile base]\nrole_arn = arn:aws:iam::1:role/base\nsource_profile = root\n\
             [profile self]\nrole_arn = arn:aws:iam::1:role/self\nsource_profile = self\naws_access_key_id = SELF\naws_secret_access_key = secret\n\
             [profile ec2]\nrole_arn = arn:aws:iam::1:role/e\ncredential_source = Ec2InstanceMetadata\n\
             [profile web]\nrole_arn = arn:aws:iam::1:role/w\nweb_identity_token_file = /t\n\
             [profile proc]\ncredential_process = /bin/creds --x\n",
            "[root]\naws_access_key_id = ROOT\naws_secret_access_key = secret\n",
        );
        let ci = f.resolve("ci").unwrap().unwrap();
        let Source::AssumeRole {
            role_arn,
            external_id,
            session_name,
            base,
        } = ci
        else {
            panic!("{ci:?}")
        };
        assert_eq!(
            (
                role_arn.as_str(),
                external_id.as_deref(),
                session_name.as_deref()
            ),
            ("arn:aws:iam::1:role/ci", Some("ext"), Some("s1"))
        );
        let Source::AssumeRole { role_arn, base, .. } = *base else {
            panic!()
        };
        assert_eq!(role_arn, "arn:aws:iam::1:role/base");
        assert_eq!(*base, keys("ROOT"));
        let Source::AssumeRole { base, .. } = f.resolve("self").unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(*base, keys("SELF"));
        let Source::AssumeRole { base, .. } = f.resolve("ec2").unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(*base, Source::Named(NamedSource::Ec2InstanceMetadata));
        assert_eq!(
            f.resolve("web").unwrap(),
            Some(Source::WebIdentity {
                role_arn: "arn:aws:iam::1:role/w".into(),
                token_file: "/t".into(),
                session_name: None
            })
        );
        assert_eq!(
            f.resolve("proc").unwrap(),
            Some(Source::Process("/bin/creds --x".into()))
        );
        assert_eq!(f.resolve("nope").unwrap(), None);
    }

    #[test]
    fn loops_and_mistakes_are_named() {
        let f = ProfileFiles::from_text(
            "[profile a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = b\n\
             [profile b]\nrole_arn = arn:aws:iam::1:role/b\nsource_profile = a\n\
             [profile ci]\nrole_arn = arn:aws:iam::1:role/ci\nsource_profile = base\n\
             [profile both]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = a\ncredential_source = Environment\n\
             [profile neither]\nrole_arn = arn:aws:iam::1:role/x\n\
             [profile badsrc]\nrole_arn = arn:aws:iam::1:role/x\ncredential_source = Laptop\n\
             [profile half]\naws_access_key_id = A\n\
             [profile badarn]\nrole_arn = arn:aws:s3:::bucket\ncredential_source = Environment\n\
             [profile badname]\nrole_arn = arn:aws:iam::1:role/x\ncredential_source = Environment\nrole_session_name = a b\n\
             [profile badid]\nrole_arn = arn:aws:iam::1:role/x\ncredential_source = Environment\nexternal_id = s e c r e t\n",
            "",
        );
        assert_eq!(
            f.resolve("badarn").unwrap_err().to_string(),
            "profile \"badarn\" in config: role_arn \"arn:aws:s3:::bucket\" is not a role ARN like arn:aws:iam::123456789012:role/NAME"
        );
        let e = f.resolve("badname").unwrap_err();
        assert!(e.is_configuration());
        assert!(
            e.to_string().contains("role_session_name \"a b\" is not"),
            "{e}"
        );
        let e = f.resolve("badid").unwrap_err().to_string();
        assert!(
            e.contains("external_id is not") && !e.contains("s e c r e t"),
            "{e}"
        );
        let e = f.resolve("a").unwrap_err().to_string();
        assert!(e.contains("loops: a -> b -> a"), "{e}");
        assert_eq!(
            f.resolve("ci").unwrap_err().to_string(),
            "profile \"ci\" in config: source_profile \"base\" not found"
        );
        assert!(f
            .resolve("both")
            .unwrap_err()
            .to_string()
            .contains("both source_profile and credential_source"));
        assert!(f
            .resolve("neither")
            .unwrap_err()
            .to_string()
            .contains("needs source_profile or credential_source"));
        assert!(f
            .resolve("badsrc")
            .unwrap_err()
            .to_string()
            .contains("\"Laptop\""));
        assert!(f
            .resolve("half")
            .unwrap_err()
            .to_string()
            .contains("without aws_secret_access_key"));
    }
}
