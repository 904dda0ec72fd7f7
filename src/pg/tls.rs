//! TLS to PostgreSQL as libpq does it. The `postgres` driver knows `sslmode` disable / prefer / require
//! only and never checks a certificate; libpq users expect `verify-ca` (the server's certificate is
//! signed by the CA in `sslrootcert`) and `verify-full` (and names the host connected to), a root
//! certificate that, when present, makes `prefer` and `require` verify too, `sslrootcert=system` (the
//! system's trusted CAs), client certificates (`sslcert` / `sslkey`), and the `PGSSLMODE`,
//! `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY` variables for whatever the DSN leaves out. Those settings are
//! taken out of the DSN here (see `dsn`) and turned into an OpenSSL connector (the same vendored OpenSSL
//! that librdkafka uses).

use std::path::{Path, PathBuf};

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use postgres::config::SslMode as DriverSslMode;
use postgres_openssl::MakeTlsConnector;

use crate::error::{Error, Result};

/// libpq's `sslmode` values (`allow` is refused: it tries without TLS first, which the driver cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(Error::Config(
                    "sslmode=allow is not supported (it tries without TLS first); use prefer"
                        .into(),
                ))
            }
            other => {
                return Err(Error::Config(format!(
                    "invalid sslmode {other:?}: expected disable, prefer, require, verify-ca or \
                     verify-full"
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// Where the trusted CAs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file.
    File(PathBuf),
    /// The system's trusted CAs (`sslrootcert=system`).
    System,
}

/// The TLS settings of a connection, resolved as libpq resolves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub mode: SslMode,
    pub root_cert: Option<RootCert>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// The TLS keys of a DSN, as written (before the environment and libpq's defaults).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TlsKeys {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
}

impl TlsKeys {
    /// Takes a DSN key if it is one of ours.
    pub fn take(&mut self, key: &str, value: &str) -> bool {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            _ => return false,
        };
        *slot = Some(value.to_string());
        true
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// libpq's default files live in `~/.postgresql`.
fn default_file(name: &str) -> Option<PathBuf> {
    let path = Path::new(&env("HOME")?).join(".postgresql").join(name);
    path.exists().then_some(path)
}

impl Tls {
    /// The DSN's keys, else `PGSSLMODE` / `PGSSLROOTCERT` / `PGSSLCERT` / `PGSSLKEY`, else libpq's
    /// defaults (`prefer`; `~/.postgresql/root.crt`, `postgresql.crt` and `postgresql.key` when present).
    pub fn resolve(keys: TlsKeys) -> Result<Tls> {
        let mode = match keys.sslmode.or_else(|| env("PGSSLMODE")) {
            Some(m) => SslMode::parse(m.trim())?,
            None => SslMode::Prefer,
        };
        let root_cert = match keys.sslrootcert.or_else(|| env("PGSSLROOTCERT")) {
            Some(s) if s == "system" => Some(RootCert::System),
            Some(path) => Some(RootCert::File(PathBuf::from(path))),
            None => default_file("root.crt").map(RootCert::File),
        };
        let cert = keys.sslcert.or_else(|| env("PGSSLCERT")).map(PathBuf::from);
        let key = keys.sslkey.or_else(|| env("PGSSLKEY")).map(PathBuf::from);
        let client_cert = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (Some(c), None) => Some((c, default_file("postgresql.key").unwrap_or_default())),
            (None, _) => default_file("postgresql.crt")
                .zip(default_file("postgresql.key"))
                .filter(|_| mode != SslMode::Disable),
        };
        if mode.verifies() && root_cert.is_none() {
            return Err(Error::Config(format!(
                "sslmode={} needs the CA that signed the server's certificate: set sslrootcert in \
                 the DSN or PGSSLROOTCERT (a PEM file, or \"system\" for the system's CAs)",
                mode.as_str()
            )));
        }
        if let Some(RootCert::File(path)) = &root_cert {
            if !path.is_file() {
                return Err(Error::Config(format!(
                    "sslrootcert {} does not exist or is not a file",
                    path.display()
                )));
            }
        }
        Ok(Tls {
            mode,
            root_cert,
            client_cert,
        })
    }

    /// The driver's own mode: it negotiates TLS (prefer) or insists on it (require).
    pub fn driver_mode(&self) -> DriverSslMode {
        match self.mode {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            _ => DriverSslMode::Require,
        }
    }

    /// The connector: the chain is checked whenever a root certificate is known (as libpq does, also
    /// for prefer and require), the host name only with verify-full.
    pub fn connector(&self) -> Result<MakeTlsConnector> {
        let tls = |e: openssl::error::ErrorStack| Error::Config(format!("TLS set-up: {e}"));
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(tls)?;
        match &self.root_cert {
            Some(RootCert::File(path)) => builder
                .set_ca_file(path)
                .map_err(|e| Error::Config(format!("sslrootcert {}: {e}", path.display())))?,
            Some(RootCert::System) => load_system_roots(&mut builder)?,
            None => builder.set_verify(SslVerifyMode::NONE),
        }
        if let Some((cert, key)) = &self.client_cert {
            builder
                .set_certificate_chain_file(cert)
                .map_err(|e| Error::Config(format!("sslcert {}: {e}", cert.display())))?;
            builder
                .set_private_key_file(key, SslFiletype::PEM)
                .map_err(|e| Error::Config(format!("sslkey {}: {e}", key.display())))?;
        }
        let mut connector = MakeTlsConnector::new(builder.build());
        let check_host = self.mode == SslMode::VerifyFull;
        connector.set_callback(move |cfg, _host| {
            cfg.set_verify_hostname(check_host);
            Ok(())
        });
        Ok(connector)
    }
}

/// `sslrootcert=system`: the CAs of the system's trust store (this build's OpenSSL is vendored, so
/// its compiled-in default folder may not exist here: look where distributions keep them).
fn load_system_roots(builder: &mut openssl::ssl::SslConnectorBuilder) -> Result<()> {
    const BUNDLES: [&str; 4] = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ];
    let file = env("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file());
    match file {
        Some(path) => builder
            .set_ca_file(&path)
            .map_err(|e| Error::Config(format!("system CAs {}: {e}", path.display()))),
        None => Err(Error::Config(
            "sslrootcert=system: no CA bundle found (set SSL_CERT_FILE)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(mode: &str, root: Option<&str>) -> TlsKeys {
        TlsKeys {
            sslmode: Some(mode.into()),
            sslrootcert: root.map(str::to_string),
            ..TlsKeys::default()
        }
    }

    #[test]
    fn modes_are_libpqs() {
        let t = Tls::resolve(keys("require", Some("system"))).unwrap();
        assert_eq!(t.mode, SslMode::Require);
        assert_eq!(t.root_cert, Some(RootCert::System));
        assert_eq!(t.driver_mode(), DriverSslMode::Require);
        let t = Tls::resolve(keys("disable", None)).unwrap();
        assert_eq!(t.driver_mode(), DriverSslMode::Disable);
        let e = Tls::resolve(keys("verify-full", None)).unwrap_err();
        assert!(e.to_string().contains("sslrootcert"), "{e}");
        let e = Tls::resolve(keys("verify-ca", Some("/no/such/ca.pem"))).unwrap_err();
        assert!(e.to_string().contains("/no/such/ca.pem"), "{e}");
        for bad in ["allow", "on", ""] {
            assert!(Tls::resolve(keys(bad, None)).is_err(), "{bad}");
        }
    }
}
