//! [`Sql`]: what the query methods take, SQL text or (feature `sea-query`) a statement built
//! with [sea-query](https://docs.rs/sea-query).

use std::borrow::Cow;

use crate::error::Result;
use crate::url::Backend;
use crate::value::Value;

/// A query for the query methods ([`crate::Database::fetch_all`] and the others): SQL text
/// with `:name` placeholders (`&str`, `String`), or, with the `sea-query` feature, a
/// sea-query statement, rendered for the connected database with its values bound as
/// parameters.
///
/// ```
/// # async fn demo(db: &databases::Database) -> databases::Result<()> {
/// // Text: the values come from the second argument.
/// db.execute("INSERT INTO notes (text) VALUES (:text)", databases::params! { "text" => "hi" })
///     .await?;
/// # Ok(()) }
/// ```
pub trait Sql {
    /// The query in the form `backend` runs.
    fn render(&self, backend: Backend) -> Result<Rendered<'_>>;
}

/// A query rendered for one database.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered<'a> {
    /// SQL with `:name` placeholders: the values come from the call's parameters.
    Named(Cow<'a, str>),
    /// SQL with the database's own placeholders (`$1` on PostgreSQL, `?` on MySQL and
    /// SQLite) and a value for each, in order: the call's parameters must be empty.
    Native {
        /// The SQL text.
        sql: String,
        /// One value per placeholder.
        values: Vec<Value>,
    },
}

impl Rendered<'_> {
    /// The same query, owning its text.
    pub fn into_owned(self) -> Rendered<'static> {
        match self {
            Self::Named(sql) => Rendered::Named(Cow::Owned(sql.into_owned())),
            Self::Native { sql, values } => Rendered::Native { sql, values },
        }
    }
}

impl Sql for Rendered<'_> {
    fn render(&self, _backend: Backend) -> Result<Rendered<'_>> {
        Ok(match self {
            Self::Named(sql) => Rendered::Named(Cow::Borrowed(sql)),
            Self::Native { sql, values } => Rendered::Native {
                sql: sql.clone(),
                values: values.clone(),
            },
        })
    }
}

impl Sql for str {
    fn render(&self, _backend: Backend) -> Result<Rendered<'_>> {
        Ok(Rendered::Named(Cow::Borrowed(self)))
    }
}

impl Sql for String {
    fn render(&self, _backend: Backend) -> Result<Rendered<'_>> {
        Ok(Rendered::Named(Cow::Borrowed(self)))
    }
}

impl Sql for Cow<'_, str> {
    fn render(&self, _backend: Backend) -> Result<Rendered<'_>> {
        Ok(Rendered::Named(Cow::Borrowed(self)))
    }
}

impl<T: Sql + ?Sized> Sql for &T {
    fn render(&self, backend: Backend) -> Result<Rendered<'_>> {
        (**self).render(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_named_sql() {
        let sql = "SELECT :a";
        assert_eq!(
            sql.render(Backend::Sqlite).unwrap(),
            Rendered::Named(Cow::Borrowed("SELECT :a"))
        );
        let owned = String::from("SELECT 1");
        assert_eq!(
            owned.render(Backend::Sqlite).unwrap().into_owned(),
            Rendered::Named(Cow::Owned("SELECT 1".to_owned()))
        );
    }
}
