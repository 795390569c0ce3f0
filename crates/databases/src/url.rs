//! [`DatabaseUrl`]: parsing, components, options and an obscured display form.
//!
//! The parser follows Python's `urllib.parse.urlsplit`, which is what encode/databases uses, so
//! every URL that works there parses the same way here: `sqlite:///relative.db`,
//! `sqlite:////absolute/path.db`, `sqlite://` (in memory), `postgresql://u:p%40ss@host:5432/db`,
//! driver suffixes such as `postgresql+asyncpg://`, IPv6 hosts in brackets and unix sockets given
//! as `?host=/run/postgresql` or `?unix_socket=/run/mysqld/mysqld.sock`.
//!
//! The string form is kept exactly: `DatabaseUrl::parse(s)?.as_str() == s`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::error::{Error, Result};

/// The database engines this crate talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// PostgreSQL (`postgresql://`, `postgres://`).
    Postgres,
    /// MySQL or MariaDB (`mysql://`).
    Mysql,
    /// SQLite (`sqlite://`).
    Sqlite,
}

/// The one table from URL dialect to backend. A `+driver` suffix never changes the backend:
/// `postgresql+asyncpg` and `postgresql+aiopg` both select [`Backend::Postgres`].
const SCHEMES: &[(&str, Backend)] = &[
    ("postgresql", Backend::Postgres),
    ("postgres", Backend::Postgres),
    ("mysql", Backend::Mysql),
    ("sqlite", Backend::Sqlite),
];

impl Backend {
    /// The backend for a URL dialect (the scheme without its `+driver` suffix).
    pub fn from_dialect(dialect: &str) -> Option<Self> {
        SCHEMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(dialect))
            .map(|(_, b)| *b)
    }

    /// A short lower-case name: `postgresql`, `mysql` or `sqlite`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::Mysql => "mysql",
            Self::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Characters escaped when a user name or password is put into a URL.
const USERINFO: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Characters escaped when a database name is put into the path.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

const OBSCURED: &str = "********";

/// A parsed database URL.
///
/// ```
/// use databases::DatabaseUrl;
///
/// let url: DatabaseUrl = "postgresql+asyncpg://app:p%40ss@db.example.com:5433/shop?min_size=2"
///     .parse()?;
/// assert_eq!(url.dialect(), "postgresql");
/// assert_eq!(url.driver(), "asyncpg");
/// assert_eq!(url.username().as_deref(), Some("app"));
/// assert_eq!(url.password().as_deref(), Some("p@ss"));
/// assert_eq!(url.hostname(), Some("db.example.com"));
/// assert_eq!(url.port(), Some(5433));
/// assert_eq!(url.database(), "shop");
/// assert_eq!(url.option("min_size"), Some("2"));
/// // Display and Debug never show the password.
/// assert_eq!(
///     url.to_string(),
///     "postgresql+asyncpg://app:********@db.example.com:5433/shop?min_size=2"
/// );
/// # Ok::<(), databases::Error>(())
/// ```
#[derive(Clone)]
pub struct DatabaseUrl {
    full: String,
    parts: Parts,
    scheme: String,
    backend: Backend,
    hostname: Option<String>,
    port: Option<u16>,
    options: Vec<(String, String)>,
}

/// The raw pieces of the URL, exactly as written; serializing them gives the original string.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Parts {
    scheme: String,
    /// `Some` when the URL has `//` (a network location, possibly empty).
    netloc: Option<Netloc>,
    path: String,
    query: Option<String>,
    fragment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct Netloc {
    username: Option<String>,
    password: Option<String>,
    /// As written, with IPv6 brackets.
    host: String,
    /// The text after the last `:` of the host part, when there is one.
    port: Option<String>,
}

impl Parts {
    fn serialize(&self) -> String {
        let mut out = String::with_capacity(64);
        out.push_str(&self.scheme);
        out.push(':');
        if let Some(n) = &self.netloc {
            out.push_str("//");
            n.write(&mut out);
        }
        out.push_str(&self.path);
        if let Some(q) = &self.query {
            out.push('?');
            out.push_str(q);
        }
        if let Some(f) = &self.fragment {
            out.push('#');
            out.push_str(f);
        }
        out
    }
}

