//! PostgreSQL through tokio-postgres.
//!
//! Statements are prepared once per connection and cached (the server then knows each
//! parameter's type, and values adapt to it: an integer bound to a `float8` or `numeric`
//! column works). `?statement_cache=false`, for PgBouncer in transaction mode, prepares
//! nothing: each statement goes unprepared in one round trip (see [`unprepared`]). Rows are
//! decoded at run time from the binary protocol into [`Value`].
//!
//! `execute_many` of a plain `INSERT ... VALUES (...)` sends multi-row inserts of up to
//! [`BATCH_ROWS`] rows, the tuple copied with its placeholders numbered on; anything else is
//! sent once per row. Either way every statement goes at once (tokio-postgres pipelines
//! them), inside a transaction or savepoint.
//!
//! A transaction's `BEGIN` (a savepoint's `SAVEPOINT`) has no round trip of its own: it is
//! written with the transaction's first statement, both before either answer is read, and a
//! transaction that ends before sending anything sends nothing. A `BEGIN` that fails makes
//! that statement fail too (if it ran, it ran outside the transaction, and its error says
//! so), and the connection then refuses statements until the transaction is rolled back.
//!
//! Cancellation: an operation whose future is dropped while the server works on it poisons
//! the connection (it refuses further use and the pool discards it) and sends the server a
//! cancel request, so the query stops. A dropped transaction leaves a pending rollback that
//! runs before the connection's next statement; a connection returned to the pool with one
//! pending is closed instead, which ends the transaction on the server.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use fallible_iterator::FallibleIterator;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use postgres_types::{FromSql, IsNull, Kind, ToSql, Type};
use rust_decimal::Decimal;
use tokio_postgres::{Client, Statement, error::SqlState};

use crate::ExecuteResult;
use crate::config::{parse_bool, parse_choice, parse_seconds};
use crate::error::{Error, ErrorKind, Result};
use crate::record::{Columns, Record, Rows};
use crate::url::DatabaseUrl;
use crate::value::Value;

use super::{BoundQuery, InFlight, Starts, start_error};

/// URL options the PostgreSQL backend understands (besides the common ones).
pub(crate) const OPTIONS: &[&str] = &[
    "application_name",
    "command_timeout",
    "connect_timeout",
    "host",
    "ssl",
    "sslmode",
    "sslrootcert",
    "statement_cache",
    "unix_sock",
];

const STATEMENT_CACHE: usize = 256;
/// Rows per multi-row INSERT in `execute_many`.
const BATCH_ROWS: usize = 1000;
/// PostgreSQL's limit on the parameters of one statement.
const MAX_PARAMETERS: usize = 65_535;

/// How many cancel requests an abandoned statement gets at most (about 12 s of pauses).
const ABANDON_CANCELS: usize = 12;

/// How the connection uses TLS (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disable,
    /// TLS when the server offers it, without certificate checks.
    Prefer,
    /// TLS always, without certificate checks (unless a root certificate is given).
    Require,
    /// TLS always; the certificate must chain to a trusted root.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}

/// How to open PostgreSQL connections, resolved from the URL.
#[derive(Clone)]
pub(crate) struct PgConfig {
    config: tokio_postgres::Config,
    ssl: SslMode,
    root_cert: Option<String>,
    statement_cache: bool,
    command_timeout: Option<Duration>,
    /// `host:port` or the socket path, for messages.
    target: String,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("target", &self.target)
            .field("ssl", &self.ssl)
            .finish_non_exhaustive()
    }
}

impl PgConfig {
    pub(crate) fn from_url(url: &DatabaseUrl) -> Result<Self> {
        let mut config = tokio_postgres::Config::new();
        let user = url
            .username()
            .map(|u| u.into_owned())
            .or_else(|| std::env::var("PGUSER").ok())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "postgres".to_owned());
        config.user(&user);
        if let Some(pw) = url.password() {
            config.password(pw.as_bytes());
        }
        let database = url.database();
        config.dbname(if database.is_empty() {
            user.as_str()
        } else {
            &database
        });
        let port = url.port().unwrap_or(5432);
        let host = url.hostname().unwrap_or("localhost").to_owned();
        let target = if let Some(path) = host.strip_prefix('/').map(|_| host.as_str()) {
            // A socket directory, or the socket file itself (`.../.s.PGSQL.5433`).
            let p = std::path::Path::new(path);
            let file = p.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            match file
                .strip_prefix(".s.PGSQL.")
                .and_then(|n| n.parse::<u16>().ok())
            {
                Some(socket_port) => {
                    config.host_path(p.parent().unwrap_or(p));
                    config.port(socket_port);
                }
                None => {
                    config.host_path(p);
                    config.port(port);
                }
            }
            path.to_owned()
        } else {
            config.host(&host);
            config.port(port);
            format!("{host}:{port}")
        };
        if let Some(name) = url.option("application_name") {
            config.application_name(name);
        }
        if let Some(t) = url.option("connect_timeout") {
            config.connect_timeout(parse_seconds("connect_timeout", t)?);
        }
        let command_timeout = url
            .option("command_timeout")
            .map(|t| parse_seconds("command_timeout", t))
            .transpose()?;
        let statement_cache = url
            .option("statement_cache")
            .map(|v| parse_bool("statement_cache", v))
            .transpose()?
            .unwrap_or(true);
        let mut ssl = match url.option("ssl") {
            None => SslMode::Prefer,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => SslMode::Require,
                "false" | "0" | "no" | "off" => SslMode::Disable,
                other => parse_sslmode("ssl", other)?,
            },
        };
        if let Some(mode) = url.option("sslmode") {
            ssl = parse_sslmode("sslmode", mode)?;
        }
        let root_cert = url.option("sslrootcert").map(str::to_owned);
        if ssl == SslMode::Require && root_cert.is_some() {
            ssl = SslMode::VerifyCa; // as libpq does
        }
        if target.starts_with('/') && ssl != SslMode::VerifyCa && ssl != SslMode::VerifyFull {
            ssl = SslMode::Disable; // no TLS over unix sockets
        }
        config.ssl_mode(match ssl {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        Ok(Self {
            config,
            ssl,
            root_cert,
            statement_cache,
            command_timeout,
            target,
        })
    }

    fn tls(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
        tls::connector(self.ssl, self.root_cert.as_deref())
    }
}

fn parse_sslmode(key: &str, value: &str) -> Result<SslMode> {
    Ok(
        match parse_choice(
            key,
            value,
            &[
                "disable",
                "allow",
                "prefer",
                "require",
                "verify-ca",
                "verify-full",
            ],
        )?
        .as_str()
        {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            _ => SslMode::VerifyFull,
        },
    )
}

mod tls {
    //! rustls (ring) configurations for each `sslmode`.

    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

    use super::SslMode;
    use crate::error::{Error, Result};

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Accepts any certificate: `prefer` and `require` encrypt without authenticating, as
    /// libpq does without a root certificate.
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// Checks the chain but not the host name (`verify-ca`).
    #[derive(Debug)]
    struct ChainOnly(Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    pub(super) fn connector(
        mode: SslMode,
        root_cert: Option<&str>,
    ) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(format!("TLS setup failed: {e}")))?;
        let config = match mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth(),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let mut roots = RootCertStore::empty();
                match root_cert {
                    Some(path) => {
                        let certs = CertificateDer::pem_file_iter(path)
                            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                            .map_err(|e| {
                                Error::config(format!("cannot read sslrootcert '{path}': {e}"))
                            })?;
                        let (added, _) = roots.add_parsable_certificates(certs);
                        if added == 0 {
                            return Err(Error::config(format!(
                                "sslrootcert '{path}' holds no usable certificate"
                            )));
                        }
                    }
                    None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                }
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| Error::config(format!("TLS setup failed: {e}")))?;
                if mode == SslMode::VerifyFull {
                    builder.with_webpki_verifier(webpki).with_no_client_auth()
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                        .with_no_client_auth()
                }
            }
        };
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }
}

/// One PostgreSQL connection.
pub(crate) struct PgConnection {
    client: Client,
    /// What a cancel request needs, made once per connection (building it copies the
    /// connection's settings).
    canceller: Arc<Canceller>,
    /// Cancels the statement of an abandoned operation, on the runtime the connection was
    /// opened on.
    abandon: super::Abandon,
    statements: crate::SqlMap<Prepared>,
    statement_cache: bool,
    command_timeout: Option<Duration>,
    /// Set while an operation is in flight and left set if its future is dropped.
    pub(super) poisoned: Arc<super::Poison>,
    /// Transaction and savepoint starts not sent yet, and whether a `BEGIN` failed.
    starts: Starts,
    /// The connection's protocol future, which operations poll too (see [`Driver`]).
    driver: Arc<Driver>,
}

/// What a cancel request for a connection's statement needs.
type Canceller = (
    tokio_postgres::CancelToken,
    tokio_postgres_rustls::MakeRustlsConnect,
);

