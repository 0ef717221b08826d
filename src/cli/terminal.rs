//! Logs are written by whatever a step ran, so printing them raw to a terminal hands
//! that program the terminal: set the window title, move the cursor over earlier
//! lines, write the clipboard (OSC 52), or worse on some terminals. [`Sanitizer`]
//! keeps text, `\n` and `\t`, and drops every escape sequence (CSI, OSC, DCS, SOS,
//! PM, APC and two-byte escapes, with their parameters), every other C0 control and
//! DEL, and every C1 control (U+0080–U+009F); bytes that are not UTF-8 become U+FFFD,
//! so a terminal in an 8-bit mode never sees a raw C1 byte.
//!
//! `\r` becomes a line break (`\r\n` one line break): a lone `\r` redraws a
//! progress bar, but it also lets a log print a line and then hide it under
//! another. As separate lines, everything the step printed is seen; `--raw` keeps
//! the bytes as they are.
//!
//! It is a state machine over the bytes, so a sequence split across chunks (or a
//! UTF-8 character) is handled as if it came whole.

/// Control strings longer than this many characters are cut short: the rest is
/// shown, so an unterminated string cannot hide a whole line's worth of output.
const MAX_STRING: usize = 4096;

const ESC: char = '\u{1b}';
const BEL: char = '\u{7}';
/// C1 controls as UTF-8 terminals may read them: CSI, ST, OSC and the other strings.
const C1_CSI: char = '\u{9b}';
const C1_ST: char = '\u{9c}';
const C1_STRINGS: [char; 5] = ['\u{9d}', '\u{90}', '\u{98}', '\u{9e}', '\u{9f}'];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Ground,
    /// After ESC.
    Escape,
    /// ESC and intermediate bytes (0x20–0x2F), until a final byte.
    EscapeIntermediate,
    /// A control sequence: parameters until a final byte (0x40–0x7E).
    Csi,
    /// OSC, DCS, SOS, PM or APC: until BEL or ST; `len` characters so far.
    String { len: usize },
    /// ESC inside a control string: `\` ends it, anything else ends it too and
    /// starts a new escape (as terminals do).
    StringEscape,
}

/// What a character does in a state.
enum Step {
    /// Dropped, the state moves on.
    To(State),
    /// Printed, in the ground state.
    Print,
    /// The sequence is over: the character is taken again in this state.
    Again(State),
}

/// Strips terminal control sequences from a byte stream, chunk by chunk.
#[derive(Debug, Default)]
pub struct Sanitizer {
    state: State,
    /// An incomplete UTF-8 character at the end of the last chunk.
    pending: Vec<u8>,
    /// The last character was `\r` (printed as `\n`): a `\n` right after it is not
    /// a second line break.
    after_cr: bool,
}

impl Sanitizer {
    /// What of `input` a terminal may be shown.
    pub fn feed(&mut self, input: &[u8]) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(input);
        let mut out = String::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    self.text(text, &mut out);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    self.text(std::str::from_utf8(valid).unwrap_or_default(), &mut out);
                    let Some(bad) = e.error_len() else {
                        // Cut mid-character: wait for the rest.
                        self.pending = after.to_vec();
                        break;
                    };
                    self.char(char::REPLACEMENT_CHARACTER, &mut out);
                    rest = &after[bad..];
                }
            }
        }
        out.into_bytes()
    }

    /// The end of the stream: a character left incomplete is shown as U+FFFD.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = String::new();
        if !std::mem::take(&mut self.pending).is_empty() {
            self.char(char::REPLACEMENT_CHARACTER, &mut out);
        }
        *self = Self::default();
        out.into_bytes()
    }

    fn text(&mut self, text: &str, out: &mut String) {
        for c in text.chars() {
            self.char(c, out);
        }
    }

    fn char(&mut self, c: char, out: &mut String) {
        loop {
            match step(self.state, c) {
                Step::To(next) => {
                    self.state = next;
                    self.after_cr = false;
                }
                Step::Print => {
                    self.state = State::Ground;
                    self.print(c, out);
                }
                Step::Again(next) => {
                    self.state = next;
                    continue;
                }
            }
            return;
        }
    }

    fn print(&mut self, c: char, out: &mut String) {
        let after_cr = std::mem::replace(&mut self.after_cr, c == '\r');
        match c {
            '\r' => out.push('\n'),
            '\n' if after_cr => {}
            c => out.push(c),
        }
    }
}

