//! [`Mode::Flood`](super::Mode::Flood): answers no well-behaved agentapi gives, generated
//! lazily (a body is produced only as fast as the client reads it, so a flood costs the test
//! process no memory), each byte counted in [`super::FakeAgent::flood_bytes`].

use super::Flood;
use super::agent::Shared;
use bytes::Bytes;
use futures::StreamExt;
use http::header::CONTENT_TYPE;
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Bytes of one chunk of a body.
const CHUNK: usize = 64 * 1024;

/// The endpoints a flood answers; the others are served as usual (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flooded {
    Messages,
    Events,
    Any,
}

/// The flooding answer for `endpoint`, or `None` when this flood serves it as usual.
pub(crate) fn answer(
    shared: &Arc<Shared>,
    flood: Flood,
    endpoint: Flooded,
) -> Option<Response<Body>> {
    let (content_type, body) = match (flood, endpoint) {
        (Flood::HugeMessages { entries, bytes }, Flooded::Messages) => {
            ("application/json", huge_messages(entries, bytes))
        }
        (Flood::HugeMessages { entries, bytes }, Flooded::Events) => {
            ("text/event-stream", huge_replay(entries, bytes))
        }
        (Flood::EndlessLine, Flooded::Events) => ("text/event-stream", endless_line()),
        (Flood::SlowDrip { every }, _) => ("application/json", slow_drip(every)),
        _ => return None,
    };
    let counter = shared.clone();
    let counted = body.map(move |chunk: Bytes| {
        counter
            .flood_bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok::<_, Infallible>(Frame::data(chunk))
    });
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, content_type)
        .body(StreamBody::new(counted).boxed_unsync())
        .ok()?;
    Some(response)
}

type Chunks = futures::stream::BoxStream<'static, Bytes>;

/// `{"messages":[...]}` with `entries` messages of `bytes` characters each, alternately the
/// agent's and the user's.
fn huge_messages(entries: usize, bytes: usize) -> Chunks {
    let content = "x".repeat(bytes);
    let open = futures::stream::once(async { Bytes::from_static(b"{\"messages\":[") });
    let body = entries_in_chunks(entries, move |i, out| {
        let role = if i % 2 == 0 { "agent" } else { "user" };
        let comma = if i == 0 { "" } else { "," };
        out.push_str(&format!(
            "{comma}{{\"id\":{i},\"role\":\"{role}\",\"content\":\"{content}\",\"time\":\"2026-01-01T00:00:00Z\"}}"
        ));
    });
    let close = futures::stream::once(async { Bytes::from_static(b"]}") });
    open.chain(body).chain(close).boxed()
}

/// The event stream's replay of the same conversation (it never gets to the status event).
fn huge_replay(entries: usize, bytes: usize) -> Chunks {
    let content = "x".repeat(bytes);
    entries_in_chunks(entries, move |i, out| {
        let role = if i % 2 == 0 { "agent" } else { "user" };
        out.push_str(&format!(
            "event: message_update\ndata: {{\"id\":{i},\"role\":\"{role}\",\"message\":\"{content}\",\"time\":\"2026-01-01T00:00:00Z\"}}\n\n"
        ));
    })
    .chain(futures::stream::pending())
    .boxed()
}

/// Entries `0..entries`, each written by `entry`, in chunks of about [`CHUNK`] bytes (as a
/// server's write buffer sends them).
fn entries_in_chunks(
    entries: usize,
    entry: impl Fn(usize, &mut String) + Send + 'static,
) -> Chunks {
    futures::stream::unfold(0, move |next| {
        let mut out = String::new();
        let mut i = next;
        while i < entries && out.len() < CHUNK {
            entry(i, &mut out);
            i += 1;
        }
        let chunk = (!out.is_empty()).then(|| (Bytes::from(out), i));
        futures::future::ready(chunk)
    })
    .boxed()
}

/// `data: xxxx…` and never a line end.
fn endless_line() -> Chunks {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    futures::stream::once(async { Bytes::from_static(b"data: ") })
        .chain(futures::stream::repeat(chunk))
        .boxed()
}

