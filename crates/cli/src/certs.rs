//! `qkdnet certs`: a test PKI for KMEs and SAEs (one CA; per KME a server certificate and
//! a client certificate for its link to peer KMEs, both naming the KME ID; a client
//! certificate per SAE whose common name is the SAE ID). For demos and tests,
//! not production: the CA key is not kept.

use crate::distill::write_atomic;
use crate::CliError;
use clap::Args;
use std::path::{Path, PathBuf};

/// Flags of `qkdnet certs`.
#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Output directory (created if missing; existing certificates are never overwritten).
    #[arg(long)]
    pub out: PathBuf,
    /// KME IDs to issue server certificates for (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub kme: Vec<String>,
    /// SAE IDs to issue client certificates for (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub sae: Vec<String>,
    /// Names and addresses the KMEs answer on (subject alternative names).
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    pub host: Vec<String>,
}

fn check_id(flag: &str, id: &str) -> Result<(), CliError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(CliError::input(format!(
            "{flag}: '{id}' is not an ID of 1-64 letters, digits, '-', '_' or '.'"
        )))
    }
}

fn write_new(path: &Path, data: &str, secret: bool) -> Result<(), CliError> {
    if path.exists() {
        return Err(CliError::input(format!(
            "{}: already exists; not overwriting a certificate or key",
            path.display()
        )));
    }
    write_atomic(path, data.as_bytes())?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| CliError::runtime(format!("{}: cannot restrict: {e}", path.display())))?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    Ok(())
}

/// Runs `qkdnet certs`.
pub fn run(a: &CertsArgs) -> Result<(), CliError> {
    generate(a, true)
}

/// Writes the PKI, listing the files when `verbose`.
pub fn generate(a: &CertsArgs, verbose: bool) -> Result<(), CliError> {
    for k in &a.kme {
        check_id("--kme", k)?;
    }
    for s in &a.sae {
        check_id("--sae", s)?;
    }
    if a.host.iter().any(|h| h.is_empty()) {
        return Err(CliError::input("--host: empty name"));
    }
    let mut ids: Vec<&String> = a.kme.iter().chain(&a.sae).collect();
    ids.sort();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(CliError::input(format!("'{}' is named twice", w[0])));
    }
    std::fs::create_dir_all(&a.out)
        .map_err(|e| CliError::input(format!("{}: cannot create: {e}", a.out.display())))?;
    let err = |e: qkdnet_kms::pki::PkiError| CliError::runtime(e.to_string());
    let ca = qkdnet_kms::pki::Ca::new("qkdnet test CA").map_err(err)?;
    write_new(&a.out.join("ca.pem"), &ca.cert_pem(), false)?;
    let hosts: Vec<&str> = a.host.iter().map(String::as_str).collect();
    for k in &a.kme {
        let c = ca.server(k, &hosts).map_err(err)?;
        write_new(&a.out.join(format!("kme-{k}.pem")), &c.cert_pem, false)?;
        write_new(&a.out.join(format!("kme-{k}.key")), &c.key_pem, true)?;
        let c = ca.client(k).map_err(err)?;
        write_new(
            &a.out.join(format!("kme-{k}-client.pem")),
            &c.cert_pem,
            false,
        )?;
        write_new(&a.out.join(format!("kme-{k}-client.key")), &c.key_pem, true)?;
        if verbose {
            println!("KME {k}: kme-{k}.pem, kme-{k}.key (server); kme-{k}-client.pem, kme-{k}-client.key (to peer KMEs)");
        }
    }
    for s in &a.sae {
        let c = ca.client(s).map_err(err)?;
        write_new(&a.out.join(format!("sae-{s}.pem")), &c.cert_pem, false)?;
        write_new(&a.out.join(format!("sae-{s}.key")), &c.key_pem, true)?;
        if verbose {
            println!("SAE {s}: sae-{s}.pem, sae-{s}.key");
        }
    }
    if verbose {
        println!("CA: ca.pem (in {})", a.out.display());
    }
    Ok(())
}
