//! The configuration file read once: its text and the SHA-256 of exactly those bytes.
//!
//! Start-up, `fhirguard check`, `explain` and every reload read the file through
//! [`ConfigFile::read`] and parse the text it holds, never the path again. A reload decides
//! "unchanged" from [`ConfigFile::digest`] and, when it changed, parses the same buffer, so the
//! digest always describes the bytes that became the configuration, even while a writer is
//! replacing the file (SPEC §5: one reload path, parse, validate, swap).

use std::path::Path;

use sha2::{Digest, Sha256};

use super::{ConfigError, ConfigErrors};

/// A configuration's text (YAML or JSON) and its digest, taken from one read.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    text: String,
    digest: [u8; 32],
}

impl ConfigFile {
    /// Reads the file once. An unreadable file, or one that is not UTF-8, is one document-level
    /// error (empty path), as every other whole-document mistake is.
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigErrors> {
        // `read_to_string` refuses text that is not UTF-8 with the same io error it uses for
        // a failed read, so both read "cannot read <path>: …".
        let text = std::fs::read_to_string(path).map_err(|error| {
            ConfigErrors(vec![ConfigError::new(
                "",
                format!("cannot read {}: {error}", path.display()),
            )])
        })?;
        Ok(ConfigFile::from_text(text))
    }

    /// A configuration given as text (tests, the demo): hashed the same way as a file.
    pub fn from_text(text: String) -> ConfigFile {
        let digest = digest(text.as_bytes());
        ConfigFile { text, digest }
    }

    /// The text that was read.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// SHA-256 of [`ConfigFile::text`]'s bytes: the fingerprint of the `Config` parsed from it.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }
}

/// SHA-256 of a configuration's bytes.
pub(super) fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
