//! sea-query statements as queries (feature `sea-query`).
//!
//! Every query method takes a sea-query statement wherever it takes SQL text: `select`,
//! `insert`, `update`, `delete` and `WITH` queries, and the schema statements (create, alter,
//! rename, truncate and drop table; create and drop index). Each is rendered for the database
//! the call runs on, with PostgreSQL's, MySQL's or SQLite's query builder, and its values are
//! bound as parameters, never written into the SQL. The call's own parameters must then be
//! empty (`()`).
//!
//! ```no_run
//! use databases::sea_query::{Alias, Expr, ExprTrait, Order, Query};
//!
//! # async fn demo(db: &databases::Database) -> databases::Result<()> {
//! let (notes, id, text) = (Alias::new("notes"), Alias::new("id"), Alias::new("text"));
//! let insert = Query::insert()
//!     .into_table(notes.clone())
//!     .columns([text.clone()])
//!     .values_panic(["Buy milk".into()])
//!     .to_owned();
//! db.execute(&insert, ()).await?;
//!
//! let select = Query::select()
//!     .columns([id.clone(), text.clone()])
//!     .from(notes)
//!     .and_where(Expr::col(text).like("Buy%"))
//!     .order_by(id, Order::Asc)
//!     .to_owned();
//! for note in db.fetch_all(&select, ()).await? {
//!     println!("{}: {}", note.get::<i64>("id")?, note.get::<String>("text")?);
//! }
//! # Ok(()) }
//! ```
//!
//! `execute_many` takes SQL text only: a sea-query `INSERT` with many rows goes to `execute`
//! as one statement.

use sea_query::{
    IndexCreateStatement, IndexDropStatement, MysqlQueryBuilder, PostgresQueryBuilder,
    SqliteQueryBuilder, TableAlterStatement, TableCreateStatement, TableDropStatement,
    TableRenameStatement, TableTruncateStatement,
};

use crate::error::{Error, ErrorKind, Result};
use crate::query::{Rendered, Sql};
use crate::url::Backend;
use crate::value::Value;

/// Converts a sea-query value into a parameter value.
fn convert(index: usize, value: sea_query::Value) -> Result<Value> {
    use sea_query::Value as V;
    fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
        v.map_or(Value::Null, f)
    }
    Ok(match value {
        V::Bool(v) => opt(v, Value::Bool),
        V::TinyInt(v) => opt(v, |v| Value::Int(v.into())),
        V::SmallInt(v) => opt(v, |v| Value::Int(v.into())),
        V::Int(v) => opt(v, |v| Value::Int(v.into())),
        V::BigInt(v) => opt(v, Value::Int),
        V::TinyUnsigned(v) => opt(v, |v| Value::Int(v.into())),
        V::SmallUnsigned(v) => opt(v, |v| Value::Int(v.into())),
        V::Unsigned(v) => opt(v, |v| Value::Int(v.into())),
        V::BigUnsigned(v) => opt(v, Value::UInt),
        V::Float(v) => opt(v, |v| Value::Float(v.into())),
        V::Double(v) => opt(v, Value::Float),
        V::String(v) => opt(v, Value::Text),
        V::Char(v) => opt(v, |c| Value::Text(c.to_string())),
        V::Enum(sea_query::OptionEnum::Some(e)) => Value::Text(e.value.into_owned()),
        V::Enum(sea_query::OptionEnum::None(_)) => Value::Null,
        V::Bytes(v) => opt(v, Value::Bytes),
        V::Json(v) => opt(v, |j| Value::Json(*j)),
        V::ChronoDate(v) => opt(v, Value::Date),
        V::ChronoTime(v) => opt(v, Value::Time),
        V::ChronoDateTime(v) => opt(v, Value::DateTime),
        V::ChronoDateTimeUtc(v) => opt(v, |d| Value::DateTimeTz(d.fixed_offset())),
        V::ChronoDateTimeLocal(v) => opt(v, |d| Value::DateTimeTz(d.fixed_offset())),
        V::ChronoDateTimeWithTimeZone(v) => opt(v, Value::DateTimeTz),
        V::Uuid(v) => opt(v, Value::Uuid),
        V::Decimal(v) => opt(v, Value::Decimal),
        #[allow(unreachable_patterns)]
        other => {
            return Err(Error::new(
                ErrorKind::InvalidParameter,
                format!(
                    "parameter {} of the sea-query statement: values of this type are not \
                     supported ({other:?})",
                    index + 1
                ),
            ));
        }
    })
}

