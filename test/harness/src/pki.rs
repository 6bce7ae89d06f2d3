//! Certificates for a test control plane, made with rcgen (ring), written as
//! PEM files.
//!
//! Four separate trust roots, as in a kubeadm cluster: the cluster CA signs
//! serving certificates (kube-apiserver, aggregated servers), the client CA
//! signs user certificates (admin and test users), the front-proxy CA signs only
//! the aggregator's proxy client certificate (so no user certificate can pose as
//! the proxy), plus a service-account signing key pair.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Names the kube-apiserver serving certificate is valid for.
pub const APISERVER_SANS: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "10.0.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// Common name of the front-proxy client certificate; what
/// `--requestheader-allowed-names` accepts.
pub const FRONT_PROXY_CLIENT_CN: &str = "front-proxy-client";

/// A certificate and its key, as files and PEM text.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertFiles {
    fn write(dir: &Path, stem: &str, cert_pem: String, key_pem: String) -> Result<Self> {
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        fs::write(&cert_path, &cert_pem)
            .with_context(|| format!("write {}", cert_path.display()))?;
        fs::write(&key_path, &key_pem).with_context(|| format!("write {}", key_path.display()))?;
        Ok(Self {
            cert_path,
            key_path,
            cert_pem,
            key_pem,
        })
    }
}

/// A certificate authority that can issue server and client certificates.
pub struct Ca {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    files: CertFiles,
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cert_path", &self.files.cert_path)
            .finish_non_exhaustive()
    }
}

fn unique_stem(stem: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{stem}-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn leaf_params(common_name: &str, sans: &[&str]) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .context("certificate names")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    let now = rcgen::date_time_ymd(2000, 1, 1);
    params.not_before = now;
    params.not_after = rcgen::date_time_ymd(2200, 1, 1);
    Ok(params)
}

impl Ca {
    /// A new self-signed CA, written to `<dir>/<stem>.crt` and `.key`.
    pub fn new(dir: &Path, stem: &str, common_name: &str) -> Result<Ca> {
        fs::create_dir_all(dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "vm-migration e2e");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2200, 1, 1);
        let cert = params.self_signed(&key)?;
        let files = CertFiles::write(dir, stem, cert.pem(), key.serialize_pem())?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
            files,
        })
    }

    /// The CA certificate as PEM: what a client trusts, what goes into a caBundle.
    pub fn cert_pem(&self) -> &str {
        &self.files.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn cert_path(&self) -> &Path {
        &self.files.cert_path
    }

    pub fn key_path(&self) -> &Path {
        &self.files.key_path
    }

    /// A serving certificate for `sans` (IP addresses and DNS names).
    /// Files: `<dir>/<stem>-<n>.crt` and `.key`.
    pub fn issue_server(&self, stem: &str, common_name: &str, sans: &[&str]) -> Result<CertFiles> {
        if sans.is_empty() {
            bail!("a serving certificate needs at least one name");
        }
        let mut params = leaf_params(common_name, sans)?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(stem, params)
    }

    /// A serving certificate for an in-cluster Service `<svc>.<ns>.svc` (the
    /// name kube-aggregator verifies), also valid for 127.0.0.1 and localhost.
    pub fn issue_service_serving(&self, service: &str, namespace: &str) -> Result<CertFiles> {
        let svc = format!("{service}.{namespace}.svc");
        let cluster_local = format!("{svc}.cluster.local");
        self.issue_server(
            service,
            &svc,
            &[&svc, &cluster_local, "localhost", "127.0.0.1"],
        )
    }

    /// A client certificate for `user` in `groups`: Kubernetes reads the user
    /// from the CN and the groups from the O attributes.
    ///
    /// At most two groups: rcgen keeps one value per attribute type, and the
    /// second group rides on a custom attribute with the same OID as O.
    /// (`system:authenticated` is added by the apiserver anyway.)
    pub fn issue_client(&self, stem: &str, user: &str, groups: &[&str]) -> Result<CertFiles> {
        if groups.len() > 2 {
            bail!("a test client certificate carries at most two groups, got {groups:?}");
        }
        let mut params = leaf_params(user, &[])?;
        for (i, group) in groups.iter().enumerate() {
            let ty = if i == 0 {
                DnType::OrganizationName
            } else {
                DnType::CustomDnType(vec![2, 5, 4, 10]) // id-at-organizationName
            };
            params.distinguished_name.push(ty, *group);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(stem, params)
    }

    fn sign(&self, stem: &str, params: CertificateParams) -> Result<CertFiles> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        CertFiles::write(
            &self.dir,
            &unique_stem(stem),
            cert.pem(),
            key.serialize_pem(),
        )
    }
}

/// The service-account token signing key pair (ECDSA P-256).
#[derive(Debug, Clone)]
pub struct ServiceAccountKeys {
    /// PKCS#8 private key: `--service-account-signing-key-file`.
    pub private_key_path: PathBuf,
    /// SubjectPublicKeyInfo: `--service-account-key-file`.
    pub public_key_path: PathBuf,
}