/// What an abandoned operation does on `runtime`: asks the server to cancel its statement.
///
/// The server ignores a cancel request that arrives before the statement does (the future
/// may be dropped while the statement is still on its way), so the request is repeated, with
/// growing pauses, until the connection has ended (`ended`). The pool discards a poisoned
/// connection, and its driver ends once the server has answered the abandoned statement, so
/// the repeats stop as soon as the statement has stopped. No statement runs on a poisoned
/// connection, so a repeat can only reach the abandoned one.
fn cancel_abandoned(
    canceller: Arc<Canceller>,
    ended: tokio::sync::watch::Receiver<()>,
    runtime: tokio::runtime::Handle,
) -> super::Abandon {
    Arc::new(move || {
        let (canceller, mut ended) = (canceller.clone(), ended.clone());
        super::spawn_detached(&runtime, async move {
            let (token, tls) = &*canceller;
            let mut pause = Duration::from_millis(20);
            for _ in 0..ABANDON_CANCELS {
                let _ = token.cancel_query(tls.clone()).await;
                if tokio::time::timeout(pause, ended.changed()).await.is_ok() {
                    return;
                }
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        });
    })
}

/// A prepared statement and its column names, which every result of it shares (made once,
/// not for every query).
#[derive(Clone)]
struct Prepared {
    statement: Statement,
    columns: Arc<Columns>,
}

/// tokio-postgres's connection future (it owns the socket), shared by the task that drives
/// it and by the operations on it.
///
/// A client method only queues its request for that future. Left to the task, the request
/// reaches the socket once the task has been woken and scheduled, on whichever thread runs
/// it: for an operation polled on another thread (the Python package's event loop), a wake
/// of a parked runtime thread on every round trip, which costs more than the round trip's
/// own work. So an operation that has queued a request and waits polls the future once
/// itself (see [`Flushed`]), which writes the request at once. The future is always polled
/// with a waker that wakes the task ([`TaskWake`]), so everything it waits for (the socket,
/// the next request) still wakes the task; the task also ends the connection when the
/// future has ended.
struct Driver {
    state: std::sync::Mutex<DriverState>,
    /// The waker the connection future is always polled with.
    wake: Arc<TaskWake>,
    /// The same, as a [`Waker`].
    waker: Waker,
}

/// tokio-postgres's connection future, boxed: it ends when the connection does.
type ConnectionFuture =
    Pin<Box<dyn Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send>>;

struct DriverState {
    /// `None` once the connection has ended.
    connection: Option<ConnectionFuture>,
}

/// Wakes the driving task, except while an operation is being polled ([`Flushed`]): a wake
/// then (the operation queuing a request wakes the future's request channel) is held back,
/// since the operation polls the future itself right after, which does what the task would
/// do. Without that, every statement would also wake a parked runtime thread, to find
/// nothing left to send.
struct TaskWake {
    task: futures_util::task::AtomicWaker,
    /// An operation is being polled.
    holding: AtomicBool,
    /// A wake came while `holding` was set.
    held: AtomicBool,
}

impl std::task::Wake for TaskWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.holding.load(Ordering::SeqCst) {
            self.held.store(true, Ordering::SeqCst);
            // Unless the hold ended meanwhile, its end sees `held` and delivers it.
            if self.holding.load(Ordering::SeqCst) || !self.held.swap(false, Ordering::SeqCst) {
                return;
            }
        }
        self.task.wake();
    }
}

impl Driver {
    fn new(
        connection: impl Future<Output = std::result::Result<(), tokio_postgres::Error>>
        + Send
        + 'static,
    ) -> Self {
        let wake = Arc::new(TaskWake {
            task: futures_util::task::AtomicWaker::new(),
            holding: AtomicBool::new(false),
            held: AtomicBool::new(false),
        });
        Self {
            state: std::sync::Mutex::new(DriverState {
                connection: Some(Box::pin(connection)),
            }),
            waker: Waker::from(wake.clone()),
            wake,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DriverState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The driving task's poll: ready once the connection has ended.
    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.wake.task.register(cx.waker());
        self.lock()
            .poll_connection(&mut Context::from_waker(&self.waker))
    }

    /// Holds back the task's wakes while an operation is polled, until the returned guard
    /// is dropped (also when the poll panics).
    fn hold(&self) -> Hold<'_> {
        self.wake.holding.store(true, Ordering::SeqCst);
        Hold {
            driver: self,
            flush: false,
        }
    }

    /// Ends the hold. When the operation waits (`flush`), it polls the connection future
    /// first, which writes the requests it queued (and reads what has arrived); a wake held
    /// back before that poll needs no task, one that came during or after it is delivered.
    /// If the task is polling the future right now, every held wake is delivered.
    fn release(&self, flush: bool) {
        let mut flushed = false;
        if flush && let Ok(mut state) = self.state.try_lock() {
            self.wake.held.store(false, Ordering::SeqCst);
            if state
                .poll_connection(&mut Context::from_waker(&self.waker))
                .is_ready()
            {
                self.wake.task.wake(); // the task ends too
            }
            flushed = true;
        }
        self.wake.holding.store(false, Ordering::SeqCst);
        if self.wake.held.swap(false, Ordering::SeqCst) || (flush && !flushed) {
            self.wake.task.wake();
        }
    }
}

/// A hold of [`Driver::hold`]; its drop ends it with [`Driver::release`].
struct Hold<'a> {
    driver: &'a Driver,
    /// The operation waits: poll the connection future.
    flush: bool,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.driver.release(self.flush);
    }
}

impl DriverState {
    fn poll_connection(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(connection) = self.connection.as_mut() else {
            return Poll::Ready(());
        };
        let Poll::Ready(result) = connection.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "PostgreSQL connection ended with an error");
        }
        self.connection = None;
        Poll::Ready(())
    }
}

pin_project_lite::pin_project! {
    /// An operation that flushes its connection's queued requests each time it waits (see
    /// [`Driver`]).
    struct Flushed<F> {
        #[pin]
        operation: F,
        driver: Arc<Driver>,
    }
}

impl<F: Future> Future for Flushed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut hold = this.driver.hold();
        let poll = this.operation.poll(cx);
        hold.flush = poll.is_pending();
        poll
    }
}

impl Starts {
    /// Awaits `send`, a statement not sent yet, after sending the starts not sent yet, if
    /// any. tokio-postgres writes requests in the order they are first polled, so both go
    /// out before either answer is read: starting a transaction or savepoint costs no round
    /// trip of its own.
    ///
    /// `send` comes pinned by the caller, so that it is stored once (see
    /// `with_command_timeout`).
    async fn then<T>(
        &mut self,
        client: &Client,
        send: Pin<&mut impl Future<Output = std::result::Result<T, tokio_postgres::Error>>>,
    ) -> Result<T> {
        let Some(starts) = self.take() else {
            return send.await.map_err(map_error);
        };
        let (began, result) =
            futures_util::future::join(client.batch_execute(&starts.sql), send).await;
        match began {
            Ok(()) => result.map_err(map_error),
            Err(e) => {
                // A failed savepoint inside a transaction aborts it on the server: nothing
                // after it runs. A failed BEGIN leaves no transaction there.
                self.failed |= starts.outermost;
                Err(start_error(map_error(e), result.is_ok()))
            }
        }
    }
}

impl PgConnection {
    pub(crate) async fn open(config: &PgConfig) -> Result<Self> {
        let tls = config.tls()?;
        let (client, connection) = config.config.connect(tls.clone()).await.map_err(|e| {
            Error::new(
                ErrorKind::Connect,
                format!(
                    "could not connect to PostgreSQL at {}: {}",
                    config.target,
                    describe(&e)
                ),
            )
            .with_source(e)
        })?;
        // The driver task holds `running` until the connection has ended.
        let (running, ended) = tokio::sync::watch::channel(());
        let driver = Arc::new(Driver::new(connection));
        let task = driver.clone();
        tokio::spawn(async move {
            std::future::poll_fn(|cx| task.poll(cx)).await;
            drop(running);
        });
        let canceller = Arc::new((client.cancel_token(), tls));
        Ok(Self {
            abandon: cancel_abandoned(canceller.clone(), ended, tokio::runtime::Handle::current()),
            canceller,
            client,
            statements: crate::SqlMap::default(),
            statement_cache: config.statement_cache,
            command_timeout: config.command_timeout,
            poisoned: Arc::default(),
            starts: Starts::default(),
            driver,
        })
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.poisoned.is_set() || self.client.is_closed()
    }

    /// Marks the start of an operation; fails on a poisoned connection. If the operation is
    /// abandoned, the server is asked to cancel it (see [`cancel_abandoned`]).
    fn start(&self) -> Result<InFlight> {
        InFlight::start(&self.poisoned, &self.abandon)
    }

    /// The prepared statement for `sql`, from the cache or prepared now. A transaction start
    /// not sent yet goes out ahead of the prepare, so that the statement is prepared inside
    /// the transaction, as it was when `BEGIN` had a round trip of its own (a pooler in
    /// transaction mode hands the whole transaction one server session).
    async fn statement(&mut self, sql: &str) -> Result<Statement> {
        Ok(self.prepared(sql).await?.statement)
    }

    /// What `execute_many` sends for `sql`: its prepared statement, or with the statement
    /// cache off the text itself (see [`unprepared`]).
    async fn batch(&mut self, sql: Arc<str>) -> Result<Batch> {
        Ok(if self.statement_cache {
            Batch::Prepared(self.statement(&sql).await?)
        } else {
            Batch::Unprepared(sql)
        })
    }

    /// [`PgConnection::statement`] with its column names.
    async fn prepared(&mut self, sql: &str) -> Result<Prepared> {
        if let Some(prepared) = self.statements.get(sql) {
            return Ok(prepared.clone());
        }
        let statement = (self.starts)
            .then(&self.client, std::pin::pin!(self.client.prepare(sql)))
            .await?;
        let prepared = Prepared {
            columns: Arc::new(Columns::new(
                statement
                    .columns()
                    .iter()
                    .map(|c| c.name().to_owned())
                    .collect(),
            )),
            statement,
        };
        if self.statement_cache {
            if self.statements.len() >= STATEMENT_CACHE {
                self.statements.clear();
            }
            self.statements.insert(sql.into(), prepared.clone());
        }
        Ok(prepared)
    }

    /// Prepares `query` (or takes it from the cache) and sends it with its values, after the
    /// transaction starts not sent yet; returns its rows, not read yet, and their column
    /// names, or `None` when they come with the rows (a statement sent unprepared, see
    /// [`unprepared`]).
    async fn send_query(
        &mut self,
        query: &BoundQuery,
    ) -> Result<(tokio_postgres::RowStream, Option<Arc<Columns>>)> {
        if !self.statement_cache {
            let rows = (self.starts)
                .then(
                    &self.client,
                    std::pin::pin!(unprepared(
                        &self.client,
                        &query.sql,
                        &query.values,
                        &query.names
                    )),
                )
                .await?;
            return Ok((rows, None));
        }
        let Prepared { statement, columns } = self.prepared(&query.sql).await?;
        let params = bind_params(&statement, query)?;
        let rows = (self.starts)
            .then(
                &self.client,
                std::pin::pin!(self.client.query_raw(&statement, params.iter())),
            )
            .await?;
        Ok((rows, Some(columns)))
    }

    /// Runs one operation: poisons the connection while it is in flight, applies the
    /// command timeout.
    async fn run<T>(&mut self, op: impl AsyncFnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let limit = self.command_timeout;
        self.run_within(limit, op).await
    }

