//! Where settings come from, and reading one setting: built-in defaults, then an optional file
//! named by `HERALD_CONFIG` (lines of `HERALD_X=value`), then the `HERALD_*` environment
//! variables. Each reader names its variable in the error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// A setting that could not be read, with the variable's name.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The value is not of the expected form.
    #[error("setting {name}: {message} (got {value:?})")]
    Invalid {
        /// The variable, e.g. `HERALD_INGEST_ADDR`.
        name: &'static str,
        /// What was expected.
        message: String,
        /// What was given.
        value: String,
    },
    /// The file named by `HERALD_CONFIG` could not be read.
    #[error("setting HERALD_CONFIG: cannot read {path}: {source}")]
    File {
        /// The path given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Where settings come from: the file's lines under the environment's variables.
#[derive(Debug, Clone, Default)]
pub struct Source {
    values: HashMap<String, String>,
}

impl Source {
    /// Reads `HERALD_CONFIG` (if set) and then the process environment on top of it.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut values = HashMap::new();
        if let Ok(path) = std::env::var("HERALD_CONFIG") {
            let text = std::fs::read_to_string(&path)
                .map_err(|source| ConfigError::File { path, source })?;
            values.extend(parse_file(&text));
        }
        values.extend(std::env::vars().filter(|(k, _)| k.starts_with("HERALD_")));
        Ok(Self { values })
    }

    /// A source made of the given pairs only (tests, embedding).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// This source with `name` set to `value` (one service of a stack set apart).
    pub fn with(&self, name: &str, value: &str) -> Self {
        let mut values = self.values.clone();
        values.insert(name.to_string(), value.to_string());
        Self { values }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn string(&self, name: &'static str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_string()
    }

    pub(crate) fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| invalid(name, expected, v)),
        }
    }

    pub(crate) fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(invalid(name, "true or false", &v)),
            },
        }
    }

    pub(crate) fn duration(
        &self,
        name: &'static str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => crate::duration::parse_duration(v)
                .ok_or_else(|| invalid(name, "a duration such as 500ms, 30s, 5m, 2h or 7d", v)),
        }
    }

    /// A duration of at least `min`: shorter values are refused rather than silently raised.
    pub(crate) fn duration_at_least(
        &self,
        name: &'static str,
        default: Duration,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(name, default)?;
        if d < min {
            let expected = format!("a duration of at least {}s", min.as_secs());
            return Err(invalid(name, &expected, self.get(name).unwrap_or_default()));
        }
        Ok(d)
    }

    pub(crate) fn addr(
        &self,
        name: &'static str,
        default: &str,
    ) -> Result<SocketAddr, ConfigError> {
        let v = self.string(name, default);
        v.parse()
            .map_err(|_| invalid(name, "an address such as 127.0.0.1:8080", &v))
    }

    pub(crate) fn policy(&self) -> Result<crate::netguard::DestinationPolicy, ConfigError> {
        let allowlist = match self.get("HERALD_DESTINATION_ALLOWLIST") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(|s| {
                    s.parse().map_err(|m: String| ConfigError::Invalid {
                        name: "HERALD_DESTINATION_ALLOWLIST",
                        message: m,
                        value: v.to_string(),
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(crate::netguard::DestinationPolicy {
            allow_private: self.bool("HERALD_ALLOW_PRIVATE_DESTINATIONS", false)?,
            allowlist,
        })
    }

    /// A prefetch count: 1-65535 (0 would mean unlimited in AMQP).
    pub(crate) fn prefetch(&self, name: &'static str, default: u16) -> Result<u16, ConfigError> {
        let v: u16 = self.parse(name, default, "a number 1-65535")?;
        if v == 0 {
            return Err(invalid(name, "a number 1-65535", "0"));
        }
        Ok(v)
    }

    /// `HERALD_SECRETS_KEY` and `HERALD_SECRETS_KEYS_OLD`: base64 of 32 bytes each.
    pub(crate) fn secrets(&self) -> Result<crate::secrets::SecretsKeys, ConfigError> {
        use crate::secrets::{decode_key, SecretsKeys};
        const EXPECTED: &str = "base64 of 32 random bytes (e.g. `openssl rand -base64 32`)";
        let old = match self.get("HERALD_SECRETS_KEYS_OLD") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| {
                    decode_key(k).ok_or_else(|| {
                        invalid(
                            "HERALD_SECRETS_KEYS_OLD",
                            &format!("a comma-separated list of keys, each {EXPECTED}"),
                            "(hidden)",
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        match self.get("HERALD_SECRETS_KEY") {
            None => Ok(SecretsKeys::development(&old)),
            Some(v) => {
                let key = decode_key(v)
                    .ok_or_else(|| invalid("HERALD_SECRETS_KEY", EXPECTED, "(hidden)"))?;
                Ok(SecretsKeys::new(&key, &old))
            }
        }
    }

    /// An optional `http://` or `https://` proxy URL.
    pub(crate) fn proxy(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        match url::Url::parse(v) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Ok(Some(v.to_string()))
            }
            _ => Err(invalid(name, "an http:// or https:// proxy URL", v)),
        }
    }

    /// A number that may be 0 (meaning "off").
    pub(crate) fn rate(&self, name: &'static str) -> Result<u32, ConfigError> {
        self.parse(
            name,
            0,
            "a whole number of events per second (0 = no limit)",
        )
    }

    pub(crate) fn positive(
        &self,
        name: &'static str,
        default: usize,
    ) -> Result<usize, ConfigError> {
        let v = self.parse(name, default, "a positive whole number")?;
        if v == 0 {
            return Err(invalid(name, "a positive whole number", "0"));
        }
        Ok(v)
    }
}

/// The error for a value not of the expected form.
pub(crate) fn invalid(name: &'static str, expected: &str, value: &str) -> ConfigError {
    ConfigError::Invalid {
        name,
        message: format!("expected {expected}"),
        value: value.to_string(),
    }
}

/// The `HERALD_X=value` lines of a settings file (blank lines and `#` comments skipped).
pub(crate) fn parse_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim().trim_matches('"').to_string();
            (k.trim().to_string(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_lines_are_read_and_comments_skipped() {
        let pairs = parse_file("# c\nHERALD_INGEST_ADDR=0.0.0.0:9\n\nHERALD_LOG_FORMAT=\"json\"\n");
        assert_eq!(
            pairs,
            vec![
                ("HERALD_INGEST_ADDR".into(), "0.0.0.0:9".into()),
                ("HERALD_LOG_FORMAT".into(), "json".into())
            ]
        );
    }
}