impl Netloc {
    fn write(&self, out: &mut String) {
        if let Some(user) = &self.username {
            out.push_str(user);
            if let Some(pw) = &self.password {
                out.push(':');
                out.push_str(pw);
            }
            out.push('@');
        }
        out.push_str(&self.host);
        if let Some(port) = &self.port {
            out.push(':');
            out.push_str(port);
        }
    }
}

fn split_parts(input: &str) -> Result<Parts> {
    let colon = input.find(':').ok_or_else(|| {
        Error::url("database URL has no scheme: expected something like 'sqlite:///app.db'")
    })?;
    let scheme = &input[..colon];
    let valid_scheme = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return Err(Error::url(format!(
            "database URL scheme '{}' is not valid: expected something like 'postgresql' or 'sqlite'",
            scheme.escape_debug()
        )));
    }
    let mut rest = &input[colon + 1..];
    let netloc = if let Some(after) = rest.strip_prefix("//") {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let n = parse_netloc(&after[..end])?;
        rest = &after[end..];
        Some(n)
    } else {
        None
    };
    let (before_fragment, fragment) = match rest.split_once('#') {
        Some((a, b)) => (a, Some(b.to_owned())),
        None => (rest, None),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((a, b)) => (a, Some(b.to_owned())),
        None => (before_fragment, None),
    };
    Ok(Parts {
        scheme: scheme.to_owned(),
        netloc,
        path: path.to_owned(),
        query,
        fragment,
    })
}

fn parse_netloc(netloc: &str) -> Result<Netloc> {
    let (userinfo, hostport) = match netloc.rfind('@') {
        Some(at) => (Some(&netloc[..at]), &netloc[at + 1..]),
        None => (None, netloc),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => match info.split_once(':') {
            Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
            None => (Some(info.to_owned()), None),
        },
    };
    let (host, port) = if hostport.starts_with('[') {
        let close = hostport.find(']').ok_or_else(|| {
            Error::url(
                "database URL host has an opening '[' for an IPv6 address but no closing ']'",
            )
        })?;
        let host = &hostport[..=close];
        let after = &hostport[close + 1..];
        if after.is_empty() {
            (host, None)
        } else if let Some(port) = after.strip_prefix(':') {
            (host, Some(port))
        } else {
            return Err(Error::url(
                "database URL has unexpected text after the IPv6 address: expected ':port'",
            ));
        }
    } else if hostport.contains(']') {
        return Err(Error::url(
            "database URL host has a closing ']' without an opening '['",
        ));
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    Ok(Netloc {
        username,
        password,
        host: host.to_owned(),
        port: port.map(str::to_owned),
    })
}

fn decode(raw: &str) -> Cow<'_, str> {
    percent_decode_str(raw).decode_utf8_lossy()
}

impl DatabaseUrl {
    /// Parses a database URL.
    ///
    /// Fails with [`crate::ErrorKind::Url`] when the URL has no scheme, an unknown dialect, a
    /// port that is not a number from 0 to 65535, or an unbalanced IPv6 bracket. The message
    /// names the bad part and never contains the password.
    pub fn parse(input: &str) -> Result<Self> {
        let parts = split_parts(input)?;
        Self::from_parts(parts)
    }

