//! Type round trips per backend: SQL literal -> value, and value -> parameter -> value.

mod common;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime};
use databases::rust_decimal::Decimal;
use databases::{Backend, ErrorKind, Value, params};

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn time(h: u32, m: u32, s: u32, us: u32) -> NaiveTime {
    NaiveTime::from_hms_micro_opt(h, m, s, us).unwrap()
}

fn tz(s: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(s).unwrap()
}

/// Values equal, with NaN equal to NaN.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) if x.is_nan() && y.is_nan() => true,
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y))
        }
        _ => a == b,
    }
}

async fn check_literals(t: &common::TestDb, cases: &[(&str, Value)]) {
    for (literal, expected) in cases {
        let got: Value = t
            .fetch_val(&format!("SELECT {literal} AS v"), (), 0)
            .await
            .unwrap_or_else(|e| panic!("{}: {literal}: {e}", t.label))
            .unwrap();
        assert!(
            same(&got, expected),
            "{}: {literal}: got {got:?}, expected {expected:?}",
            t.label
        );
    }
}

async fn check_params(t: &common::TestDb, cases: &[(&str, Value, Value)]) {
    for (sql_type, sent, expected) in cases {
        let sql = format!("SELECT CAST(:v AS {sql_type}) AS v");
        let got: Value = t
            .fetch_val(&sql, params! { "v" => sent.clone() }, 0)
            .await
            .unwrap_or_else(|e| panic!("{}: {sql_type} <- {sent:?}: {e}", t.label))
            .unwrap();
        assert!(
            same(&got, expected),
            "{}: {sql_type} <- {sent:?}: got {got:?}, expected {expected:?}",
            t.label
        );
    }
}

fn big_text() -> String {
    "é漢x".repeat(1024 * 1024 / 6)
}

