//! [`DatabaseOptions`] and the resolved configuration built from them and the URL.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::url::DatabaseUrl;

/// Options of a [`crate::Database`]. Each can also be given in the URL's query string
/// (`?min_size=2&max_size=20&acquire_timeout=5&force_rollback=true`); a value set here wins
/// over the URL's.
///
/// | option | URL key | default |
/// |---|---|---|
/// | [`force_rollback`](Self::force_rollback) | `force_rollback` | `false` |
/// | [`min_size`](Self::min_size) | `min_size` | 1 |
/// | [`max_size`](Self::max_size) | `max_size` | 10 (1 for in-memory SQLite) |
/// | [`acquire_timeout`](Self::acquire_timeout) | `acquire_timeout` (seconds) | 30 s |
/// | [`pool_recycle`](Self::pool_recycle) | `pool_recycle` (seconds) | never |
/// | [`disconnect_timeout`](Self::disconnect_timeout) | `disconnect_timeout` (seconds) | 10 s |
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatabaseOptions {
    force_rollback: Option<bool>,
    min_size: Option<u32>,
    max_size: Option<u32>,
    acquire_timeout: Option<Duration>,
    pool_recycle: Option<Duration>,
    disconnect_timeout: Option<Duration>,
}

impl DatabaseOptions {
    /// Options that take everything from the URL or the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs everything on one connection inside a transaction that is rolled back on
    /// disconnect, so tests leave no data behind. Transactions opened meanwhile become
    /// savepoints.
    #[must_use]
    pub fn force_rollback(mut self, on: bool) -> Self {
        self.force_rollback = Some(on);
        self
    }

    /// How many connections the pool keeps open even when idle.
    #[must_use]
    pub fn min_size(mut self, n: u32) -> Self {
        self.min_size = Some(n);
        self
    }

    /// The most connections the pool opens.
    #[must_use]
    pub fn max_size(mut self, n: u32) -> Self {
        self.max_size = Some(n);
        self
    }

    /// How long a caller waits for a free connection before [`crate::ErrorKind::PoolTimeout`].
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = Some(timeout);
        self
    }

    /// Closes connections once they are this old (when next idle), so that server-side
    /// timeouts never meet a stale connection.
    #[must_use]
    pub fn pool_recycle(mut self, age: Duration) -> Self {
        self.pool_recycle = Some(age);
        self
    }

    /// How long [`crate::Database::disconnect`] waits for connections that callers still
    /// hold. After that it closes them: their operations fail with
    /// [`crate::ErrorKind::NotConnected`], and one in progress is stopped.
    #[must_use]
    pub fn disconnect_timeout(mut self, timeout: Duration) -> Self {
        self.disconnect_timeout = Some(timeout);
        self
    }
}

/// Options every backend understands.
const COMMON_OPTIONS: &[&str] = &[
    "acquire_timeout",
    "disconnect_timeout",
    "force_rollback",
    "max_size",
    "min_size",
    "pool_recycle",
];

/// The configuration of a database: URL and options resolved, validated, defaults applied.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) url: DatabaseUrl,
    pub(crate) force_rollback: bool,
    pub(crate) min_size: u32,
    pub(crate) max_size: u32,
    pub(crate) acquire_timeout: Duration,
    pub(crate) pool_recycle: Option<Duration>,
    pub(crate) disconnect_timeout: Duration,
    pub(crate) backend: crate::backend::BackendConfig,
}

impl Config {
    pub(crate) fn new(url: DatabaseUrl, options: &DatabaseOptions) -> Result<Self> {
        let backend = crate::backend::BackendConfig::from_url(&url)?;
        if let Some(backend_options) = backend.options() {
            for (key, _) in url.options() {
                if !COMMON_OPTIONS.contains(&key.as_str())
                    && !backend_options.contains(&key.as_str())
                {
                    let mut known: Vec<&str> = COMMON_OPTIONS
                        .iter()
                        .chain(backend_options)
                        .copied()
                        .collect();
                    known.sort_unstable();
                    return Err(Error::config(format!(
                        "unknown URL option '{key}' for {}: known options are {}",
                        url.backend(),
                        known.join(", ")
                    )));
                }
            }
        }
        let force_rollback = match options.force_rollback {
            Some(v) => v,
            None => url
                .option("force_rollback")
                .map(|v| parse_bool("force_rollback", v))
                .transpose()?
                .unwrap_or(false),
        };
        let min_size = pick(options.min_size, &url, "min_size", parse_u32)?;
        let max_size = pick(options.max_size, &url, "max_size", parse_u32)?;
        let acquire_timeout = pick(
            options.acquire_timeout,
            &url,
            "acquire_timeout",
            parse_seconds,
        )?
        .unwrap_or(Duration::from_secs(30));
        let pool_recycle = pick(options.pool_recycle, &url, "pool_recycle", parse_seconds)?;
        let disconnect_timeout = pick(
            options.disconnect_timeout,
            &url,
            "disconnect_timeout",
            parse_seconds,
        )?
        .unwrap_or(Duration::from_secs(10));
        let (min_size, max_size) = if backend.in_memory() {
            // One connection holds the whole in-memory database: every caller shares it.
            (1, 1)
        } else {
            let max = max_size.unwrap_or(10);
            let min = min_size.unwrap_or(1.min(max));
            (min, max)
        };
        if max_size == 0 {
            return Err(Error::config("option 'max_size' must be at least 1"));
        }
        if min_size > max_size {
            return Err(Error::config(format!(
                "option 'min_size' ({min_size}) is larger than 'max_size' ({max_size})"
            )));
        }
        if acquire_timeout.is_zero() {
            return Err(Error::config(
                "option 'acquire_timeout' must be more than zero",
            ));
        }
        Ok(Self {
            url,
            force_rollback,
            min_size,
            max_size,
            acquire_timeout,
            pool_recycle,
            disconnect_timeout,
            backend,
        })
    }
}

