//! A self-signed `localhost` server certificate and its key, written as PEM files for the TLS
//! listener's `tls: { certFile, keyFile }` (the files live as long as the value).

use std::path::PathBuf;

use tempfile::TempDir;

pub struct ServerCertificate {
    pub certified: rcgen::CertifiedKey,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    _dir: TempDir,
}

impl ServerCertificate {
    pub fn localhost() -> ServerCertificate {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert_file = dir.path().join("cert.pem");
        let key_file = dir.path().join("key.pem");
        std::fs::write(&cert_file, certified.cert.pem()).unwrap();
        std::fs::write(&key_file, certified.key_pair.serialize_pem()).unwrap();
        ServerCertificate {
            certified,
            cert_file,
            key_file,
            _dir: dir,
        }
    }
}