    fn from_parts(parts: Parts) -> Result<Self> {
        let full = parts.serialize();
        let scheme = parts.scheme.to_ascii_lowercase();
        let dialect = scheme.split('+').next().unwrap_or_default();
        let backend = Backend::from_dialect(dialect).ok_or_else(|| {
            let known: Vec<&str> = SCHEMES.iter().map(|(n, _)| *n).collect();
            Error::url(format!(
                "unknown database URL scheme '{dialect}': expected one of {}",
                known.join(", ")
            ))
        })?;
        let mut port = None;
        let mut hostname = None;
        if let Some(n) = &parts.netloc {
            if let Some(p) = n.port.as_deref().filter(|p| !p.is_empty()) {
                let parsed = p
                    .parse::<u16>()
                    .ok()
                    .filter(|_| p.bytes().all(|b| b.is_ascii_digit()));
                port = Some(parsed.ok_or_else(|| {
                    Error::url(format!(
                        "database URL port '{}' is not a number from 0 to 65535",
                        p.escape_debug()
                    ))
                })?);
            }
            let host = n.host.trim_start_matches('[').trim_end_matches(']');
            if !host.is_empty() {
                hostname = Some(decode(host).to_lowercase());
            }
        }
        let mut options: Vec<(String, String)> = Vec::new();
        if let Some(q) = &parts.query {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                if v.is_empty() {
                    continue;
                }
                match options.iter_mut().find(|(key, _)| *key == k) {
                    Some(slot) => slot.1 = v.into_owned(),
                    None => options.push((k.into_owned(), v.into_owned())),
                }
            }
        }
        Ok(Self {
            full,
            parts,
            scheme,
            backend,
            hostname,
            port,
            options,
        })
    }

    /// The whole URL exactly as given, password included. Use it to connect, never to log.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The backend this URL selects.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The scheme, lower-cased, driver suffix included (`postgresql+asyncpg`).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The scheme without its driver suffix (`postgresql`).
    pub fn dialect(&self) -> &str {
        self.scheme.split('+').next().unwrap_or_default()
    }

    /// The driver suffix of the scheme (`asyncpg`), or `""` when there is none.
    pub fn driver(&self) -> &str {
        self.scheme.split_once('+').map_or("", |(_, d)| d)
    }

    /// The percent-decoded user name.
    pub fn username(&self) -> Option<Cow<'_, str>> {
        self.netloc()?.username.as_deref().map(decode)
    }

    /// The percent-decoded password. `Some("")` for `user:@host`.
    pub fn password(&self) -> Option<Cow<'_, str>> {
        self.netloc()?.password.as_deref().map(decode)
    }

    /// The host: lower-cased, without IPv6 brackets. Falls back to the `host` or `unix_sock`
    /// query option (a unix socket directory or path), as encode/databases does.
    pub fn hostname(&self) -> Option<&str> {
        self.hostname
            .as_deref()
            .or_else(|| self.option("host"))
            .or_else(|| self.option("unix_sock"))
    }

    /// The port, if the URL names one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The raw network location (`user:p%40ss@host:5432`), password included.
    pub fn netloc_str(&self) -> String {
        let mut out = String::new();
        if let Some(n) = self.netloc() {
            n.write(&mut out);
        }
        out
    }

    /// The database: the path without its first `/`, percent-decoded. For SQLite this is the
    /// file path (`sqlite:////abs/x.db` gives `/abs/x.db`), `:memory:`, or `""` (in memory).
    pub fn database(&self) -> Cow<'_, str> {
        let path = &self.parts.path;
        decode(path.strip_prefix('/').unwrap_or(path))
    }

    /// The query options, decoded, in order of first appearance. A repeated key keeps its last
    /// value; keys with an empty value are left out (as Python's `parse_qsl` does).
    pub fn options(&self) -> &[(String, String)] {
        &self.options
    }

    /// One query option.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The URL with the password replaced by `********`: safe to log and display.
    pub fn obscure_password(&self) -> String {
        match self.netloc() {
            Some(n) if n.password.as_deref().is_some_and(|p| !p.is_empty()) => {
                let mut parts = self.parts.clone();
                if let Some(n) = parts.netloc.as_mut() {
                    n.password = Some(OBSCURED.to_owned());
                }
                parts.serialize()
            }
            _ => self.full.clone(),
        }
    }

    /// A copy with a new user name (percent-encoded as needed), or none.
    pub fn with_username(&self, username: Option<&str>) -> Result<Self> {
        let mut parts = self.parts.clone();
        let n = parts.netloc.get_or_insert_with(Netloc::default);
        n.username = username.map(|u| utf8_percent_encode(u, USERINFO).to_string());
        if n.username.is_none() {
            n.password = None;
        }
        Self::from_parts(parts)
    }

    /// A copy with a new password (percent-encoded as needed), or none.
    pub fn with_password(&self, password: Option<&str>) -> Result<Self> {
        let mut parts = self.parts.clone();
        let n = parts.netloc.get_or_insert_with(Netloc::default);
        n.password = password.map(|p| utf8_percent_encode(p, USERINFO).to_string());
        if n.password.is_some() && n.username.is_none() {
            n.username = Some(String::new());
        }
        Self::from_parts(parts)
    }

    /// A copy with a new host name. IPv6 addresses are put in brackets.
    pub fn with_hostname(&self, hostname: &str) -> Result<Self> {
        let mut parts = self.parts.clone();
        let n = parts.netloc.get_or_insert_with(Netloc::default);
        n.host = if hostname.contains(':') && !hostname.starts_with('[') {
            format!("[{hostname}]")
        } else {
            hostname.to_owned()
        };
        Self::from_parts(parts)
    }

    /// A copy with a new port, or none.
    pub fn with_port(&self, port: Option<u16>) -> Result<Self> {
        let mut parts = self.parts.clone();
        let n = parts.netloc.get_or_insert_with(Netloc::default);
        n.port = port.map(|p| p.to_string());
        Self::from_parts(parts)
    }

    /// A copy with a new database (the path after the first `/`).
    pub fn with_database(&self, database: &str) -> Result<Self> {
        let mut parts = self.parts.clone();
        parts.path = format!("/{}", utf8_percent_encode(database, PATH));
        if parts.netloc.is_none() {
            parts.netloc = Some(Netloc::default());
        }
        Self::from_parts(parts)
    }

    /// A copy with a new dialect, keeping the driver suffix.
    pub fn with_dialect(&self, dialect: &str) -> Result<Self> {
        let mut parts = self.parts.clone();
        parts.scheme = match self.driver() {
            "" => dialect.to_owned(),
            driver => format!("{dialect}+{driver}"),
        };
        Self::from_parts(parts)
    }

    /// A copy with a new driver suffix; `None` or `""` removes it.
    pub fn with_driver(&self, driver: Option<&str>) -> Result<Self> {
        let mut parts = self.parts.clone();
        parts.scheme = match driver {
            None | Some("") => self.dialect().to_owned(),
            Some(d) => format!("{}+{d}", self.dialect()),
        };
        Self::from_parts(parts)
    }

    /// A copy with the query options replaced by `options` (encoded as a query string).
    pub fn with_options<K: AsRef<str>, V: AsRef<str>>(
        &self,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        let mut parts = self.parts.clone();
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in options {
            ser.append_pair(k.as_ref(), v.as_ref());
        }
        let q = ser.finish();
        parts.query = if q.is_empty() { None } else { Some(q) };
        Self::from_parts(parts)
    }

    fn netloc(&self) -> Option<&Netloc> {
        self.parts.netloc.as_ref()
    }
}

