//! Named parameters: the `:name` rewriter and the ways to pass values.
//!
//! Queries are written with `:name` placeholders on every database. Before a query runs, the
//! rewriter turns them into the database's own placeholders (`$1` on PostgreSQL, `?` on MySQL and
//! SQLite) and records which name goes where. It leaves alone whatever is not a parameter:
//! string literals, quoted identifiers, backticks, `--` and `/* */` comments (and `#` comments on
//! MySQL), PostgreSQL `::` casts and `$tag$` quoting, `:=` and `\:` (an escaped colon).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, ErrorKind, Result};
use crate::value::Value;

/// The placeholder style and quoting rules of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// `$1, $2, ...`; a name used twice gets one number. `$tag$` quoting, `E'...'` escapes.
    Postgres,
    /// `?` for every use of a name; backslash escapes in strings; `#` comments.
    Mysql,
    /// `?` for every use of a name.
    Sqlite,
}

/// A query rewritten for one dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The SQL with the dialect's placeholders.
    pub sql: String,
    /// The parameter name for each placeholder, in placeholder order (`$1` is `names[0]`).
    pub names: Vec<String>,
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Rewrites the `:name` placeholders of `sql` for `dialect`. Never fails: text that the scanner
/// does not understand (an unterminated string, say) is copied as it is, and the database will
/// report it.
pub fn rewrite(sql: &str, dialect: Dialect) -> Rewritten {
    let chars: Vec<(usize, char)> = sql.char_indices().collect();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    // Copies chars[start..end] to the output.
    let copy = |out: &mut String, start: usize, end: usize| {
        let from = chars.get(start).map_or(sql.len(), |c| c.0);
        let to = chars.get(end).map_or(sql.len(), |c| c.0);
        out.push_str(&sql[from..to]);
    };
    while i < chars.len() {
        let c = chars[i].1;
        let next = chars.get(i + 1).map(|c| c.1);
        match c {
            '\'' | '"' | '`' => {
                let backslash = match (c, dialect) {
                    ('\'' | '"', Dialect::Mysql) => true,
                    ('\'', Dialect::Postgres) => {
                        i > 0
                            && matches!(chars[i - 1].1, 'e' | 'E')
                            && (i < 2 || !is_word(chars[i - 2].1))
                    }
                    _ => false,
                };
                let end = skip_quoted(&chars, i, c, backslash);
                copy(&mut out, i, end);
                i = end;
            }
            '-' if next == Some('-') => {
                let end = skip_line(&chars, i);
                copy(&mut out, i, end);
                i = end;
            }
            '#' if dialect == Dialect::Mysql => {
                let end = skip_line(&chars, i);
                copy(&mut out, i, end);
                i = end;
            }
            '/' if next == Some('*') => {
                let end = skip_block_comment(&chars, i, dialect == Dialect::Postgres);
                copy(&mut out, i, end);
                i = end;
            }
            '$' if dialect == Dialect::Postgres => {
                if let Some(end) = skip_dollar_quoted(&chars, i) {
                    copy(&mut out, i, end);
                    i = end;
                } else {
                    out.push('$');
                    i += 1;
                }
            }
            '\\' if next == Some(':') => {
                out.push(':');
                i += 2;
            }
            ':' if next == Some(':') => {
                // A cast (`x::int`), or more colons: copy them all.
                let mut end = i;
                while end < chars.len() && chars[end].1 == ':' {
                    end += 1;
                }
                copy(&mut out, i, end);
                i = end;
            }
            ':' if next.is_some_and(is_word) && (i == 0 || !is_word(chars[i - 1].1)) => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && is_word(chars[end].1) {
                    end += 1;
                }
                let name: String = chars[start..end].iter().map(|c| c.1).collect();
                push_placeholder(&mut out, &mut names, name, dialect);
                i = end;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Rewritten { sql: out, names }
}

fn push_placeholder(out: &mut String, names: &mut Vec<String>, name: String, dialect: Dialect) {
    match dialect {
        Dialect::Postgres => {
            let n = match names.iter().position(|n| *n == name) {
                Some(pos) => pos + 1,
                None => {
                    names.push(name);
                    names.len()
                }
            };
            out.push('$');
            out.push_str(&n.to_string());
        }
        Dialect::Mysql | Dialect::Sqlite => {
            names.push(name);
            out.push('?');
        }
    }
}

/// Index just past the closing quote (or the end of input).
fn skip_quoted(chars: &[(usize, char)], start: usize, quote: char, backslash: bool) -> usize {
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i].1;
        if backslash && c == '\\' {
            i += 2;
            continue;
        }
        if c == quote {
            if chars.get(i + 1).map(|c| c.1) == Some(quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    chars.len()
}

fn skip_line(chars: &[(usize, char)], start: usize) -> usize {
    let mut i = start;
    while i < chars.len() && chars[i].1 != '\n' {
        i += 1;
    }
    i
}

fn skip_block_comment(chars: &[(usize, char)], start: usize, nested: bool) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < chars.len() {
        let c = chars[i].1;
        let next = chars.get(i + 1).map(|c| c.1);
        if c == '/' && next == Some('*') {
            if depth == 0 || nested {
                depth += 1;
            }
            i += 2;
        } else if c == '*' && next == Some('/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    chars.len()
}

/// If a `$tag$` opens at `start`, the index just past its closing `$tag$`.
fn skip_dollar_quoted(chars: &[(usize, char)], start: usize) -> Option<usize> {
    if start > 0 && is_word(chars[start - 1].1) {
        return None; // part of an identifier such as `a$b`
    }
    let mut i = start + 1;
    while i < chars.len() && chars[i].1 != '$' {
        let c = chars[i].1;
        let first = i == start + 1;
        if !(c.is_alphabetic() || c == '_' || (!first && c.is_ascii_digit())) {
            return None; // `$1` and friends are positional parameters, not quotes
        }
        i += 1;
    }
    if i >= chars.len() {
        return None;
    }
    let tag: Vec<char> = chars[start..=i].iter().map(|c| c.1).collect();
    let mut j = i + 1;
    while j + tag.len() <= chars.len() {
        if chars[j..j + tag.len()]
            .iter()
            .map(|c| c.1)
            .eq(tag.iter().copied())
        {
            return Some(j + tag.len());
        }
        j += 1;
    }
    Some(chars.len())
}

/// The byte offsets of the `?` placeholders in MySQL `sql` (as [`rewrite`] makes it), found
/// by the same rules; `None` when the text has a `;` outside quotes and comments (it may hold
/// more than one statement).
#[cfg(feature = "mysql")]
pub(crate) fn mysql_placeholders(sql: &str) -> Option<Vec<usize>> {
    let chars: Vec<(usize, char)> = sql.char_indices().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        let next = chars.get(i + 1).map(|c| c.1);
        i = match c {
            '\'' | '"' => skip_quoted(&chars, i, c, true),
            '`' => skip_quoted(&chars, i, c, false),
            '-' if next == Some('-') => skip_line(&chars, i),
            '#' => skip_line(&chars, i),
            '/' if next == Some('*') => skip_block_comment(&chars, i, false),
            ';' => return None,
            '?' => {
                found.push(chars[i].0);
                i + 1
            }
            _ => i + 1,
        };
    }
    Some(found)
}

/// Named parameter values: an ordered list of `(name, value)`.
///
/// Build one with [`params!`](crate::params!), from a slice or `Vec` of pairs, from a map, or
/// (with the `serde` feature) from any serializable struct with [`NamedParams::from_serialize`].
/// A name may be written with or without its leading `:`; a literal name costs no allocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamedParams(Vec<(Cow<'static, str>, Value)>);

impl NamedParams {
    /// No parameters.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// No parameters, with room for `capacity` values.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// Adds or replaces one value.
    pub fn insert(&mut self, name: impl Into<Cow<'static, str>>, value: impl Into<Value>) {
        let name = match name.into() {
            Cow::Borrowed(n) => Cow::Borrowed(n.strip_prefix(':').unwrap_or(n)),
            Cow::Owned(n) => match n.strip_prefix(':') {
                Some(stripped) => Cow::Owned(stripped.to_owned()),
                None => Cow::Owned(n),
            },
        };
        let value = value.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Adds or replaces one value, builder style.
    #[must_use]
    pub fn with(mut self, name: impl Into<Cow<'static, str>>, value: impl Into<Value>) -> Self {
        self.insert(name, value);
        self
    }

    /// The value for `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `(name, value)` pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(n, v)| (n.as_ref(), v))
    }

    /// Picks the value for each placeholder of a rewritten query, in order. Values whose name
    /// the query does not use are ignored; a name without a value is an error naming it.
    pub fn bind(&self, names: &[String]) -> Result<Vec<Value>> {
        names
            .iter()
            .map(|name| {
                self.get(name)
                    .cloned()
                    .ok_or_else(|| self.missing(name, None))
            })
            .collect()
    }

    /// Like [`NamedParams::bind`], moving the values out instead of copying them (a name used
    /// twice is copied once).
    pub fn into_bound(self, names: &[String]) -> Result<Vec<Value>> {
        self.into_bound_row(names, None)
    }

    /// [`NamedParams::into_bound`] for row `row` of an `execute_many`, which errors name.
    pub(crate) fn into_bound_row(
        mut self,
        names: &[String],
        row: Option<usize>,
    ) -> Result<Vec<Value>> {
        let mut out: Vec<Value> = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let value = match names[..i].iter().position(|n| n == name) {
                // A name used before: its value has moved into `out` already.
                Some(first) => out[first].clone(),
                None => match self.0.iter_mut().find(|(n, _)| n == name) {
                    Some((_, v)) => {
                        check_nesting(name, v, row)?;
                        std::mem::take(v)
                    }
                    None => return Err(self.missing(name, row)),
                },
            };
            out.push(value);
        }
        Ok(out)
    }

    /// The value bound to the placeholder `name` in row `row` of an `execute_many`, checked
    /// as [`NamedParams::into_bound`] checks it, without moving or copying it.
    #[cfg(feature = "sqlite")]
    pub(crate) fn value_for(&self, name: &str, row: Option<usize>) -> Result<&Value> {
        let value = self.get(name).ok_or_else(|| self.missing(name, row))?;
        check_nesting(name, value, row)?;
        Ok(value)
    }

    fn missing(&self, name: &str, row: Option<usize>) -> Error {
        let mut given: Vec<&str> = self.0.iter().map(|(n, _)| n.as_ref()).collect();
        given.sort_unstable();
        let given = if given.is_empty() {
            "none".to_owned()
        } else {
            given.join(", ")
        };
        Error::new(
            ErrorKind::MissingParameter,
            format!(
                "no value for query parameter ':{name}'{} (values given: {given})",
                in_row(row)
            ),
        )
    }

    /// Builds parameters from a serializable struct or map: each field becomes one parameter.
    /// Nested structs, maps and sequences become JSON values.
    #[cfg(feature = "serde")]
    pub fn from_serialize<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self> {
        let json = serde_json::to_value(value).map_err(|e| {
            Error::new(
                ErrorKind::InvalidParameter,
                format!("cannot serialize parameters: {e}"),
            )
            .with_source(e)
        })?;
        let serde_json::Value::Object(map) = json else {
            return Err(Error::new(
                ErrorKind::InvalidParameter,
                "parameters must serialize to a struct or map with named fields",
            ));
        };
        let mut params = Self::new();
        for (name, v) in map {
            params.insert(name, json_to_value(v));
        }
        Ok(params)
    }
}

/// Refuses a value nested deeper than [`crate::MAX_NESTING`] levels.
pub(crate) fn check_nesting(name: &str, value: &Value, row: Option<usize>) -> Result<()> {
    if value.nests_deeper_than(crate::MAX_NESTING) {
        return Err(Error::new(
            ErrorKind::InvalidParameter,
            format!(
                "query parameter ':{name}'{}: arrays and JSON nested deeper than {} levels",
                in_row(row),
                crate::MAX_NESTING
            ),
        ));
    }
    Ok(())
}

/// " in row N" for row N of an `execute_many`, else nothing.
pub(crate) fn in_row(row: Option<usize>) -> String {
    row.map(|r| format!(" in row {r}")).unwrap_or_default()
}

#[cfg(feature = "serde")]
fn json_to_value(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => Value::Text(s),
        other => Value::Json(other),
    }
}

/// Anything that can be passed as the named parameters of a query.
pub trait IntoParams {
    /// Converts into [`NamedParams`].
    fn into_params(self) -> Result<NamedParams>;
}

impl IntoParams for NamedParams {
    fn into_params(self) -> Result<NamedParams> {
        Ok(self)
    }
}

impl IntoParams for &NamedParams {
    fn into_params(self) -> Result<NamedParams> {
        Ok(self.clone())
    }
}

/// No parameters.
impl IntoParams for () {
    fn into_params(self) -> Result<NamedParams> {
        Ok(NamedParams::new())
    }
}

fn collect<K: Into<Cow<'static, str>>, V: Into<Value>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> NamedParams {
    let mut p = NamedParams::new();
    for (k, v) in pairs {
        p.insert(k, v);
    }
    p
}

