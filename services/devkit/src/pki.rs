//! A development PKI: a public CA and the gateway's server certificate, an
//! internal CA with the backends' server certificates and the gateway's
//! client certificate, and the Ed25519 JWT key pair. Private keys are
//! written mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::DevError;

/// The file names, relative to the PKI directory.
pub mod files {
    pub const CA_CERT: &str = "ca.crt";
    pub const GATEWAY_CERT: &str = "gateway.crt";
    pub const GATEWAY_KEY: &str = "gateway.key";
    pub const INTERNAL_CA_CERT: &str = "internal-ca.crt";
    pub const USER_CERT: &str = "user.crt";
    pub const USER_KEY: &str = "user.key";
    pub const TODO_CERT: &str = "todo.crt";
    pub const TODO_KEY: &str = "todo.key";
    pub const GATEWAY_CLIENT_CERT: &str = "gateway-client.crt";
    pub const GATEWAY_CLIENT_KEY: &str = "gateway-client.key";
    pub const JWT_PRIVATE_KEY: &str = "jwt-ed25519.key";
    pub const JWT_PUBLIC_KEY: &str = "jwt-ed25519.pub";

    pub const ALL: [&str; 12] = [
        CA_CERT,
        GATEWAY_CERT,
        GATEWAY_KEY,
        INTERNAL_CA_CERT,
        USER_CERT,
        USER_KEY,
        TODO_CERT,
        TODO_KEY,
        GATEWAY_CLIENT_CERT,
        GATEWAY_CLIENT_KEY,
        JWT_PRIVATE_KEY,
        JWT_PUBLIC_KEY,
    ];
}

/// Host names every server certificate covers, besides extra ones.
const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Creates the PKI in `dir` unless all of its files are already there.
/// Returns whether it generated anything. `extra_names` are added to the
/// server certificates' SANs (e.g. host names in a multi-host test).
pub fn ensure(dir: &Path, extra_names: &[String]) -> Result<bool, DevError> {
    if files::ALL.iter().all(|f| dir.join(f).is_file()) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(DevError::io(format!("creating {}", dir.display())))?;
    generate(dir, extra_names)?;
    Ok(true)
}

fn ca(name: &str) -> Result<(CertificateParams, KeyPair), DevError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok((params, key))
}

fn leaf(
    common_name: &str,
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), DevError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn generate(dir: &Path, extra_names: &[String]) -> Result<(), DevError> {
    let names = |own: &str| -> Vec<String> {
        let mut names: Vec<String> = LOCAL_NAMES.iter().map(|s| s.to_string()).collect();
        names.push(own.to_owned());
        names.extend(extra_names.iter().cloned());
        names
    };

    let (public_params, public_key) = ca("todoapp development CA (not for production)")?;
    let public_ca = public_params.self_signed(&public_key)?;
    let public_issuer = Issuer::new(public_params, public_key);
    let gateway = leaf(
        "todoapp gateway",
        names("gateway"),
        ExtendedKeyUsagePurpose::ServerAuth,
        &public_issuer,
    )?;

    let (internal_params, internal_key) = ca("todoapp internal CA (not for production)")?;
    let internal_ca = internal_params.self_signed(&internal_key)?;
    let internal_issuer = Issuer::new(internal_params, internal_key);
    let user = leaf(
        "todoapp user service",
        names("user"),
        ExtendedKeyUsagePurpose::ServerAuth,
        &internal_issuer,
    )?;
    let todo = leaf(
        "todoapp todo service",
        names("todo"),
        ExtendedKeyUsagePurpose::ServerAuth,
        &internal_issuer,
    )?;
    let client = leaf(
        "todoapp gateway (client)",
        vec!["gateway".to_owned()],
        ExtendedKeyUsagePurpose::ClientAuth,
        &internal_issuer,
    )?;

    let jwt = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;

    use files::*;
    write(dir, CA_CERT, &public_ca.pem(), false)?;
    write(dir, GATEWAY_CERT, &gateway.0, false)?;
    write(dir, GATEWAY_KEY, &gateway.1, true)?;
    write(dir, INTERNAL_CA_CERT, &internal_ca.pem(), false)?;
    write(dir, USER_CERT, &user.0, false)?;
    write(dir, USER_KEY, &user.1, true)?;
    write(dir, TODO_CERT, &todo.0, false)?;
    write(dir, TODO_KEY, &todo.1, true)?;
    write(dir, GATEWAY_CLIENT_CERT, &client.0, false)?;
    write(dir, GATEWAY_CLIENT_KEY, &client.1, true)?;
    write(dir, JWT_PRIVATE_KEY, &jwt.serialize_pem(), true)?;
    write(dir, JWT_PUBLIC_KEY, &jwt.public_key_pem(), false)?;
    Ok(())
}

fn write(dir: &Path, name: &str, contents: &str, secret: bool) -> Result<PathBuf, DevError> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let mode = if secret { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .map_err(DevError::io(format!("writing {}", path.display())))?;
    file.write_all(contents.as_bytes())
        .map_err(DevError::io(format!("writing {}", path.display())))?;
    Ok(path)
}
