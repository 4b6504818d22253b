//! A local certificate authority and a server certificate it signed, for
//! TLS between local processes (tests, and later `trackhrs dev`): the CA's
//! certificate is what a client trusts, the server's certificate and key are
//! what the gateway serves.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA and one server certificate, all PEM.
#[derive(Clone)]
pub struct LocalCa {
    /// The CA's certificate: what clients trust.
    pub ca_pem: String,
    /// The server's certificate (for `hosts`), signed by the CA.
    pub cert_pem: String,
    /// The server's private key.
    pub key_pem: String,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalCa(<certificates and key>)")
    }
}

impl LocalCa {
    /// A new CA named `name` and a server certificate for `hosts` (DNS
    /// names or IP addresses).
    pub fn new(name: &str, hosts: &[&str]) -> Result<Self, rcgen::Error> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, name);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let mut server =
            CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())?;
        server.distinguished_name.push(
            DnType::CommonName,
            hosts.first().copied().unwrap_or("localhost"),
        );
        let key = KeyPair::generate()?;
        let cert = server.signed_by(&key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The base64 SHA-256 of the SubjectPublicKeyInfo of the private key
/// `key_pem`: what Chromium's `--ignore-certificate-errors-spki-list` pins
/// (a browser test trusts exactly this key and nothing else).
pub fn spki_sha256_base64(key_pem: &str) -> Result<String, rcgen::Error> {
    use base64::Engine as _;
    use rcgen::PublicKeyData as _;
    use sha2::Digest as _;
    let key = KeyPair::from_pem(key_pem)?;
    let digest = sha2::Sha256::digest(key.subject_public_key_info());
    Ok(base64::engine::general_purpose::STANDARD.encode(digest))
}
