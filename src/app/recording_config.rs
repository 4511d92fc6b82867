//! The `[store]` and `[recording]` sections: where the recording store lives, how calls are
//! recorded, and which applications may use the recording API (`[[recording.api_key]]`).
//!
//! Owns: these sections as written in the file, their defaults and checks, and turning them
//! into the settings the store, the control plane and the recording API are given.
//! Must not: open the database or create directories (the store and the recorder do, at
//! start).

use std::path::PathBuf;

use serde::Deserialize;

use super::config::{invalid, ConfigError};
use crate::store::{RecordPolicy, RecordingFormat};

/// `[store]`: the embedded database, or a PostgreSQL one several nodes share.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite file (created with its directory at start); unused when `url` is set.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// A PostgreSQL connection string (`postgres://user:password@host:5432/callbridge`, or
    /// the key=value form); set, it replaces the SQLite file.
    #[serde(default)]
    pub url: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_store_path(),
            url: None,
        }
    }
}

impl StoreConfig {
    /// Where the store is: the PostgreSQL server when `url` is set, else the SQLite file.
    pub fn location(&self) -> crate::store::Location {
        match &self.url {
            Some(url) => crate::store::Location::Postgres(url.clone()),
            None => crate::store::Location::Sqlite(self.path.clone()),
        }
    }

    /// A `url` must be one the PostgreSQL client reads (checked before anything starts).
    pub fn check(&self) -> Result<(), ConfigError> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        if let Err(e) = url.parse::<postgres::Config>() {
            return Err(invalid(format!(
                "store.url is not a PostgreSQL connection string: {e}"
            )));
        }
        Ok(())
    }
}

fn default_store_path() -> PathBuf {
    "/var/lib/callbridge/callbridge.db".into()
}

/// `[recording]`: call recording and the recording API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    /// "wav" (16-bit PCM), "wav-ulaw", "wav-alaw" or "opus" (Ogg Opus).
    #[serde(default = "default_format")]
    pub format: String,
    /// Where call recordings go (`<dir>/YYYY/MM/DD/<callID>.<wav|opus>`).
    #[serde(default = "default_recording_dir")]
    pub dir: PathBuf,
    /// Recordings (and their calls' rows) older than this many days are removed; 0 keeps
    /// them forever.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// The applications that may use `/verba/api`.
    #[serde(default, rename = "api_key")]
    pub api_keys: Vec<ApiKeyConfig>,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            format: default_format(),
            dir: default_recording_dir(),
            retention_days: default_retention_days(),
            api_keys: Vec::new(),
        }
    }
}

fn default_format() -> String {
    "wav".into()
}

fn default_recording_dir() -> PathBuf {
    "/var/lib/callbridge/calls".into()
}

fn default_retention_days() -> u32 {
    90
}

/// `[[recording.api_key]]`: one application of the recording API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The `apiKey` it sends.
    pub key: String,
    /// It must also send a `token` from RequestToken (a stored user's credentials).
    #[serde(default)]
    pub authentication: bool,
}

impl RecordingConfig {
    /// The file format, checked.
    pub fn format(&self) -> Result<RecordingFormat, ConfigError> {
        self.format.parse().map_err(|_| {
            invalid(format!(
                "recording.format {:?}: expected \"wav\", \"wav-ulaw\", \"wav-alaw\" or \"opus\"",
                self.format
            ))
        })
    }

    /// Every check of the section.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.format()?;
        if self.retention_days > 36_500 {
            return Err(invalid(format!(
                "recording.retention_days {}: at most 36500 (0 keeps recordings forever)",
                self.retention_days
            )));
        }
        for (i, k) in self.api_keys.iter().enumerate() {
            if k.key.len() < 16 || !k.key.chars().all(|c| c.is_ascii_graphic()) {
                return Err(invalid(format!(
                    "recording.api_key[{i}].key: at least 16 printable characters, no spaces"
                )));
            }
            if self.api_keys[..i].iter().any(|o| o.key == k.key) {
                return Err(invalid(format!(
                    "recording.api_key[{i}].key is listed twice"
                )));
            }
        }
        Ok(())
    }
}

/// A route's or trunk's `record` value; `what` names the key in errors.
pub fn record_policy(value: Option<&str>, what: &str) -> Result<Option<RecordPolicy>, ConfigError> {
    value
        .map(|v| {
            v.parse().map_err(|_| {
                invalid(format!(
                    "{what} {v:?}: expected \"off\", \"always\" or \"on-demand\""
                ))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_policies_are_checked() {
        let mut c = RecordingConfig::default();
        assert_eq!(c.format().unwrap(), RecordingFormat::WavPcm16);
        c.format = "opus".into();
        assert_eq!(c.format().unwrap(), RecordingFormat::OggOpus);
        c.format = "mp3".into();
        assert!(c
            .check()
            .unwrap_err()
            .to_string()
            .contains("recording.format"));
        assert_eq!(
            record_policy(Some("on-demand"), "route[0].record").unwrap(),
            Some(RecordPolicy::OnDemand)
        );
        let err = record_policy(Some("sometimes"), "route[0].record").unwrap_err();
        assert!(err.to_string().contains("route[0].record"), "{err}");
    }

    #[test]
    fn api_keys_are_long_and_unique() {
        let key = |k: &str| ApiKeyConfig {
            key: k.into(),
            authentication: false,
        };
        let mut c = RecordingConfig {
            api_keys: vec![key("short")],
            ..RecordingConfig::default()
        };
        assert!(c.check().is_err());
        c.api_keys = vec![
            key("74c8eea0-50c6-40b2-9f3e-252ed501c3c8"),
            key("74c8eea0-50c6-40b2-9f3e-252ed501c3c8"),
        ];
        assert!(c.check().unwrap_err().to_string().contains("twice"));
        c.api_keys.pop();
        c.check().unwrap();
    }
}
