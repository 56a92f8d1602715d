//! Auto-TLS: a self-signed certificate and key under
//! `<data-dir>/fixtures/<side>`, made once and reused, as etcd does. They
//! encrypt traffic without authenticating anyone. The directory is kept
//! 0700 and the files 0600 (etcd's audit fix); existing ones with wider
//! modes are narrowed, unusable ones replaced.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};

use super::files;
use super::server_config::Identity;
use super::TlsError;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Narrows `path`'s mode to `mode` if it allows more.
fn restrict(path: &Path, mode: u32) -> Result<(), TlsError> {
    let meta = std::fs::metadata(path).map_err(io_error(path))?;
    let current = meta.permissions().mode() & 0o777;
    if current & !mode != 0 {
        tracing::warn!(path = %path.display(), mode = %format!("{current:o}"), "narrowing the permissions of auto-TLS files to {mode:o}");
        std::fs::set_permissions(path, Permissions::from_mode(mode)).map_err(io_error(path))?;
    }
    Ok(())
}

/// The certificate and key in `dir`, made for `hosts` (the hosts of the
/// side's listen URLs) if they are missing or unusable.
pub fn self_signed(dir: &Path, hosts: &[String], validity_years: u32) -> Result<Identity, TlsError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_error(dir))?;
    restrict(dir, DIR_MODE)?;
    let identity = Identity {
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
    };
    if identity.cert_file.exists() && identity.key_file.exists() {
        let usable = files::certificates(&identity.cert_file).and_then(|_| files::private_key(&identity.key_file));
        match usable {
            Ok(_) => {
                restrict(&identity.cert_file, FILE_MODE)?;
                restrict(&identity.key_file, FILE_MODE)?;
                return Ok(identity);
            }
            Err(e) => tracing::warn!(error = %e, "auto-TLS certificate unusable; making a new one"),
        }
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "etcd");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let today = days_since_epoch(SystemTime::now());
    let (y, m, d) = civil(today);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil(today + 365 * i64::from(validity_years.max(1)) + 1);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let cert = params.self_signed(&key)?;
    write_private(&identity.key_file, key.serialize_pem().as_bytes())?;
    write_private(&identity.cert_file, cert.pem().as_bytes())?;
    tracing::info!(dir = %dir.display(), ?hosts, years = validity_years, "made a self-signed auto-TLS certificate");
    Ok(identity)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(bytes).and_then(|_| file.sync_all()).map_err(io_error(path))?;
    restrict(path, FILE_MODE)
}

fn days_since_epoch(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH).map(|d| (d.as_secs() / 86_400) as i64).unwrap_or(0)
}

/// The date of day `days` after 1970-01-01 (year, month, day), by Howard
/// Hinnant's `civil_from_days`.
fn civil(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
        assert_eq!(civil(20_788), (2026, 12, 1));
    }

    #[test]
    fn files_are_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = dir.path().join("fixtures").join("client");
        let made = self_signed(&fixtures, &["127.0.0.1".to_string()], 1).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&fixtures), 0o700);
        assert_eq!(mode(&made.key_file), 0o600);
        assert_eq!(mode(&made.cert_file), 0o600);
        let first = std::fs::read(&made.cert_file).unwrap();
        std::fs::set_permissions(&made.key_file, Permissions::from_mode(0o644)).unwrap();
        let again = self_signed(&fixtures, &["127.0.0.1".to_string()], 1).unwrap();
        assert_eq!(std::fs::read(&again.cert_file).unwrap(), first, "an existing certificate is reused");
        assert_eq!(mode(&again.key_file), 0o600, "a widened key file is narrowed again");
        std::fs::write(&made.cert_file, b"garbage").unwrap();
        let replaced = self_signed(&fixtures, &["127.0.0.1".to_string()], 1).unwrap();
        assert_ne!(std::fs::read(&replaced.cert_file).unwrap(), first);
        assert!(files::certificates(&replaced.cert_file).is_ok());
    }
}
