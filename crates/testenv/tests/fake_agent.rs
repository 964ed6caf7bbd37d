#![allow(clippy::expect_used, clippy::unwrap_used)]
//! The agentapi stand-in over real HTTP: the shapes of agentapi's OpenAPI description, its
//! refusal of a message while the agent works, its event stream, the scripted chatter and
//! faults; and the agent host serving session pods at their (loopback) pod IPs.

use bytes::Bytes;
use ccplant_testenv::fake_agent::{AgentHost, FakeAgent, Mode, Script};
use ccplant_testenv::{TestEnv, wait_for, wait_for_deletion};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(10);

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn send(addr: SocketAddr, method: Method, path: &str, body: Option<Value>) -> Response {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    let response = tokio::time::timeout(
        TIMEOUT,
        sender.send_request(request.body(Full::new(body)).unwrap()),
    )
    .await
    .expect("response in time")
    .expect("response");
    let (parts, body) = response.into_parts();
    Response {
        status: parts.status,
        headers: parts.headers,
        body: Some(body),
    }
}

struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Option<Incoming>,
}

impl Response {
    fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    async fn json(&mut self) -> Value {
        let body = self.body.take().expect("body read once");
        let bytes = body.collect().await.expect("body").to_bytes();
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("JSON body ({e}): {}", String::from_utf8_lossy(&bytes)))
    }
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let mut response = send(addr, Method::GET, path, None).await;
    assert_eq!(response.status, StatusCode::OK, "GET {path}");
    assert_eq!(response.content_type(), "application/json", "GET {path}");
    response.json().await
}

async fn post(addr: SocketAddr, content: &str, kind: &str) -> Response {
    send(
        addr,
        Method::POST,
        "/message",
        Some(json!({ "content": content, "type": kind })),
    )
    .await
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn assert_rfc3339(value: &Value) {
    let text = value.as_str().expect("time is a string");
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
}

/// Polls `/status` until it reports `want`, at most [`TIMEOUT`].
async fn wait_status(addr: SocketAddr, want: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let status = get_json(addr, "/status").await;
        if status["status"] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status not {want} after {TIMEOUT:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `GET /events` stream, read event by event, keeping the raw text.
struct Events {
    body: Incoming,
    buffer: String,
    raw: String,
}

impl Events {
    async fn open(addr: SocketAddr) -> Events {
        let response = send(addr, Method::GET, "/events", None).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.content_type(), "text/event-stream");
        assert_eq!(
            response.headers["cache-control"],
            "no-cache, no-store, must-revalidate"
        );
        Events {
            body: response.body.expect("body"),
            buffer: String::new(),
            raw: String::new(),
        }
    }

    /// The next event's name and data; `None` when the stream ended.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = None;
                let mut data = None;
                for line in block.lines().filter(|l| !l.is_empty()) {
                    if let Some(name) = line.strip_prefix("event: ") {
                        event = Some(name.to_string());
                    } else if let Some(json) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(json).expect("event data is JSON"));
                    } else {
                        panic!("unexpected line {line:?} in event {block:?}");
                    }
                }
                return Some((event.expect("event name"), data.expect("event data")));
            }
            let frame = tokio::time::timeout(TIMEOUT, self.body.frame())
                .await
                .expect("an event in time")?
                .expect("stream");
            if let Ok(data) = frame.into_data() {
                let text = std::str::from_utf8(&data).expect("UTF-8");
                self.buffer.push_str(text);
                self.raw.push_str(text);
            }
        }
    }

    /// Reads events until one named `event` satisfies `cond`; returns the events read.
    async fn until(&mut self, event: &str, cond: impl Fn(&Value) -> bool) -> Vec<(String, Value)> {
        let mut seen = Vec::new();
        loop {
            let next = self.next().await.expect("stream open");
            let done = next.0 == event && cond(&next.1);
            seen.push(next);
            if done {
                return seen;
            }
        }
    }
}

