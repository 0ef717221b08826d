//! A runner's key pair: its identity towards the runner API.
//!
//! At first start a runner makes an Ed25519 key pair in its state directory and
//! registers the public key; the server binds it to the Runner. Registration and
//! the control channel then prove possession of the private key by signing a
//! server challenge (see [`super::challenge`]) together with what the request is
//! for, so a signature made for one purpose or runner is worthless for another.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Prefix of an encoded public key, so a key is recognisable and its kind explicit.
pub const PUBLIC_KEY_PREFIX: &str = "ed25519:";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("read 32 random bytes from the OS for the runner's key: {0}")]
    Random(String),
    #[error("the public key must look like ed25519:<43 base64url characters>")]
    PublicKeyFormat,
    #[error("the public key is not a valid Ed25519 point")]
    PublicKeyInvalid,
    #[error("the private key file does not hold a base64url Ed25519 seed of 32 bytes")]
    PrivateKeyFormat,
    #[error("the signature must be 64 bytes of base64url")]
    SignatureFormat,
    #[error("the signature does not verify with the runner's public key")]
    BadSignature,
}

/// What a signature is for: it is part of the signed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Register,
    Control,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Register => "register",
            Purpose::Control => "control",
        }
    }
}

/// The runner's private key.
pub struct Identity(SigningKey);

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        write!(f, "Identity({})", fingerprint_of(&self.0.verifying_key()))
    }
}

impl Identity {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// The key as stored in the state directory: the seed, base64url.
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.to_bytes())
    }

    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| KeyError::PrivateKeyFormat)?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| KeyError::PrivateKeyFormat)?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// `ed25519:<base64url>`: what the runner registers.
    pub fn public_key(&self) -> String {
        encode_public(&self.0.verifying_key())
    }

    /// Sign `challenge` for `purpose` as runner `name`; base64url.
    pub fn sign(&self, purpose: Purpose, challenge: &str, name: &str) -> String {
        let msg = message(purpose, challenge, name, &self.public_key());
        URL_SAFE_NO_PAD.encode(self.0.sign(&msg).to_bytes())
    }
}

fn encode_public(key: &VerifyingKey) -> String {
    format!(
        "{PUBLIC_KEY_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(key.as_bytes())
    )
}

fn decode_public(text: &str) -> Result<VerifyingKey, KeyError> {
    let b64 = text
        .strip_prefix(PUBLIC_KEY_PREFIX)
        .filter(|b| b.len() == 43)
        .ok_or(KeyError::PublicKeyFormat)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| KeyError::PublicKeyFormat)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::PublicKeyFormat)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::PublicKeyInvalid)
}

/// Check that `public_key` is a well-formed Ed25519 key.
pub fn parse_public(public_key: &str) -> Result<(), KeyError> {
    decode_public(public_key).map(|_| ())
}

/// `SHA256:<base64>` of the key's 32 bytes, as OpenSSH prints fingerprints.
pub fn fingerprint(public_key: &str) -> Result<String, KeyError> {
    Ok(fingerprint_of(&decode_public(public_key)?))
}

fn fingerprint_of(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// The signed message: a fixed domain, the purpose, the challenge, the runner's
/// name and its public key, one per line. Names and challenges hold no newline
/// (both are validated before), so the fields cannot run into each other.
fn message(purpose: Purpose, challenge: &str, name: &str, public_key: &str) -> Vec<u8> {
    format!(
        "baton-runner-proof/v1\n{}\n{challenge}\n{name}\n{public_key}",
        purpose.as_str()
    )
    .into_bytes()
}

/// Verify that the holder of `public_key`'s private key signed `challenge` for
/// `purpose` as runner `name`.
pub fn verify(
    public_key: &str,
    purpose: Purpose,
    challenge: &str,
    name: &str,
    signature: &str,
) -> Result<(), KeyError> {
    let key = decode_public(public_key)?;
    let sig = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| KeyError::SignatureFormat)?;
    let sig: [u8; 64] = sig.try_into().map_err(|_| KeyError::SignatureFormat)?;
    let msg = message(purpose, challenge, name, public_key);
    key.verify_strict(&msg, &Signature::from_bytes(&sig))
        .map_err(|_| KeyError::BadSignature)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_signature_verifies_for_its_purpose_name_and_challenge_only() {
        let id = Identity::generate().unwrap();
        let pk = id.public_key();
        let sig = id.sign(Purpose::Register, "ch1", "r1");
        assert_eq!(verify(&pk, Purpose::Register, "ch1", "r1", &sig), Ok(()));
        for (purpose, ch, name) in [
            (Purpose::Control, "ch1", "r1"),
            (Purpose::Register, "ch2", "r1"),
            (Purpose::Register, "ch1", "r2"),
        ] {
            assert_eq!(
                verify(&pk, purpose, ch, name, &sig),
                Err(KeyError::BadSignature),
                "{purpose:?} {ch} {name}"
            );
        }
        let other = Identity::generate().unwrap();
        assert_eq!(
            verify(&other.public_key(), Purpose::Register, "ch1", "r1", &sig),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn the_stored_key_round_trips_and_debug_hides_it() {
        let id = Identity::generate().unwrap();
        let back = Identity::from_text(&id.to_text()).unwrap();
        assert_eq!(back.public_key(), id.public_key());
        let shown = format!("{id:?}");
        assert!(!shown.contains(&id.to_text()), "{shown}");
        assert!(shown.contains("SHA256:"));
    }

    #[test]
    fn hostile_keys_and_signatures_are_refused_not_panicked_on() {
        let id = Identity::generate().unwrap();
        let pk = id.public_key();
        let sig = id.sign(Purpose::Control, "c", "r");
        let bad_keys = [
            "",
            "ed25519:",
            "rsa:AAAA",
            "ed25519:!!!!",
            &pk[..pk.len() - 1],
            &format!("{pk}A"),
            "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ];
        for k in bad_keys {
            assert!(
                verify(k, Purpose::Control, "c", "r", &sig).is_err(),
                "{k:?}"
            );
        }
        for s in ["", "x", &sig[..10], &format!("{sig}AA"), "Zm9v"] {
            assert!(verify(&pk, Purpose::Control, "c", "r", s).is_err(), "{s:?}");
        }
        for t in ["", "short", "!!!!", &"A".repeat(100)] {
            assert_eq!(
                Identity::from_text(t).map(|_| ()),
                Err(KeyError::PrivateKeyFormat)
            );
        }
    }

    #[test]
    fn fingerprints_look_like_openssh_ones() {
        let id = Identity::generate().unwrap();
        let fp = fingerprint(&id.public_key()).unwrap();
        assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 43, "{fp}");
        assert_eq!(fingerprint("nope"), Err(KeyError::PublicKeyFormat));
    }
}
