use proptest::prelude::*;

use super::*;

/// `log` masked by feeding it cut at `cuts` (sorted positions).
fn streamed(patterns: &Patterns, log: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut masker = Masker::new(patterns.clone());
    let mut out = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&log.len())) {
        let cut = cut.clamp(from, log.len());
        out.extend(masker.push(&log[from..cut]));
        from = cut;
    }
    out.extend(masker.finish());
    out
}

/// Every way to cut `log` once and twice gives `want`.
fn assert_masks(values: &[&str], log: &str, want: &str) {
    let patterns = Patterns::new(values);
    let log = log.as_bytes();
    assert_eq!(
        String::from_utf8_lossy(&patterns.mask(log)),
        want,
        "whole: {values:?} in {log:?}"
    );
    for a in 0..=log.len() {
        for b in a..=log.len() {
            let got = streamed(&patterns, log, &[a, b]);
            assert_eq!(
                String::from_utf8_lossy(&got),
                want,
                "{values:?} in {log:?} cut at {a} and {b}"
            );
        }
    }
}

#[test]
fn masks_values_however_the_log_is_cut() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["s3cr3t"], "token=s3cr3t\n", "token=***\n"),
        (&["s3cr3t"], "s3cr3t", "***"),
        (&["s3cr3t"], "s3cr3ts3cr3t s3cr3", "****** s3cr3"),
        (&["s3cr3t"], "no secret here\n", "no secret here\n"),
        // Overlapping occurrences: leftmost wins, the rest is plain.
        (&["aba"], "ababa", "***ba"),
        (&["aaa"], "aaaaaaa", "******a"),
        // One value a prefix of another: the longest match at a position wins.
        (&["abc", "abcdef"], "abcdef abcde abc", "*** ***de ***"),
        (&["abcdef", "cde"], "abcdXcdef", "abcdX***f"),
        // A value that ends where another begins.
        (&["abc", "cde"], "abcde", "***de"),
        // Multi-line values: whole, and each line (CRLF too).
        (
            &["line-one\nline-two\r\n"],
            "x line-one\nline-two\r\n y line-two z",
            "x *** y *** z",
        ),
        (&["first\nsecond"], "second, then first", "***, then ***"),
        // Too short, empty or only whitespace: not masked.
        (&["ab", "", "   ", "\n\n"], "ab   \n\n", "ab   \n\n"),
        // UTF-8 values and text around them stay whole characters.
        (&["pässwörd"], "é pässwörd ü", "é *** ü"),
        (&["Ωmega"], "ΩΩmegaΩ", "Ω***Ω"),
        // Control bytes are bytes like any other.
        (&["a\u{1b}[0mb"], "x a\u{1b}[0mb y", "x *** y"),
    ];
    for (values, log, want) in cases {
        assert_masks(values, log, want);
    }
}

#[test]
fn holds_back_only_what_could_still_become_a_value() {
    let mut masker = Masker::new(Patterns::new(["secret"]));
    assert_eq!(masker.push(b"hello "), b"hello ");
    // "sec" may be the start of "secret": held.
    assert_eq!(masker.push(b"a sec"), b"a ");
    // "secx" cannot be: released as it is.
    assert_eq!(masker.push(b"x"), b"secx");
    assert_eq!(masker.push(b" secre"), b" ");
    assert_eq!(masker.push(b"t!"), b"***!");
    assert_eq!(masker.push(b"secr"), b"");
    assert_eq!(masker.finish(), b"secr");
}

#[test]
fn no_values_pass_everything_at_once() {
    let mut masker = Masker::new(Patterns::new(Vec::<Vec<u8>>::new()));
    assert_eq!(masker.push(b"sec"), b"sec");
    assert!(masker.finish().is_empty());
}

#[test]
fn a_huge_value_is_masked_and_holds_back_less_than_itself() {
    let value: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let patterns = Patterns::new([&value]);
    let mut masker = Masker::new(patterns.clone());
    let mut out = masker.push(b"before ");
    for chunk in value.chunks(64 * 1024) {
        out.extend(masker.push(chunk));
        assert!(masker.held.len() < value.len());
    }
    out.extend(masker.push(b" after"));
    out.extend(masker.finish());
    assert_eq!(out, b"before *** after");
    assert_eq!(patterns.longest(), value.len());
}

#[test]
fn debug_output_names_no_value() {
    let shown = format!("{:?}", Patterns::new(["s3cr3t-value"]));
    assert!(!shown.contains("s3cr3t"), "{shown}");
}

#[test]
fn binary_values_and_logs_are_bytes() {
    let patterns = Patterns::new([[0u8, 0xff, 0xfe, 0]]);
    assert_eq!(
        patterns.mask(&[1, 0, 0xff, 0xfe, 0, 2]),
        [&[1u8][..], MASK, &[2]].concat()
    );
}

#[test]
fn outputs_keep_telling_they_were_cut() {
    let patterns = Patterns::new(["s3cr3t-value"]);
    assert_eq!(patterns.mask_outputs(b"k=s3cr3t-value\n", 100), b"k=***\n");
    // Read cut at the limit (the file is longer): still `limit` bytes once masked.
    let cut = patterns.mask_outputs(b"k=s3cr3t-value\nk2=v", 19);
    assert_eq!(cut, b"k=***\nk2=v*********");
}

fn chunked_log() -> impl Strategy<Value = (Vec<String>, String, Vec<usize>)> {
    let values = prop::collection::vec("[ab\n]{1,6}", 1..4);
    (
        values,
        "[ab\n*c]{0,60}",
        prop::collection::vec(0usize..60, 0..8),
    )
}

proptest! {
    /// Cut anywhere, the masked log is the same, and no value survives it.
    #[test]
    fn masking_is_independent_of_chunking((values, log, mut cuts) in chunked_log()) {
        let patterns = Patterns::new(&values);
        cuts.sort_unstable();
        let whole = patterns.mask(log.as_bytes());
        prop_assert_eq!(&streamed(&patterns, log.as_bytes(), &cuts), &whole);
        prop_assert!(whole.len() <= log.len());
        let text = String::from_utf8_lossy(&whole).into_owned();
        for value in &values {
            if value.len() >= MIN_LEN && !value.trim().is_empty() {
                prop_assert!(!text.contains(value.as_str()), "{value:?} in {text:?}");
            }
        }
    }
}