impl<K: Into<Cow<'static, str>>, V: Into<Value>> IntoParams for Vec<(K, V)> {
    fn into_params(self) -> Result<NamedParams> {
        Ok(collect(self))
    }
}

impl<K: Into<Cow<'static, str>>, V: Into<Value>, const N: usize> IntoParams for [(K, V); N] {
    fn into_params(self) -> Result<NamedParams> {
        Ok(collect(self))
    }
}

impl<K: Into<Cow<'static, str>> + Clone, V: Into<Value> + Clone> IntoParams for &[(K, V)] {
    fn into_params(self) -> Result<NamedParams> {
        Ok(collect(self.iter().cloned()))
    }
}

impl<K: Into<Cow<'static, str>>, V: Into<Value>, S> IntoParams for HashMap<K, V, S> {
    fn into_params(self) -> Result<NamedParams> {
        Ok(collect(self))
    }
}

impl<K: Into<Cow<'static, str>>, V: Into<Value>> IntoParams for BTreeMap<K, V> {
    fn into_params(self) -> Result<NamedParams> {
        Ok(collect(self))
    }
}

/// Builds [`NamedParams`]: `params! { "name" => "Daisy", "score" => 92 }`.
///
/// ```
/// let p = databases::params! { "name" => "Daisy", "score" => 92 };
/// assert_eq!(p.get("score"), Some(&databases::Value::Int(92)));
/// ```
#[macro_export]
macro_rules! params {
    () => { $crate::NamedParams::new() };
    ($($name:expr => $value:expr),+ $(,)?) => {{
        // One allocation, of the right size.
        let mut p = $crate::NamedParams::with_capacity([$(stringify!($name)),+].len());
        $( p.insert($name, $value); )+
        p
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "mysql")]
    #[test]
    fn mysql_placeholders_skip_quotes_and_comments() {
        let sql = "SELECT '?;', \"a\\\"?\", `?`, ? -- ?;\n, ? # ?\n /* ?; */ FROM t WHERE x = ?";
        let found = mysql_placeholders(sql).unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.iter().all(|&at| &sql[at..=at] == "?"));
        assert_eq!(mysql_placeholders("SELECT 1; SELECT 2"), None);
        assert_eq!(mysql_placeholders("SELECT 1;"), None);
        assert_eq!(mysql_placeholders("SELECT 'a''?'"), Some(vec![]));
    }

    fn pg(sql: &str) -> (String, Vec<String>) {
        let r = rewrite(sql, Dialect::Postgres);
        (r.sql, r.names)
    }

    fn q(sql: &str) -> (String, Vec<String>) {
        let r = rewrite(sql, Dialect::Sqlite);
        (r.sql, r.names)
    }

    fn my(sql: &str) -> (String, Vec<String>) {
        let r = rewrite(sql, Dialect::Mysql);
        (r.sql, r.names)
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn basic_rewrite_per_dialect() {
        let sql = "SELECT * FROM t WHERE a = :a AND b = :b_2";
        assert_eq!(
            pg(sql),
            (
                "SELECT * FROM t WHERE a = $1 AND b = $2".into(),
                names(&["a", "b_2"])
            )
        );
        assert_eq!(
            q(sql),
            (
                "SELECT * FROM t WHERE a = ? AND b = ?".into(),
                names(&["a", "b_2"])
            )
        );
        assert_eq!(my(sql).0, "SELECT * FROM t WHERE a = ? AND b = ?");
    }

    #[test]
    fn repeated_name_binds_same_value() {
        assert_eq!(
            pg("SELECT :x, :y, :x"),
            ("SELECT $1, $2, $1".into(), names(&["x", "y"]))
        );
        assert_eq!(
            q("SELECT :x, :y, :x"),
            ("SELECT ?, ?, ?".into(), names(&["x", "y", "x"]))
        );
    }

    #[test]
    fn string_literals_are_skipped() {
        assert_eq!(
            q("SELECT ':no', 'it''s :no', :yes").0,
            "SELECT ':no', 'it''s :no', ?"
        );
        // PostgreSQL: a backslash is plain text in a standard string ...
        assert_eq!(pg(r"SELECT '\', :a").0, r"SELECT '\', $1");
        // ... but an escape in an E'' string.
        assert_eq!(pg(r"SELECT E'\':no', :a").0, r"SELECT E'\':no', $1");
        // MySQL: backslash escapes in both quote styles.
        assert_eq!(
            my(r#"SELECT 'a\':no', "b\":no", :a"#).0,
            r#"SELECT 'a\':no', "b\":no", ?"#
        );
    }

    #[test]
    fn quoted_identifiers_and_backticks_are_skipped() {
        assert_eq!(
            q(r#"SELECT "col:x" FROM t WHERE a = :a"#).0,
            r#"SELECT "col:x" FROM t WHERE a = ?"#
        );
        assert_eq!(
            my("SELECT `c:x` FROM t WHERE a = :a").0,
            "SELECT `c:x` FROM t WHERE a = ?"
        );
    }

    #[test]
    fn comments_are_skipped() {
        assert_eq!(q("SELECT :a -- :b\n, :c").0, "SELECT ? -- :b\n, ?");
        assert_eq!(q("SELECT /* :b */ :a").0, "SELECT /* :b */ ?");
        assert_eq!(
            pg("SELECT /* a /* :nested */ :still */ :a").0,
            "SELECT /* a /* :nested */ :still */ $1"
        );
        assert_eq!(my("SELECT :a # :b\n").0, "SELECT ? # :b\n");
        // `#` is an operator on PostgreSQL, not a comment.
        assert_eq!(pg("SELECT 1 # :a").0, "SELECT 1 # $1");
    }

    #[test]
    fn casts_assignments_and_escapes() {
        assert_eq!(
            pg("SELECT :a::int, x::text"),
            ("SELECT $1::int, x::text".into(), names(&["a"]))
        );
        assert_eq!(my("SET @v := :a").0, "SET @v := ?");
        assert_eq!(q(r"SELECT '10' || \:lit, :a").0, "SELECT '10' || :lit, ?");
        // A colon after a word character is not a parameter (times, slices).
        assert_eq!(pg("SELECT arr[1:2], a:b").0, "SELECT arr[1:2], a:b");
    }

    #[test]
    fn dollar_quoting() {
        assert_eq!(pg("SELECT $$ :no $$, :a").0, "SELECT $$ :no $$, $1");
        assert_eq!(
            pg("SELECT $fn$ :no $x$ $fn$, :a").0,
            "SELECT $fn$ :no $x$ $fn$, $1"
        );
        // `$1` is not a quote.
        assert_eq!(pg("SELECT $1, :a").0, "SELECT $1, $1");
        // Dollar quoting is PostgreSQL only.
        assert_eq!(q("SELECT $$ :a $$").0, "SELECT $$ ? $$");
    }

    #[test]
    fn unicode_names_and_text() {
        assert_eq!(
            q("SELECT 'héllo', :naïve, :名前"),
            ("SELECT 'héllo', ?, ?".into(), names(&["naïve", "名前"]))
        );
    }

    #[test]
    fn unterminated_constructs_do_not_lose_text() {
        assert_eq!(q("SELECT ':a").0, "SELECT ':a");
        assert_eq!(q("SELECT /* :a").0, "SELECT /* :a");
        assert_eq!(pg("SELECT $x$ :a").0, "SELECT $x$ :a");
        assert_eq!(q("SELECT :").0, "SELECT :");
    }

    #[test]
    fn bind_picks_values_and_names_missing_ones() {
        let p = crate::params! { "a" => 1, ":b" => "x", "unused" => true };
        assert_eq!(
            p.bind(&names(&["b", "a", "b"])).unwrap(),
            vec![
                Value::Text("x".into()),
                Value::Int(1),
                Value::Text("x".into())
            ]
        );
        let e = p.bind(&names(&["a", "missing"])).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingParameter);
        assert_eq!(
            e.to_string(),
            "no value for query parameter ':missing' (values given: a, b, unused)"
        );
    }

    #[test]
    fn into_bound_moves_values_and_copies_repeats() {
        let p = crate::params! { "a" => "text", "b" => Value::Null, "unused" => 1 };
        assert_eq!(
            p.clone().into_bound(&names(&["a", "b", "a", "b"])).unwrap(),
            vec![
                Value::Text("text".into()),
                Value::Null,
                Value::Text("text".into()),
                Value::Null
            ]
        );
        let e = p.into_bound(&names(&["a", "zz"])).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingParameter);
        assert!(e.to_string().contains(":zz"), "{e}");
    }

    #[test]
    fn params_from_collections() {
        let v = vec![("a", 1)].into_params().unwrap();
        assert_eq!(v.get("a"), Some(&Value::Int(1)));
        let arr = [("a", Value::Null)].into_params().unwrap();
        assert_eq!(arr.get("a"), Some(&Value::Null));
        let mut m = HashMap::new();
        m.insert("k".to_owned(), "v");
        assert_eq!(
            m.into_params().unwrap().get("k"),
            Some(&Value::Text("v".into()))
        );
        assert!(().into_params().unwrap().is_empty());
        let later = crate::params! { "a" => 1, "a" => 2 };
        assert_eq!(later.len(), 1);
        assert_eq!(later.get("a"), Some(&Value::Int(2)));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn params_from_serialize() {
        #[derive(serde::Serialize)]
        struct Score<'a> {
            name: &'a str,
            score: i32,
            tags: Vec<&'a str>,
            note: Option<String>,
        }
        let p = NamedParams::from_serialize(&Score {
            name: "Daisy",
            score: 92,
            tags: vec!["a"],
            note: None,
        })
        .unwrap();
        assert_eq!(p.get("name"), Some(&Value::Text("Daisy".into())));
        assert_eq!(p.get("score"), Some(&Value::Int(92)));
        assert_eq!(p.get("tags"), Some(&Value::Json(serde_json::json!(["a"]))));
        assert_eq!(p.get("note"), Some(&Value::Null));
        let e = NamedParams::from_serialize(&5).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidParameter);
    }

    proptest::proptest! {
        #[test]
        fn rewrite_never_panics(s in "\\PC{0,120}") {
            for d in [Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite] {
                let _ = rewrite(&s, d);
            }
        }

        #[test]
        fn rewrite_never_panics_on_sql_like_input(s in "[-:'\"`$/*#\\\\a-z0-9 \n=]{0,80}") {
            for d in [Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite] {
                let r = rewrite(&s, d);
                // Text without a colon is never changed.
                if !s.contains(':') {
                    proptest::prop_assert_eq!(&r.sql, &s);
                    proptest::prop_assert!(r.names.is_empty());
                }
            }
        }
    }
}