fn native(sql: String, values: sea_query::Values) -> Result<Rendered<'static>> {
    let values = values
        .0
        .into_iter()
        .enumerate()
        .map(|(i, v)| convert(i, v))
        .collect::<Result<Vec<_>>>()?;
    Ok(Rendered::Native { sql, values })
}

macro_rules! query_statements {
    ($($statement:ty),* $(,)?) => {$(
        impl Sql for $statement {
            fn render(&self, backend: Backend) -> Result<Rendered<'_>> {
                let (sql, values) = match backend {
                    Backend::Postgres => self.build(PostgresQueryBuilder),
                    Backend::Mysql => self.build(MysqlQueryBuilder),
                    Backend::Sqlite => self.build(SqliteQueryBuilder),
                };
                native(sql, values)
            }
        }
    )*};
}

macro_rules! schema_statements {
    ($($statement:ty),* $(,)?) => {$(
        impl Sql for $statement {
            fn render(&self, backend: Backend) -> Result<Rendered<'_>> {
                let sql = match backend {
                    Backend::Postgres => self.build(PostgresQueryBuilder),
                    Backend::Mysql => self.build(MysqlQueryBuilder),
                    Backend::Sqlite => self.build(SqliteQueryBuilder),
                };
                Ok(Rendered::Native { sql, values: Vec::new() })
            }
        }
    )*};
}

query_statements!(
    sea_query::SelectStatement,
    sea_query::InsertStatement,
    sea_query::UpdateStatement,
    sea_query::DeleteStatement,
    sea_query::WithQuery,
);

schema_statements!(
    TableCreateStatement,
    TableAlterStatement,
    TableRenameStatement,
    TableTruncateStatement,
    TableDropStatement,
    IndexCreateStatement,
    IndexDropStatement,
);

#[cfg(test)]
mod tests {
    use sea_query::{Alias, ColumnDef, Expr, ExprTrait, Query, Table};

    use super::*;

    #[test]
    fn statements_render_per_database_with_bound_values() {
        let select = Query::select()
            .column(Alias::new("id"))
            .from(Alias::new("notes"))
            .and_where(Expr::col(Alias::new("text")).eq("it's; DROP TABLE notes"))
            .to_owned();
        let Rendered::Native { sql, values } = select.render(Backend::Postgres).unwrap() else {
            panic!("a statement renders to native SQL");
        };
        assert_eq!(sql, r#"SELECT "id" FROM "notes" WHERE "text" = $1"#);
        assert_eq!(values, vec![Value::Text("it's; DROP TABLE notes".into())]);
        let Rendered::Native { sql, .. } = select.render(Backend::Mysql).unwrap() else {
            panic!("a statement renders to native SQL");
        };
        assert_eq!(sql, "SELECT `id` FROM `notes` WHERE `text` = ?");
        let Rendered::Native { sql, .. } = select.render(Backend::Sqlite).unwrap() else {
            panic!("a statement renders to native SQL");
        };
        assert_eq!(sql, r#"SELECT "id" FROM "notes" WHERE "text" = ?"#);
    }

    #[test]
    fn schema_statements_render_without_values() {
        let create = Table::create()
            .table(Alias::new("t"))
            .if_not_exists()
            .col(ColumnDef::new(Alias::new("x")).integer())
            .to_owned();
        let Rendered::Native { sql, values } = create.render(Backend::Mysql).unwrap() else {
            panic!("a statement renders to native SQL");
        };
        assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS `t`"), "{sql}");
        assert!(values.is_empty());
    }

    #[test]
    fn values_convert() {
        assert_eq!(
            convert(0, sea_query::Value::Int(Some(7))).unwrap(),
            Value::Int(7)
        );
        assert_eq!(
            convert(0, sea_query::Value::Int(None)).unwrap(),
            Value::Null
        );
        assert_eq!(
            convert(0, sea_query::Value::BigUnsigned(Some(u64::MAX))).unwrap(),
            Value::UInt(u64::MAX)
        );
        assert_eq!(
            convert(0, sea_query::Value::Char(Some('é'))).unwrap(),
            Value::Text("é".into())
        );
    }
}