    /// [`PgConnection::run`] with `limit` for the command timeout.
    async fn run_within<T>(
        &mut self,
        limit: Option<Duration>,
        op: impl AsyncFnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        self.starts.check()?;
        let guard = self.start()?;
        let canceller = self.canceller.clone();
        let cancel = || {
            let canceller = canceller.clone();
            async move {
                let (token, tls) = &*canceller;
                let _ = token.cancel_query(tls.clone()).await;
            }
        };
        let driver = self.driver.clone();
        // Pinned here, and only referred to below: a future passed on by value is stored
        // again in each async function it passes through.
        let operation = std::pin::pin!(Flushed {
            operation: op(self),
            driver,
        });
        let (result, timed) = super::with_command_timeout(limit, operation, cancel, |e| {
            e.code() == Some(SqlState::QUERY_CANCELED.code())
        })
        .await;
        guard.end_timed(timed, session_lost(&result));
        result
    }

    pub(crate) async fn execute(&mut self, query: BoundQuery) -> Result<ExecuteResult> {
        self.run(async move |this| {
            let (rows, _) = this.send_query(&query).await?;
            let mut rows = std::pin::pin!(rows);
            let mut returned = Value::Null;
            let mut first = true;
            while let Some(row) = rows.try_next().await.map_err(map_error)? {
                if first && !row.is_empty() {
                    returned = decode(&row, 0)?;
                }
                first = false;
            }
            Ok(ExecuteResult {
                rows_affected: rows.rows_affected().unwrap_or(0),
                last_insert_id: None,
                returned,
            })
        })
        .await
    }

    pub(crate) async fn execute_many(
        &mut self,
        query: BoundQuery,
        rows: Vec<Vec<Value>>,
    ) -> Result<u64> {
        self.run(async move |this| {
            // A plain `INSERT ... VALUES (...)` goes as multi-row INSERTs of up to
            // `BATCH_ROWS` rows; anything else once per row. Each (statement, values) is sent
            // at once below.
            let width = query.names.len();
            // (statement, values, first row, rows): the rows are named only in an error.
            let mut sends: Vec<(Batch, Vec<Value>, usize, usize)> = Vec::new();
            if let Some((head, tuple)) = super::split_values_clause(&query.sql)
                .filter(|(head, tuple)| width > 0 && numbers_all_placeholders(head, tuple, width))
            {
                let per_batch = BATCH_ROWS.min(MAX_PARAMETERS / width).max(1);
                let mut rows = rows.into_iter().peekable();
                let mut first = 0;
                while rows.peek().is_some() {
                    let batch: Vec<Vec<Value>> = rows.by_ref().take(per_batch).collect();
                    let sql = multi_row_insert(head, tuple, width, batch.len());
                    let stmt = this.batch(sql.into()).await?;
                    let count = batch.len();
                    sends.push((stmt, batch.into_iter().flatten().collect(), first, count));
                    first += count;
                }
            } else {
                let stmt = this.batch(query.sql.clone()).await?;
                for (i, values) in rows.into_iter().enumerate() {
                    sends.push((stmt.clone(), values, i, 1));
                }
            }
            let bound = sends
                .iter()
                .map(|(send, values, first, count)| {
                    let Batch::Prepared(stmt) = send else {
                        return Ok(Vec::new()); // sent in text form, as it is
                    };
                    bind_values(stmt, values, &query.names).map_err(|e| {
                        let at = match count {
                            1 => format!("row {first}"),
                            _ => format!("rows {first} to {}", first + count - 1),
                        };
                        Error::new(e.kind(), format!("{at}: {e}"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            // Every statement is sent at once (tokio-postgres pipelines concurrent requests)
            // inside a transaction or savepoint: one round trip, all rows or none.
            let (open, close, undo) = if query.in_transaction {
                (
                    "SAVEPOINT databases_execute_many",
                    "RELEASE SAVEPOINT databases_execute_many",
                    "ROLLBACK TO SAVEPOINT databases_execute_many; RELEASE SAVEPOINT databases_execute_many",
                )
            } else {
                ("BEGIN", "COMMIT", "ROLLBACK")
            };
            // Transaction starts not sent yet go first, in the same write.
            let client = &this.client;
            let deferred = this.starts.take();
            let start = async {
                match &deferred {
                    Some(starts) => client.batch_execute(&starts.sql).await,
                    None => Ok(()),
                }
            };
            let begin = client.batch_execute(open);
            let names = &query.names;
            let inserts = futures_util::future::try_join_all(
                sends
                    .iter()
                    .zip(&bound)
                    .map(|((send, values, ..), params)| async move {
                        match send {
                            Batch::Prepared(stmt) => client.execute_raw(stmt, params.iter()).await,
                            Batch::Unprepared(sql) => {
                                let rows = unprepared(client, sql, values, names).await?;
                                let mut rows = std::pin::pin!(rows);
                                while rows.try_next().await?.is_some() {}
                                Ok(rows.rows_affected().unwrap_or(0))
                            }
                        }
                    }),
            );
            let (started, began, counts) = if this.command_timeout.is_none() {
                let (started, began, counts) =
                    futures_util::future::join3(start, begin, inserts).await;
                (started, began, Some(counts))
            } else {
                // A command timeout's cancellation that stopped the start or the `BEGIN`
                // would let inserts sent with them run outside any transaction: with a
                // command timeout, the inserts wait for both.
                let (started, began) = futures_util::future::join(start, begin).await;
                let counts = match (&started, &began) {
                    (Ok(()), Ok(())) => Some(inserts.await),
                    _ => None,
                };
                (started, began, counts)
            };
            if let Err(e) = started {
                this.starts.failed |= deferred.is_some_and(|starts| starts.outermost);
                return Err(start_error(
                    map_error(e),
                    counts.as_ref().is_some_and(Result::is_ok),
                ));
            }
            // From here on, a failed transaction statement of our own leaves the session's
            // transaction state unknown: the connection is not used again.
            let unsure = |e: tokio_postgres::Error| {
                this.poisoned.set_unsure();
                map_error(e)
            };
            began.map_err(unsure)?;
            match counts {
                Some(Ok(counts)) => {
                    client.batch_execute(close).await.map_err(unsure)?;
                    Ok(counts.iter().sum())
                }
                Some(Err(e)) => {
                    client.batch_execute(undo).await.map_err(unsure)?;
                    Err(map_error(e))
                }
                None => unreachable!("the inserts are sent after a start and BEGIN that succeeded"),
            }
        })
        .await
    }

    pub(crate) async fn fetch(
        &mut self,
        query: BoundQuery,
        limit: Option<usize>,
    ) -> Result<Vec<Record>> {
        self.run(async move |this| {
            let (rows, columns) = this.send_query(&query).await?;
            let mut rows = std::pin::pin!(rows);
            let mut out = columns.map(Rows::new);
            // Rows past the limit are read and dropped: the connection must end idle.
            while let Some(row) = rows.try_next().await.map_err(map_error)? {
                let out = out.get_or_insert_with(|| Rows::new(columns_of_row(&query.sql, &row)));
                if limit.is_none_or(|l| out.len() < l) {
                    out.push(|values| decode_row(&row, values))?;
                }
            }
            Ok(out.map_or_else(Vec::new, Rows::into_records))
        })
        .await
    }

    /// Sends the query and returns a stream of its rows, which owns everything it needs.
    pub(crate) async fn stream(
        &mut self,
        query: BoundQuery,
        keep: super::Keep,
    ) -> Result<BoxStream<'static, Result<Record>>> {
        self.starts.check()?;
        let guard = self.start()?;
        let driver = self.driver.clone();
        let opened = Flushed {
            driver,
            operation: async { self.send_query(&query).await },
        }
        .await;
        match opened {
            Ok((rows, columns)) => Ok(Box::pin(PgRows {
                rows: Box::pin(rows),
                columns,
                sql: query.sql.clone(),
                guard: Some(guard),
                keep,
            })),
            Err(e) => {
                guard.end(e.kind() == ErrorKind::ConnectionLost);
                Err(e)
            }
        }
    }

    /// Starts a transaction with `sql` (`BEGIN ...`) without a round trip of its own: the
    /// `BEGIN` goes out with the transaction's first statement, both sent before either
    /// answer is read. A transaction that ends before sending anything sends nothing.
    pub(crate) fn begin(&mut self, sql: String) -> Result<()> {
        self.savepoint(1, sql)
    }

    /// Starts the transaction at `level` (`SAVEPOINT sp_N` inside an open one) the same
    /// way: with the next statement.
    pub(crate) fn savepoint(&mut self, level: u32, sql: String) -> Result<()> {
        self.starts.push(level, sql)
    }

    /// Forgets the start of `level` and of the levels inside it if they have not gone out,
    /// for a transaction rolled back from `Drop`: true when `level`'s had not (the server has
    /// nothing of that level to roll back).
    pub(crate) fn forget(&mut self, level: u32) -> bool {
        self.starts.forget(level)
    }

    /// Ends the transaction at `level` with `sql` (`COMMIT`, `RELEASE SAVEPOINT sp_N`, or a
    /// rollback). A level that sent nothing since it started ends without a round trip: its
    /// start never went out.
    pub(crate) async fn finish(&mut self, level: u32, sql: String) -> Result<()> {
        if self.starts.end_unsent(level, self.poisoned.is_set()) {
            return Ok(());
        }
        self.control(sql).await
    }

    pub(crate) async fn control(&mut self, sql: String) -> Result<()> {
        self.starts.before_control(&sql);
        let limit = self.command_timeout.filter(|_| !super::is_rollback(&sql));
        self.run_within(limit, async move |this| {
            (this.starts)
                .then(
                    &this.client,
                    std::pin::pin!(this.client.batch_execute(&sql)),
                )
                .await
        })
        .await
    }
}

/// The rows of an `iterate`, decoded as they arrive.
struct PgRows {
    rows: std::pin::Pin<Box<tokio_postgres::RowStream>>,
    /// `None` until the first row for a statement sent unprepared.
    columns: Option<Arc<Columns>>,
    sql: Arc<str>,
    guard: Option<InFlight>,
    /// Dropped early, leave the connection usable: tokio-postgres reads and drops the rest
    /// of the result before the next statement's, so no cancel request is sent.
    keep: super::Keep,
}

impl Drop for PgRows {
    fn drop(&mut self) {
        if self.keep.load(Ordering::SeqCst)
            && let Some(g) = self.guard.take()
        {
            g.done();
        }
    }
}

impl futures_core::Stream for PgRows {
    type Item = Result<Record>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        match self.rows.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(row))) => {
                let mut values = Vec::with_capacity(row.len());
                let this = &mut *self;
                let columns = this
                    .columns
                    .get_or_insert_with(|| columns_of_row(&this.sql, &row))
                    .clone();
                Poll::Ready(Some(
                    decode_row(&row, &mut values).map(|()| Record::new(columns, values)),
                ))
            }
            Poll::Ready(Some(Err(e))) => {
                let e = map_error(e);
                if let Some(g) = self.guard.take() {
                    g.end(e.kind() == ErrorKind::ConnectionLost);
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                if let Some(g) = self.guard.take() {
                    g.done();
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A statement of `execute_many`, ready to send.
#[derive(Clone)]
enum Batch {
    Prepared(Statement),
    /// With the statement cache off (see [`unprepared`]).
    Unprepared(Arc<str>),
}

/// The type of a parameter sent without one: the server infers it from where the
/// placeholder stands, as for a statement prepared without parameter types.
static UNSPECIFIED: std::sync::LazyLock<Type> = std::sync::LazyLock::new(|| {
    Type::new(
        "unspecified".to_owned(),
        0,
        Kind::Pseudo,
        "pg_catalog".to_owned(),
    )
});

/// Sends `sql` with `values` without a prepared statement of its own, for a connection pooler
/// in transaction mode (PgBouncer before 1.21), which may hand each round trip a different
/// server session: a statement prepared in one round trip and run in the next may not exist
/// there. Parse, bind, describe and execute go in one message through the unnamed
/// statement, each value in its text form with no declared type, so the server reads it as
/// the type the statement needs where its placeholder stands ([`TextParam`]); the rows come
/// in the binary format, decoded as usual. Bytes are the exception: they go as `bytea`,
/// which a text column refuses, where their text form would be stored as text.
fn unprepared<'a>(
    client: &'a Client,
    sql: &'a str,
    values: &'a [Value],
    names: &'a [String],
) -> impl Future<Output = std::result::Result<tokio_postgres::RowStream, tokio_postgres::Error>> + 'a
{
    let params = values
        .iter()
        .zip(names.iter().cycle())
        .map(|(value, name)| {
            let ty = match value {
                Value::Bytes(_) => Type::BYTEA,
                _ => UNSPECIFIED.clone(),
            };
            (TextParam { value, name }, ty)
        });
    client.query_typed_raw(sql, params)
}

/// The column names of a result of `sql` sent unprepared, read off one of its rows (shared
/// per SQL text, see `shared_columns`).
fn columns_of_row(sql: &str, row: &tokio_postgres::Row) -> Arc<Columns> {
    thread_local! {
        static CACHE: std::cell::RefCell<crate::SqlMap<Arc<Columns>>> =
            std::cell::RefCell::default();
    }
    CACHE.with_borrow_mut(|cache| {
        super::shared_columns(cache, sql, row.columns().iter().map(|c| c.name()))
    })
}

fn bind_params<'q>(stmt: &Statement, query: &'q BoundQuery) -> Result<Vec<PgParam<'q>>> {
    bind_values(stmt, &query.values, &query.names)
}

/// Pairs `values` with their parameter names (`names` again for each further row of a
/// multi-row statement), checking their number against the statement's placeholders.
fn bind_values<'q>(
    stmt: &Statement,
    values: &'q [Value],
    names: &'q [String],
) -> Result<Vec<PgParam<'q>>> {
    let types = stmt.params();
    if types.len() != values.len() {
        return Err(Error::new(
            ErrorKind::InvalidParameter,
            format!(
                "the statement has {} parameter placeholder(s) but {} value(s) were bound; \
                 write parameters as :name",
                types.len(),
                values.len()
            ),
        ));
    }
    Ok(values
        .iter()
        .zip(names.iter().cycle())
        .map(|(value, name)| PgParam { value, name })
        .collect())
}

/// True when the placeholders of an `INSERT ... VALUES` are `$1` to `$width`, all in its
/// tuple (none before `VALUES`): then copies of the tuple can be numbered on.
fn numbers_all_placeholders(head: &str, tuple: &str, width: usize) -> bool {
    // Every `$` of the tuple starts a placeholder (no `$tag$` quoting to renumber inside).
    let only_placeholders = tuple
        .split('$')
        .skip(1)
        .all(|after| after.starts_with(|c: char| c.is_ascii_digit()));
    let mut seen = vec![false; width];
    for n in placeholders(tuple) {
        match n.checked_sub(1).and_then(|i| seen.get_mut(i)) {
            Some(slot) => *slot = true,
            None => return false,
        }
    }
    only_placeholders && placeholders(head).next().is_none() && seen.iter().all(|s| *s)
}

/// The numbers of the `$n` placeholders in `sql`, in order.
fn placeholders(sql: &str) -> impl Iterator<Item = usize> + '_ {
    sql.split('$')
        .skip(1)
        .filter_map(|after| leading_number(after).map(|(n, _)| n))
}

/// The number `text` starts with, and the text after it.
fn leading_number(text: &str) -> Option<(usize, &str)> {
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let n = text[..digits].parse().ok()?;
    Some((n, &text[digits..]))
}

/// `head` followed by `rows` copies of `tuple`, the placeholders of copy `r` numbered on from
/// those before it (`$1` becomes `$(1 + r * width)`).
fn multi_row_insert(head: &str, tuple: &str, width: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + rows * (tuple.len() + 8));
    sql.push_str(head);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        let mut rest = tuple;
        while let Some(at) = rest.find('$') {
            sql.push_str(&rest[..=at]);
            rest = &rest[at + 1..];
            if let Some((n, after)) = leading_number(rest) {
                sql.push_str(&(n + r * width).to_string());
                rest = after;
            }
        }
        sql.push_str(rest);
    }
    sql
}

