//! HTTPS for the runner API: the rustls acceptor that [`super::listen`] puts in front
//! of the same warp routes (warp 0.4 has no TLS of its own), with the certificate
//! re-read when its files change, since cert-manager rotates the Secret under a
//! running controller.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tracing::{info, warn};

/// How often, at most, the files are read again (on a handshake, not on a timer).
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The PEM files of the serving certificate (chain first) and its private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read the TLS {what} file {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the TLS certificate file {} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("parse the TLS certificate file {}: {source}", path.display())]
    Certificate {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("the TLS key file {} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {source}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("load the private key in {} for the certificate in {}: {source}", key.display(), cert.display())]
    Load {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("build the TLS server configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// A TLS acceptor serving `files`, re-read at most every `every`. Errors name the file.
pub fn acceptor(files: &TlsFiles, every: Duration) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let resolver = ReloadingCert::load(files.clone(), provider.clone(), every)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    // Our clients speak HTTP/1.1 (SSE included); say so rather than leave it to guessing.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The certificate handed to each handshake; re-read when the files' contents change.
pub struct ReloadingCert {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    every: Duration,
    state: Mutex<State>,
}

struct State {
    current: Arc<CertifiedKey>,
    /// The bytes last read (good or bad): unchanged files are not parsed or warned about
    /// again. Contents, not mtimes: a rewrite within the same second still counts.
    seen: (Vec<u8>, Vec<u8>),
    checked: Instant,
}

impl ReloadingCert {
    /// Read and check the files once (a bad pair is an error naming the file).
    pub fn load(
        files: TlsFiles,
        provider: Arc<CryptoProvider>,
        every: Duration,
    ) -> Result<Self, TlsError> {
        let seen = read(&files)?;
        let current = Arc::new(certified(&files, &seen, &provider)?);
        Ok(Self {
            files,
            provider,
            every,
            state: Mutex::new(State {
                current,
                seen,
                checked: Instant::now(),
            }),
        })
    }

    /// The certificate to serve now, after reading the files again if it is time. A few
    /// KB read on the handshake path at most every `every`: no watcher task to manage,
    /// and nothing is read while no one connects.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.checked.elapsed() >= self.every {
            st.checked = Instant::now();
            self.refresh(&mut st);
        }
        st.current.clone()
    }

    /// A bad or half-written pair keeps the old certificate: a warning, never an outage.
    fn refresh(&self, st: &mut State) {
        let bytes = match read(&self.files) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "TLS files unreadable; still serving the previous certificate");
                return;
            }
        };
        if bytes == st.seen {
            return;
        }
        match certified(&self.files, &bytes, &self.provider) {
            Ok(key) => {
                st.current = Arc::new(key);
                info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                warn!(error = %e, "new TLS files rejected; still serving the previous certificate")
            }
        }
        st.seen = bytes;
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.files)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

fn read(files: &TlsFiles) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let one = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    Ok((one("certificate", &files.cert)?, one("key", &files.key)?))
}

fn certified(
    files: &TlsFiles,
    (cert, key): &(Vec<u8>, Vec<u8>),
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Certificate {
            path: files.cert.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|source| TlsError::Key {
        path: files.key.clone(),
        source,
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| match source {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        },
        source => TlsError::Load {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        },
    })
}