fn big_bytes() -> Vec<u8> {
    (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect()
}

#[tokio::test]
async fn sqlite_types() {
    for t in common::databases()
        .await
        .into_iter()
        .filter(|t| t.backend() == Backend::Sqlite)
    {
        check_literals(
            &t,
            &[
                ("NULL", Value::Null),
                ("1", Value::Int(1)),
                ("9223372036854775807", Value::Int(i64::MAX)),
                ("-9223372036854775808", Value::Int(i64::MIN)),
                ("1.5", Value::Float(1.5)),
                ("'héllo 漢字'", Value::Text("héllo 漢字".into())),
                ("x'00ff'", Value::Bytes(vec![0, 255])),
                ("9e999", Value::Float(f64::INFINITY)),
            ],
        )
        .await;
        // SQLite stores what it is given; CAST only changes the storage class.
        let v = |x: &Value| x.clone();
        check_params(
            &t,
            &[
                ("INTEGER", Value::Int(i64::MAX), Value::Int(i64::MAX)),
                ("INTEGER", Value::Int(i64::MIN), Value::Int(i64::MIN)),
                ("INTEGER", Value::UInt(5), Value::Int(5)),
                ("INTEGER", Value::Bool(true), Value::Int(1)),
                (
                    "REAL",
                    Value::Float(f64::INFINITY),
                    Value::Float(f64::INFINITY),
                ),
                (
                    "REAL",
                    Value::Float(f64::NEG_INFINITY),
                    Value::Float(f64::NEG_INFINITY),
                ),
                ("TEXT", Value::Text(big_text()), Value::Text(big_text())),
                ("BLOB", Value::Bytes(big_bytes()), Value::Bytes(big_bytes())),
                (
                    "TEXT",
                    Value::Text("nul\0inside".into()),
                    Value::Text("nul\0inside".into()),
                ),
                (
                    "TEXT",
                    Value::Date(date(2024, 2, 29)),
                    Value::Text("2024-02-29".into()),
                ),
                (
                    "TEXT",
                    Value::Decimal(Decimal::new(12345, 2)),
                    Value::Text("123.45".into()),
                ),
                ("TEXT", v(&Value::Null), Value::Null),
            ],
        )
        .await;
        // Typed reads parse what SQLite stored as text.
        let row = t
            .fetch_one(
                "SELECT :d AS d, :dt AS dt, :u AS u, :j AS j",
                params! {
                    "d" => date(2024, 2, 29),
                    "dt" => tz("2024-01-31T10:00:00+05:30"),
                    "u" => databases::uuid::Uuid::nil(),
                    "j" => serde_json::json!({"a": [1, 2]}),
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.get::<NaiveDate>("d").unwrap(), date(2024, 2, 29));
        assert_eq!(
            row.get::<DateTime<FixedOffset>>("dt").unwrap(),
            tz("2024-01-31T10:00:00+05:30")
        );
        assert_eq!(
            row.get::<databases::uuid::Uuid>("u").unwrap(),
            databases::uuid::Uuid::nil()
        );
        assert_eq!(
            row.get::<serde_json::Value>("j").unwrap(),
            serde_json::json!({"a": [1, 2]})
        );
        let e = t
            .fetch_one("SELECT :x", params! { "x" => f64::NAN })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidParameter);
    }
}

#[tokio::test]
async fn postgres_types() {
    for t in common::databases()
        .await
        .into_iter()
        .filter(|t| t.backend() == Backend::Postgres)
    {
        t.execute("DROP TABLE IF EXISTS types_enum_user", ())
            .await
            .unwrap();
        t.execute("DROP TYPE IF EXISTS types_mood", ())
            .await
            .unwrap();
        t.execute("CREATE TYPE types_mood AS ENUM ('sad', 'happy')", ())
            .await
            .unwrap();
        // `execute` returns the first column of a void function's row: nothing.
        let locked = t
            .execute("SELECT pg_advisory_unlock_all()", ())
            .await
            .unwrap();
        assert_eq!(locked, Value::Null);
        check_literals(
            &t,
            &[
                ("NULL::int4", Value::Null),
                // A function that returns nothing.
                ("pg_sleep(0)", Value::Null),
                ("true", Value::Bool(true)),
                ("32767::int2", Value::Int(32767)),
                ("(-2147483648)::int4", Value::Int(-2_147_483_648)),
                ("9223372036854775807::int8", Value::Int(i64::MAX)),
                ("(-9223372036854775807 - 1)::int8", Value::Int(i64::MIN)),
                ("1.5::float4", Value::Float(1.5)),
                ("'NaN'::float8", Value::Float(f64::NAN)),
                ("'Infinity'::float8", Value::Float(f64::INFINITY)),
                ("'-Infinity'::float8", Value::Float(f64::NEG_INFINITY)),
                ("12.340::numeric", Value::Decimal(Decimal::new(12340, 3))),
                ("(-0.001)::numeric", Value::Decimal(Decimal::new(-1, 3))),
                (
                    "123456789012345678901234567890.5::numeric",
                    Value::Text("123456789012345678901234567890.5".into()),
                ),
                ("'héllo 漢字'::text", Value::Text("héllo 漢字".into())),
                ("'ab'::varchar(5)", Value::Text("ab".into())),
                ("'ab'::char(3)", Value::Text("ab ".into())),
                ("'x'::name", Value::Text("x".into())),
                ("'\\x00ff'::bytea", Value::Bytes(vec![0, 255])),
                ("'2024-02-29'::date", Value::Date(date(2024, 2, 29))),
                (
                    "'23:59:59.999999'::time",
                    Value::Time(time(23, 59, 59, 999_999)),
                ),
                (
                    "'10:00:00+02'::timetz",
                    Value::TimeTz(time(10, 0, 0, 0), FixedOffset::east_opt(7200).unwrap()),
                ),
                (
                    "'2024-01-31 10:00:00.5'::timestamp",
                    Value::DateTime(date(2024, 1, 31).and_time(time(10, 0, 0, 500_000))),
                ),
                (
                    "'2024-01-31 10:00:00+02'::timestamptz",
                    Value::DateTimeTz(tz("2024-01-31T08:00:00+00:00")),
                ),
                (
                    "'1 mon 2 days 3.5 sec'::interval",
                    Value::Interval {
                        months: 1,
                        days: 2,
                        microseconds: 3_500_000,
                    },
                ),
                (
                    "'67e55044-10b1-426f-9247-bb680e5fe0c8'::uuid",
                    Value::Uuid("67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap()),
                ),
                (
                    "'{\"a\": [1, null]}'::json",
                    Value::Json(serde_json::json!({"a": [1, null]})),
                ),
                (
                    "'{\"a\": [1, null]}'::jsonb",
                    Value::Json(serde_json::json!({"a": [1, null]})),
                ),
                ("'happy'::types_mood", Value::Text("happy".into())),
                (
                    "ARRAY[1, NULL, 3]::int4[]",
                    Value::Array(vec![Value::Int(1), Value::Null, Value::Int(3)]),
                ),
                ("ARRAY['a', 'b']::text[]", Value::array(["a", "b"])),
                ("'{}'::int8[]", Value::Array(vec![])),
                (
                    "'{{1,2},{3,4}}'::int4[]",
                    Value::Array(vec![Value::array([1, 2]), Value::array([3, 4])]),
                ),
            ],
        )
        .await;

        // Parameters adapt to the type the server declares for them.
        let cases = [
            ("int2", Value::Int(-32768), Value::Int(-32768)),
            ("int8", Value::Int(i64::MIN), Value::Int(i64::MIN)),
            ("int8", Value::Int(i64::MAX), Value::Int(i64::MAX)),
            ("int8", Value::UInt(7), Value::Int(7)),
            ("float8", Value::Int(3), Value::Float(3.0)),
            ("float8", Value::Float(f64::NAN), Value::Float(f64::NAN)),
            (
                "float8",
                Value::Float(f64::INFINITY),
                Value::Float(f64::INFINITY),
            ),
            (
                "float8",
                Value::Float(f64::NEG_INFINITY),
                Value::Float(f64::NEG_INFINITY),
            ),
            ("numeric", Value::Int(42), Value::Decimal(Decimal::from(42))),
            (
                "numeric",
                Value::UInt(u64::MAX),
                Value::Decimal(Decimal::from(u64::MAX)),
            ),
            (
                "numeric",
                Value::Decimal(Decimal::new(-12345, 4)),
                Value::Decimal(Decimal::new(-12345, 4)),
            ),
            (
                "numeric",
                Value::Text("0.1".into()),
                Value::Decimal(Decimal::new(1, 1)),
            ),
            ("text", Value::Text(big_text()), Value::Text(big_text())),
            (
                "bytea",
                Value::Bytes(big_bytes()),
                Value::Bytes(big_bytes()),
            ),
            ("text", Value::Int(5), Value::Text("5".into())),
            ("bool", Value::Bool(false), Value::Bool(false)),
            (
                "date",
                Value::Date(date(1, 1, 1)),
                Value::Date(date(1, 1, 1)),
            ),
            (
                "date",
                Value::Text("2024-02-29".into()),
                Value::Date(date(2024, 2, 29)),
            ),
            (
                "time",
                Value::Time(time(0, 0, 0, 1)),
                Value::Time(time(0, 0, 0, 1)),
            ),
            (
                "timetz",
                Value::TimeTz(time(10, 0, 0, 0), FixedOffset::west_opt(3600).unwrap()),
                Value::TimeTz(time(10, 0, 0, 0), FixedOffset::west_opt(3600).unwrap()),
            ),
            (
                "timestamp",
                Value::DateTime(date(2024, 1, 31).and_time(time(10, 0, 0, 123_456))),
                Value::DateTime(date(2024, 1, 31).and_time(time(10, 0, 0, 123_456))),
            ),
            (
                "timestamptz",
                Value::DateTimeTz(tz("2024-01-31T10:00:00+05:30")),
                Value::DateTimeTz(tz("2024-01-31T04:30:00+00:00")),
            ),
            (
                "timestamptz",
                Value::Text("2024-01-31 10:00:00-01:00".into()),
                Value::DateTimeTz(tz("2024-01-31T11:00:00+00:00")),
            ),
            (
                "interval",
                Value::Interval {
                    months: -1,
                    days: 40,
                    microseconds: 1,
                },
                Value::Interval {
                    months: -1,
                    days: 40,
                    microseconds: 1,
                },
            ),
            (
                "uuid",
                Value::Uuid(databases::uuid::Uuid::max()),
                Value::Uuid(databases::uuid::Uuid::max()),
            ),
            (
                "jsonb",
                Value::Json(serde_json::json!({"k": [1, "x"]})),
                Value::Json(serde_json::json!({"k": [1, "x"]})),
            ),
            (
                "json",
                Value::Text("[1, 2]".into()),
                Value::Json(serde_json::json!([1, 2])),
            ),
            (
                "types_mood",
                Value::Text("sad".into()),
                Value::Text("sad".into()),
            ),
            (
                "int4[]",
                Value::Array(vec![Value::Int(1), Value::Null]),
                Value::Array(vec![Value::Int(1), Value::Null]),
            ),
            ("text[]", Value::array(["é", ""]), Value::array(["é", ""])),
            ("int8", Value::Null, Value::Null),
            (
                "text[]",
                Value::array(["a\"b", "c\\d", "{x,y}", "NULL"]),
                Value::array(["a\"b", "c\\d", "{x,y}", "NULL"]),
            ),
            (
                "date",
                Value::Date(date(-43, 3, 15)),
                Value::Date(date(-43, 3, 15)),
            ),
            ("float8", Value::Float(f64::NAN), Value::Float(f64::NAN)),
            (
                "float8",
                Value::Float(f64::NEG_INFINITY),
                Value::Float(f64::NEG_INFINITY),
            ),
            ("float8", Value::Float(1e-300), Value::Float(1e-300)),
            (
                "timestamptz",
                Value::DateTime(date(2024, 1, 31).and_time(time(10, 0, 0, 0))),
                Value::DateTimeTz(tz("2024-01-31T10:00:00+00:00")),
            ),
        ];
        check_params(&t, &cases).await;
        // Sent unprepared (`statement_cache=false`), in their text forms, the values are
        // read as the same types.
        let mut options = t.url().options().to_vec();
        options.push(("statement_cache".to_owned(), "false".to_owned()));
        let unprepared = common::TestDb::open(t.url().with_options(options).unwrap()).await;
        check_params(&unprepared, &cases).await;

        // Errors name the parameter or the column, and the types.
        let e = t
            .fetch_one("SELECT CAST(:v AS int2) AS v", params! { "v" => 70_000 })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidParameter, "{e}");
        assert_eq!(
            e.to_string(),
            "parameter ':v': cannot send integer as int2 (70000 is out of range for int2)"
        );
        let e = t
            .fetch_one("SELECT CAST(:v AS int4) AS v", params! { "v" => "12" })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidParameter, "{e}");
        let e = t
            .fetch_one("SELECT '(1,2)'::point AS p", ())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode, "{e}");
        assert!(
            e.to_string()
                .starts_with("column 'p' of type point: type point is not supported"),
            "{e}"
        );
        // An integer parameter into a float8 column and a numeric column.
        t.recreate("types_adapt", "f float8, n numeric(10, 2)")
            .await;
        t.execute(
            "INSERT INTO types_adapt (f, n) VALUES (:f, :n)",
            params! { "f" => 2, "n" => 3 },
        )
        .await
        .unwrap();
        let row = t
            .fetch_one("SELECT f, n FROM types_adapt", ())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.get::<f64>("f").unwrap(), 2.0);
        assert_eq!(row.get::<Decimal>("n").unwrap(), Decimal::new(300, 2));
    }
}