/// Appends the values of `row` to `values`.
fn decode_row(row: &tokio_postgres::Row, values: &mut Vec<Value>) -> Result<()> {
    let start = values.len();
    // Filled with NULLs first, then overwritten in place (see `set_from_sql`).
    values.extend(std::iter::repeat_with(|| Value::Null).take(row.len()));
    for (i, slot) in values[start..].iter_mut().enumerate() {
        decode_into(row, i, slot)?;
    }
    Ok(())
}

/// The value of column `i` of `row`.
fn decode(row: &tokio_postgres::Row, i: usize) -> Result<Value> {
    let mut value = Value::Null;
    decode_into(row, i, &mut value)?;
    Ok(value)
}

/// Decodes column `i` of `row` into `slot`. The column's bytes are taken as they are and
/// decoded by [`set_from_sql`]; the large error is built only on failure.
#[inline]
fn decode_into(row: &tokio_postgres::Row, i: usize, slot: &mut Value) -> Result<()> {
    match row.try_get::<_, RawColumn<'_>>(i) {
        Ok(RawColumn(None)) => *slot = Value::Null,
        Ok(RawColumn(Some(raw))) => set_from_sql(row.columns()[i].type_(), raw, slot)
            .map_err(|e| decode_error(row, i, e))?,
        Err(e) => return Err(decode_error(row, i, e)),
    }
    Ok(())
}

#[cold]
fn decode_error(
    row: &tokio_postgres::Row,
    i: usize,
    e: impl Into<Box<dyn StdError + Send + Sync>>,
) -> Error {
    let e = e.into();
    let column = &row.columns()[i];
    Error::decode(format!(
        "column '{}' of type {}: {e}",
        column.name(),
        column.type_().name()
    ))
    .with_source(e)
}

type BoxError = Box<dyn StdError + Sync + Send>;

