//! `$BATON_OUTPUT` through the log: framing in the pod, unframing in the backend.
//!
//! A termination message holds 4 KiB; outputs may be 1 MiB. So the step's
//! command runs under `baton-entrypoint` (the `entrypoint/` crate, copied into
//! the pod by an init container), which keeps the user's exit code and, when the
//! outputs file is not empty, prints one framed block to stdout after the user's
//! command ended:
//!
//! ```text
//! RS::baton-outputs-begin NONCE::\n<the file, base64, in lines>\n::baton-outputs-end NONCE::\n
//! ```
//!
//! `RS` is the ASCII record separator (0x1e). The block begins where the log
//! stands, mid-line or not, and is recognised anywhere: so the log around it is
//! kept byte for byte (a last line without newline stays without), and a live
//! log is held back only while it ends in what could be the start of a marker —
//! which begins with a byte no text log ends in. (A frame opened by a newline, to
//! put the marker on a line of its own, would hold every line's newline back
//! until the next line came.)
//!
//! The nonce is random per attempt (in the pod's command and an annotation), so no
//! log line can forge or break a frame by accident. [`Unframer`] strips the block
//! from the log it passes on and keeps it for `read_outputs`. What it passes on
//! is a deterministic function of the whole log, however the log is cut into
//! chunks, so byte offsets into the stripped log mean the same thing on every read
//! of it (resuming re-reads and re-strips).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Most base64 text kept of a frame: beyond it the outputs are reported as cut
/// (they are far over any Job's outputs limit by then).
const MAX_FRAME_TEXT: usize = 8 * 1024 * 1024;

fn begin_sequence(nonce: &str) -> Vec<u8> {
    format!("\u{1e}::baton-outputs-begin {nonce}::\n").into_bytes()
}

fn end_marker(nonce: &str) -> Vec<u8> {
    format!("::baton-outputs-end {nonce}::").into_bytes()
}

/// The base64 text of one frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    text: Vec<u8>,
    /// The frame was longer than [`MAX_FRAME_TEXT`] or ended before its end marker.
    cut: bool,
}

impl Frame {
    /// The outputs file, at most `limit` bytes of it.
    pub fn decode(&self, limit: usize) -> Result<Vec<u8>, base64::DecodeError> {
        let mut clean: Vec<u8> = self
            .text
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        if self.cut {
            clean.truncate(clean.len() - clean.len() % 4);
        }
        let mut bytes = STANDARD.decode(&clean)?;
        bytes.truncate(limit);
        Ok(bytes)
    }

    /// A frame holding `file` (outputs that came some other way than the log).
    pub fn of_file(file: &[u8]) -> Self {
        Self {
            text: STANDARD.encode(file).into_bytes(),
            cut: false,
        }
    }

    pub fn is_cut(&self) -> bool {
        self.cut
    }
}

enum State {
    /// Passing bytes on; `held` may be the start of the begin sequence.
    Pass { held: Vec<u8> },
    /// Inside the frame.
    Capture { text: Vec<u8>, cut: bool },
    /// The frame is over; everything else passes.
    Done,
}

/// Strips the outputs frame out of a log fed to it in chunks of any size.
pub struct Unframer {
    begin: Vec<u8>,
    end: Vec<u8>,
    state: State,
    frame: Option<Frame>,
}

impl Unframer {
    pub fn new(nonce: &str) -> Self {
        Self {
            begin: begin_sequence(nonce),
            end: end_marker(nonce),
            state: State::Pass { held: Vec::new() },
            frame: None,
        }
    }

