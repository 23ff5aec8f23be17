//! hyper answers a request it cannot parse itself (400 for a malformed
//! head, such as two different `Content-Length`s; 431 for too many or too
//! large headers; 414 for a URI too long) with an empty body, then closes
//! the connection: the router never sees the request. [`Enveloped`] wraps
//! a connection's socket and puts those answers in the contract's
//! envelope. It recognizes them by their shape: a response head alone,
//! with one of those statuses and `content-length: 0`. The router never
//! sends such a response (its every error has an envelope body), so
//! nothing else is touched.
//!
//! It also bounds how long a response may take to be read: once the
//! server has something to write, the client must take at least
//! [`MIN_PROGRESS`] bytes every [`WRITE_STALL`] until the response is
//! flushed, else the connection is closed (a client that asks for large
//! answers and never reads them would otherwise hold them, and the read
//! slots that made them, for as long as it liked).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long writing may go without [`MIN_PROGRESS`] bytes taken.
pub(super) const WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(30);
/// Bytes a client must take every [`WRITE_STALL`] while a response is
/// being written.
pub(super) const MIN_PROGRESS: usize = 64 * 1024;

/// Longest write inspected: hyper's automatic answers are a status line,
/// `content-length: 0` and a `date` header.
const INSPECTED: usize = 256;

/// A socket whose parse-error answers from hyper are put in the envelope.
#[derive(Debug)]
pub(super) struct Enveloped<S> {
    inner: S,
    /// The envelope answer still to write, and how much of it is written.
    pending: Vec<u8>,
    written: usize,
    /// While a response is being written: when writing stalls, and the
    /// bytes written since that deadline was last set.
    stall: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    progress: usize,
}

impl<S> Enveloped<S> {
    pub(super) fn new(inner: S) -> Self {
        Enveloped {
            inner,
            pending: Vec::new(),
            written: 0,
            stall: None,
            progress: 0,
        }
    }
}

/// The envelope answer for hyper's automatic answer `head`, if it is one.
fn envelope_for(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    if !text.ends_with("\r\n\r\n") {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    if !lower.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let (status, code, description) = match rest.get(..3)? {
        "400" => (400, "invalid_request", "the request is not valid HTTP/1.1 (a malformed request line or header, or conflicting Content-Length headers)"),
        "431" => (431, "headers_too_large", "the request has too many headers, or headers too large"),
        "414" => (414, "uri_too_long", "the request URI is too long"),
        _ => return None,
    };
    let reason = match status {
        400 => "Bad Request",
        431 => "Request Header Fields Too Large",
        _ => "URI Too Long",
    };
    let body = format!(
        "{{\"status\":{status},\"description\":\"{description}\",\"data\":{{\"error\":\"{code}\"}}}}"
    );
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S> Enveloped<S> {
    /// Counts `n` bytes written; a deadline starts with a response's
    /// first write and moves on with every [`MIN_PROGRESS`] bytes.
    fn progressed(&mut self, n: usize) {
        self.progress += n;
        if self.stall.is_none() || self.progress >= MIN_PROGRESS {
            self.progress = 0;
            self.stall = Some(Box::pin(tokio::time::sleep(WRITE_STALL)));
        }
    }

    /// An error once the deadline has passed (the waker is registered
    /// with it, so a client that takes nothing is noticed too).
    fn stalled(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading the response",
            )),
            Poll::Pending => Ok(()),
        }
    }

    /// `written` (a write's outcome) with the stall rules applied.
    fn watch(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                self.progressed(n);
                if let Err(e) = self.stalled(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => match self.stalled(cx) {
                Err(e) => Poll::Ready(Err(e)),
                Ok(()) => Poll::Pending,
            },
            error => error,
        }
    }
}

impl<S: AsyncWrite + Unpin> Enveloped<S> {
    /// Writes what is pending; ready once nothing is.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Takes `bytes` as written if they are an automatic answer (queuing
    /// its envelope instead).
    fn replaced(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > INSPECTED {
            return false;
        }
        match envelope_for(bytes) {
            Some(answer) => {
                self.pending = answer;
                self.written = 0;
                true
            }
            None => false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Enveloped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Enveloped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        if self.replaced(buf) {
            // Written once drained (now, or at the next write or flush).
            let _ = self.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total <= INSPECTED {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if self.replaced(&joined) {
                let _ = self.drain(cx)?;
                return Poll::Ready(Ok(total));
            }
        }
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        let flushed = std::task::ready!(Pin::new(&mut self.inner).poll_flush(cx));
        if flushed.is_ok() {
            // All written: idle until the next response.
            self.stall = None;
            self.progress = 0;
        }
        Poll::Ready(flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_s_bodiless_refusals_are_replaced() {
        let auto = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 19:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(envelope_for(auto).expect("replaced")).expect("text");
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(body["status"], 400);
        assert_eq!(body["data"]["error"], "invalid_request");
        let many = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(envelope_for(many).is_some());
        for kept in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 95\r\n\r\n",
        ] {
            assert!(envelope_for(kept).is_none(), "{}", String::from_utf8_lossy(kept));
        }
    }
}

#[cfg(test)]
mod stall_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client that takes nothing of a response is cut off after
    /// [`WRITE_STALL`]; one that takes it as it comes is not, however long.
    #[tokio::test(start_paused = true)]
    async fn a_response_nobody_reads_ends_the_connection() {
        let (server, mut client) = tokio::io::duplex(4096);
        let mut server = Enveloped::new(server);
        let answer = vec![b'x'; 1 << 20];
        let started = tokio::time::Instant::now();
        let written = server.write_all(&answer).await;
        let error = written.expect_err("nobody read it");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= WRITE_STALL);
        drop(client.read(&mut [0u8; 16]).await);

        let (server, mut client) = tokio::io::duplex(4096);
        let mut server = Enveloped::new(server);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut piece = [0u8; 4096];
            while got.len() < (1 << 20) {
                // Slowly, but at more than MIN_PROGRESS per WRITE_STALL.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let n = client.read(&mut piece).await.expect("read");
                got.extend_from_slice(&piece[..n]);
            }
            got.len()
        });
        server.write_all(&answer).await.expect("read as it came");
        server.flush().await.expect("flushed");
        assert_eq!(reader.await.expect("reader"), 1 << 20);
    }
}