/// `text` with its control sequences stripped (a server's message, a name).
pub fn sanitize(text: &str) -> String {
    let mut s = Sanitizer::default();
    let mut out = s.feed(text.as_bytes());
    out.extend(s.finish());
    String::from_utf8_lossy(&out).into_owned()
}

/// One character in one state.
fn step(state: State, c: char) -> Step {
    match state {
        State::Ground => ground(c),
        State::Escape => match c {
            '[' => Step::To(State::Csi),
            ']' | 'P' | 'X' | '^' | '_' => Step::To(State::String { len: 0 }),
            ESC => Step::To(State::Escape),
            '\u{20}'..='\u{2f}' => Step::To(State::EscapeIntermediate),
            '\u{30}'..='\u{7e}' => Step::To(State::Ground),
            _ => Step::Again(State::Ground),
        },
        State::EscapeIntermediate => match c {
            '\u{20}'..='\u{2f}' => Step::To(State::EscapeIntermediate),
            '\u{30}'..='\u{7e}' => Step::To(State::Ground),
            _ => Step::Again(State::Ground),
        },
        State::Csi => match c {
            '\u{20}'..='\u{3f}' => Step::To(State::Csi),
            '\u{40}'..='\u{7e}' => Step::To(State::Ground),
            ESC => Step::To(State::Escape),
            _ => Step::Again(State::Ground),
        },
        State::String { len } => match c {
            BEL | C1_ST => Step::To(State::Ground),
            ESC => Step::To(State::StringEscape),
            // An unterminated string hides at most the rest of its line.
            '\n' => Step::Again(State::Ground),
            _ if len >= MAX_STRING => Step::Again(State::Ground),
            _ => Step::To(State::String { len: len + 1 }),
        },
        State::StringEscape => match c {
            '\\' => Step::To(State::Ground),
            _ => Step::Again(State::Escape),
        },
    }
}

