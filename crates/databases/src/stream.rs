//! [`RowStream`]: the rows of `iterate`, produced as they are read.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::connection::Connection;
use crate::error::Result;
use crate::record::Record;

/// A stream of records that holds only a few hundred rows in memory at a time.
///
/// It is a [`futures_core::Stream`]; [`RowStream::try_next`] reads it without extra imports.
/// Dropping it early stops the query. A stream from [`crate::Database::iterate`] holds its own
/// pooled connection and releases it when the rows run out or the stream is dropped.
#[must_use = "a RowStream does nothing unless polled"]
pub struct RowStream<'a> {
    inner: BoxStream<'a, Result<Record>>,
    /// The connection the rows come from, when the stream owns it.
    conn: Option<Connection>,
}

impl<'a> RowStream<'a> {
    pub(crate) fn new(inner: BoxStream<'a, Result<Record>>) -> Self {
        Self { inner, conn: None }
    }

    pub(crate) fn owning(inner: BoxStream<'a, Result<Record>>, conn: Connection) -> Self {
        Self {
            inner,
            conn: Some(conn),
        }
    }

    /// The next record, `Ok(None)` at the end.
    pub async fn try_next(&mut self) -> Result<Option<Record>> {
        self.next().await.transpose()
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
