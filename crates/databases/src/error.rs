//! The one error type of the crate, with a portable [`ErrorKind`].

use std::error::Error as StdError;
use std::fmt;

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in terms that mean the same thing on every database.
///
/// Match on the kind to decide what to do; the backend's own code and message stay reachable
/// through [`Error::code`], [`Error::db_message`] and [`std::error::Error::source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The database URL is malformed or names an unknown scheme.
    Url,
    /// An option (from the URL or [`crate::DatabaseOptions`]) has a bad value.
    Config,
    /// Opening a new connection failed.
    Connect,
    /// An established connection went away (the server closed it, or its worker stopped).
    ConnectionLost,
    /// No pooled connection became free within the acquire timeout.
    PoolTimeout,
    /// The [`crate::Database`] is not connected.
    NotConnected,
    /// A UNIQUE or PRIMARY KEY constraint rejected the statement.
    UniqueViolation,
    /// A FOREIGN KEY constraint rejected the statement.
    ForeignKeyViolation,
    /// A NOT NULL constraint rejected the statement.
    NotNullViolation,
    /// A CHECK constraint rejected the statement.
    CheckViolation,
    /// The SQL text could not be parsed by the database.
    Syntax,
    /// Any other error reported by the database.
    Database,
    /// A `:name` in the query has no value.
    MissingParameter,
    /// A parameter value cannot be sent to this database (for example an unsigned integer
    /// above `i64::MAX` on SQLite).
    InvalidParameter,
    /// A column does not exist in a record.
    ColumnNotFound,
    /// A value could not be converted to the requested Rust type.
    Decode,
    /// A transaction was used in a way that is not allowed.
    Transaction,
}

impl ErrorKind {
    /// True for the kinds that the database itself reported.
    pub fn is_database(self) -> bool {
        matches!(
            self,
            Self::UniqueViolation
                | Self::ForeignKeyViolation
                | Self::NotNullViolation
                | Self::CheckViolation
                | Self::Syntax
                | Self::Database
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::Url => "invalid database URL",
            Self::Config => "invalid configuration",
            Self::Connect => "could not connect",
            Self::ConnectionLost => "connection lost",
            Self::PoolTimeout => "timed out waiting for a pooled connection",
            Self::NotConnected => "database is not connected",
            Self::UniqueViolation => "unique constraint violated",
            Self::ForeignKeyViolation => "foreign key constraint violated",
            Self::NotNullViolation => "not-null constraint violated",
            Self::CheckViolation => "check constraint violated",
            Self::Syntax => "syntax error",
            Self::Database => "database error",
            Self::MissingParameter => "missing query parameter",
            Self::InvalidParameter => "invalid query parameter",
            Self::ColumnNotFound => "no such column",
            Self::Decode => "cannot decode value",
            Self::Transaction => "transaction misuse",
        };
        f.write_str(text)
    }
}

/// The error type of every fallible operation in this crate.
///
/// It is one pointer wide. [`Error::kind`] gives the portable category; the message names the
/// thing at fault (the URL part, the parameter, the column). Passwords never appear in it.
pub struct Error(Box<Inner>);

struct Inner {
    kind: ErrorKind,
    message: String,
    code: Option<String>,
    db_message: Option<String>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    /// Creates an error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            kind,
            message: message.into(),
            code: None,
            db_message: None,
            source: None,
        }))
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.0.source = Some(source.into());
        self
    }

    /// Attaches the backend's error code and message (used by the backends).
    #[must_use]
    pub(crate) fn with_db(mut self, code: impl Into<String>, message: impl Into<String>) -> Self {
        self.0.code = Some(code.into());
        self.0.db_message = Some(message.into());
        self
    }

    /// The portable category of this error.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The full message, as `Display` shows it.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The backend's own error code: the SQLite extended result code, the PostgreSQL SQLSTATE
    /// or the MySQL error number. `None` for errors that did not come from the database.
    pub fn code(&self) -> Option<&str> {
        self.0.code.as_deref()
    }

    /// The message the database server or engine reported, if this error came from it.
    pub fn db_message(&self) -> Option<&str> {
        self.0.db_message.as_deref()
    }

    /// True if a UNIQUE or PRIMARY KEY constraint rejected the statement.
    pub fn is_unique_violation(&self) -> bool {
        self.kind() == ErrorKind::UniqueViolation
    }

    /// True if a FOREIGN KEY constraint rejected the statement.
    pub fn is_foreign_key_violation(&self) -> bool {
        self.kind() == ErrorKind::ForeignKeyViolation
    }

    /// True if the connection was lost (the operation may or may not have taken effect).
    pub fn is_connection_lost(&self) -> bool {
        self.kind() == ErrorKind::ConnectionLost
    }

    pub(crate) fn url(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Url, message)
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub(crate) fn decode(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Decode, message)
    }

    pub(crate) fn transaction(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transaction, message)
    }

    pub(crate) fn connection_lost(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ConnectionLost, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind)
            .field("message", &self.0.message);
        if let Some(code) = &self.0.code {
            d.field("code", code);
        }
        if let Some(source) = &self.0.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// Turns a `Result<T>` whose "not found" is an error into `Result<Option<T>>`.
pub trait OptionalExtension<T> {
    /// Maps an [`ErrorKind::ColumnNotFound`] error to `Ok(None)`.
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == ErrorKind::ColumnNotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_message_and_kind_is_kept() {
        let e = Error::new(ErrorKind::MissingParameter, "no value for parameter ':id'");
        assert_eq!(e.to_string(), "no value for parameter ':id'");
        assert_eq!(e.kind(), ErrorKind::MissingParameter);
        assert!(e.code().is_none());
        assert!(!e.kind().is_database());
    }

    #[test]
    fn source_chain_is_kept() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::new(ErrorKind::Connect, "could not open").with_source(io);
        assert_eq!(e.source().unwrap().to_string(), "disk on fire");
    }

    #[test]
    fn database_details_are_reachable() {
        let e = Error::new(ErrorKind::UniqueViolation, "unique constraint violated")
            .with_db("2067", "UNIQUE constraint failed: t.id");
        assert!(e.is_unique_violation());
        assert_eq!(e.code(), Some("2067"));
        assert_eq!(e.db_message(), Some("UNIQUE constraint failed: t.id"));
        assert!(e.kind().is_database());
    }

    #[test]
    fn error_is_one_pointer() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
