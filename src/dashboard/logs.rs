//! A step's live log for the browser: the controller's user log route
//! (`GET /v1/jobs/NS/NAME/logs?step&follow=true&offset`, through the plugin's
//! [`LogClient`] with the user's Baton token) relayed as server-sent events, one
//! `lines` event per chunk of complete lines. Each event's id is the byte offset
//! after its last line, so a browser that reconnects (it sends `Last-Event-ID`)
//! resumes where it was, with no line twice. Lines are stripped of terminal
//! control sequences ([`crate::cli::terminal::sanitize`]); the page escapes them.

use std::convert::Infallible;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::cli::job_logs::LogClient;
use crate::cli::terminal::sanitize;

/// A line longer than this is cut into pieces of this size.
const MAX_LINE: usize = 64 * 1024;

/// Bytes in, complete lines out, with the offset after the last one.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
    offset: u64,
}

impl Lines {
    /// Lines of a log read from byte `offset` on.
    pub fn new(offset: u64) -> Lines {
        Lines {
            partial: Vec::new(),
            offset,
        }
    }

    /// The offset after the last complete line handed out.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The complete lines `chunk` ends (a line split across chunks comes whole).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in chunk {
            self.partial.push(b);
            if b == b'\n' || self.partial.len() >= MAX_LINE {
                self.take(&mut out);
            }
        }
        out
    }

    /// What is left when the log ends (a last line without a newline).
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.partial.is_empty() {
            self.take(&mut out);
        }
        out
    }

    fn take(&mut self, out: &mut Vec<String>) {
        self.offset += self.partial.len() as u64;
        let text = String::from_utf8_lossy(&self.partial);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        // A lone `\r` (a redrawn progress bar) is a line break to the sanitizer.
        out.extend(sanitize(text).split('\n').map(str::to_owned));
        self.partial.clear();
    }
}

/// One server-sent event: a batch of lines, the log's end, or why it cannot be read.
pub fn event(kind: &str, offset: u64, data: &serde_json::Value) -> warp::sse::Event {
    warp::sse::Event::default()
        .event(kind)
        .id(offset.to_string())
        .data(data.to_string())
}

enum State {
    Start,
    Streaming(BoxStream<'static, reqwest::Result<bytes::Bytes>>, Lines),
    Done,
}

/// Step `step` of Job `ns/name`, followed from `offset`, as events.
pub fn follow(
    client: Arc<LogClient>,
    ns: String,
    name: String,
    step: String,
    offset: u64,
) -> impl Stream<Item = Result<warp::sse::Event, Infallible>> + Send + 'static {
    futures::stream::unfold(State::Start, move |state| {
        let (client, ns, name, step) = (client.clone(), ns.clone(), name.clone(), step.clone());
        async move { next(state, &client, &ns, &name, &step, offset).await }
    })
    .map(Ok)
}

async fn next(
    state: State,
    client: &LogClient,
    ns: &str,
    name: &str,
    step: &str,
    offset: u64,
) -> Option<(warp::sse::Event, State)> {
    match state {
        State::Done => None,
        State::Start => {
            let path = format!("/v1/jobs/{ns}/{name}/logs");
            let at = offset.to_string();
            let query = [("step", step), ("follow", "true"), ("offset", at.as_str())];
            match client
                .get(&path, &query, &format!("the log of step {step}"))
                .await
            {
                Ok(res) => {
                    let body = res.bytes_stream().boxed();
                    Box::pin(next(
                        State::Streaming(body, Lines::new(offset)),
                        client,
                        ns,
                        name,
                        step,
                        offset,
                    ))
                    .await
                }
                Err(e) => {
                    let why = serde_json::json!(format!("{e:#}"));
                    Some((event("failed", offset, &why), State::Done))
                }
            }
        }
        State::Streaming(mut body, mut lines) => loop {
            match body.next().await {
                Some(Ok(chunk)) => {
                    let batch = lines.feed(&chunk);
                    if !batch.is_empty() {
                        let ev = event("lines", lines.offset(), &serde_json::json!(batch));
                        return Some((ev, State::Streaming(body, lines)));
                    }
                }
                Some(Err(e)) => {
                    let why = serde_json::json!(format!("read the log: {e}"));
                    return Some((event("failed", lines.offset(), &why), State::Done));
                }
                None => {
                    let rest = lines.finish();
                    let ev = event("end", lines.offset(), &serde_json::json!(rest));
                    return Some((ev, State::Done));
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks_come_whole_and_offsets_count_raw_bytes() {
        let mut l = Lines::new(100);
        assert_eq!(l.feed(b"one\ntw"), ["one"]);
        assert_eq!(l.offset(), 104);
        assert!(l.feed(b"o").is_empty());
        assert_eq!(l.feed(b"\r\nthree\nfou"), ["two", "three"]);
        assert_eq!(l.offset(), 115);
        assert_eq!(l.finish(), ["fou"]);
        assert_eq!(l.offset(), 118);
        assert!(l.finish().is_empty());
    }

    #[test]
    fn control_sequences_are_stripped_and_bad_utf8_replaced() {
        let mut l = Lines::new(0);
        let got = l.feed(b"\x1b[31mred\x1b[0m \x1b]0;title\x07ok\n\xff\xfe\n");
        assert_eq!(got, ["red ok", "\u{fffd}\u{fffd}"]);
        // A progress bar redrawn with `\r`: every state is seen, as lines.
        assert_eq!(l.feed(b"10%\r50%\r100%\n"), ["10%", "50%", "100%"]);
    }

    #[test]
    fn a_line_without_end_is_cut_at_the_bound() {
        let mut l = Lines::new(0);
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let got = l.feed(&long);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|s| s.len() == MAX_LINE));
        assert_eq!(l.finish(), ["x".repeat(10)]);
        assert_eq!(l.offset(), long.len() as u64);
    }

    #[test]
    fn events_carry_their_offset_as_id() {
        let ev = event("lines", 42, &serde_json::json!(["a", "b"]));
        let text = ev.to_string();
        assert!(text.contains("event:lines"), "{text}");
        assert!(text.contains("id:42"), "{text}");
        assert!(text.contains(r#"data:["a","b"]"#), "{text}");
    }
}