/// The bytes of a column of any type, `None` for NULL, not decoded yet.
struct RawColumn<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for RawColumn<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Self(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Self(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Built-in type OIDs (pg_type.dat), for dispatching on a number instead of comparing
/// `Type`s one by one.
mod oid {
    pub(super) const BOOL: u32 = 16;
    pub(super) const BYTEA: u32 = 17;
    pub(super) const CHAR: u32 = 18;
    pub(super) const NAME: u32 = 19;
    pub(super) const INT8: u32 = 20;
    pub(super) const INT2: u32 = 21;
    pub(super) const INT4: u32 = 23;
    pub(super) const TEXT: u32 = 25;
    pub(super) const OID: u32 = 26;
    pub(super) const JSON: u32 = 114;
    pub(super) const FLOAT4: u32 = 700;
    pub(super) const FLOAT8: u32 = 701;
    pub(super) const UNKNOWN: u32 = 705;
    pub(super) const BPCHAR: u32 = 1042;
    pub(super) const VARCHAR: u32 = 1043;
    pub(super) const DATE: u32 = 1082;
    pub(super) const TIME: u32 = 1083;
    pub(super) const TIMESTAMP: u32 = 1114;
    pub(super) const TIMESTAMPTZ: u32 = 1184;
    pub(super) const INTERVAL: u32 = 1186;
    pub(super) const TIMETZ: u32 = 1266;
    pub(super) const NUMERIC: u32 = 1700;
    pub(super) const VOID: u32 = 2278;
    pub(super) const UUID: u32 = 2950;
    pub(super) const JSONB: u32 = 3802;
}

/// PostgreSQL's day 0 (2000-01-01) counted as chrono counts days from the common era
/// (0001-01-01 is day 1).
const PG_EPOCH_DAY: i32 = 730_120;

/// A `timestamp` (or `timestamptz`, in UTC): microseconds from 2000-01-01 00:00.
///
/// Split into a day and a time of day directly: postgres-types adds a `Duration` to the
/// epoch through chrono's checked arithmetic, 4–5% of a Python `fetch_all` of rows with a
/// timestamp column.
fn timestamp_from_sql(raw: &[u8]) -> Result<NaiveDateTime, BoxError> {
    const DAY: i64 = 86_400_000_000;
    let micros = postgres_protocol::types::timestamp_from_sql(raw)?;
    let of_day = micros.rem_euclid(DAY);
    let date = i32::try_from(micros.div_euclid(DAY))
        .ok()
        .and_then(|day| day.checked_add(PG_EPOCH_DAY))
        .and_then(NaiveDate::from_num_days_from_ce_opt);
    // `of_day` is below a day's microseconds, so both fit.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let time = NaiveTime::from_num_seconds_from_midnight_opt(
        (of_day / 1_000_000) as u32,
        (of_day % 1_000_000) as u32 * 1000,
    );
    // `infinity` and `-infinity` (i64::MAX and MIN) are out of chrono's range too.
    date.zip(time)
        .map(|(date, time)| date.and_time(time))
        .ok_or_else(|| "value too large to decode".into())
}

/// A `date`: days from 2000-01-01.
fn date_from_sql(raw: &[u8]) -> Result<NaiveDate, BoxError> {
    postgres_protocol::types::date_from_sql(raw)?
        .checked_add(PG_EPOCH_DAY)
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .ok_or_else(|| "value too large to decode".into())
}

/// The value of a column of type `ty`.
#[cfg(test)]
fn from_sql(ty: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    let mut value = Value::Null;
    set_from_sql(ty, raw, &mut value)?;
    Ok(value)
}

/// Decodes a column of type `ty` into `slot`.
///
/// Each arm writes its value into the slot. Returned (`Result<Value, _>`) or pushed, the
/// value went through a stack temporary, and copying it from there stalled on the narrower
/// stores that had just built it: `perf annotate` put about 10% of a 10,000-row
/// `fetch_all` on that one load.
fn set_from_sql(ty: &Type, raw: &[u8], slot: &mut Value) -> Result<(), BoxError> {
    use postgres_protocol::types as t;
    match ty.oid() {
        oid::BOOL => *slot = Value::Bool(t::bool_from_sql(raw)?),
        oid::INT2 => *slot = Value::Int(t::int2_from_sql(raw)?.into()),
        oid::INT4 => *slot = Value::Int(t::int4_from_sql(raw)?.into()),
        oid::INT8 => *slot = Value::Int(t::int8_from_sql(raw)?),
        oid::OID => *slot = Value::Int(t::oid_from_sql(raw)?.into()),
        oid::FLOAT4 => *slot = Value::Float(t::float4_from_sql(raw)?.into()),
        oid::FLOAT8 => *slot = Value::Float(t::float8_from_sql(raw)?),
        oid::NUMERIC => *slot = numeric_from_sql(raw)?,
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::UNKNOWN | oid::CHAR => {
            *slot = Value::Text(t::text_from_sql(raw)?.to_owned());
        }
        oid::BYTEA => *slot = Value::Bytes(t::bytea_from_sql(raw).to_vec()),
        oid::DATE => *slot = Value::Date(date_from_sql(raw)?),
        oid::TIME => *slot = Value::Time(NaiveTime::from_sql(ty, raw)?),
        oid::TIMETZ => {
            let mut buf = raw;
            let micros = read_i64(&mut buf)?;
            let zone = read_i32(&mut buf)?;
            let time = NaiveTime::MIN + chrono::Duration::microseconds(micros);
            // The wire format counts seconds west of UTC.
            let offset = FixedOffset::west_opt(zone).ok_or("invalid time zone offset")?;
            *slot = Value::TimeTz(time, offset);
        }
        oid::TIMESTAMP => *slot = Value::DateTime(timestamp_from_sql(raw)?),
        oid::TIMESTAMPTZ => {
            *slot = Value::DateTimeTz(timestamp_from_sql(raw)?.and_utc().fixed_offset());
        }
        oid::INTERVAL => {
            let mut buf = raw;
            let microseconds = read_i64(&mut buf)?;
            let days = read_i32(&mut buf)?;
            let months = read_i32(&mut buf)?;
            *slot = Value::Interval {
                months,
                days,
                microseconds,
            };
        }
        oid::UUID => *slot = Value::Uuid(uuid::Uuid::from_bytes(t::uuid_from_sql(raw)?)),
        oid::JSON | oid::JSONB => *slot = Value::Json(serde_json::Value::from_sql(ty, raw)?),
        // What a function that returns nothing returns (`pg_sleep`, `pg_advisory_lock`).
        oid::VOID => *slot = Value::Null,
        _ => match ty.kind() {
            Kind::Enum(_) => *slot = Value::Text(t::text_from_sql(raw)?.to_owned()),
            Kind::Domain(base) => set_from_sql(base, raw, slot)?,
            Kind::Array(member) => {
                let array = t::array_from_sql(raw)?;
                // Collected one by one: the header's counts are not trusted for capacity
                // (a corrupt one would ask for gigabytes), only the bytes actually there.
                let mut dims = Vec::new();
                let mut header = array.dimensions();
                while let Some(d) = header.next()? {
                    dims.push(
                        usize::try_from(d.len)
                            .map_err(|_| BoxError::from("negative array length"))?,
                    );
                }
                let mut flat = Vec::new();
                let mut values = array.values();
                while let Some(v) = values.next()? {
                    match v {
                        None => flat.push(Value::Null),
                        Some(bytes) => {
                            let mut value = Value::Null;
                            set_from_sql(member, bytes, &mut value)?;
                            flat.push(value);
                        }
                    }
                }
                let count = dims.iter().try_fold(1_usize, |n, &d| n.checked_mul(d));
                if !dims.is_empty() && count != Some(flat.len()) {
                    return Err("array dimensions do not match its element count".into());
                }
                *slot = nest(flat, &dims);
            }
            // Text-like extension types (citext) use the text format.
            _ if ty.name() == "citext" => {
                *slot = Value::Text(t::text_from_sql(raw)?.to_owned());
            }
            _ => {
                return Err(format!(
                    "type {} is not supported; cast the column to text in the query (col::text)",
                    ty.name()
                )
                .into());
            }
        },
    }
    Ok(())
}

/// Shapes a flat list of array elements into nested arrays, one level per dimension.
fn nest(flat: Vec<Value>, dims: &[usize]) -> Value {
    match dims {
        [] | [_] => Value::Array(flat),
        [_, inner @ ..] => {
            // Saturating: a header with a zero dimension (no elements) may pair it with
            // huge others, whose product would overflow.
            let size = inner
                .iter()
                .try_fold(1_usize, |n, &d| n.checked_mul(d))
                .unwrap_or(usize::MAX);
            let mut items = flat.into_iter();
            let mut out = Vec::new();
            loop {
                let chunk: Vec<Value> = items.by_ref().take(size.max(1)).collect();
                if chunk.is_empty() {
                    break;
                }
                out.push(nest(chunk, inner));
            }
            Value::Array(out)
        }
    }
}

fn read_i64(buf: &mut &[u8]) -> Result<i64, BoxError> {
    let (head, rest) = buf.split_first_chunk::<8>().ok_or("message too short")?;
    *buf = rest;
    Ok(i64::from_be_bytes(*head))
}

fn read_i32(buf: &mut &[u8]) -> Result<i32, BoxError> {
    let (head, rest) = buf.split_first_chunk::<4>().ok_or("message too short")?;
    *buf = rest;
    Ok(i32::from_be_bytes(*head))
}

fn read_i16(buf: &mut &[u8]) -> Result<i16, BoxError> {
    let (head, rest) = buf.split_first_chunk::<2>().ok_or("message too short")?;
    *buf = rest;
    Ok(i16::from_be_bytes(*head))
}

/// Decodes a binary `numeric`: a [`Value::Decimal`] when it fits in 28 digits, its exact text
/// otherwise; NaN and infinities as floats.
fn numeric_from_sql(raw: &[u8]) -> Result<Value, BoxError> {
    let text = numeric_text(raw)?;
    Ok(match text.as_str() {
        "NaN" => Value::Float(f64::NAN),
        "Infinity" => Value::Float(f64::INFINITY),
        "-Infinity" => Value::Float(f64::NEG_INFINITY),
        _ => Decimal::from_str_exact(&text).map_or(Value::Text(text), Value::Decimal),
    })
}

fn numeric_text(raw: &[u8]) -> Result<String, BoxError> {
    let mut buf = raw;
    let ndigits = usize::try_from(read_i16(&mut buf)?).map_err(|_| "invalid numeric")?;
    let weight = i32::from(read_i16(&mut buf)?);
    let sign = u16::from_be_bytes(read_i16(&mut buf)?.to_be_bytes());
    let dscale = usize::try_from(read_i16(&mut buf)?).map_err(|_| "invalid numeric scale")?;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits = (0..ndigits)
        .map(|_| read_i16(&mut buf))
        .collect::<Result<Vec<_>, _>>()?;
    let group = |i: i32| -> i16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                out.push_str(&group(i).to_string());
            } else {
                out.push_str(&format!("{:04}", group(i)));
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", group(i)));
            i += 1;
        }
        frac.truncate(dscale);
        out.push_str(&frac);
    }
    Ok(out)
}

/// Encodes decimal text (`-12.3400`) as a binary `numeric`.
fn numeric_to_sql(text: &str, out: &mut BytesMut) -> Result<(), BoxError> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part
            .bytes()
            .chain(frac_part.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(format!("'{text}' is not a decimal number").into());
    }
    let int_part = int_part.trim_start_matches('0');
    let dscale = frac_part.len();
    // Pad to whole groups of four digits on both sides of the point.
    let int_pad = (4 - int_part.len() % 4) % 4;
    let frac_pad = (4 - frac_part.len() % 4) % 4;
    let padded = format!(
        "{}{int_part}{frac_part}{}",
        "0".repeat(int_pad),
        "0".repeat(frac_pad)
    );
    let mut groups: Vec<i16> = padded
        .as_bytes()
        .chunks(4)
        .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0')))
        .collect();
    let int_groups = (int_part.len() + int_pad) / 4;
    let mut weight = i32::try_from(int_groups).map_err(|_| "numeric too large")? - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let ndigits = i16::try_from(groups.len()).map_err(|_| "numeric too long")?;
    out.put_i16(ndigits);
    out.put_i16(i16::try_from(weight).map_err(|_| "numeric too large")?);
    out.put_u16(if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_i16(i16::try_from(dscale).map_err(|_| "numeric scale too large")?);
    for g in groups {
        out.put_i16(g);
    }
    Ok(())
}

/// A parameter value, converted to whatever type the server declared for its placeholder.
#[derive(Debug)]
struct PgParam<'a> {
    value: &'a Value,
    name: &'a str,
}

