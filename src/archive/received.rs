//! An archive coming over the network, written out only as far as it is what
//! its sender promised: never past the size announced, and its SHA-256 checked
//! at the end, before anyone extracts a byte of it.

use std::io::Write;

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

/// Why a received archive is not the one expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unexpected {
    #[error("the body broke off: {0}")]
    Body(String),
    #[error("longer than the {0} bytes expected")]
    TooLong(u64),
    #[error("{got} bytes, not the {want} expected")]
    Size { got: u64, want: u64 },
    #[error("its content hashes to {got}, not {want}")]
    Digest { got: String, want: String },
    #[error("write it here: {0}")]
    Write(String),
}

/// Copy `body` into `out`, checking it is `size` bytes with SHA-256 `digest`
/// (`sha256:<hex>`).
pub async fn receive<S, B, E>(
    mut body: S,
    out: &mut impl Write,
    digest: &str,
    size: u64,
) -> Result<(), Unexpected>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let (mut hash, mut got) = (Sha256::new(), 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Unexpected::Body(e.to_string()))?;
        let chunk = chunk.as_ref();
        got += chunk.len() as u64;
        if got > size {
            return Err(Unexpected::TooLong(size));
        }
        hash.update(chunk);
        out.write_all(chunk)
            .map_err(|e| Unexpected::Write(e.to_string()))?;
    }
    out.flush().map_err(|e| Unexpected::Write(e.to_string()))?;
    if got != size {
        return Err(Unexpected::Size { got, want: size });
    }
    let hashed = format!("sha256:{}", hex::encode(hash.finalize()));
    if hashed != digest {
        return Err(Unexpected::Digest {
            got: hashed,
            want: digest.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    async fn run(chunks: &[&'static str], digest: &str, size: u64) -> Result<Vec<u8>, Unexpected> {
        let body = futures::stream::iter(chunks.iter().map(|c| Ok::<_, String>(c.as_bytes())));
        let mut out = Vec::new();
        receive(body, &mut out, digest, size).await.map(|()| out)
    }

    #[tokio::test]
    async fn only_the_promised_bytes_pass() {
        assert_eq!(run(&["hel", "lo"], HELLO, 5).await.unwrap(), b"hello");
        assert_eq!(
            run(&["hello", "!"], HELLO, 5).await.unwrap_err(),
            Unexpected::TooLong(5)
        );
        assert_eq!(
            run(&["hell"], HELLO, 5).await.unwrap_err(),
            Unexpected::Size { got: 4, want: 5 }
        );
        assert!(matches!(
            run(&["jello"], HELLO, 5).await.unwrap_err(),
            Unexpected::Digest { .. }
        ));
        let broken = futures::stream::iter([Ok("he".as_bytes()), Err("reset by peer".to_owned())]);
        let err = receive(broken, &mut Vec::new(), HELLO, 5)
            .await
            .unwrap_err();
        assert_eq!(err, Unexpected::Body("reset by peer".into()));
    }
}