    /// Feed the next bytes of the log; returns the log bytes that are final.
    pub fn push(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut input = input.to_vec();
        loop {
            match &mut self.state {
                State::Done => {
                    out.extend_from_slice(&input);
                    return out;
                }
                State::Pass { held } => {
                    held.extend_from_slice(&input);
                    if let Some(at) = find(held, &self.begin) {
                        out.extend_from_slice(&held[..at]);
                        input = held[at + self.begin.len()..].to_vec();
                        self.state = State::Capture {
                            text: Vec::new(),
                            cut: false,
                        };
                        continue;
                    }
                    let keep = longest_prefix_suffix(held, &self.begin);
                    let pass = held.len() - keep;
                    out.extend(held.drain(..pass));
                    return out;
                }
                State::Capture { text, cut } => {
                    // Search from where a marker could begin that the previous bytes did not hold.
                    let from = text.len().saturating_sub(self.end.len() + 1);
                    text.extend_from_slice(&input);
                    if let Some(at) = find(&text[from..], &self.end).map(|i| i + from) {
                        let after = at + self.end.len();
                        // The marker line's own newline belongs to the frame.
                        let rest = match text.get(after) {
                            Some(b'\n') => text[after + 1..].to_vec(),
                            Some(_) => text[after..].to_vec(),
                            // The newline may still come: wait for it.
                            None => return out,
                        };
                        text.truncate(at);
                        self.frame = Some(Frame {
                            text: std::mem::take(text),
                            cut: *cut,
                        });
                        self.state = State::Done;
                        input = rest;
                        continue;
                    }
                    if text.len() > MAX_FRAME_TEXT {
                        // Keep the start (what is decoded) and the tail (where the end marker may begin).
                        let tail = text.split_off(text.len() - self.end.len());
                        text.truncate(MAX_FRAME_TEXT - self.end.len());
                        text.extend_from_slice(&tail);
                        *cut = true;
                    }
                    return out;
                }
            }
        }
    }

    /// The log has ended: the bytes still held back, and the frame if there was one.
    pub fn finish(mut self) -> (Vec<u8>, Option<Frame>) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Pass { held } => (held, self.frame),
            State::Done => (Vec::new(), self.frame),
            State::Capture { mut text, .. } => {
                // The end marker without its newline, or no end marker at all.
                let complete = text.ends_with(&self.end);
                if complete {
                    text.truncate(text.len() - self.end.len());
                }
                (
                    Vec::new(),
                    Some(Frame {
                        text,
                        cut: !complete,
                    }),
                )
            }
        }
    }
}