/// The error of a parameter that does not fit its placeholder's type; names the parameter.
#[derive(Debug)]
struct ParamError(String);

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for ParamError {}

impl ToSql for PgParam<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        to_sql(self.value, ty, out).map_err(|why| {
            Box::new(ParamError(format!(
                "parameter ':{}': cannot send {} as {} ({why})",
                self.name,
                self.value.type_name(),
                ty.name()
            ))) as BoxError
        })
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres_types::to_sql_checked!();
}

/// A parameter sent in its text form with no declared type (see [`unprepared`]).
struct TextParam<'a> {
    value: &'a Value,
    name: &'a str,
}

impl std::fmt::Debug for TextParam<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "parameter ':{}'", self.name)
    }
}

impl ToSql for TextParam<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self.value {
            Value::Null => return Ok(IsNull::Yes),
            Value::Bytes(bytes) if *ty == Type::BYTEA => {
                out.put_slice(bytes);
                return Ok(IsNull::No);
            }
            _ => {}
        }
        write_text(self.value, out).map_err(|why| {
            Box::new(ParamError(format!(
                "parameter ':{}': cannot send {} ({why})",
                self.name,
                self.value.type_name()
            ))) as BoxError
        })?;
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, ty: &Type) -> postgres_types::Format {
        if *ty == Type::BYTEA {
            postgres_types::Format::Binary
        } else {
            postgres_types::Format::Text
        }
    }

    postgres_types::to_sql_checked!();
}

/// Writes the text form of `value` as PostgreSQL reads it for any type it may stand for:
/// a date and time without a zone as UTC (`+00`, which a `timestamp` ignores), as the
/// binary form sends it; one with a zone as the same instant in UTC.
fn write_text(value: &Value, out: &mut BytesMut) -> std::result::Result<(), BoxError> {
    use std::fmt::Write as _;
    match value {
        // Only inside an array: a NULL parameter sends no text.
        Value::Null => out.put_slice(b"NULL"),
        Value::Bool(b) => out.put_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => write!(out, "{i}")?,
        Value::UInt(u) => write!(out, "{u}")?,
        Value::Float(f) if f.is_nan() => out.put_slice(b"NaN"),
        Value::Float(f) if f.is_infinite() => {
            out.put_slice(if *f > 0.0 { b"Infinity" } else { b"-Infinity" });
        }
        Value::Float(f) => write!(out, "{f}")?,
        Value::Decimal(d) => write!(out, "{d}")?,
        Value::Text(s) => out.put_slice(s.as_bytes()),
        Value::Bytes(bytes) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.reserve(2 + 2 * bytes.len());
            out.put_slice(b"\\x");
            for b in bytes {
                out.put_u8(HEX[usize::from(b >> 4)]);
                out.put_u8(HEX[usize::from(b & 15)]);
            }
        }
        Value::Date(d) => write_date(*d, out)?,
        Value::Time(t) => write!(out, "{}", t.format("%H:%M:%S%.f"))?,
        Value::TimeTz(t, offset) => write!(out, "{}{offset}", t.format("%H:%M:%S%.f"))?,
        Value::DateTime(dt) => write_utc(*dt, out)?,
        Value::DateTimeTz(dt) => write_utc(dt.naive_utc(), out)?,
        Value::Uuid(u) => write!(out, "{u}")?,
        Value::Json(j) => write!(out, "{j}")?,
        Value::Interval {
            months,
            days,
            microseconds,
        } => write!(out, "{months} mons {days} days {microseconds} microseconds")?,
        Value::Array(items) => {
            out.put_u8(b'{');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                match item {
                    Value::Null | Value::Array(_) => write_text(item, out)?,
                    _ => {
                        // Quoted, with `"` and `\` escaped.
                        let mut text = BytesMut::new();
                        write_text(item, &mut text)?;
                        out.put_u8(b'"');
                        for &b in text.iter() {
                            if b == b'"' || b == b'\\' {
                                out.put_u8(b'\\');
                            }
                            out.put_u8(b);
                        }
                        out.put_u8(b'"');
                    }
                }
            }
            out.put_u8(b'}');
        }
        #[allow(unreachable_patterns, reason = "Value is non-exhaustive")]
        _ => return Err("it has no text form".into()),
    }
    Ok(())
}

/// `d` as PostgreSQL's date input reads it.
fn write_date(d: NaiveDate, out: &mut BytesMut) -> std::fmt::Result {
    use std::fmt::Write as _;
    let (year, era) = year_and_era(d.year());
    write!(out, "{year:04}-{:02}-{:02}{era}", d.month(), d.day())
}

/// `dt`, taken as UTC, as PostgreSQL's timestamp input reads it.
fn write_utc(dt: NaiveDateTime, out: &mut BytesMut) -> std::fmt::Result {
    use std::fmt::Write as _;
    let (year, era) = year_and_era(dt.year());
    write!(
        out,
        "{year:04}-{:02}-{:02} {}+00{era}",
        dt.month(),
        dt.day(),
        dt.format("%H:%M:%S%.6f")
    )
}

/// A proleptic Gregorian year as PostgreSQL writes it: years before 1 count back from 1 BC.
fn year_and_era(year: i32) -> (i32, &'static str) {
    if year < 1 {
        (1 - year, " BC")
    } else {
        (year, "")
    }
}

fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    ) || matches!(ty.kind(), Kind::Enum(_))
        || ty.name() == "citext"
}

fn to_sql(value: &Value, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    use postgres_protocol::types as t;
    if let Kind::Domain(base) = ty.kind() {
        return to_sql(value, base, out);
    }
    match (value, ty) {
        (Value::Null, _) => return Ok(IsNull::Yes),
        (Value::Bool(b), &Type::BOOL) => t::bool_to_sql(*b, out),
        (Value::Int(i), _) => return int_to_sql(i128::from(*i), ty, out),
        (Value::UInt(u), _) => return int_to_sql(i128::from(*u), ty, out),
        (Value::Float(f), &Type::FLOAT8) => t::float8_to_sql(*f, out),
        #[allow(
            clippy::cast_possible_truncation,
            reason = "float8 to float4 rounds as the server would"
        )]
        (Value::Float(f), &Type::FLOAT4) => t::float4_to_sql(*f as f32, out),
        (Value::Float(f), &Type::NUMERIC) => {
            if !f.is_finite() {
                return Err("NaN and infinities are not sent as numeric".into());
            }
            numeric_to_sql(&Decimal::try_from(*f)?.to_string(), out)?;
        }
        (Value::Decimal(d), &Type::NUMERIC) => numeric_to_sql(&d.to_string(), out)?,
        (Value::Decimal(d), &Type::FLOAT8) => t::float8_to_sql(
            rust_decimal::prelude::ToPrimitive::to_f64(d).ok_or("out of range")?,
            out,
        ),
        (Value::Text(s), ty) if is_text(ty) => t::text_to_sql(s, out),
        (Value::Text(s), &Type::JSON | &Type::JSONB) => {
            if *ty == Type::JSONB {
                out.put_u8(1);
            }
            out.put_slice(s.as_bytes());
        }
        (Value::Text(s), &Type::NUMERIC) => numeric_to_sql(s.trim(), out)?,
        (Value::Text(s), &Type::UUID) => {
            t::uuid_to_sql(*uuid::Uuid::from_str(s.trim())?.as_bytes(), out)
        }
        (Value::Text(s), &Type::DATE) => return NaiveDate::from_str(s.trim())?.to_sql(ty, out),
        (Value::Text(s), &Type::TIME) => return NaiveTime::from_str(s.trim())?.to_sql(ty, out),
        (Value::Text(s), &Type::TIMESTAMP) => {
            return Value::Text(s.clone())
                .get::<NaiveDateTime>()?
                .to_sql(ty, out);
        }
        (Value::Text(s), &Type::TIMESTAMPTZ) => {
            return Value::Text(s.clone())
                .get::<DateTime<FixedOffset>>()?
                .to_sql(ty, out);
        }
        (Value::Bytes(b), &Type::BYTEA) => t::bytea_to_sql(b, out),
        (Value::Date(d), &Type::DATE) => return d.to_sql(ty, out),
        (Value::Time(tm), &Type::TIME) => return tm.to_sql(ty, out),
        (Value::TimeTz(tm, offset), &Type::TIMETZ) => {
            let micros = (*tm - NaiveTime::MIN)
                .num_microseconds()
                .ok_or("time out of range")?;
            out.put_i64(micros);
            out.put_i32(-offset.local_minus_utc());
        }
        (Value::DateTime(dt), &Type::TIMESTAMP) => return dt.to_sql(ty, out),
        (Value::DateTime(dt), &Type::TIMESTAMPTZ) => return dt.and_utc().to_sql(ty, out),
        (Value::DateTime(dt), &Type::DATE) if dt.time() == NaiveTime::MIN => {
            return dt.date().to_sql(ty, out);
        }
        (Value::DateTimeTz(dt), &Type::TIMESTAMPTZ) => return dt.to_sql(ty, out),
        (Value::DateTimeTz(dt), &Type::TIMESTAMP) => return dt.naive_utc().to_sql(ty, out),
        (Value::Uuid(u), &Type::UUID) => t::uuid_to_sql(*u.as_bytes(), out),
        (Value::Json(j), &Type::JSON | &Type::JSONB) => return j.to_sql(ty, out),
        (
            Value::Interval {
                months,
                days,
                microseconds,
            },
            &Type::INTERVAL,
        ) => {
            out.put_i64(*microseconds);
            out.put_i32(*days);
            out.put_i32(*months);
        }
        (Value::Array(items), ty) => {
            let Kind::Array(member) = ty.kind() else {
                return Err("an array needs an array column".into());
            };
            let len = i32::try_from(items.len()).map_err(|_| "array too long")?;
            t::array_to_sql(
                Some(postgres_protocol::types::ArrayDimension {
                    len,
                    lower_bound: 1,
                }),
                member.oid(),
                items.iter(),
                |item, buf| {
                    Ok(match to_sql(item, member, buf)? {
                        IsNull::Yes => postgres_protocol::IsNull::Yes,
                        IsNull::No => postgres_protocol::IsNull::No,
                    })
                },
                out,
            )?;
        }
        // Any scalar into a text column: its text form.
        (v, ty) if is_text(ty) => match v {
            Value::Decimal(d) => t::text_to_sql(&d.to_string(), out),
            Value::Float(f) => t::text_to_sql(&f.to_string(), out),
            Value::Bool(b) => t::text_to_sql(if *b { "true" } else { "false" }, out),
            Value::Uuid(u) => t::text_to_sql(&u.to_string(), out),
            Value::Date(d) => t::text_to_sql(&d.to_string(), out),
            Value::Time(tm) => t::text_to_sql(&tm.to_string(), out),
            Value::DateTime(dt) => t::text_to_sql(&dt.to_string(), out),
            Value::DateTimeTz(dt) => t::text_to_sql(&dt.to_rfc3339(), out),
            Value::Json(j) => t::text_to_sql(&j.to_string(), out),
            _ => return Err("no text form".into()),
        },
        _ => return Err("the types do not match".into()),
    }
    Ok(IsNull::No)
}

