//! Property tests: every parser of outside input is driven with generated input and
//! must answer (accept or refuse) without panicking. The inputs are what a hostile
//! or broken peer sends: arbitrary bytes, near-valid JSON, split SSE streams,
//! forged challenges, signatures and tokens.
#![allow(clippy::unwrap_used)]

use baton::crd::{RunnerToken, RunnerTokenSpec, RunnerTokenStatus};
use baton::domain::challenge::Challenges;
use baton::domain::identity::{self, Identity, Purpose};
use baton::domain::token;
use baton::protocol::ControlEvent;
use baton::runner::client::SseParser;
use baton::server::input;
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;

/// JSON-ish text: the characters registration bodies are made of, in any order.
fn jsonish() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r#"[{}\[\]":,a-zA-Z0-9_\-\. \\/]{0,200}"#).unwrap()
}

/// A registration body with each field drawn from a mix of valid and hostile values.
fn register_body() -> impl Strategy<Value = String> {
    let name = prop_oneof![Just("r1".to_owned()), "[a-z0-9-]{0,70}", "\\PC{0,20}",];
    let id = prop_oneof![Just("0123456789abcdef".to_owned()), "\\PC{0,80}"];
    let key = prop_oneof![
        Just(format!("ed25519:{}", "A".repeat(43))),
        "ed25519:[A-Za-z0-9_-]{0,60}",
        "\\PC{0,60}",
    ];
    let labels = proptest::collection::btree_map("\\PC{0,70}", "\\PC{0,70}", 0..4);
    (name, id, key, labels, "\\PC{0,200}", "\\PC{0,200}").prop_map(
        |(name, id, key, labels, challenge, signature)| {
            serde_json::json!({
                "name": name, "runnerId": id, "publicKey": key, "labels": labels,
                "challenge": challenge, "signature": signature,
            })
            .to_string()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn registration_bodies_never_panic(body in prop_oneof![register_body(), jsonish()]) {
        let _ = input::parse_register(Some("application/json"), body.as_bytes());
    }

    #[test]
    fn registration_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = input::parse_register(Some("application/json"), &body);
    }

    #[test]
    fn authorization_headers_never_panic(h in "\\PC{0,300}") {
        let _ = input::bearer(Some(&h));
    }

    #[test]
    fn control_events_never_panic(name in "\\PC{0,20}", data in prop_oneof![jsonish(), "\\PC{0,200}"]) {
        let _ = ControlEvent::decode(&name, &data);
    }

    /// However a stream is cut into chunks, the same events come out.
    #[test]
    fn sse_events_survive_any_chunking(
        events in proptest::collection::vec(("[a-z]{1,10}", "[^\r\n]{0,40}"), 0..8),
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..10),
    ) {
        let stream: String = events
            .iter()
            .map(|(e, d)| format!("event: {e}\ndata: {d}\n\n"))
            .collect();
        let bytes = stream.as_bytes();
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut parser = SseParser::default();
        let mut got = Vec::new();
        let mut from = 0;
        for to in at.into_iter().chain([bytes.len()]) {
            got.extend(parser.push(&bytes[from..to]));
            from = to;
        }
        let whole = SseParser::default().push(bytes);
        prop_assert_eq!(got, whole);
    }

    #[test]
    fn sse_garbage_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let mut parser = SseParser::default();
        for c in &chunks {
            let _ = parser.push(c);
        }
    }

    #[test]
    fn challenges_never_panic_and_forgeries_fail(text in "\\PC{0,200}", now in any::<u64>()) {
        let c = Challenges::new().unwrap();
        prop_assert!(c.redeem(&text, now).is_err());
    }

    #[test]
    fn keys_and_signatures_never_panic(pk in "\\PC{0,80}", sig in "\\PC{0,120}", ch in "\\PC{0,80}") {
        let _ = identity::fingerprint(&pk);
        prop_assert!(identity::verify(&pk, Purpose::Register, &ch, "r1", &sig).is_err());
        let _ = Identity::from_text(&pk);
    }

    #[test]
    fn presented_tokens_never_panic_nor_match(presented in "\\PC{0,300}") {
        let mut rt = RunnerToken::new("t", RunnerTokenSpec::default());
        rt.metadata.namespace = Some("ns".into());
        rt.status = Some(RunnerTokenStatus {
            token_hash: Some(token::hash("baton_the-real-one")),
            ..Default::default()
        });
        let check = token::check(Some(&presented), "r1", [&rt], Timestamp::now());
        prop_assert!(!matches!(check, token::TokenCheck::Valid(_)));
    }
}

/// A real signature made with a key and then changed in one character never verifies.
#[test]
fn a_tampered_signature_never_verifies() {
    let id = Identity::generate().unwrap();
    let sig = id.sign(Purpose::Control, "c", "r1");
    for i in 0..sig.len() {
        let mut bytes = sig.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        if tampered != sig {
            assert!(
                identity::verify(&id.public_key(), Purpose::Control, "c", "r1", &tampered).is_err(),
                "position {i}"
            );
        }
    }
}