#[tokio::test]
async fn status_messages_and_post_follow_the_openapi_shapes() {
    let agent = FakeAgent::start(any_port(), Script::default())
        .await
        .unwrap();
    let addr = agent.addr();

    let status = get_json(addr, "/status").await;
    assert_eq!(
        keys(&status),
        ["$schema", "agent_type", "status", "transport"]
    );
    assert_eq!(status["status"], "running", "booting");
    assert_eq!(status["agent_type"], "claude");
    assert_eq!(status["transport"], "pty");
    assert_eq!(
        status["$schema"],
        format!("http://{addr}/schemas/StatusResponseBody.json")
    );
    wait_status(addr, "stable").await;

    let messages = get_json(addr, "/messages").await;
    assert_eq!(keys(&messages), ["$schema", "messages"]);
    let list = messages["messages"].as_array().unwrap();
    assert_eq!(list.len(), 1, "the start-up screen: {messages}");
    assert_eq!(keys(&list[0]), ["content", "id", "role", "time"]);
    assert_eq!(list[0]["id"], 0);
    assert_eq!(list[0]["role"], "agent");
    assert!(
        list[0]["content"]
            .as_str()
            .unwrap()
            .starts_with("Welcome to Claude Code")
    );
    assert_rfc3339(&list[0]["time"]);

    let mut response = post(addr, "  fix the login bug \n", "user").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.content_type(), "application/json");
    let body = response.json().await;
    assert_eq!(keys(&body), ["$schema", "ok"]);
    assert_eq!(body["ok"], true);
    assert_eq!(get_json(addr, "/status").await["status"], "running");
    let received = agent.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].content, "fix the login bug",
        "trimmed like agentapi"
    );

    wait_status(addr, "stable").await;
    let messages = get_json(addr, "/messages").await;
    let list = messages["messages"].as_array().unwrap();
    let summary: Vec<(i64, &str)> = list
        .iter()
        .map(|m| (m["id"].as_i64().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(summary, [(0, "agent"), (1, "user"), (2, "agent")]);
    assert_eq!(list[1]["content"], "fix the login bug");
    let reply = list[2]["content"].as_str().unwrap();
    assert!(
        reply.starts_with("working (1)") && reply.ends_with("Done."),
        "{reply:?}"
    );

    let mut raw = post(addr, "\u{1b}[A", "raw").await;
    assert_eq!(raw.status, StatusCode::OK);
    assert_eq!(raw.json().await["ok"], true);
    assert_eq!(agent.received().len(), 1, "raw messages are not recorded");
    assert_eq!(
        get_json(addr, "/messages").await["messages"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let counts = agent.requests();
    assert_eq!(counts.message_post, 2);
    assert!(counts.status >= 3, "{counts:?}");
    assert_eq!(counts.messages, 3);
    agent.stop().await;
}

#[tokio::test]
async fn post_while_running_is_refused_like_agentapi() {
    let script = Script {
        work: Script::FOREVER,
        ..Script::default()
    };
    let agent = FakeAgent::start(any_port(), script).await.unwrap();
    let addr = agent.addr();
    let refusal = json!({
        "$schema": format!("http://{addr}/schemas/ErrorModel.json"),
        "title": "Internal Server Error",
        "status": 500,
        "detail": "unexpected error occurred",
        "errors": [{
            "message": "failed to send message: message can only be sent when the agent is waiting for user input"
        }],
    });

    // While booting.
    let mut early = post(addr, "too early", "user").await;
    assert_eq!(early.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(early.content_type(), "application/problem+json");
    assert_eq!(early.json().await, refusal);

    wait_status(addr, "stable").await;
    assert_eq!(post(addr, "first", "user").await.status, StatusCode::OK);
    let mut second = post(addr, "second", "user").await;
    assert_eq!(second.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(second.content_type(), "application/problem+json");
    assert_eq!(second.json().await, refusal);
    let contents: Vec<String> = agent.received().into_iter().map(|r| r.content).collect();
    assert_eq!(contents, ["first"]);

    // Raw keystrokes go through while it works.
    assert_eq!(post(addr, "\u{3}", "raw").await.status, StatusCode::OK);

    // Validation by the schema comes first.
    let mut bad_type = post(addr, "x", "system").await;
    assert_eq!(bad_type.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = bad_type.json().await;
    assert_eq!(body["detail"], "validation failed");
    assert_eq!(body["errors"][0]["location"], "body.type");
    let mut missing = send(
        addr,
        Method::POST,
        "/message",
        Some(json!({"content": "x"})),
    )
    .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        missing.json().await["errors"][0]["message"],
        "expected required property type to be present"
    );

    // Once it is stable again, an empty message is refused for being empty.
    agent.set_script(Script::default());
    wait_status(addr, "stable").await;
    let mut empty = post(addr, "   ", "user").await;
    assert_eq!(empty.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        empty.json().await["errors"][0]["message"],
        "failed to send message: message must not be empty"
    );
    assert_eq!(agent.received().len(), 1);
    agent.stop().await;
}

#[tokio::test]
async fn events_replay_the_state_then_stream_live_changes() {
    let script = Script {
        boot: Duration::ZERO,
        chatter_per_sec: 20,
        ..Script::default()
    };
    let agent = FakeAgent::start(any_port(), script).await.unwrap();
    let addr = agent.addr();

    let mut first = Events::open(addr).await;
    let (event, data) = first.next().await.unwrap();
    assert_eq!(event, "message_update");
    assert_eq!(keys(&data), ["id", "message", "role", "time"]);
    assert_eq!(
        (data["id"].as_i64(), data["role"].as_str()),
        (Some(0), Some("agent"))
    );
    assert_rfc3339(&data["time"]);
    let (event, data) = first.next().await.unwrap();
    assert_eq!(event, "status_change");
    assert_eq!(data, json!({"status": "stable", "agent_type": "claude"}));
    // huma's framing: no id line, `event:` then `data:` and a blank line.
    assert!(
        first
            .raw
            .starts_with("event: message_update\ndata: {\"id\":0,")
    );
    assert!(
        first.raw.ends_with(
            "event: status_change\ndata: {\"status\":\"stable\",\"agent_type\":\"claude\"}\n\n"
        ),
        "{:?}",
        first.raw
    );

    assert_eq!(
        post(addr, "add a test", "user").await.status,
        StatusCode::OK
    );
    let live = first
        .until("status_change", |d| d["status"] == "stable")
        .await;
    assert_eq!(
        live[0],
        (
            "status_change".into(),
            json!({"status": "running", "agent_type": "claude"})
        )
    );
    assert_eq!(live[1].0, "message_update");
    assert_eq!(
        (live[1].1["id"].as_i64(), live[1].1["role"].as_str()),
        (Some(1), Some("user"))
    );
    assert_eq!(live[1].1["message"], "add a test");
    let updates: Vec<&Value> = live[2..live.len() - 1].iter().map(|(_, d)| d).collect();
    assert!(
        updates.len() >= 3,
        "the reply changes while running: {live:?}"
    );
    assert!(updates.iter().all(|d| d["id"] == 2 && d["role"] == "agent"));
    assert_eq!(
        updates.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .lines()
            .last(),
        Some("Done.")
    );

    let mut second = Events::open(addr).await;
    let mut replay = Vec::new();
    for _ in 0..4 {
        replay.push(second.next().await.unwrap());
    }
    let ids: Vec<Option<i64>> = replay[..3].iter().map(|(_, d)| d["id"].as_i64()).collect();
    assert_eq!(ids, [Some(0), Some(1), Some(2)]);
    assert_eq!(replay[3].1["status"], "stable");
    assert_eq!(agent.subscribers(), 2);

    // A subscriber that leaves is dropped; the other keeps receiving.
    drop(first);
    assert_eq!(post(addr, "and docs", "user").await.status, StatusCode::OK);
    let live = second
        .until("status_change", |d| d["status"] == "stable")
        .await;
    assert_eq!(live[1].1["id"], 3);
    assert_eq!(agent.subscribers(), 1);
    assert!(agent.events_sent() >= 2 + live.len() as u64 + 4);
    agent.stop().await;
}

#[tokio::test]
async fn chatter_follows_the_scripted_rate_until_the_script_says_stop() {
    let script = Script {
        boot: Duration::ZERO,
        work: Script::FOREVER,
        chatter_per_sec: 100,
        ..Script::default()
    };
    let agent = FakeAgent::start(any_port(), script.clone()).await.unwrap();
    let addr = agent.addr();
    let mut events = Events::open(addr).await;
    events.until("status_change", |_| true).await;
    assert_eq!(
        post(addr, "run forever", "user").await.status,
        StatusCode::OK
    );
    events.until("message_update", |d| d["id"] == 2).await;

    let window = Duration::from_secs(2);
    let start = Instant::now();
    let mut updates = 0u32;
    while start.elapsed() < window {
        let (event, data) = events.next().await.unwrap();
        assert_eq!((event.as_str(), &data["id"]), ("message_update", &json!(2)));
        updates += 1;
    }
    let rate = f64::from(updates) / start.elapsed().as_secs_f64();
    // Loose bounds: the machine is shared and busy; the point is "about 100", not 10 or 1000.
    assert!(
        (60.0..=140.0).contains(&rate),
        "{rate:.1} updates/s, want about 100"
    );
    assert_eq!(get_json(addr, "/status").await["status"], "running");

    agent.set_script(Script {
        work: Duration::ZERO,
        ..script
    });
    events
        .until("status_change", |d| d["status"] == "stable")
        .await;
    agent.stop().await;
}

/// Sends a request on a raw connection; returns what came back before the server closed it.
async fn raw_exchange(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream
        .write_all(
            format!("GET /status HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("closed in time");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn refuse_and_drop_modes_answer_nothing_useful_but_count_everything() {
    let agent = FakeAgent::start(
        any_port(),
        Script {
            mode: Mode::Refuse(503),
            ..Script::default()
        },
    )
    .await
    .unwrap();
    let addr = agent.addr();
    let mut refused = send(addr, Method::GET, "/status", None).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.content_type(), "application/problem+json");
    let body = refused.json().await;
    assert_eq!(
        (body["status"].as_i64(), body["title"].as_str()),
        (Some(503), Some("Service Unavailable"))
    );
    assert_eq!(
        post(addr, "hi", "user").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        send(addr, Method::GET, "/events", None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(agent.received().is_empty());
    let counts = agent.requests();
    assert_eq!(
        (
            counts.status,
            counts.message_post,
            counts.events,
            counts.connections
        ),
        (1, 1, 1, 3)
    );

    agent.set_script(Script {
        mode: Mode::Drop,
        ..Script::default()
    });
    assert_eq!(raw_exchange(addr).await, "", "closed without an answer");
    assert_eq!(raw_exchange(addr).await, "");
    let counts = agent.requests();
    assert_eq!(
        (counts.status, counts.connections),
        (1, 5),
        "connections counted, no requests"
    );

    agent.set_script(Script::default());
    assert!(raw_exchange(addr).await.starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!(agent.requests().status, 2);
    agent.stop().await;
}

#[tokio::test]
async fn stop_frees_the_address_at_once() {
    let agent = FakeAgent::start(any_port(), Script::default())
        .await
        .unwrap();
    let addr = agent.addr();
    let events = Events::open(addr).await;
    agent.stop().await;
    let refused = TcpStream::connect(addr).await.expect_err("nothing listens");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    drop(events);
    let again = FakeAgent::start(addr, Script::default())
        .await
        .expect("rebind");
    assert_eq!(get_json(addr, "/status").await["status"], "running");
    again.stop().await;
}

fn session_pod(name: &str, session: &str, port: u16) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "ccplant.io/session": session } },
        "spec": {
            "containers": [{
                "name": "agent",
                "image": "ghcr.io/ccplant/fake-agent:1",
                "ports": [{ "name": "agent", "containerPort": port }],
            }],
        },
    }))
    .expect("pod")
}

async fn running_pod_ip(pods: &Api<Pod>, name: &str) -> String {
    let pod = wait_for(
        pods,
        name,
        Duration::from_secs(60),
        "pod has a pod IP",
        |p: &Pod| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some(),
    )
    .await;
    pod.status.unwrap().pod_ip.unwrap()
}

async fn wait_refused(addr: SocketAddr) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            other => assert!(
                Instant::now() < deadline,
                "{addr} still accepts connections: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn agent_host_serves_each_session_pod_at_its_loopback_pod_ip() {
    let env = TestEnv::global_with_loopback_pods();
    env.with_namespace("fake-agent", |ns| async move {
        let pods: Api<Pod> = ns.api();
        let host = AgentHost::start(ns.client.clone(), &ns.name, Script::default())
            .await
            .unwrap();
        host.set_script(
            "s1",
            Script {
                agent_type: "codex".into(),
                ..Script::default()
            },
        );
        pods.create(&PostParams::default(), &session_pod("s1-pod", "s1", 4000))
            .await
            .unwrap();
        let ip = running_pod_ip(&pods, "s1-pod").await;
        assert!(
            ip.starts_with("127."),
            "KWOK assigned a loopback pod IP: {ip}"
        );
        if let Some(cidr) = &env.pod_cidr {
            let prefix = cidr.trim_end_matches("0.0/16");
            assert!(ip.starts_with(prefix), "{ip} in {cidr}");
        }

        let agent = host.wait_agent("s1", TIMEOUT).await.unwrap();
        let addr: SocketAddr = format!("{ip}:4000").parse().unwrap();
        assert_eq!(agent.addr(), addr);
        wait_status(addr, "stable").await;
        let status = get_json(addr, "/status").await;
        assert_eq!(status["agent_type"], "codex", "the session's script");
        assert_eq!(
            status["$schema"],
            format!("https://{addr}/schemas/StatusResponseBody.json"),
            "huma links https for hosts other than localhost and 127.0.0.1"
        );
        assert_eq!(post(addr, "hello", "user").await.status, StatusCode::OK);
        assert_eq!(agent.received()[0].content, "hello");

        pods.delete("s1-pod", &DeleteParams::default())
            .await
            .unwrap();
        wait_refused(addr).await;
        wait_for_deletion(&pods, "s1-pod", Duration::from_secs(60), "pod deleted").await;

        // A recreated pod gets a fresh agent (KWOK may hand out the same IP again).
        pods.create(&PostParams::default(), &session_pod("s1-pod", "s1", 4000))
            .await
            .unwrap();
        let ip = running_pod_ip(&pods, "s1-pod").await;
        let second = host.wait_agent("s1", TIMEOUT).await.unwrap();
        let addr: SocketAddr = format!("{ip}:4000").parse().unwrap();
        assert_eq!(second.addr(), addr);
        wait_status(addr, "stable").await;
        assert!(second.received().is_empty(), "a fresh conversation");
        let history = host.history("s1");
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].received().len(), 1);

        host.stop().await;
        wait_refused(addr).await;
    })
    .await;
}
