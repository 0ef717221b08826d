//! Secret values out of step logs: every occurrence of a value a step got from a
//! `secretKeyRef` becomes `***` before the log leaves the process that runs the
//! step, so neither the stored log nor a follower ever sees it.
//!
//! **What is masked** ([`Patterns::new`]): each secret value, and each line of a
//! multi-line value (without a trailing `\r`), when it is at least [`MIN_LEN`]
//! bytes and not only whitespace. Shorter values would turn ordinary text into
//! `***` everywhere (and a 1–2 byte secret is no secret); lines are masked because
//! a tool printing a key or certificate rarely prints it whole and in one piece.
//! **What is not**: any transformation of a value — base64, URL or JSON escaping,
//! a substring of a line, the value spread over lines with other text between.
//!
//! **Streaming** ([`Masker`]): leftmost-longest matches, decided byte by byte; a
//! byte is held back only while the bytes from it on could still grow into a
//! value, so at most the longest value minus one byte waits for the next chunk,
//! and a log whose tail looks like no value's start is not delayed at all. What
//! comes out is a deterministic function of the whole log, however it is cut into
//! chunks: offsets into the masked log mean the same on every read, which a
//! resumed tail (re-reading a step pod's log from its start) relies on. `***` is
//! never longer than what it replaces, so a masked log is never longer.

use std::sync::Arc;

/// What a value becomes.
pub const MASK: &[u8] = b"***";

/// Values (and lines) shorter than this are not masked.
pub const MIN_LEN: usize = 3;

/// The byte strings to mask, indexed by their first byte, longest first.
/// `Debug` shows how many, never which.
#[derive(Clone, Default)]
pub struct Patterns {
    /// Per first byte: the patterns starting with it, longest first.
    by_first: Arc<[Vec<Vec<u8>>]>,
    longest: usize,
}

impl std::fmt::Debug for Patterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count: usize = self.by_first.iter().map(Vec::len).sum();
        f.debug_struct("Patterns")
            .field("count", &count)
            .field("longest", &self.longest)
            .finish()
    }
}

impl Patterns {
    /// The patterns for these secret values: each value and each of its lines
    /// that is at least [`MIN_LEN`] bytes and not only whitespace.
    pub fn new<I, V>(values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let mut all: Vec<Vec<u8>> = Vec::new();
        for value in values {
            let value = value.as_ref();
            all.push(value.to_vec());
            if value.contains(&b'\n') {
                let lines = value.split(|&b| b == b'\n');
                all.extend(lines.map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec()));
            }
        }
        all.retain(|p| p.len() >= MIN_LEN && !p.iter().all(u8::is_ascii_whitespace));
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        let longest = all.first().map_or(0, Vec::len);
        let mut by_first = vec![Vec::new(); 256];
        for pattern in all {
            by_first[usize::from(pattern[0])].push(pattern);
        }
        Self {
            by_first: by_first.into(),
            longest,
        }
    }

    /// Nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.longest == 0
    }

    /// The longest pattern's length: one less is the most a [`Masker`] holds back.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// `text` masked at once (outputs, a whole log).
    pub fn mask(&self, text: &[u8]) -> Vec<u8> {
        let mut masker = Masker::new(self.clone());
        let mut out = masker.push(text);
        out.extend(masker.finish());
        out
    }

    /// A step's outputs, read cut at `limit` bytes, masked. Callers read one byte
    /// more than they accept to see a file that is too long; masking shortens, so
    /// a file that filled `limit` is padded back to it with `*` (such outputs are
    /// refused whole anyway).
    pub fn mask_outputs(&self, read: &[u8], limit: usize) -> Vec<u8> {
        let mut masked = self.mask(read);
        if read.len() >= limit && masked.len() < limit {
            masked.resize(limit, b'*');
        }
        masked
    }

    /// What to do at the start of `rest`.
    fn decide(&self, rest: &[u8], at_end: bool) -> Decision {
        let Some(&first) = rest.first() else {
            return Decision::Plain;
        };
        let Some(candidates) = self.by_first.get(usize::from(first)) else {
            return Decision::Plain;
        };
        // Longest first: a longer value that may still match wins over a shorter
        // one that does, so wait for it.
        for pattern in candidates {
            if rest.len() < pattern.len() {
                if !at_end && pattern.starts_with(rest) {
                    return Decision::Wait;
                }
            } else if rest.starts_with(pattern) {
                return Decision::Mask(pattern.len());
            }
        }
        Decision::Plain
    }
}

enum Decision {
    /// The byte is no value's start.
    Plain,
    /// A value of this length starts here.
    Mask(usize),
    /// Only the next bytes tell.
    Wait,
}

/// Masks a log fed to it in chunks of any size; see the module doc. (No
/// `Debug`: what it holds back may be the start of a secret.)
#[derive(Default)]
pub struct Masker {
    patterns: Patterns,
    held: Vec<u8>,
}

impl Masker {
    pub fn new(patterns: Patterns) -> Self {
        Self {
            patterns,
            held: Vec::new(),
        }
    }

    /// Feed the next bytes of the log; returns the masked bytes that are final.
    pub fn push(&mut self, input: &[u8]) -> Vec<u8> {
        if self.patterns.is_empty() {
            return input.to_vec();
        }
        self.held.extend_from_slice(input);
        self.run(false)
    }

    /// The log has ended: the rest, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        self.run(true)
    }

    /// Mask what is held, keeping back what the next bytes decide.
    fn run(&mut self, at_end: bool) -> Vec<u8> {
        let held = &self.held;
        let mut out = Vec::with_capacity(held.len());
        let (mut at, mut plain_from) = (0, 0);
        while at < held.len() {
            match self.patterns.decide(&held[at..], at_end) {
                Decision::Plain => at += 1,
                Decision::Mask(len) => {
                    out.extend_from_slice(&held[plain_from..at]);
                    out.extend_from_slice(MASK);
                    at += len;
                    plain_from = at;
                }
                Decision::Wait => break,
            }
        }
        out.extend_from_slice(&held[plain_from..at]);
        self.held.drain(..at);
        out
    }
}

#[cfg(test)]
#[path = "mask_tests.rs"]
mod tests;