#[tokio::test]
async fn mysql_types() {
    for t in common::databases()
        .await
        .into_iter()
        .filter(|t| t.backend() == Backend::Mysql)
    {
        t.recreate(
            "types_my",
            "ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT, i INT, iu INT UNSIGNED, \
             bi BIGINT, bu BIGINT UNSIGNED, b BOOLEAN, de DECIMAL(30, 4), f FLOAT, d DOUBLE, \
             c CHAR(3), vc VARCHAR(20), tx TEXT, bl BLOB, vb VARBINARY(4), dt DATE, tm TIME, \
             dtm DATETIME(6), ts TIMESTAMP(6) NULL, y YEAR, j JSON, e ENUM('sad', 'happy'), \
             st SET('a', 'b', 'c'), bt BIT(8)",
        )
        .await;
        t.execute(
            "INSERT INTO types_my VALUES (-128, 255, -32768, -8388608, -2147483648, 4294967295, \
             -9223372036854775808, 18446744073709551615, TRUE, 12345678901234567890.1234, 1.1, 2.5, \
             'ab', 'héllo 漢字', 'long text', x'00ff', x'01', '2024-02-29', '-838:59:59', \
             '2024-01-31 10:00:00.000001', '2024-01-31 10:00:00', 2024, '{\"a\": [1, null]}', \
             'happy', 'a,c', b'10000001')",
            (),
        )
        .await
        .unwrap();
        let row = t
            .fetch_one("SELECT * FROM types_my", ())
            .await
            .unwrap()
            .unwrap();
        let expect = [
            ("ti", Value::Int(-128)),
            ("tu", Value::Int(255)),
            ("si", Value::Int(-32768)),
            ("mi", Value::Int(-8_388_608)),
            ("i", Value::Int(-2_147_483_648)),
            ("iu", Value::Int(4_294_967_295)),
            ("bi", Value::Int(i64::MIN)),
            ("bu", Value::UInt(u64::MAX)),
            ("b", Value::Int(1)),
            (
                "de",
                Value::Decimal("12345678901234567890.1234".parse().unwrap()),
            ),
            ("f", Value::Float(1.1)),
            ("d", Value::Float(2.5)),
            ("c", Value::Text("ab".into())),
            ("vc", Value::Text("héllo 漢字".into())),
            ("tx", Value::Text("long text".into())),
            ("bl", Value::Bytes(vec![0, 255])),
            ("vb", Value::Bytes(vec![1])),
            ("dt", Value::Date(date(2024, 2, 29))),
            (
                "tm",
                Value::Interval {
                    months: 0,
                    days: -34,
                    microseconds: -(22 * 3600 + 59 * 60 + 59) * 1_000_000,
                },
            ),
            (
                "dtm",
                Value::DateTime(date(2024, 1, 31).and_time(time(10, 0, 0, 1))),
            ),
            (
                "ts",
                Value::DateTime(date(2024, 1, 31).and_time(time(10, 0, 0, 0))),
            ),
            ("y", Value::Int(2024)),
            ("e", Value::Text("happy".into())),
            ("st", Value::Text("a,c".into())),
            ("bt", Value::Bytes(vec![0b1000_0001])),
        ];
        for (column, expected) in expect {
            assert_eq!(
                row.value(column).unwrap(),
                &expected,
                "{}: column {column}",
                t.label
            );
        }
        // MariaDB's JSON is LONGTEXT: the text parses when asked.
        assert_eq!(
            row.get::<serde_json::Value>("j").unwrap(),
            serde_json::json!({"a": [1, null]})
        );
        assert!(row.get::<bool>("b").unwrap());

        check_literals(
            &t,
            &[
                ("NULL", Value::Null),
                ("9223372036854775807", Value::Int(i64::MAX)),
                ("18446744073709551615", Value::UInt(u64::MAX)),
                ("'héllo'", Value::Text("héllo".into())),
                ("CAST('10:30:00' AS TIME)", Value::Time(time(10, 30, 0, 0))),
            ],
        )
        .await;
        check_params(
            &t,
            &[
                ("SIGNED", Value::Int(i64::MIN), Value::Int(i64::MIN)),
                ("UNSIGNED", Value::UInt(u64::MAX), Value::UInt(u64::MAX)),
                (
                    "DECIMAL(10, 2)",
                    Value::Decimal(Decimal::new(-12345, 2)),
                    Value::Decimal(Decimal::new(-12345, 2)),
                ),
                ("DOUBLE", Value::Int(3), Value::Float(3.0)),
                ("CHAR", Value::Text(big_text()), Value::Text(big_text())),
                (
                    "BINARY",
                    Value::Bytes(big_bytes()),
                    Value::Bytes(big_bytes()),
                ),
                (
                    "DATE",
                    Value::Date(date(1000, 1, 1)),
                    Value::Date(date(1000, 1, 1)),
                ),
                (
                    "DATETIME(6)",
                    Value::DateTime(date(2024, 1, 31).and_time(time(10, 0, 0, 123_456))),
                    Value::DateTime(date(2024, 1, 31).and_time(time(10, 0, 0, 123_456))),
                ),
                (
                    "DATETIME",
                    Value::DateTimeTz(tz("2024-01-31T10:00:00+05:30")),
                    Value::DateTime(date(2024, 1, 31).and_time(time(4, 30, 0, 0))),
                ),
                (
                    "TIME(6)",
                    Value::Time(time(23, 59, 59, 5)),
                    Value::Time(time(23, 59, 59, 5)),
                ),
                ("CHAR", Value::Null, Value::Null),
            ],
        )
        .await;
        for bad in [
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::array([1]),
        ] {
            let e = t
                .fetch_one("SELECT :x", params! { "x" => bad.clone() })
                .await
                .unwrap_err();
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidParameter,
                "{}: {bad:?}",
                t.label
            );
        }
    }
}