fn pick<T: Copy>(
    explicit: Option<T>,
    url: &DatabaseUrl,
    key: &str,
    parse: fn(&str, &str) -> Result<T>,
) -> Result<Option<T>> {
    match explicit {
        Some(v) => Ok(Some(v)),
        None => url.option(key).map(|v| parse(key, v)).transpose(),
    }
}

fn bad_value(key: &str, value: &str, expected: &str) -> Error {
    Error::config(format!(
        "invalid value '{}' for option '{key}': expected {expected}",
        value.escape_debug()
    ))
}

pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(bad_value(key, value, "true or false")),
    }
}

pub(crate) fn parse_u32(key: &str, value: &str) -> Result<u32> {
    value
        .parse()
        .map_err(|_| bad_value(key, value, "a whole number from 0 to 4294967295"))
}

/// Seconds, possibly fractional (`0.5`).
pub(crate) fn parse_seconds(key: &str, value: &str) -> Result<Duration> {
    value
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| bad_value(key, value, "a number of seconds such as 5 or 0.5"))
}

/// One of a fixed set of words, case-insensitively; returns the lower-case word.
pub(crate) fn parse_choice(key: &str, value: &str, choices: &[&str]) -> Result<String> {
    let lower = value.to_ascii_lowercase();
    if choices.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        Err(bad_value(
            key,
            value,
            &format!("one of {}", choices.join(", ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn config(url: &str, options: &DatabaseOptions) -> Result<Config> {
        Config::new(DatabaseUrl::parse(url).unwrap(), options)
    }

    #[test]
    fn url_options_and_explicit_options() {
        let c = config(
            "sqlite:///x.db?min_size=2&max_size=5&acquire_timeout=0.5&force_rollback=true",
            &DatabaseOptions::new(),
        )
        .unwrap();
        assert_eq!((c.min_size, c.max_size), (2, 5));
        assert_eq!(c.acquire_timeout, Duration::from_millis(500));
        assert!(c.force_rollback);
        // Explicit options win.
        let c = config(
            "sqlite:///x.db?max_size=5&force_rollback=true",
            &DatabaseOptions::new().max_size(7).force_rollback(false),
        )
        .unwrap();
        assert_eq!(c.max_size, 7);
        assert!(!c.force_rollback);
    }

    #[test]
    fn pool_recycle_from_url_or_options() {
        let c = config("sqlite:///x.db?pool_recycle=3600", &DatabaseOptions::new()).unwrap();
        assert_eq!(c.pool_recycle, Some(Duration::from_secs(3600)));
        let c = config(
            "sqlite:///x.db",
            &DatabaseOptions::new().pool_recycle(Duration::from_secs(5)),
        )
        .unwrap();
        assert_eq!(c.pool_recycle, Some(Duration::from_secs(5)));
        assert_eq!(
            config("sqlite:///x.db", &DatabaseOptions::new())
                .unwrap()
                .pool_recycle,
            None
        );
    }

    #[test]
    fn disconnect_timeout_from_url_or_options() {
        let c = config(
            "sqlite:///x.db?disconnect_timeout=0.25",
            &DatabaseOptions::new(),
        )
        .unwrap();
        assert_eq!(c.disconnect_timeout, Duration::from_millis(250));
        let c = config(
            "sqlite:///x.db?disconnect_timeout=0.25",
            &DatabaseOptions::new().disconnect_timeout(Duration::ZERO),
        )
        .unwrap();
        assert_eq!(c.disconnect_timeout, Duration::ZERO);
        let e = config(
            "sqlite:///x.db?disconnect_timeout=soon",
            &DatabaseOptions::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("'disconnect_timeout'"), "{e}");
    }

    #[test]
    fn defaults() {
        let c = config("sqlite:///x.db", &DatabaseOptions::new()).unwrap();
        assert_eq!((c.min_size, c.max_size), (1, 10));
        assert_eq!(c.acquire_timeout, Duration::from_secs(30));
        assert_eq!(c.disconnect_timeout, Duration::from_secs(10));
        let c = config("sqlite://", &DatabaseOptions::new().max_size(8)).unwrap();
        assert_eq!(
            (c.min_size, c.max_size),
            (1, 1),
            "in-memory SQLite is one shared connection"
        );
    }

    #[test]
    fn bad_values_name_the_option() {
        let e = config("sqlite:///x.db?min_size=abc", &DatabaseOptions::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert_eq!(
            e.to_string(),
            "invalid value 'abc' for option 'min_size': expected a whole number from 0 to 4294967295"
        );
        let e = config(
            "sqlite:///x.db?min_size=5&max_size=2",
            &DatabaseOptions::new(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "option 'min_size' (5) is larger than 'max_size' (2)"
        );
        let e = config("sqlite:///x.db?max_size=0", &DatabaseOptions::new()).unwrap_err();
        assert!(e.to_string().contains("'max_size' must be at least 1"));
        let e = config("sqlite:///x.db?acquire_timeout=-1", &DatabaseOptions::new()).unwrap_err();
        assert!(e.to_string().contains("'acquire_timeout'"));
        let e = config(
            "sqlite:///x.db?force_rollback=maybe",
            &DatabaseOptions::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("expected true or false"));
        let e = config("sqlite:///x.db?colour=blue", &DatabaseOptions::new()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("unknown URL option 'colour' for sqlite: known options are"),
            "{e}"
        );
    }
}