fn int_to_sql(i: i128, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    use postgres_protocol::types as t;
    let range = || format!("{i} is out of range for {}", ty.name());
    match *ty {
        Type::INT2 => t::int2_to_sql(i16::try_from(i).map_err(|_| range())?, out),
        Type::INT4 => t::int4_to_sql(i32::try_from(i).map_err(|_| range())?, out),
        Type::INT8 => t::int8_to_sql(i64::try_from(i).map_err(|_| range())?, out),
        Type::OID => t::oid_to_sql(u32::try_from(i).map_err(|_| range())?, out),
        #[allow(
            clippy::cast_precision_loss,
            reason = "an integer sent to a float column rounds"
        )]
        Type::FLOAT8 => t::float8_to_sql(i as f64, out),
        #[allow(
            clippy::cast_precision_loss,
            reason = "an integer sent to a float column rounds"
        )]
        Type::FLOAT4 => t::float4_to_sql(i as f32, out),
        Type::NUMERIC => numeric_to_sql(&i.to_string(), out)?,
        Type::BOOL if i == 0 || i == 1 => t::bool_to_sql(i == 1, out),
        Type::JSON | Type::JSONB => {
            if *ty == Type::JSONB {
                out.put_u8(1);
            }
            out.put_slice(i.to_string().as_bytes());
        }
        ref other if is_text(other) => t::text_to_sql(&i.to_string(), out),
        _ => return Err("the types do not match".into()),
    }
    Ok(IsNull::No)
}

/// The message of a driver error without its wrapper text.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => match e.source() {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// Whether `result` failed because the server session is gone.
fn session_lost<T>(result: &Result<T>) -> bool {
    matches!(result, Err(e) if e.kind() == ErrorKind::ConnectionLost)
}