impl FromStr for DatabaseUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for DatabaseUrl {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl TryFrom<String> for DatabaseUrl {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl TryFrom<&String> for DatabaseUrl {
    type Error = Error;

    fn try_from(s: &String) -> Result<Self> {
        Self::parse(s)
    }
}

impl TryFrom<&DatabaseUrl> for DatabaseUrl {
    type Error = Error;

    fn try_from(u: &DatabaseUrl) -> Result<Self> {
        Ok(u.clone())
    }
}

/// Shows the URL with the password obscured.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.obscure_password())
    }
}

/// Shows the URL with the password obscured.
impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.obscure_password())
    }
}

impl PartialEq for DatabaseUrl {
    fn eq(&self, other: &Self) -> bool {
        self.full == other.full
    }
}

impl Eq for DatabaseUrl {}

impl std::hash::Hash for DatabaseUrl {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.full.hash(state);
    }
}

impl PartialEq<str> for DatabaseUrl {
    fn eq(&self, other: &str) -> bool {
        self.full == other
    }
}

impl PartialEq<&str> for DatabaseUrl {
    fn eq(&self, other: &&str) -> bool {
        self.full == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn url(s: &str) -> DatabaseUrl {
        DatabaseUrl::parse(s).unwrap()
    }

    #[test]
    fn sqlite_shapes() {
        assert_eq!(url("sqlite:///relative.db").database(), "relative.db");
        assert_eq!(
            url("sqlite:////absolute/path.db").database(),
            "/absolute/path.db"
        );
        assert_eq!(url("sqlite:///:memory:").database(), ":memory:");
        assert_eq!(url("sqlite://").database(), "");
        assert_eq!(url("sqlite:///./rel/x.db").database(), "./rel/x.db");
        let u = url("sqlite+aiosqlite:///x.db");
        assert_eq!(u.backend(), Backend::Sqlite);
        assert_eq!(u.driver(), "aiosqlite");
        assert_eq!(u.hostname(), None);
    }

    #[test]
    fn server_url_components() {
        let u = url("postgresql://user:p%40ss@host:5432/db?ssl=true&min_size=5&max_size=20");
        assert_eq!(u.scheme(), "postgresql");
        assert_eq!(u.dialect(), "postgresql");
        assert_eq!(u.driver(), "");
        assert_eq!(u.username().as_deref(), Some("user"));
        assert_eq!(u.password().as_deref(), Some("p@ss"));
        assert_eq!(u.hostname(), Some("host"));
        assert_eq!(u.port(), Some(5432));
        assert_eq!(u.database(), "db");
        assert_eq!(u.option("ssl"), Some("true"));
        assert_eq!(u.option("min_size"), Some("5"));
        assert_eq!(u.option("max_size"), Some("20"));
        assert_eq!(u.netloc_str(), "user:p%40ss@host:5432");
    }

    #[test]
    fn driver_suffixes_select_our_backend() {
        for (s, b, d) in [
            ("postgres://h/db", Backend::Postgres, ""),
            ("postgresql+asyncpg://h/db", Backend::Postgres, "asyncpg"),
            ("postgresql+aiopg://h/db", Backend::Postgres, "aiopg"),
            ("mysql+aiomysql://h/db", Backend::Mysql, "aiomysql"),
            ("mysql+asyncmy://h/db", Backend::Mysql, "asyncmy"),
            ("MySQL://h/db", Backend::Mysql, ""),
        ] {
            let u = url(s);
            assert_eq!(u.backend(), b, "{s}");
            assert_eq!(u.driver(), d, "{s}");
        }
    }

    #[test]
    fn unix_sockets_and_ipv6() {
        let u = url("postgresql://u@/db?host=/run/postgresql");
        assert_eq!(u.hostname(), Some("/run/postgresql"));
        assert_eq!(u.database(), "db");
        let u = url("mysql://u:p@/db?unix_socket=/tmp/m.sock");
        assert_eq!(u.option("unix_socket"), Some("/tmp/m.sock"));
        let u = url("postgresql://u@[::1]:5433/db");
        assert_eq!(u.hostname(), Some("::1"));
        assert_eq!(u.port(), Some(5433));
        let u = url("postgresql://[2001:db8::1]/db");
        assert_eq!(u.hostname(), Some("2001:db8::1"));
        assert_eq!(u.port(), None);
        assert_eq!(
            url("postgresql://HOST.Example.com/db").hostname(),
            Some("host.example.com")
        );
    }

    #[test]
    fn options_last_wins_and_blank_dropped() {
        let u = url("sqlite:///x.db?a=1&b=&a=2&c=x%20y");
        assert_eq!(
            u.options(),
            &[
                ("a".to_owned(), "2".to_owned()),
                ("c".to_owned(), "x y".to_owned())
            ]
        );
    }

    #[test]
    fn round_trip_is_lossless() {
        for s in [
            "sqlite://",
            "sqlite:///:memory:",
            "sqlite:////abs/x.db?mode=ro#frag",
            "postgresql://user:p%40ss@HOST:5432/db?ssl=true",
            "postgresql://u:@h/db",
            "postgresql://u@[::1]:5433/db",
            "mysql://u:p@/db?unix_socket=/tmp/m.sock",
            "Postgresql+AsyncPG://h:/db",
        ] {
            assert_eq!(url(s).as_str(), s);
            assert_eq!(url(s), url(s));
            assert!(url(s) == s);
        }
    }

    #[test]
    fn obscured_display() {
        let u = url("postgresql://user:secret@host/db");
        assert_eq!(u.to_string(), "postgresql://user:********@host/db");
        assert_eq!(u.obscure_password(), "postgresql://user:********@host/db");
        assert!(!format!("{u:?}").contains("secret"));
        // An empty password has nothing to hide.
        let u = url("mysql+aiomysql://u:@h/db");
        assert_eq!(u.to_string(), "mysql+aiomysql://u:@h/db");
    }

    #[test]
    fn replace_components() {
        let u = url("postgresql://user:pw@localhost:5432/name?ssl=true");
        assert_eq!(
            u.with_database("test_name").unwrap().as_str(),
            "postgresql://user:pw@localhost:5432/test_name?ssl=true"
        );
        assert_eq!(
            u.with_driver(Some("asyncpg")).unwrap().as_str(),
            "postgresql+asyncpg://user:pw@localhost:5432/name?ssl=true"
        );
        assert_eq!(
            u.with_port(Some(123)).unwrap().as_str(),
            "postgresql://user:pw@localhost:123/name?ssl=true"
        );
        let p = u.with_password(Some("s3cr@t")).unwrap();
        assert_eq!(
            p.as_str(),
            "postgresql://user:s3cr%40t@localhost:5432/name?ssl=true"
        );
        assert_eq!(p.password().as_deref(), Some("s3cr@t"));
        assert_eq!(
            u.with_username(None).unwrap().as_str(),
            "postgresql://localhost:5432/name?ssl=true"
        );
        assert_eq!(u.with_hostname("::1").unwrap().hostname(), Some("::1"));
        assert_eq!(
            u.with_dialect("postgres").unwrap().as_str(),
            "postgres://user:pw@localhost:5432/name?ssl=true"
        );
        assert_eq!(
            u.with_options([("min_size", "1")]).unwrap().as_str(),
            "postgresql://user:pw@localhost:5432/name?min_size=1"
        );
        assert_eq!(
            url("sqlite:///mydatabase")
                .with_database("test_mydatabase")
                .unwrap()
                .as_str(),
            "sqlite:///test_mydatabase"
        );
        assert_eq!(
            url("sqlite:////absolute/path")
                .with_database("/absolute/path_test")
                .unwrap()
                .as_str(),
            "sqlite:////absolute/path_test"
        );
    }

    #[test]
    fn errors_name_the_bad_part() {
        let e = DatabaseUrl::parse("oracle://u:secret@h/db").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Url);
        assert!(
            e.to_string()
                .contains("unknown database URL scheme 'oracle'"),
            "{e}"
        );
        assert!(!e.to_string().contains("secret"));

        let e = DatabaseUrl::parse("postgresql://u:secret@h:abc/db").unwrap_err();
        assert!(e.to_string().contains("port 'abc'"), "{e}");
        assert!(!e.to_string().contains("secret"));

        let e = DatabaseUrl::parse("postgresql://h:70000/db").unwrap_err();
        assert!(e.to_string().contains("port '70000'"), "{e}");

        let e = DatabaseUrl::parse("no scheme here").unwrap_err();
        assert!(e.to_string().contains("no scheme"), "{e}");

        let e = DatabaseUrl::parse("1sqlite://x").unwrap_err();
        assert!(e.to_string().contains("scheme '1sqlite'"), "{e}");

        let e = DatabaseUrl::parse("postgresql://[::1/db").unwrap_err();
        assert!(e.to_string().contains("IPv6"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC{0,80}") {
            if let Ok(u) = DatabaseUrl::parse(&s) {
                proptest::prop_assert_eq!(u.as_str(), s.as_str());
                let _ = u.to_string();
                let _ = (u.database(), u.username(), u.password(), u.hostname(), u.netloc_str());
            }
        }

        #[test]
        fn structured_urls_round_trip(
            user in "[a-z%@:]{0,8}", pw in "[a-z%@:/]{0,8}", host in "[a-z0-9.]{0,10}",
            port in proptest::option::of(0u16..), db in "[a-z/._:]{0,12}", q in "[a-z=&]{0,12}"
        ) {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let s = format!("postgresql://{user}:{pw}@{host}{port}/{db}?{q}");
            if let Ok(u) = DatabaseUrl::parse(&s) {
                proptest::prop_assert_eq!(u.as_str(), s.as_str());
            }
        }
    }
}
