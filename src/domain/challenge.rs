//! Server challenges a runner signs to prove it holds its private key.
//!
//! A challenge is `v1.<expiry unix seconds>.<16 random bytes>.<MAC>`, the MAC an
//! HMAC-SHA256 under a key this process drew at start: the server keeps nothing
//! per issued challenge (asking for challenges costs it no memory), only the ones
//! already redeemed until they expire, so each is good once. A challenge from
//! another process (a restart, a failover) fails the MAC and the runner asks again.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How long a challenge may be redeemed.
pub const LIFETIME_SECS: u64 = 60;

/// Redeemed challenges remembered at most (each lives `LIFETIME_SECS`): beyond it,
/// new challenges are refused until old ones expire, instead of growing memory.
pub const MAX_REDEEMED: usize = 100_000;

/// The longest challenge we issue; longer input is refused unread.
pub const MAX_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChallengeError {
    #[error("the challenge is malformed: ask GET /v1/challenge for one")]
    Malformed,
    #[error(
        "the challenge was not issued by this server (it may have restarted): ask for a new one"
    )]
    Forged,
    #[error("the challenge expired: ask for a new one")]
    Expired,
    #[error("the challenge was already used: ask for a new one")]
    Reused,
    #[error("too many challenges in flight: try again in a minute")]
    Busy,
}

pub struct Challenges {
    key: [u8; 32],
    redeemed: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Challenges")
    }
}

impl Challenges {
    /// A fresh MAC key from the OS.
    pub fn new() -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Self::with_key(key))
    }

    fn with_key(key: [u8; 32]) -> Self {
        Self {
            key,
            redeemed: Mutex::default(),
        }
    }

    fn mac(&self, body: &str) -> HmacSha256 {
        // new_from_slice only fails for key lengths HMAC cannot take; 32 is fine.
        let mut mac = HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(body.as_bytes());
        mac
    }

    /// A new challenge, good for [`LIFETIME_SECS`] from `now` (unix seconds).
    pub fn issue(&self, now: u64) -> Result<String, ChallengeError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|_| ChallengeError::Busy)?;
        let body = format!(
            "v1.{}.{}",
            now + LIFETIME_SECS,
            URL_SAFE_NO_PAD.encode(nonce)
        );
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&body).finalize().into_bytes());
        Ok(format!("{body}.{tag}"))
    }

    /// Check `challenge` and mark it used.
    pub fn redeem(&self, challenge: &str, now: u64) -> Result<(), ChallengeError> {
        if challenge.len() > MAX_LEN {
            return Err(ChallengeError::Malformed);
        }
        let (body, tag) = challenge
            .rsplit_once('.')
            .ok_or(ChallengeError::Malformed)?;
        let mut parts = body.split('.');
        let (Some("v1"), Some(expiry), Some(_nonce), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ChallengeError::Malformed);
        };
        let expiry: u64 = expiry.parse().map_err(|_| ChallengeError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| ChallengeError::Malformed)?;
        // Constant-time comparison inside verify_slice.
        self.mac(body)
            .verify_slice(&tag)
            .map_err(|_| ChallengeError::Forged)?;
        if now >= expiry {
            return Err(ChallengeError::Expired);
        }
        let mut used = self
            .redeemed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if used.len() >= MAX_REDEEMED {
            used.retain(|_, exp| *exp > now);
        }
        if used.len() >= MAX_REDEEMED {
            return Err(ChallengeError::Busy);
        }
        match used.insert(challenge.to_owned(), expiry) {
            Some(_) => Err(ChallengeError::Reused),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_challenge_is_good_once_and_until_it_expires() {
        let c = Challenges::with_key([7; 32]);
        let ch = c.issue(1000).unwrap();
        assert!(ch.len() <= MAX_LEN, "{}", ch.len());
        assert_eq!(c.redeem(&ch, 1000), Ok(()));
        assert_eq!(c.redeem(&ch, 1001), Err(ChallengeError::Reused));
        let late = c.issue(1000).unwrap();
        assert_eq!(
            c.redeem(&late, 1000 + LIFETIME_SECS),
            Err(ChallengeError::Expired)
        );
    }

    #[test]
    fn another_process_challenge_or_a_tampered_one_is_refused() {
        let a = Challenges::with_key([1; 32]);
        let b = Challenges::with_key([2; 32]);
        let ch = a.issue(10).unwrap();
        assert_eq!(b.redeem(&ch, 10), Err(ChallengeError::Forged));
        // Move the expiry forward: the MAC no longer matches.
        let (_, rest) = ch.split_once('.').unwrap();
        let (_, rest) = rest.split_once('.').unwrap();
        let tampered = format!("v1.99999999999.{rest}");
        assert_eq!(a.redeem(&tampered, 10), Err(ChallengeError::Forged));
    }

    #[test]
    fn hostile_challenges_are_refused_not_panicked_on() {
        let c = Challenges::with_key([3; 32]);
        let long = "a.".repeat(200);
        for bad in [
            "",
            ".",
            "v1",
            "v1.1.2",
            "v2.1.2.3",
            "v1.x.n.t",
            "v1.1.n.!!",
            "v1.18446744073709551616.n.t",
            "v1.1.n.t.extra",
            long.as_str(),
        ] {
            assert!(
                matches!(
                    c.redeem(bad, 0),
                    Err(ChallengeError::Malformed | ChallengeError::Forged)
                ),
                "{bad:?}"
            );
        }
    }
}