fn ground(c: char) -> Step {
    match c {
        '\n' | '\t' | '\r' => Step::Print,
        ESC => Step::To(State::Escape),
        C1_CSI => Step::To(State::Csi),
        c if C1_STRINGS.contains(&c) => Step::To(State::String { len: 0 }),
        c if c.is_control() => Step::To(State::Ground),
        _ => Step::Print,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(input: &[u8]) -> Vec<u8> {
        let mut s = Sanitizer::default();
        let mut out = s.feed(input);
        out.extend(s.finish());
        out
    }

    /// Fed in `parts` chunks cut at `cuts`.
    fn split(input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut s = Sanitizer::default();
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            out.extend(s.feed(&input[from..cut]));
            from = cut;
        }
        out.extend(s.finish());
        out
    }

    fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
        let long_osc = [b"\x1b]".as_slice(), &[b'A'; 5000], b"\x07x"].concat();
        let long_tail: &'static str =
            Box::leak(format!("{}x", "A".repeat(5000 - MAX_STRING)).into_boxed_str());
        vec![
            ("plain text", b"hello, world\n".to_vec(), "hello, world\n"),
            (
                "UTF-8 kept",
                "héllo € 😀 日本\n".as_bytes().to_vec(),
                "héllo € 😀 日本\n",
            ),
            ("tabs kept", b"a\tb\n".to_vec(), "a\tb\n"),
            (
                "colours",
                b"\x1b[1;31mred\x1b[0m plain".to_vec(),
                "red plain",
            ),
            (
                "OSC 52 clipboard write, BEL",
                b"\x1b]52;c;cm0gLXJmIH4=\x07after".to_vec(),
                "after",
            ),
            (
                "OSC 52 clipboard write, ST",
                b"\x1b]52;c;cm0gLXJmIH4=\x1b\\after".to_vec(),
                "after",
            ),
            (
                "window title",
                b"\x1b]0;pwned\x07x\x1b]2;t\x1b\\y".to_vec(),
                "xy",
            ),
            (
                "OSC 8 hyperlink",
                b"\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\".to_vec(),
                "click",
            ),
            (
                "cursor up, home, erase line",
                b"ok\n\x1b[2A\x1b[1;1H\x1b[2Kfake".to_vec(),
                "ok\nfake",
            ),
            (
                "save, reverse index, restore",
                b"\x1b7\x1bM\x1bMx\x1b8".to_vec(),
                "x",
            ),
            (
                "private mode (hide cursor)",
                b"\x1b[?25lx\x1b[?1049h".to_vec(),
                "x",
            ),
            ("charset designation", b"\x1b(0x\x1b(B".to_vec(), "x"),
            ("full reset", b"\x1bcx".to_vec(), "x"),
            (
                "DCS (sixel) and APC",
                b"\x1bPq#0;2;0;0;0\x1b\\a\x1b_apc\x1b\\b".to_vec(),
                "ab",
            ),
            ("C1 CSI as UTF-8", "\u{9b}31mred".as_bytes().to_vec(), "red"),
            (
                "C1 OSC as UTF-8, C1 ST",
                "\u{9d}0;title\u{9c}x".as_bytes().to_vec(),
                "x",
            ),
            (
                "other C1 dropped",
                "a\u{85}b\u{84}c".as_bytes().to_vec(),
                "abc",
            ),
            (
                "raw C1 byte is not UTF-8",
                b"\x9b31mred".to_vec(),
                "\u{fffd}31mred",
            ),
            (
                "invalid UTF-8",
                b"a\xff\xfeb\xc0\xafc".to_vec(),
                "a\u{fffd}\u{fffd}b\u{fffd}\u{fffd}c",
            ),
            (
                "C0 controls and DEL",
                b"a\x07b\x08c\x00d\x7fe\x0bf\x0cg".to_vec(),
                "abcdefg",
            ),
            ("CR LF is one line break", b"a\r\nb\r\n".to_vec(), "a\nb\n"),
            (
                "a lone CR is a line break",
                b"50%\r100%\rdone\n".to_vec(),
                "50%\n100%\ndone\n",
            ),
            ("CR CR LF", b"a\r\r\nb".to_vec(), "a\n\nb"),
            (
                "hidden line stays visible",
                b"rm -rf /\r\x1b[Kls      \n".to_vec(),
                "rm -rf /\nls      \n",
            ),
            (
                "unterminated OSC ends at its line",
                b"\x1b]0;title\nnext".to_vec(),
                "\nnext",
            ),
            ("CSI cut by a line break", b"\x1b[12\nx".to_vec(), "\nx"),
            ("ESC ESC", b"\x1b\x1b[31mx".to_vec(), "x"),
            ("ESC then a line break", b"a\x1b\nb".to_vec(), "a\nb"),
            (
                "ESC inside a string starts anew",
                b"\x1b]0;t\x1b[31mx".to_vec(),
                "x",
            ),
            ("a string longer than the cap", long_osc, long_tail),
            (
                "truncated character at the end",
                b"abc\xe2\x82".to_vec(),
                "abc\u{fffd}",
            ),
        ]
    }

    #[test]
    fn control_sequences_are_stripped_and_text_kept() {
        for (what, input, want) in cases() {
            let got = whole(&input);
            assert_eq!(String::from_utf8_lossy(&got), want, "{what}");
            assert!(std::str::from_utf8(&got).is_ok(), "{what}: not UTF-8");
        }
    }

    #[test]
    fn a_chunk_boundary_anywhere_changes_nothing() {
        for (what, input, want) in cases() {
            if input.len() > 200 {
                continue;
            }
            for cut in 0..=input.len() {
                assert_eq!(
                    String::from_utf8_lossy(&split(&input, &[cut])),
                    want,
                    "{what}, cut at {cut}"
                );
            }
            let every: Vec<usize> = (1..input.len()).collect();
            assert_eq!(
                String::from_utf8_lossy(&split(&input, &every)),
                want,
                "{what}, byte by byte"
            );
        }
    }

    #[test]
    fn a_message_is_sanitized_whole() {
        assert_eq!(
            sanitize("denied \u{1b}]52;c;eA==\u{7}\u{1b}[2Jnow"),
            "denied now"
        );
    }
}
