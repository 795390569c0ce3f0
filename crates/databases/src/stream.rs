//! [`RowStream`]: the rows of `iterate`, produced as they are read.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use std::sync::atomic::Ordering;

use crate::backend::Keep;
use crate::connection::Connection;
use crate::error::Result;
use crate::record::Record;

/// A stream of records that holds only a few hundred rows in memory at a time.
///
/// It is a [`futures_core::Stream`]; [`RowStream::try_next`] reads it without extra imports.
/// A stream from [`crate::Database::iterate`] holds its own pooled connection and releases it
/// when the rows run out or the stream is dropped; dropped early, it stops the query (and on
/// PostgreSQL and MySQL the connection is discarded). A stream from
/// [`Connection::iterate`] dropped early leaves its connection usable: the rest of the result
/// is read and thrown away before the connection's next statement (SQLite stops the
/// statement instead, which costs nothing); [`RowStream::cancel`] stops it on the server.
#[must_use = "a RowStream does nothing unless polled"]
pub struct RowStream<'a> {
    inner: BoxStream<'a, Result<Record>>,
    /// The connection the rows come from, when the stream owns it.
    conn: Option<Connection>,
    /// For a stream on a borrowed connection: cleared by [`RowStream::cancel`].
    keep: Option<Keep>,
}

impl<'a> RowStream<'a> {
    pub(crate) fn new(inner: BoxStream<'a, Result<Record>>) -> Self {
        Self {
            inner,
            conn: None,
            keep: None,
        }
    }

    pub(crate) fn keeping(mut self, keep: Keep) -> Self {
        self.keep = Some(keep);
        self
    }

    pub(crate) fn owning(inner: BoxStream<'a, Result<Record>>, conn: Connection) -> Self {
        Self {
            inner,
            conn: Some(conn),
            keep: None,
        }
    }

    /// The next record, `Ok(None)` at the end.
    pub async fn try_next(&mut self) -> Result<Option<Record>> {
        self.next().await.transpose()
    }

    /// Drops the stream and stops its statement on the server at once.
    ///
    /// Dropping a stream from [`Connection::iterate`] early keeps the connection usable: on
    /// PostgreSQL and MySQL the rest of the result is read and thrown away before the
    /// connection's next statement runs. `cancel` instead stops the statement (a cancel
    /// request on PostgreSQL, `KILL QUERY` on MySQL, an interrupt on SQLite), as dropping a
    /// stream from [`crate::Database::iterate`] does; on PostgreSQL and MySQL the connection
    /// is then discarded, and using it again is an error. Use it for a long query whose rest
    /// is not wanted when the connection is not needed afterwards.
    pub fn cancel(self) {
        if let Some(keep) = &self.keep {
            keep.store(false, Ordering::SeqCst);
        }
    }
}

impl Stream for RowStream<'_> {
    type Item = Result<Record>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(None) = polled {
            // Release the connection as soon as the rows are done.
            self.conn = None;
        }
        polled
    }
}

impl std::fmt::Debug for RowStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowStream").finish_non_exhaustive()
    }
}