/// Everything a test control plane needs, under one directory.
#[derive(Debug)]
pub struct ClusterPki {
    pub dir: PathBuf,
    /// Signs serving certificates (kube-apiserver; aggregated servers).
    pub cluster_ca: Ca,
    /// kube-apiserver's serving certificate ([`APISERVER_SANS`]).
    pub apiserver_serving: CertFiles,
    /// `--client-ca-file`: signs user certificates.
    pub client_ca: Ca,
    /// CN=admin, O=system:masters.
    pub admin: CertFiles,
    /// `--requestheader-client-ca-file`.
    pub front_proxy_ca: Ca,
    /// CN=front-proxy-client: `--proxy-client-cert-file`.
    pub front_proxy_client: CertFiles,
    pub service_account: ServiceAccountKeys,
}

impl ClusterPki {
    /// Generates all of it into `dir`; kube-apiserver's serving certificate
    /// is also valid for `extra_sans`.
    pub fn generate(dir: &Path, extra_sans: &[String]) -> Result<ClusterPki> {
        fs::create_dir_all(dir)?;
        let cluster_ca = Ca::new(dir, "cluster-ca", "vmm-e2e cluster CA")?;
        let sans: Vec<&str> = APISERVER_SANS
            .iter()
            .copied()
            .chain(extra_sans.iter().map(String::as_str))
            .collect();
        let apiserver_serving = cluster_ca.issue_server("apiserver", "kube-apiserver", &sans)?;
        let client_ca = Ca::new(dir, "client-ca", "vmm-e2e client CA")?;
        let admin = client_ca.issue_client("admin", "admin", &["system:masters"])?;
        let front_proxy_ca = Ca::new(dir, "front-proxy-ca", "vmm-e2e front-proxy CA")?;
        let front_proxy_client =
            front_proxy_ca.issue_client("front-proxy-client", FRONT_PROXY_CLIENT_CN, &[])?;

        let sa = KeyPair::generate()?;
        let service_account = ServiceAccountKeys {
            private_key_path: dir.join("sa.key"),
            public_key_path: dir.join("sa.pub"),
        };
        fs::write(&service_account.private_key_path, sa.serialize_pem())?;
        fs::write(&service_account.public_key_path, sa.public_key_pem())?;

        Ok(ClusterPki {
            dir: dir.to_path_buf(),
            cluster_ca,
            apiserver_serving,
            client_ca,
            admin,
            front_proxy_ca,
            front_proxy_client,
            service_account,
        })
    }

    /// A serving certificate for an aggregated API server behind Service
    /// `<service>.<namespace>.svc`, signed by the cluster CA (put
    /// [`cluster_ca`](Self::cluster_ca)`.cert_pem()` in the APIService caBundle).
    pub fn issue_aggregated_serving(&self, service: &str, namespace: &str) -> Result<CertFiles> {
        self.cluster_ca.issue_service_serving(service, namespace)
    }

    /// A client certificate for a user and its groups (at most two), signed by
    /// the client CA the apiserver trusts.
    pub fn issue_user(&self, user: &str, groups: &[&str]) -> Result<CertFiles> {
        let stem: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.client_ca
            .issue_client(&format!("user-{stem}"), user, groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, UnixTime};

    fn verify_server(ca: &Ca, cert: &CertFiles, name: &str) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.cert_der().to_vec()))
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        use rustls::client::danger::ServerCertVerifier;
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn serving_certs_verify_for_their_names_only() {
        let dir = crate::process::run_dir().unwrap();
        let pki = ClusterPki::generate(&dir, &[]).unwrap();
        for name in ["127.0.0.1", "localhost", "kubernetes.default.svc"] {
            verify_server(&pki.cluster_ca, &pki.apiserver_serving, name).unwrap();
        }
        assert!(verify_server(&pki.cluster_ca, &pki.apiserver_serving, "example.com").is_err());
        // signed by another CA: refused
        assert!(verify_server(&pki.client_ca, &pki.apiserver_serving, "localhost").is_err());

        let agg = pki
            .issue_aggregated_serving("inventory", "vm-migration")
            .unwrap();
        verify_server(&pki.cluster_ca, &agg, "inventory.vm-migration.svc").unwrap();
        verify_server(&pki.cluster_ca, &agg, "127.0.0.1").unwrap();
        assert!(verify_server(&pki.cluster_ca, &agg, "other.vm-migration.svc").is_err());
    }

    #[test]
    fn files_are_written() {
        let dir = crate::process::run_dir().unwrap();
        let pki = ClusterPki::generate(&dir, &[]).unwrap();
        for path in [
            pki.cluster_ca.cert_path(),
            pki.apiserver_serving.key_path.as_path(),
            pki.admin.cert_path.as_path(),
            pki.front_proxy_client.cert_path.as_path(),
            pki.service_account.public_key_path.as_path(),
            pki.service_account.private_key_path.as_path(),
        ] {
            let text = fs::read_to_string(path).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{}", path.display());
        }
        let user = pki
            .issue_user("alice@example.com", &["team-a", "team-b"])
            .unwrap();
        assert_ne!(user.cert_path, pki.admin.cert_path);
        assert!(pki.issue_user("bob", &["a", "b", "c"]).is_err());
    }
}
