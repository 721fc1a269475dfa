//! A test public-key infrastructure for KMEs and SAEs (`qkdnet certs`, the demo, tests and
//! benchmarks): one CA, server certificates for KMEs, client certificates whose common
//! name is the SAE ID. Not for production: keys are generated in memory and written as
//! plain PEM.

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// A certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its private key, PEM.
pub struct Issued {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: String,
}

/// PKI generation failures.
#[derive(Debug, thiserror::Error)]
#[error("certificate generation: {0}")]
pub struct PkiError(#[from] rcgen::Error);

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Result<Self, PkiError> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate()?;
        let cert = p.self_signed(&key)?;
        Ok(Self { cert, key })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for a KME reachable as `hosts` (DNS names or IP addresses).
    pub fn server(&self, kme_id: &str, hosts: &[&str]) -> Result<Issued, PkiError> {
        self.issue(kme_id, hosts, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate for the SAE `sae_id` (its common name). A KME's identity
    /// towards its peer KMEs is a client certificate of the same kind, naming the KME ID.
    pub fn client(&self, sae_id: &str) -> Result<Issued, PkiError> {
        self.issue(sae_id, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        cn: &str,
        hosts: &[&str],
        eku: ExtendedKeyUsagePurpose,
    ) -> Result<Issued, PkiError> {
        let mut p =
            CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
