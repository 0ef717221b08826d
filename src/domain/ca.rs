//! Trusted CA certificates in PEM: read, checked, re-encoded. Shared by the runner's
//! client (`--ca-file`, `--ca-pem`) and the controller, which hands on-demand
//! runner pods their CA (`--runner-ca-file`); here, below both, so neither imports
//! the other.

use std::path::{Path, PathBuf};

use tokio_rustls::rustls::pki_types::CertificateDer;

/// A CA file or text that cannot be trusted, naming where it came from.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("read the CA file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    Empty(CaOrigin),
    #[error("{origin} holds a bad certificate: {reason}")]
    Bad { origin: CaOrigin, reason: String },
}

/// Where extra trusted CA certificates come from, as errors name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaOrigin {
    /// `--ca-file` (or the controller's `--runner-ca-file`).
    File(PathBuf),
    /// `--ca-pem` / `BATON_CA_PEM`: the PEM text itself (what the controller hands
    /// on-demand runner pods).
    Pem,
}

impl std::fmt::Display for CaOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaOrigin::File(path) => write!(f, "the CA file {}", path.display()),
            CaOrigin::Pem => f.write_str("the CA PEM of --ca-pem (BATON_CA_PEM)"),
        }
    }
}

/// Every certificate in a PEM file, checked here so a bad one is reported with the
/// file's name (an HTTP client would only say "builder error" when it is built).
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let pem = std::fs::read(path).map_err(|source| CaError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_ca_pem(&pem, &CaOrigin::File(path.to_owned()))
}

/// Every certificate in PEM text (other PEM sections, e.g. a key, are skipped), each
/// checked to be a certificate a trust store takes; at least one.
pub fn parse_ca_pem(
    pem: &[u8],
    origin: &CaOrigin,
) -> Result<Vec<CertificateDer<'static>>, CaError> {
    use tokio_rustls::rustls::RootCertStore;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let bad = |reason: String| CaError::Bad {
        origin: origin.clone(),
        reason,
    };
    let ders = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if ders.is_empty() {
        return Err(CaError::Empty(origin.clone()));
    }
    for der in &ders {
        RootCertStore::empty()
            .add(der.clone())
            .map_err(|e| bad(e.to_string()))?;
    }
    Ok(ders)
}

/// Certificates as PEM text: only the CERTIFICATE blocks, whatever else the file held.
pub fn to_pem(ders: &[CertificateDer<'_>]) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    for der in ders {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}
