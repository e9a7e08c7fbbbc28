//! TLS for op-agent: the server side of every listener (manager API, raft, agent API) with an
//! optional client-certificate check and live reload, the client side's trust and identity
//! files, and a development CA (`op-manager certs init`).
//! [`guard`] bounds the time every connection of those listeners may take (silent or dripping
//! clients); [`auth_failures`] slows credential guessing on the listeners that check one.
//!
//! Everything reads PEM files. A listener's certificate and key are read again when they change
//! on disk (checked every second) or on SIGHUP; the new ones serve new handshakes while open
//! connections carry on undisturbed. A bad replacement is logged and the old one kept.

pub mod auth_failures;
pub mod bucket;
pub mod certs;
pub mod guard;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {reason}", .path.display())]
    File { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The one crypto provider every config uses (aws-lc-rs), so nothing depends on a process-wide
/// default having been installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Every certificate of a PEM file (a chain: leaf first); an error when there is none.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(path, "holds no CERTIFICATE block"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_err(path, format!("no usable private key: {e}")))
}

/// The trust anchors of a PEM CA file.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| file_err(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// One listener's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates signed by this CA are accepted (and checked when presented).
    pub client_ca: Option<PathBuf>,
    /// Refuse clients that present no certificate signed by `client_ca`.
    pub require_client_cert: bool,
}

impl ServerTls {
    /// A listener's TLS from its four settings (`tls_cert`, `tls_key`, `client_ca`,
    /// `require_client_cert`), the one rule for the manager and the agent: `Ok(None)` is plain
    /// HTTP; settings that do not fit together are refused with the keys to fix and why.
    pub fn from_settings(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
        require_client_cert: bool,
    ) -> Result<Option<ServerTls>, String> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(ServerTls {
                cert,
                key,
                client_ca,
                require_client_cert,
            })),
            (None, None) if client_ca.is_none() && !require_client_cert => Ok(None),
            (None, None) => Err(
                "client_ca/require_client_cert: client certificates need TLS: \
                                 set tls_cert and tls_key too"
                    .into(),
            ),
            _ => Err("tls_cert/tls_key: set both, or neither (plain HTTP)".into()),
        }
    }

    /// Reads the files and builds the rustls config; every problem names its file.
    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
        let certs = read_certs(&self.cert)?;
        let key = read_key(&self.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(read_roots(ca)?),
                    provider(),
                );
                let verifier = if self.require_client_cert {
                    verifier.build()
                } else {
                    verifier.allow_unauthenticated().build()
                }
                .map_err(|e| file_err(ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None if self.require_client_cert => {
                return Err(TlsError::Config(
                    "requiring client certificates needs a client CA (--client-ca)".into(),
                ));
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| file_err(&self.key, format!("does not match the certificate: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The config axum-server serves, for [`ServerTls::watch`] to reload.
    pub fn rustls(&self) -> Result<RustlsConfig, TlsError> {
        Ok(RustlsConfig::from_config(Arc::new(self.server_config()?)))
    }

    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }

    /// Reloads `served` when the files change (checked every second) or on SIGHUP, until
    /// `shutdown`. A replacement that does not load is logged; the served config stays.
    pub fn watch(&self, served: RustlsConfig, shutdown: CancellationToken) -> JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut hup = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            ) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "no SIGHUP handler; certificates reload when their files change");
                    None
                }
            };
            let mut seen = tls.stamps();
            loop {
                let hangup = async {
                    match hup.as_mut() {
                        Some(s) => {
                            s.recv().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                let forced = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = hangup => true,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => false,
                };
                let now = tls.stamps();
                if !forced && now == seen {
                    continue;
                }
                // A file being rewritten may be caught half-way: the next tick tries again.
                match tls.server_config() {
                    Ok(config) => {
                        served.reload_from_config(Arc::new(config));
                        seen = now;
                        tracing::info!(cert = %tls.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => {
                        if forced || now != seen {
                            tracing::error!(error = %e, "TLS certificate not reloaded; still serving the previous one");
                        }
                        seen = now;
                    }
                }
            }
        })
    }
}

/// Catches SIGHUP for the rest of the process's life and logs it. Its default action ends the
/// process, and logrotate or an operator sends it expecting a reload: both daemons call this in
/// every mode, before they announce themselves. The certificates reload on it
/// ([`ServerTls::watch`]); logs go to stderr, so there is no file to reopen.
pub fn catch_hangup(tls: bool) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if tls {
                tracing::info!(
                    "SIGHUP received: reloading the TLS certificates; logs go to stderr, nothing else to reload"
                );
            } else {
                tracing::info!("SIGHUP received: nothing to reload (no TLS; logs go to stderr)");
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<PathBuf> {
        Some(PathBuf::from(s))
    }

    #[test]
    fn settings_fit_together_or_are_refused_by_name() {
        assert_eq!(ServerTls::from_settings(None, None, None, false), Ok(None));
        assert_eq!(
            ServerTls::from_settings(p("/c.pem"), p("/k.pem"), p("/ca.pem"), true),
            Ok(Some(ServerTls {
                cert: "/c.pem".into(),
                key: "/k.pem".into(),
                client_ca: p("/ca.pem"),
                require_client_cert: true,
            }))
        );
        for (cert, key) in [(p("/c.pem"), None), (None, p("/k.pem"))] {
            let e = ServerTls::from_settings(cert, key, None, false).unwrap_err();
            assert!(e.starts_with("tls_cert/tls_key: set both"), "{e}");
        }
        for (ca, require) in [(p("/ca.pem"), false), (None, true)] {
            let e = ServerTls::from_settings(None, None, ca, require).unwrap_err();
            assert!(e.starts_with("client_ca/require_client_cert: "), "{e}");
        }
    }
}
