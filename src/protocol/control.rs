//! The control channel: the server-sent events a runner receives, as one enum
//! that the server encodes and the runner decodes. An event's SSE `event:` name
//! is its tag; its `data:` is the JSON of its fields.

use serde::{Deserialize, Serialize};

/// Everything the server says on a runner's control channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum ControlEvent {
    /// First on every channel: the state the runner is in, and how often pings come.
    #[serde(rename_all = "camelCase")]
    Hello { disabled: bool, ping_seconds: u64 },
    /// The channel is alive (the runner reconnects when pings stop).
    Ping,
    /// Take jobs again.
    Enable,
    /// Take no new jobs.
    Disable,
    /// Wipe the state directory and exit.
    Delete,
    /// A Job handed to the runner at `epoch`: claim it, then run it.
    Assign {
        namespace: String,
        name: String,
        epoch: i64,
    },
    /// Cancel a Job the runner holds.
    Cancel { namespace: String, name: String },
    /// The server ends the channel (rejected, token revoked, forgotten, replaced).
    Close { reason: String },
}

/// An event the runner could not read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An event name this runner does not know (a newer server): ignored.
    #[error("unknown control event {0:?}")]
    Unknown(String),
    #[error("malformed {event} event: {message}")]
    Malformed { event: String, message: String },
}

const NAMES: [&str; 8] = [
    "hello", "ping", "enable", "disable", "delete", "assign", "cancel", "close",
];

impl ControlEvent {
    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Ping => "ping",
            Self::Enable => "enable",
            Self::Disable => "disable",
            Self::Delete => "delete",
            Self::Assign { .. } => "assign",
            Self::Cancel { .. } => "cancel",
            Self::Close { .. } => "close",
        }
    }

    /// Whether the channel ends after this event.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Delete | Self::Close { .. })
    }

    /// The SSE `data:` line: the event's JSON (its tag included, so the data
    /// alone also says what it is).
    pub fn data(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Read an SSE event. The name decides; a `data:` without the tag (or with
    /// another one) is read as the named event all the same.
    pub fn decode(event: &str, data: &str) -> Result<Self, DecodeError> {
        if !NAMES.contains(&event) {
            return Err(DecodeError::Unknown(event.chars().take(64).collect()));
        }
        let malformed = |message: String| DecodeError::Malformed {
            event: event.to_owned(),
            message,
        };
        let mut value: serde_json::Value = match data.trim() {
            "" => serde_json::json!({}),
            text => serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?,
        };
        let Some(fields) = value.as_object_mut() else {
            return Err(malformed("data is not a JSON object".into()));
        };
        fields.insert("event".into(), serde_json::Value::String(event.into()));
        serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_event_round_trips() {
        let all = [
            ControlEvent::Hello {
                disabled: true,
                ping_seconds: 10,
            },
            ControlEvent::Ping,
            ControlEvent::Enable,
            ControlEvent::Disable,
            ControlEvent::Delete,
            ControlEvent::Assign {
                namespace: "ns".into(),
                name: "j".into(),
                epoch: 3,
            },
            ControlEvent::Cancel {
                namespace: "ns".into(),
                name: "j".into(),
            },
            ControlEvent::Close {
                reason: "replaced".into(),
            },
        ];
        for ev in all {
            assert_eq!(
                ControlEvent::decode(ev.name(), &ev.data()),
                Ok(ev.clone()),
                "{ev:?}"
            );
        }
    }

    #[test]
    fn what_older_servers_sent_still_reads() {
        let hello = ControlEvent::decode("hello", r#"{"disabled":false,"pingSeconds":10}"#);
        assert_eq!(
            hello,
            Ok(ControlEvent::Hello {
                disabled: false,
                ping_seconds: 10
            })
        );
        assert_eq!(ControlEvent::decode("ping", "{}"), Ok(ControlEvent::Ping));
        assert_eq!(ControlEvent::decode("ping", ""), Ok(ControlEvent::Ping));
        let close = ControlEvent::decode("close", r#"{"event":"close","reason":"bye"}"#);
        assert_eq!(
            close,
            Ok(ControlEvent::Close {
                reason: "bye".into()
            })
        );
    }

    #[test]
    fn hostile_events_are_refused_not_guessed() {
        // The name decides: data claiming to be another event does not change it.
        let lie = ControlEvent::decode("ping", r#"{"event":"delete"}"#);
        assert_eq!(lie, Ok(ControlEvent::Ping));
        // Substring tricks do not disable a runner ("disabled":true inside a string).
        let sneaky = ControlEvent::decode(
            "hello",
            r#"{"disabled":false,"pingSeconds":5,"note":"\"disabled\":true"}"#,
        );
        assert_eq!(
            sneaky,
            Ok(ControlEvent::Hello {
                disabled: false,
                ping_seconds: 5
            })
        );
        for (event, data) in [
            ("assign", r#"{"namespace":"ns","name":"j"}"#), // no epoch
            ("assign", r#"{"namespace":"ns","name":"j","epoch":"1"}"#), // wrong type
            ("assign", "not json"),
            ("cancel", "[1,2]"),
            ("hello", r#"{"disabled":"yes","pingSeconds":1}"#),
            ("close", "{}"),
        ] {
            assert!(
                matches!(
                    ControlEvent::decode(event, data),
                    Err(DecodeError::Malformed { .. })
                ),
                "{event} {data}"
            );
        }
        let unknown = ControlEvent::decode(&"x".repeat(1000), "{}");
        assert_eq!(unknown, Err(DecodeError::Unknown("x".repeat(64))));
    }
}