fn map_error(e: tokio_postgres::Error) -> Error {
    if let Some(param) = e.source().and_then(|s| s.downcast_ref::<ParamError>()) {
        let message = param.0.clone();
        return Error::new(ErrorKind::InvalidParameter, message).with_source(e);
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().clone();
        let kind = match code {
            SqlState::UNIQUE_VIOLATION => ErrorKind::UniqueViolation,
            SqlState::FOREIGN_KEY_VIOLATION => ErrorKind::ForeignKeyViolation,
            SqlState::NOT_NULL_VIOLATION => ErrorKind::NotNullViolation,
            SqlState::CHECK_VIOLATION => ErrorKind::CheckViolation,
            SqlState::SYNTAX_ERROR => ErrorKind::Syntax,
            SqlState::ADMIN_SHUTDOWN | SqlState::CRASH_SHUTDOWN => ErrorKind::ConnectionLost,
            _ => ErrorKind::Database,
        };
        let mut message = format!("{kind}: {}", db.message());
        if let Some(detail) = db.detail() {
            message.push_str(&format!(" ({detail})"));
        }
        let db_message = db.message().to_owned();
        return Error::new(kind, message)
            .with_db(code.code(), db_message)
            .with_source(e);
    }
    if e.is_closed() {
        return Error::connection_lost(format!(
            "the PostgreSQL connection was closed: {}",
            describe(&e)
        ))
        .with_source(e);
    }
    let message = format!("PostgreSQL error: {}", describe(&e));
    Error::new(ErrorKind::Database, message).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_unprepared_go_in_postgres_text_forms() {
        let text = |v: Value| {
            let mut out = BytesMut::new();
            write_text(&v, &mut out).unwrap();
            String::from_utf8(out.to_vec()).unwrap()
        };
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(text(Value::Float(f64::NEG_INFINITY)), "-Infinity");
        assert_eq!(text(Value::Float(0.1)), "0.1");
        assert_eq!(text(Value::Bytes(vec![0, 0xab, 0xff])), "\\x00abff");
        assert_eq!(text(Value::Date(date(-43, 3, 15))), "0044-03-15 BC");
        assert_eq!(
            text(Value::DateTime(
                date(2024, 1, 31).and_hms_micro_opt(10, 0, 0, 5).unwrap()
            )),
            "2024-01-31 10:00:00.000005+00"
        );
        let at = DateTime::parse_from_rfc3339("2024-01-31T10:00:00+05:30").unwrap();
        assert_eq!(text(Value::DateTimeTz(at)), "2024-01-31 04:30:00.000000+00");
        assert_eq!(
            text(Value::Interval {
                months: -1,
                days: 2,
                microseconds: 3
            }),
            "-1 mons 2 days 3 microseconds"
        );
        assert_eq!(
            text(Value::Array(vec![
                Value::from("a\"b\\"),
                Value::Null,
                Value::Array(vec![Value::Int(1)]),
                Value::Bytes(vec![1]),
            ])),
            r#"{"a\"b\\",NULL,{"1"},"\\x01"}"#
        );
    }

    #[test]
    fn timestamps_and_dates_decode_as_postgres_types_does() {
        // 0001-01-01 and the largest date chrono holds, each side of 2000-01-01, day
        // boundaries, leap days, and a spread of values in between.
        let first = NaiveDate::from_ymd_opt(1, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let epoch = NaiveDate::from_ymd_opt(2000, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let us = |t: NaiveDateTime| t.signed_duration_since(epoch).num_microseconds().unwrap();
        let mut micros = vec![
            0,
            1,
            -1,
            86_399_999_999,
            86_400_000_000,
            -86_400_000_000,
            -86_400_000_001,
            us(first),
            us(NaiveDateTime::MAX),
            us(NaiveDate::from_ymd_opt(2024, 2, 29)
                .unwrap()
                .and_hms_micro_opt(23, 59, 59, 999_999)
                .unwrap()),
            us(NaiveDate::from_ymd_opt(1900, 3, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()),
        ];
        let mut x: i64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            micros.push(x % us(NaiveDateTime::MAX));
        }
        for t in micros {
            let raw = t.to_be_bytes();
            let theirs = NaiveDateTime::from_sql(&Type::TIMESTAMP, &raw).unwrap();
            assert_eq!(timestamp_from_sql(&raw).unwrap(), theirs, "{t}");
            let day = i32::try_from(t.div_euclid(86_400_000_000)).unwrap();
            let raw = day.to_be_bytes();
            let theirs = NaiveDate::from_sql(&Type::DATE, &raw).unwrap();
            assert_eq!(date_from_sql(&raw).unwrap(), theirs, "{day}");
        }
        // `infinity`, `-infinity` and values past chrono's range are errors, as before.
        for t in [i64::MAX, i64::MIN, us(NaiveDateTime::MAX) + 86_400_000_000] {
            let raw = t.to_be_bytes();
            assert!(NaiveDateTime::from_sql(&Type::TIMESTAMP, &raw).is_err());
            assert_eq!(
                timestamp_from_sql(&raw).unwrap_err().to_string(),
                "value too large to decode"
            );
        }
        for day in [i32::MAX, i32::MIN] {
            assert!(date_from_sql(&day.to_be_bytes()).is_err());
        }
        assert!(timestamp_from_sql(&[0; 4]).is_err());
    }

    /// Counts its wakes (the driving task).
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A driver around a connection future that counts its polls and, while `wake_in_poll`
    /// is set, wakes its waker from inside its poll (as something arriving meanwhile would);
    /// and the task's wake count.
    fn counted_driver() -> (Driver, Arc<Count>, Arc<Count>, Arc<AtomicBool>) {
        let (polls, wake_in_poll) = (Arc::new(Count::default()), Arc::new(AtomicBool::new(false)));
        let (p, w) = (polls.clone(), wake_in_poll.clone());
        let driver = Driver::new(std::future::poll_fn(move |cx| {
            p.0.fetch_add(1, Ordering::SeqCst);
            if w.load(Ordering::SeqCst) {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }));
        let task = Arc::new(Count::default());
        driver.wake.task.register(&Waker::from(task.clone()));
        (driver, task, polls, wake_in_poll)
    }

    fn count(c: &Count) -> usize {
        c.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_wake_held_back_for_an_operation_is_never_lost() {
        // The operation waits: its poll of the connection does the task's work.
        let (driver, task, polls, _) = counted_driver();
        let mut hold = driver.hold();
        driver.waker.wake_by_ref();
        hold.flush = true;
        drop(hold);
        assert_eq!((count(&task), count(&polls)), (0, 1));

        // The operation finished: it polls nothing, so the held wake goes to the task.
        let (driver, task, polls, _) = counted_driver();
        let hold = driver.hold();
        driver.waker.wake_by_ref();
        drop(hold);
        assert_eq!((count(&task), count(&polls)), (1, 0));

        // A wake during the operation's poll of the connection may come after the part
        // of the poll it concerns: delivered.
        let (driver, task, polls, wake_in_poll) = counted_driver();
        wake_in_poll.store(true, Ordering::SeqCst);
        driver.hold().flush = true;
        assert_eq!((count(&task), count(&polls)), (1, 1));

        // The task is polling the connection (it holds the lock): the operation leaves the
        // work to it, and wakes it so that it polls again.
        let (driver, task, polls, _) = counted_driver();
        let state = driver.lock();
        let mut hold = driver.hold();
        driver.waker.wake_by_ref();
        hold.flush = true;
        drop(hold);
        drop(state);
        assert_eq!((count(&task), count(&polls)), (1, 0));

        // The operation's poll panics: the hold ends, its wake goes to the task.
        let (driver, task, _, _) = counted_driver();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _hold = driver.hold();
            driver.waker.wake_by_ref();
            panic!("an operation's poll panics");
        }));
        assert!(panicked.is_err());
        assert_eq!(count(&task), 1);
        driver.wake.task.register(&Waker::from(task.clone())); // as the woken task does
        driver.waker.wake_by_ref();
        assert_eq!(count(&task), 2, "wakes are no longer held");

        // No operation: wakes go straight to the task.
        let (driver, task, _, _) = counted_driver();
        driver.waker.wake_by_ref();
        assert_eq!(count(&task), 1);
    }

    #[test]
    fn multi_row_inserts_number_their_placeholders_on() {
        let head = "INSERT INTO t (a, b, c) VALUES ";
        let tuple = "($1, $2 + $1, CAST($3 AS float8))";
        assert!(numbers_all_placeholders(head, tuple, 3));
        assert_eq!(
            multi_row_insert(head, tuple, 3, 3),
            "INSERT INTO t (a, b, c) VALUES ($1, $2 + $1, CAST($3 AS float8)), \
             ($4, $5 + $4, CAST($6 AS float8)), ($7, $8 + $7, CAST($9 AS float8))"
        );
        // Placeholders outside the tuple, a gap, or dollar quoting: one row at a time.
        assert!(!numbers_all_placeholders(
            "INSERT INTO t_$1 VALUES ",
            "($2)",
            2
        ));
        assert!(!numbers_all_placeholders(head, "($1, $3)", 3));
        assert!(!numbers_all_placeholders(head, "($1, $$x$$)", 1));
        assert!(!numbers_all_placeholders(head, "($1, $4)", 3));
        assert!(numbers_all_placeholders(head, "($2, $1)", 2));
        assert_eq!(
            placeholders("$1, $22::int, $x").collect::<Vec<_>>(),
            [1, 22]
        );
    }

    #[test]
    fn oid_constants_are_the_types_oids() {
        for (number, ty) in [
            (oid::BOOL, Type::BOOL),
            (oid::BYTEA, Type::BYTEA),
            (oid::CHAR, Type::CHAR),
            (oid::NAME, Type::NAME),
            (oid::INT8, Type::INT8),
            (oid::INT2, Type::INT2),
            (oid::INT4, Type::INT4),
            (oid::TEXT, Type::TEXT),
            (oid::OID, Type::OID),
            (oid::JSON, Type::JSON),
            (oid::FLOAT4, Type::FLOAT4),
            (oid::FLOAT8, Type::FLOAT8),
            (oid::UNKNOWN, Type::UNKNOWN),
            (oid::VOID, Type::VOID),
            (oid::BPCHAR, Type::BPCHAR),
            (oid::VARCHAR, Type::VARCHAR),
            (oid::DATE, Type::DATE),
            (oid::TIME, Type::TIME),
            (oid::TIMESTAMP, Type::TIMESTAMP),
            (oid::TIMESTAMPTZ, Type::TIMESTAMPTZ),
            (oid::INTERVAL, Type::INTERVAL),
            (oid::TIMETZ, Type::TIMETZ),
            (oid::NUMERIC, Type::NUMERIC),
            (oid::UUID, Type::UUID),
            (oid::JSONB, Type::JSONB),
        ] {
            assert_eq!(number, ty.oid(), "{ty}");
        }
    }

    /// The types `from_sql` decodes itself, scalar and array.
    const FUZZED: &[Type] = &[
        Type::BOOL,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::OID,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::TEXT,
        Type::BPCHAR,
        Type::NAME,
        Type::BYTEA,
        Type::DATE,
        Type::TIME,
        Type::TIMETZ,
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::INTERVAL,
        Type::UUID,
        Type::JSON,
        Type::JSONB,
        Type::INT4_ARRAY,
        Type::INT8_ARRAY,
        Type::TEXT_ARRAY,
        Type::NUMERIC_ARRAY,
        Type::TIMESTAMPTZ_ARRAY,
        Type::INTERVAL_ARRAY,
        Type::JSONB_ARRAY,
        Type::BOOL_ARRAY,
    ];

    const FUZZED_ARRAYS: &[Type] = &[
        Type::INT4_ARRAY,
        Type::INT8_ARRAY,
        Type::TEXT_ARRAY,
        Type::NUMERIC_ARRAY,
        Type::DATE_ARRAY,
        Type::TIMETZ_ARRAY,
        Type::INTERVAL_ARRAY,
        Type::JSONB_ARRAY,
    ];

    /// The binary array format: a header, then each element as a length and its bytes.
    fn array_bytes(
        ndim: i32,
        has_nulls: i32,
        element_oid: u32,
        dims: &[(i32, i32)],
        elements: &[Option<Vec<u8>>],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(ndim.to_be_bytes());
        out.extend(has_nulls.to_be_bytes());
        out.extend(element_oid.to_be_bytes());
        for (len, lower) in dims {
            out.extend(len.to_be_bytes());
            out.extend(lower.to_be_bytes());
        }
        for e in elements {
            match e {
                None => out.extend((-1_i32).to_be_bytes()),
                Some(bytes) => {
                    out.extend(i32::try_from(bytes.len()).unwrap().to_be_bytes());
                    out.extend(bytes);
                }
            }
        }
        out
    }

    proptest::proptest! {
        /// Fuzzing: any bytes under any decoded type give a value or an error, never a panic.
        #[test]
        fn decoding_any_bytes_never_panics(
            ty in proptest::sample::select(FUZZED),
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48),
        ) {
            let _ = from_sql(&ty, &raw);
        }

        /// Fuzzing arrays: well-formed headers with any dimensions (empty, negative, huge,
        /// disagreeing with the element count) and any element bytes.
        #[test]
        fn decoding_any_array_never_panics(
            ty in proptest::sample::select(FUZZED_ARRAYS),
            ndim_delta in -1_i32..=1,
            has_nulls in 0_i32..=1,
            oid in proptest::prelude::any::<u32>(),
            dims in proptest::collection::vec(
                (proptest::prop_oneof![0_i32..4, proptest::prelude::any::<i32>()],
                 proptest::prelude::any::<i32>()),
                0..7,
            ),
            elements in proptest::collection::vec(
                proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20)),
                0..12,
            ),
        ) {
            let ndim = i32::try_from(dims.len()).unwrap() + ndim_delta;
            let raw = array_bytes(ndim, has_nulls, oid, &dims, &elements);
            let _ = from_sql(&ty, &raw);
        }
    }

    /// Found by `decoding_any_array_never_panics` in CI: a zero dimension makes the element
    /// count 0, and the product of the others overflowed while nesting.
    #[test]
    fn an_empty_array_with_huge_inner_dimensions_decodes() {
        let huge = (i32::MAX, 1);
        let raw = array_bytes(4, 0, 23, &[(0, 1), huge, huge, huge], &[]);
        let ty = Type::INT4_ARRAY;
        assert_eq!(from_sql(&ty, &raw).unwrap(), Value::Array(Vec::new()));
    }

    fn roundtrip(text: &str) -> String {
        let mut buf = BytesMut::new();
        numeric_to_sql(text, &mut buf).unwrap();
        numeric_text(&buf).unwrap()
    }

    #[test]
    fn numeric_binary_round_trips() {
        for (input, output) in [
            ("0", "0"),
            ("1", "1"),
            ("-1", "-1"),
            ("12345678.9", "12345678.9"),
            ("0.0001", "0.0001"),
            ("0.00012", "0.00012"),
            ("10000", "10000"),
            ("-0.5", "-0.5"),
            ("12.3400", "12.3400"),
            (
                "123456789012345678901234567890.123456789",
                "123456789012345678901234567890.123456789",
            ),
            ("007.10", "7.10"),
            ("0.000", "0.000"),
        ] {
            assert_eq!(roundtrip(input), output, "{input}");
        }
        let mut buf = BytesMut::new();
        assert!(numeric_to_sql("1e5", &mut buf).is_err());
        assert!(numeric_to_sql("", &mut buf).is_err());
    }

    #[test]
    fn numeric_values_fall_back_to_text_beyond_decimal() {
        let mut buf = BytesMut::new();
        numeric_to_sql("12.5", &mut buf).unwrap();
        assert_eq!(
            numeric_from_sql(&buf).unwrap(),
            Value::Decimal(Decimal::new(125, 1))
        );
        let big = "123456789012345678901234567890.5";
        let mut buf = BytesMut::new();
        numeric_to_sql(big, &mut buf).unwrap();
        assert_eq!(numeric_from_sql(&buf).unwrap(), Value::Text(big.into()));
    }

    #[test]
    fn options_from_urls() {
        let c = PgConfig::from_url(
            &DatabaseUrl::parse("postgresql://u@h/db?sslmode=verify-full").unwrap(),
        )
        .unwrap();
        assert_eq!(c.ssl, SslMode::VerifyFull);
        let c = PgConfig::from_url(&DatabaseUrl::parse("postgresql://u@h/db?ssl=true").unwrap())
            .unwrap();
        assert_eq!(c.ssl, SslMode::Require);
        let c = PgConfig::from_url(&DatabaseUrl::parse("postgresql://u@h/db").unwrap()).unwrap();
        assert_eq!(c.ssl, SslMode::Prefer);
        assert!(c.statement_cache);
        let c = PgConfig::from_url(
            &DatabaseUrl::parse("postgresql://u@/db?host=/run/postgresql&statement_cache=false")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(c.target, "/run/postgresql");
        assert_eq!(c.ssl, SslMode::Disable);
        assert!(!c.statement_cache);
        let e = PgConfig::from_url(
            &DatabaseUrl::parse("postgresql://u@h/db?sslmode=sometimes").unwrap(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("'sslmode'"), "{e}");
        let e = PgConfig::from_url(
            &DatabaseUrl::parse("postgresql://u@h/db?command_timeout=x").unwrap(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("'command_timeout'"), "{e}");
    }

    #[test]
    fn nesting_multi_dimensional_arrays() {
        let flat: Vec<Value> = (1..=6).map(Value::Int).collect();
        assert_eq!(
            nest(flat, &[2, 3]),
            Value::Array(vec![Value::array([1, 2, 3]), Value::array([4, 5, 6])])
        );
    }
}
