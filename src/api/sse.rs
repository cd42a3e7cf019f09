//! `GET /api/v1/events/stream`: the event stream as Server-Sent Events, for the dashboard and
//! for `curl -N`.
//!
//! Each recorded event is one SSE message of the default type (`message`, so an
//! `EventSource`'s `onmessage` sees every kind, including kinds added later): `id:` is its
//! sequence number and `data:` the same JSON as one entry of `/api/v1/events` (the kind is in
//! `event.kind`). Named messages are the stream's own: `hello`, `gap` (the log itself lacks
//! some numbers: a damaged line) and `end`.
//! A client resumes where it left off: a browser's `EventSource` reconnects by itself and sends
//! `Last-Event-ID`, and the stream continues with the next sequence number, read from the
//! durable log first and then live, without gaps and without repeats. `?since=N` does the same
//! for a first connection (the page loads `/api/v1/events`, then streams from its `next`);
//! the header wins over the query. Without either, the stream starts with what happens next,
//! after one `hello` message whose `id:` is the last durable sequence number (so even a
//! reconnect before any event resumes exactly).
//!
//! How it stays gap-free: it subscribes to the core's broadcast *before* reading the backlog,
//! skips what it has already sent, and when the broadcast skips ahead (this client was too slow
//! and the channel dropped some, or the backlog ended before the subscription started) it reads
//! the missing records from the log. If the log does not have them yet (the disk is behind and
//! the core went on without it), the stream ends instead of skipping: the client reconnects
//! after the `retry:` delay and gets them once they are on disk.
//!
//! It must not: hold the event log's lock while reading a file, block the core (the broadcast
//! never waits for a slow client), or outlive the daemon (the stream ends when the core loop
//! has stopped: the control channel closes).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::{ApiError, ApiResult, wire};
use crate::daemon::Shared;
use crate::events::Record;

/// How long a browser waits before reconnecting after the stream ends.
pub const RETRY: Duration = Duration::from_secs(2);
/// A comment line this often keeps proxies and idle timeouts from closing a quiet stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Records read from the log at a time while catching up.
const PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    since: Option<u64>,
    service: Option<String>,
}

/// Where a stream starts: the `Last-Event-ID` header, else `?since=`, else "from now".
fn resume_point(headers: &HeaderMap, since: Option<u64>) -> ApiResult<Option<u64>> {
    match headers.get("last-event-id") {
        Some(v) => {
            let text = v.to_str().unwrap_or("").trim();
            text.parse::<u64>().map(Some).map_err(|_| ApiError::BadRequest(format!("Last-Event-ID: expected a sequence number, got {:?}", text.chars().take(40).collect::<String>())))
        }
        None => Ok(since),
    }
}

pub async fn stream(
    State(shared): State<Shared>,
    headers: HeaderMap,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(format!("expected ?since=N&service=NAME: {}", e.body_text())))?;
    let from = resume_point(&headers, q.since)?;
    // Subscribe first: whatever is recorded from here on reaches this receiver.
    let live = shared.events.subscribe();
    let (durable, newest) = {
        let log = shared.log.lock().map_err(|_| ApiError::Internal("event log lock poisoned".into()))?;
        (log.status().durable_seq, log.next_seq().saturating_sub(1))
    };
    let mut first = VecDeque::new();
    let last = match from {
        // An id from the future (the data directory was replaced): start over from what exists.
        Some(seq) => seq.min(newest),
        None => {
            first.push_back(SseEvent::default().event("hello").id(durable.to_string()).data(format!("{{\"last_seq\":{durable}}}")));
            durable
        }
    };
    first.push_front(SseEvent::default().retry(RETRY));
    let state = Feed { shared, live, last, service: q.service, queued: first, caught_up: false, ended: false };
    let body = stream::unfold(state, |mut st| async move { st.next().await.map(|e| (Ok(e), st)) });
    Ok(Sse::new(body).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One client's position in the event sequence.
struct Feed {
    shared: Shared,
    live: broadcast::Receiver<Record>,
    /// The highest sequence number this client has been given (or skipped by its filter).
    last: u64,
    service: Option<String>,
    queued: VecDeque<SseEvent>,
    /// The backlog up to the subscription has been read from the log.
    caught_up: bool,
    ended: bool,
}

impl Feed {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            if !self.caught_up {
                // Read the log page by page until it has nothing after `last`.
                match self.read_log(u64::MAX) {
                    Ok(0) => self.caught_up = true,
                    Ok(_) => {}
                    Err(e) => self.end(&e),
                }
                continue;
            }
            let record = tokio::select! {
                r = self.live.recv() => r,
                // The core loop has stopped (its control receiver is gone): the daemon is
                // shutting down, and nothing more will be recorded.
                _ = self.shared.control.closed() => return None,
            };
            match record {
                Ok(r) if r.seq <= self.last => {}
                Ok(r) if r.seq == self.last + 1 => self.push(&r),
                Ok(r) => {
                    // Missed some: take them from the log, then this one.
                    let want = r.seq - 1;
                    if let Err(e) = self.read_log(want) {
                        self.end(&e);
                    } else if self.last < want {
                        self.end(&format!("events {}..={want} are not on disk yet; reconnect to get them", self.last + 1));
                    } else {
                        self.push(&r);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.caught_up = false,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Queue the durable records after `last` and up to `upto` (one page); how many were read.
    fn read_log(&mut self, upto: u64) -> Result<usize, String> {
        let (in_memory, path) = {
            let mut log = self.shared.log.lock().map_err(|_| "event log lock poisoned".to_string())?;
            (log.since_in_memory(self.last, PAGE), log.path().to_owned())
        };
        let records = match in_memory {
            Some(r) => r,
            None => crate::events::log::read_since(&path, self.last, PAGE).map_err(|e| e.to_string())?,
        };
        let mut n = 0;
        for r in records.iter().filter(|r| r.seq <= upto) {
            if r.seq != self.last + 1 {
                // The log itself has a hole (a damaged line it skipped): say so, then go on.
                self.queued.push_back(SseEvent::default().event("gap").data(format!("{{\"from\":{},\"to\":{}}}", self.last + 1, r.seq - 1)));
            }
            self.push(r);
            n += 1;
        }
        Ok(n)
    }

    fn push(&mut self, r: &Record) {
        self.last = r.seq;
        if self.service.as_deref().is_some_and(|s| r.event.service() != Some(s)) {
            return;
        }
        let data = serde_json::to_string(&wire::EventRecord::from(r)).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        self.queued.push_back(SseEvent::default().id(r.seq.to_string()).data(data));
    }

    fn end(&mut self, why: &str) {
        tracing::debug!("event stream ends: {why}");
        let body = serde_json::json!({ "error": why }).to_string();
        self.queued.push_back(SseEvent::default().event("end").data(body));
        self.ended = true;
    }
}
