//! Mutual TLS between nodes: a cluster CA, node certificates that name their node id,
//! and the rustls configurations quinn runs on (ring is the only crypto provider).
//!
//! A node certificate carries the DNS name `node-<id>.thicket` (see [`node_name`]). A
//! client connecting to node N checks that name, so it talks to N and nobody else; the
//! server reads the id out of the client's certificate and rejects any message whose
//! sender id differs. Only certificates signed by the cluster CA are accepted either way.
//!
//! Files (`thicket certs`): `ca.pem`, `ca-key.pem` (keep it off the nodes once the
//! certificates exist), `node-<id>.pem`, `node-<id>-key.pem`.

use crate::types::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ALPN protocol of the cluster port.
pub const ALPN: &[u8] = b"thicket-cluster/1";

/// Why TLS material could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> TlsError + 'a {
    move |source| TlsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The DNS name a node's certificate carries.
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}.thicket")
}

/// Whether `cert` names node `id` (its `node-<id>.thicket` DNS name, checked by webpki).
pub fn names_node(cert: &CertificateDer<'_>, id: NodeId) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let name = node_name(id);
    match rustls::pki_types::ServerName::try_from(name.as_str()) {
        Ok(sn) => ee.verify_is_valid_for_subject_name(&sn).is_ok(),
        Err(_) => false,
    }
}

/// The node id a certificate names: the candidate `node-<digits>.thicket` found in its
/// bytes, confirmed by webpki's subject-name check (so a look-alike string elsewhere in
/// the certificate cannot pass).
pub fn node_id_of(cert: &CertificateDer<'_>) -> Result<NodeId, TlsError> {
    let der = cert.as_ref();
    let (prefix, suffix) = (b"node-", b".thicket");
    let mut i = 0;
    while let Some(pos) = der[i..].windows(prefix.len()).position(|w| w == prefix) {
        let start = i + pos + prefix.len();
        let digits = der[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 0 && der[start + digits..].starts_with(suffix) {
            if let Some(id) = std::str::from_utf8(&der[start..start + digits])
                .ok()
                .and_then(|d| d.parse::<NodeId>().ok())
            {
                if names_node(cert, id) {
                    return Ok(id);
                }
            }
        }
        i = start;
    }
    Err(TlsError::Invalid(
        "the certificate names no node (no node-<id>.thicket name)".into(),
    ))
}

/// Paths of one node's TLS material.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files `thicket certs` writes into `dir` for node `id`.
    pub fn in_dir(dir: &Path, id: NodeId) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("node-{id}.pem")),
            key: dir.join(format!("node-{id}-key.pem")),
        }
    }
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Thicket cluster CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(p)
}

fn write_new(path: &Path, contents: &str, private: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = o.open(path).map_err(io_err("cannot create", path))?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io_err("cannot write", path))
}

/// Creates the cluster CA in `dir` unless it exists; returns whether it was created.
pub fn ensure_ca(dir: &Path) -> Result<bool, TlsError> {
    std::fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    if cert_path.exists() || key_path.exists() {
        if !(cert_path.exists() && key_path.exists()) {
            return Err(TlsError::Invalid(format!(
                "{} holds only half of a CA (ca.pem and ca-key.pem go together)",
                dir.display()
            )));
        }
        return Ok(false);
    }
    let key = KeyPair::generate().map_err(|e| TlsError::Invalid(e.to_string()))?;
    let cert = ca_params()?
        .self_signed(&key)
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    write_new(&key_path, &key.serialize_pem(), true)?;
    write_new(&cert_path, &cert.pem(), false)?;
    Ok(true)
}

/// Issues the certificate of node `id` with the CA in `dir`; refuses to overwrite one.
pub fn issue_node_cert(dir: &Path, id: NodeId) -> Result<TlsFiles, TlsError> {
    let files = TlsFiles::in_dir(dir, id);
    if files.cert.exists() || files.key.exists() {
        return Err(TlsError::Invalid(format!(
            "{} already exists; remove it to issue a new one",
            files.cert.display()
        )));
    }
    let ca_key_path = dir.join("ca-key.pem");
    let ca_key_pem =
        std::fs::read_to_string(&ca_key_path).map_err(io_err("cannot read", &ca_key_path))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", ca_key_path.display())))?;
    if !files.ca.exists() {
        return Err(TlsError::Invalid(format!(
            "{} is missing (run `thicket certs` in that directory first)",
            files.ca.display()
        )));
    }
    // The CA's name and key identifier come from its fixed parameters and its key, so
    // the issuer is rebuilt exactly without parsing ca.pem.
    let issuer = Issuer::new(ca_params()?, &ca_key);
    let mut p = CertificateParams::new(vec![node_name(id)])
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("thicket node {id}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let key = KeyPair::generate().map_err(|e| TlsError::Invalid(e.to_string()))?;
    let cert = p
        .signed_by(&key, &issuer)
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    write_new(&files.key, &key.serialize_pem(), true)?;
    write_new(&files.cert, &cert.pem(), false)?;
    Ok(files)
}

/// The rustls configurations of one node.
pub struct NodeTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
    /// The node id this node's own certificate names.
    pub id: NodeId,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a node's TLS material and checks that its certificate names `expected_id`.
pub fn load(files: &TlsFiles, expected_id: NodeId) -> Result<NodeTls, TlsError> {
    let ca: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.ca)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", files.ca.display())))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", files.cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", files.key.display())))?;
    let leaf = chain
        .first()
        .ok_or_else(|| TlsError::Invalid(format!("{} has no certificate", files.cert.display())))?;
    let id = node_id_of(leaf)?;
    if id != expected_id {
        return Err(TlsError::Invalid(format!(
            "{} is the certificate of node {id}, not of node {expected_id}",
            files.cert.display()
        )));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in &ca {
        roots
            .add(c.clone())
            .map_err(|e| TlsError::Invalid(format!("{}: {e}", files.ca.display())))?;
    }
    if roots.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{} holds no CA certificate",
            files.ca.display()
        )));
    }
    let roots = Arc::new(roots);
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Invalid(format!("client verifier: {e}")))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", files.cert.display())))?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", files.cert.display())))?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    Ok(NodeTls {
        server: Arc::new(server),
        client: Arc::new(client),
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_name_their_node_and_load() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure_ca(dir.path()).unwrap());
        assert!(!ensure_ca(dir.path()).unwrap(), "an existing CA is kept");
        let f = issue_node_cert(dir.path(), 7).unwrap();
        let pem = CertificateDer::from_pem_file(&f.cert).unwrap();
        assert_eq!(node_id_of(&pem).unwrap(), 7);
        assert_eq!(load(&f, 7).unwrap().id, 7);
        let err = load(&f, 8).err().unwrap();
        assert!(err.to_string().contains("not of node 8"), "{err}");
        let again = issue_node_cert(dir.path(), 7).err().unwrap();
        assert!(again.to_string().contains("already exists"), "{again}");
    }
}