/// Unframe a whole log at once.
pub fn unframe(nonce: &str, log: &[u8]) -> (Vec<u8>, Option<Frame>) {
    let mut unframer = Unframer::new(nonce);
    let mut out = unframer.push(log);
    let (rest, frame) = unframer.finish();
    out.extend(rest);
    (out, frame)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The length of the longest proper prefix of `needle` that `haystack` ends with.
fn longest_prefix_suffix(haystack: &[u8], needle: &[u8]) -> usize {
    let max = needle.len().saturating_sub(1).min(haystack.len());
    (1..=max)
        .rev()
        .find(|&n| haystack.ends_with(&needle[..n]))
        .unwrap_or(0)
}

/// The frame `baton-entrypoint` prints for `file`: its own code, so a change
/// on either side that breaks the other fails these tests.
#[cfg(test)]
pub fn frame_for(nonce: &str, file: &[u8]) -> Vec<u8> {
    baton_entrypoint::frame(nonce, file)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NONCE: &str = "0123456789abcdef";

    fn log_with_frame(before: &[u8], file: &[u8], after: &[u8]) -> Vec<u8> {
        let mut log = before.to_vec();
        log.extend(frame_for(NONCE, file));
        log.extend_from_slice(after);
        log
    }

    /// Feed `log` in chunks of `size`; what passes, and the decoded frame.
    fn chunked(log: &[u8], size: usize) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut u = Unframer::new(NONCE);
        let mut out = Vec::new();
        for chunk in log.chunks(size) {
            out.extend(u.push(chunk));
        }
        let (rest, frame) = u.finish();
        out.extend(rest);
        (out, frame.map(|f| f.decode(usize::MAX).unwrap()))
    }

    #[test]
    fn the_frame_is_stripped_and_decoded() {
        let file = b"a=1\nb<<EOF\nx\nEOF\n";
        let log = log_with_frame(b"line-1\nline-2\n", file, b"");
        let (out, frame) = unframe(NONCE, &log);
        assert_eq!(out, b"line-1\nline-2\n");
        assert_eq!(frame.unwrap().decode(usize::MAX).unwrap(), file);
    }

    #[test]
    fn a_log_without_trailing_newline_is_kept_as_is() {
        let log = log_with_frame(b"no newline", b"k=v\n", b"");
        let (out, frame) = chunked(&log, 7);
        assert_eq!(out, b"no newline");
        assert_eq!(frame.unwrap(), b"k=v\n");
    }

    #[test]
    fn every_chunking_gives_the_same_bytes() {
        let file: Vec<u8> = (0..100 * 1024).map(|i| b"abcdefghij\n"[i % 11]).collect();
        let log = log_with_frame(b"start\n", &file, b"late background line\n");
        let (whole, frame) = chunked(&log, log.len());
        assert_eq!(whole, b"start\nlate background line\n");
        assert_eq!(frame.as_deref(), Some(file.as_slice()));
        for size in [1, 2, 3, 5, 16, 17, 40, 41, 76, 77, 4096] {
            let (out, f) = chunked(&log, size);
            assert_eq!(out, whole, "chunk size {size}");
            assert_eq!(f.as_deref(), Some(file.as_slice()), "chunk size {size}");
        }
    }

    #[test]
    fn a_partial_marker_is_held_back_until_it_is_decided() {
        let mut u = Unframer::new(NONCE);
        // Lines pass at once: a newline cannot start a frame.
        assert_eq!(u.push(b"line-1\n"), b"line-1\n");
        assert_eq!(u.push(b"text\x1e::baton-outp"), b"text");
        // Not a marker after all: released.
        assert_eq!(
            u.push(b"ut is what we call it\n"),
            b"\x1e::baton-output is what we call it\n"
        );
        let (rest, frame) = u.finish();
        assert!(rest.is_empty());
        assert!(frame.is_none());
    }

    #[test]
    fn a_marker_with_another_nonce_is_log() {
        let other = frame_for("ffffffffffffffff", b"k=v\n");
        let (out, frame) = unframe(NONCE, &other);
        assert_eq!(out, other);
        assert!(frame.is_none());
    }

    #[test]
    fn held_bytes_come_out_at_the_end() {
        let (out, frame) = chunked(b"tail\n\x1e::baton-outputs-begin 0123", 4);
        assert_eq!(out, b"tail\n\x1e::baton-outputs-begin 0123");
        assert!(frame.is_none());
    }

    #[test]
    fn a_frame_cut_off_is_decoded_as_far_as_it_goes() {
        let full = log_with_frame(b"", &[b'x'; 300], b"");
        let cut = &full[..full.len() / 2];
        let (out, frame) = unframe(NONCE, cut);
        assert!(out.is_empty());
        let frame = frame.unwrap();
        assert!(frame.is_cut());
        let decoded = frame.decode(usize::MAX).unwrap();
        assert!(!decoded.is_empty() && decoded.iter().all(|&b| b == b'x'));
    }

    #[test]
    fn a_file_frame_decodes_to_the_file() {
        let frame = Frame::of_file(b"a=1\nb=2\n");
        assert_eq!(frame.decode(usize::MAX).unwrap(), b"a=1\nb=2\n");
        assert!(!frame.is_cut());
    }

    #[test]
    fn decode_respects_the_limit() {
        let (_, frame) = unframe(NONCE, &log_with_frame(b"", b"0123456789", b""));
        assert_eq!(frame.unwrap().decode(4).unwrap(), b"0123");
    }

    #[test]
    fn the_entrypoint_prints_what_the_unframer_expects() {
        let framed = frame_for("N", b"k=v\n");
        assert!(framed.starts_with(&begin_sequence("N")));
        assert!(framed.ends_with(&[end_marker("N"), b"\n".to_vec()].concat()));
        assert_eq!(begin_sequence("N"), b"\x1e::baton-outputs-begin N::\n");
        assert_eq!(end_marker("N"), b"::baton-outputs-end N::");
    }
}