/// One space every `every`, forever: valid so far as JSON, an unfinished line as events.
fn slow_drip(every: std::time::Duration) -> Chunks {
    futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(every).await;
        Some((Bytes::from_static(b" "), ()))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::super::{FakeAgent, Flood, Mode, Script};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Incoming;
    use std::time::{Duration, Instant};

    async fn agent(flood: Flood) -> FakeAgent {
        let script = Script {
            mode: Mode::Flood(flood),
            boot: Duration::ZERO,
            ..Script::default()
        };
        FakeAgent::start("127.0.0.1:0".parse().unwrap(), script)
            .await
            .unwrap()
    }

    /// `GET path`: the response's status and its body, once the headers arrived.
    async fn get(agent: &FakeAgent, path: &str) -> (u16, Incoming) {
        let stream = tokio::net::TcpStream::connect(agent.addr()).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header("host", agent.addr().to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
            .await
            .expect("headers at once")
            .unwrap();
        (response.status().as_u16(), response.into_body())
    }

    /// Reads until `n` bytes, the end, or `within` passed.
    async fn read(body: &mut Incoming, n: usize, within: Duration) -> (Vec<u8>, bool) {
        let deadline = tokio::time::Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < n {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return (got, false),
                Ok(None) => return (got, true),
                Ok(Some(frame)) => {
                    if let Ok(data) = frame.unwrap().into_data() {
                        got.extend_from_slice(&data);
                    }
                }
            }
        }
        (got, false)
    }

    #[tokio::test]
    async fn huge_messages_are_agentapi_shaped_and_made_only_as_fast_as_they_are_read() {
        let small = agent(Flood::HugeMessages {
            entries: 3,
            bytes: 5,
        })
        .await;
        let (status, mut body) = get(&small, "/messages").await;
        assert_eq!(status, 200);
        let (bytes, ended) = read(&mut body, usize::MAX, Duration::from_secs(5)).await;
        assert!(ended);
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let messages = parsed["messages"].as_array().unwrap();
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["agent", "user", "agent"]);
        assert_eq!(messages[1]["content"], "xxxxx");
        assert_eq!(messages[2]["id"], 2);
        assert_eq!(small.flood_bytes(), bytes.len() as u64);
        // The other endpoints answer as usual.
        let (status, mut body) = get(&small, "/status").await;
        assert_eq!(status, 200);
        let (bytes, _) = read(&mut body, usize::MAX, Duration::from_secs(5)).await;
        assert!(String::from_utf8_lossy(&bytes).contains("\"status\":\"stable\""));

        // A gigabyte, of which a client reads one MiB: hardly more is made.
        let huge = agent(Flood::HugeMessages {
            entries: 1_000_000,
            bytes: 1000,
        })
        .await;
        let (_, mut body) = get(&huge, "/messages").await;
        let (bytes, ended) = read(&mut body, 1 << 20, Duration::from_secs(10)).await;
        assert!(!ended && bytes.len() >= 1 << 20);
        let made = huge.flood_bytes();
        assert!(made < 32 << 20, "{made} bytes made for 1 MiB read");
        // Its event stream replays the same conversation as events.
        let (_, mut events) = get(&huge, "/events").await;
        let (bytes, _) = read(&mut events, 4096, Duration::from_secs(5)).await;
        assert!(String::from_utf8_lossy(&bytes).starts_with(
            "event: message_update\ndata: {\"id\":0,\"role\":\"agent\",\"message\":\"xxx"
        ));
    }

    #[tokio::test]
    async fn an_endless_line_never_ends() {
        let a = agent(Flood::EndlessLine).await;
        let (status, mut body) = get(&a, "/events").await;
        assert_eq!(status, 200);
        let (bytes, ended) = read(&mut body, 4 << 20, Duration::from_secs(10)).await;
        assert!(!ended && bytes.len() >= 4 << 20);
        assert!(bytes.starts_with(b"data: xxx"));
        assert!(!bytes.contains(&b'\n') && !bytes.contains(&b'\r'));
    }

    #[tokio::test]
    async fn a_slow_drip_sends_one_byte_per_step_and_never_finishes() {
        let a = agent(Flood::SlowDrip {
            every: Duration::from_millis(100),
        })
        .await;
        for path in ["/messages", "/status", "/events"] {
            let started = Instant::now();
            let (status, mut body) = get(&a, path).await;
            assert_eq!(status, 200);
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "headers at once"
            );
            let (bytes, ended) = read(&mut body, usize::MAX, Duration::from_millis(550)).await;
            assert!(!ended, "{path} never finishes");
            assert!(
                (3..=6).contains(&bytes.len()),
                "{path}: {} bytes in 550 ms",
                bytes.len()
            );
            assert!(bytes.iter().all(|b| *b == b' '));
        }
    }
}
