//! Secrets the configuration names but never holds: a file or an environment variable, read
//! each time the secret is used.

use std::path::PathBuf;

use super::document::{Errors, Object};

/// Where a secret is read from, each time it is used (so a rotated secret takes effect without a
/// reload): the introspection client secret, the shared store's password. The secret is never
/// part of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// `…File` (`clientSecretFile`, `passwordFile`): the file's text without trailing line
    /// breaks.
    File(PathBuf),
    /// `…Env` (`clientSecretEnv`, `passwordEnv`): the variable's value.
    Env(String),
}

impl SecretSource {
    /// The secret as it is now: the file's text without trailing line breaks (which editors
    /// add), or the variable's value as set.
    pub fn read(&self) -> Result<String, String> {
        match self {
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|error| format!("cannot read {}: {error}", path.display())),
            SecretSource::Env(name) => std::env::var(name)
                .map_err(|_| format!("the environment variable {name} is not set")),
        }
    }
}

/// The secret named by at most one of `file_key` (a file holding it) and `env_key` (an
/// environment variable holding it); `None` when neither is given, or both (an error).
pub(super) fn secret_source(
    object: &Object<'_>,
    file_key: &str,
    env_key: &str,
    errors: &mut Errors,
) -> Option<SecretSource> {
    match (object.get(file_key), object.get(env_key)) {
        (Some(file), None) => file
            .text(errors)
            .map(|path| SecretSource::File(PathBuf::from(path))),
        (None, Some(env)) => env
            .text(errors)
            .map(|name| SecretSource::Env(name.trim().to_owned())),
        (Some(_), Some(env)) => {
            errors.push(
                &env.path,
                format!("give either {file_key} or {env_key}, not both"),
            );
            None
        }
        (None, None) => None,
    }
}
