//! A development CA in one command (`op-manager certs init`): a CA, a server certificate for
//! the managers (also their client certificate on the raft links), a certificate per agent (its
//! client certificate towards the managers and the server certificate of its own API), and client
//! certificates for operators. For production, use your own PKI; the files have the same shape.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::TlsError;

/// What `certs init` writes.
#[derive(Debug, Clone, Default)]
pub struct InitRequest {
    /// Names and IPs the server certificate is valid for (`localhost` and `127.0.0.1` are
    /// always added).
    pub hosts: Vec<String>,
    /// One certificate per agent host name or IP (`agent-NAME.pem`): the agent presents it to
    /// the managers and serves its own API with it.
    pub agents: Vec<String>,
    /// Operator client certificates (`client-NAME.pem`), for agentcli against an mTLS manager.
    pub clients: Vec<String>,
    /// Days the certificates are valid.
    pub days: u32,
}

fn cfg(e: rcgen::Error) -> TlsError {
    TlsError::Config(e.to_string())
}

fn valid_name(name: &str) -> Result<(), TlsError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name.starts_with('.')
    {
        return Err(TlsError::Config(format!(
            "{name:?}: certificate names are 1..64 of A-Z a-z 0-9 - _ . (not starting with .)"
        )));
    }
    Ok(())
}

fn write_new(dir: &Path, name: &str, text: &str, mode: u32) -> Result<PathBuf, TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .map_err(|e| TlsError::File {
            path: path.clone(),
            reason: format!("cannot create ({e}); certs init never overwrites a file"),
        })?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| TlsError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    Ok(path)
}

fn validity(p: &mut CertificateParams, days: u32) {
    let now = std::time::SystemTime::now();
    p.not_before = (now - std::time::Duration::from_secs(3600)).into();
    p.not_after = (now + std::time::Duration::from_secs(u64::from(days) * 86_400)).into();
}

/// Writes `ca.pem`/`ca.key`, `server.pem`/`server.key` and the client pairs into `dir`, and
/// returns the paths written. Refuses to overwrite anything.
pub fn init(dir: &Path, req: &InitRequest) -> Result<Vec<PathBuf>, TlsError> {
    for n in req.agents.iter().chain(&req.clients) {
        valid_name(n)?;
    }
    if req.days == 0 || req.days > 3650 {
        return Err(TlsError::Config("days must be 1..=3650".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| TlsError::File {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    if dir.join("ca.pem").exists() {
        return Err(TlsError::File {
            path: dir.join("ca.pem"),
            reason: "exists; certs init makes a new CA in an empty directory".into(),
        });
    }
    let mut written = Vec::new();

    let ca_key = KeyPair::generate().map_err(cfg)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(cfg)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "op-agent development CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca, req.days);
    let ca_cert = ca.self_signed(&ca_key).map_err(cfg)?;
    written.push(write_new(dir, "ca.pem", &ca_cert.pem(), 0o644)?);
    written.push(write_new(dir, "ca.key", &ca_key.serialize_pem(), 0o600)?);
    let issuer = Issuer::new(ca, ca_key);

    let mut hosts = req.hosts.clone();
    for h in ["localhost", "127.0.0.1"] {
        if !hosts.iter().any(|x| x == h) {
            hosts.push(h.to_string());
        }
    }
    let mut server = CertificateParams::new(hosts).map_err(cfg)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "op-manager");
    // Managers also present it as clients on the raft links (mutual TLS between peers).
    server.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut server, req.days);
    let server_key = KeyPair::generate().map_err(cfg)?;
    let server_cert = server.signed_by(&server_key, &issuer).map_err(cfg)?;
    written.push(write_new(dir, "server.pem", &server_cert.pem(), 0o644)?);
    written.push(write_new(
        dir,
        "server.key",
        &server_key.serialize_pem(),
        0o600,
    )?);

    for (prefix, names) in [("agent", &req.agents), ("client", &req.clients)] {
        for name in names {
            // An agent's certificate is also the server certificate of its own API (`op-agent
            // --tls-cert`), so it names the host: agents are listed by the name (or IP) their
            // API is reached at. An operator's is a client certificate only.
            let mut p = if prefix == "agent" {
                let mut p = CertificateParams::new(vec![name.clone()]).map_err(cfg)?;
                p.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
                p
            } else {
                let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cfg)?;
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                p
            };
            p.distinguished_name
                .push(DnType::CommonName, format!("{prefix}:{name}"));
            validity(&mut p, req.days);
            let key = KeyPair::generate().map_err(cfg)?;
            let cert = p.signed_by(&key, &issuer).map_err(cfg)?;
            written.push(write_new(
                dir,
                &format!("{prefix}-{name}.pem"),
                &cert.pem(),
                0o644,
            )?);
            written.push(write_new(
                dir,
                &format!("{prefix}-{name}.key"),
                &key.serialize_pem(),
                0o600,
            )?);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServerTls;

    #[test]
    fn a_dev_ca_loads_as_server_and_client_config_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let req = InitRequest {
            hosts: vec!["mgr-1".into(), "10.0.0.5".into()],
            agents: vec!["web-1".into()],
            clients: vec!["ops".into()],
            days: 30,
        };
        let files = init(dir.path(), &req).unwrap();
        assert_eq!(files.len(), 8);
        let tls = ServerTls {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            client_ca: Some(dir.path().join("ca.pem")),
            require_client_cert: true,
        };
        tls.server_config().unwrap();
        crate::read_roots(&dir.path().join("ca.pem")).unwrap();
        crate::read_certs(&dir.path().join("agent-web-1.pem")).unwrap();
        crate::read_key(&dir.path().join("agent-web-1.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = init(dir.path(), &req).unwrap_err();
        assert!(again.to_string().contains("exists"), "{again}");
        let bad = init(
            tempfile::tempdir().unwrap().path(),
            &InitRequest {
                agents: vec!["../x".into()],
                days: 1,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(bad.to_string().contains("certificate names"), "{bad}");
    }

    #[test]
    fn bad_files_name_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let tls = ServerTls {
            cert: junk.clone(),
            key: junk.clone(),
            client_ca: None,
            require_client_cert: false,
        };
        let e = tls.server_config().unwrap_err().to_string();
        assert!(e.contains("junk.pem"), "{e}");
        let e = ServerTls {
            require_client_cert: true,
            ..tls
        }
        .server_config()
        .unwrap_err()
        .to_string();
        assert!(e.contains("junk.pem") || e.contains("client CA"), "{e}");
    }
}
