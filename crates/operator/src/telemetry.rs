//! Logging: structured, JSON in-cluster, human text on a terminal. Every formatted line passes
//! the token redactor ([`crate::redact`]) before it is written (DESIGN §7.3): whatever a field
//! holds — an agent's answer, a GitHub error body, a kube error — no credential reaches a log.

use crate::config::LogFormat;
use std::io::{IsTerminal, Write};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)?;
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let writer = Redacting::new(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(writer),
            )
            .try_init()?;
    } else {
        registry.with(fmt::layer().with_writer(writer)).try_init()?;
    }
    Ok(())
}

/// A [`MakeWriter`] whose writers redact tokens from what they write.
#[derive(Clone, Debug)]
pub struct Redacting<M> {
    inner: M,
}

impl<M> Redacting<M> {
    pub fn new(inner: M) -> Self {
        Self { inner }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter::new(self.inner.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        RedactingWriter::new(self.inner.make_writer_for(meta))
    }
}

/// The writer of one log event. The fmt layer writes each event as one complete line in one
/// call: that line is redacted and written at once (borrowed, no copy, when it holds no
/// token). Anything else — a partial line — is held until the line is complete (a token never
/// spans a line end) or the writer is dropped, so a token split across writes is still found.
#[derive(Debug)]
pub struct RedactingWriter<W: Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: Write> RedactingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::new(),
        }
    }

    /// Writes the complete lines held (all of them when `all`).
    fn drain(&mut self, all: bool) -> std::io::Result<()> {
        let end = if all {
            self.pending.len()
        } else {
            match self.pending.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None => return Ok(()),
            }
        };
        if end == 0 {
            return Ok(());
        }
        let rest = self.pending.split_off(end);
        let lines = std::mem::replace(&mut self.pending, rest);
        self.inner.write_all(&crate::redact::token_bytes(&lines))
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.pending.is_empty() && buf.last() == Some(&b'\n') {
            self.inner.write_all(&crate::redact::token_bytes(buf))?;
        } else {
            self.pending.extend_from_slice(buf);
            self.drain(false)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.drain(false)?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        // A log line that cannot be written has nowhere to be reported.
        let _ = self.drain(true);
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    const TOKEN: &str = "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";

    /// Collects what is written, and each write call.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().concat()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }

    #[test]
    fn a_whole_line_is_redacted_and_written_in_one_go() {
        let sink = Sink::default();
        let make = Redacting::new(sink.clone());
        let mut w = make.make_writer();
        w.write_all(format!("error=\"bad credentials {TOKEN}\"\n").as_bytes())
            .unwrap();
        assert_eq!(sink.writes(), 1, "written before the writer is dropped");
        drop(w);
        assert_eq!(sink.text(), "error=\"bad credentials ghp_[REDACTED]\"\n");
        let mut w = make.make_writer();
        w.write_all(b"nothing secret\n").unwrap();
        drop(w);
        assert_eq!(
            sink.text(),
            "error=\"bad credentials ghp_[REDACTED]\"\nnothing secret\n"
        );
    }

    #[test]
    fn a_token_split_across_writes_is_still_redacted() {
        let sink = Sink::default();
        let make = Redacting::new(sink.clone());
        let line = format!("{{\"message\":\"here: {TOKEN}\"}}\nsecond {TOKEN}");
        let bytes = line.as_bytes();
        let mut w = make.make_writer();
        for chunk in bytes.chunks(7) {
            w.write_all(chunk).unwrap();
        }
        // The complete line went out as soon as it was complete; the partial one waits.
        assert_eq!(sink.text(), "{\"message\":\"here: ghp_[REDACTED]\"}\n");
        w.flush().unwrap();
        assert_eq!(sink.text(), "{\"message\":\"here: ghp_[REDACTED]\"}\n");
        drop(w);
        assert_eq!(
            sink.text(),
            "{\"message\":\"here: ghp_[REDACTED]\"}\nsecond ghp_[REDACTED]"
        );
    }

    #[test]
    fn the_fmt_layer_logs_through_the_redactor_in_json_and_text() {
        for json in [true, false] {
            let sink = Sink::default();
            let writer = Redacting::new(sink.clone());
            let subscriber = tracing_subscriber::registry();
            let dispatch = if json {
                tracing::Dispatch::new(
                    subscriber.with(fmt::layer().json().with_ansi(false).with_writer(writer)),
                )
            } else {
                tracing::Dispatch::new(
                    subscriber.with(fmt::layer().with_ansi(false).with_writer(writer)),
                )
            };
            tracing::dispatcher::with_default(&dispatch, || {
                tracing::warn!(answer = %format!("the agent said {TOKEN}"), "agent {TOKEN}");
                tracing::info!(detail = ?format!("line\n{TOKEN}"), "debug-escaped");
            });
            let text = sink.text();
            assert!(!text.contains(&TOKEN[4..]), "json={json}: {text}");
            assert_eq!(
                text.matches("ghp_[REDACTED]").count(),
                3,
                "json={json}: {text}"
            );
            assert_eq!(text.lines().count(), 2, "json={json}: {text}");
        }
    }
}
