//! `auditrail integrity public-key`: the public key of the digests' signing key, in PEM, for
//! `verify --public-key` and for people. Apart from `integrity` because it reads a config.

use std::path::{Path, PathBuf};

/// Why `auditrail integrity public-key` could not print a key.
#[derive(Debug, thiserror::Error)]
pub enum PublicKeyError {
    #[error("give --signing-key-file, or --config with integrity.digests")]
    NoKey,
    #[error("config {} has no integrity.digests.signing_key_file", path.display())]
    NoDigests { path: PathBuf },
    #[error("cannot use the config")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot load the signing key")]
    Key(#[from] crate::integrity::KeyError),
}

/// The public key (PEM) of the signing key `signing_key_file`, or of the one the config at
/// `config` names (`integrity.digests.signing_key_file`); the file wins. For
/// `auditrail integrity public-key`: what `verify --public-key` takes.
pub fn public_key_pem(
    signing_key_file: Option<&Path>,
    config: Option<&Path>,
) -> Result<String, PublicKeyError> {
    let file = match (signing_key_file, config) {
        (Some(file), _) => file.to_owned(),
        (None, Some(path)) => {
            let config = crate::config::Config::load(path, crate::config::Purpose::Check)?;
            config
                .integrity
                .digests
                .map(|d| d.signing_key_file)
                .ok_or_else(|| PublicKeyError::NoDigests {
                    path: path.to_owned(),
                })?
        }
        (None, None) => return Err(PublicKeyError::NoKey),
    };
    Ok(crate::integrity::Signer::from_pem_file(&file)?.public_pem()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_key_comes_from_the_key_file_or_the_config_and_verifies_its_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let key = openssl::pkey::PKey::generate_ed25519().unwrap();
        let file = dir.path().join("signing.pem");
        std::fs::write(&file, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let pem = public_key_pem(Some(&file), None).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
        let verifier = crate::integrity::Verifier::from_pem(pem.as_bytes()).unwrap();
        let signer = crate::integrity::Signer::from_pem_file(&file).unwrap();
        assert_eq!(verifier.key_id(), signer.key_id());
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "outputs:\n  kafka: {{brokers: [\"k:9092\"]}}\nintegrity:\n  chain: true\n  digests: {{topic: d, signing_key_file: {}}}\n",
                file.display()
            ),
        )
        .unwrap();
        assert_eq!(public_key_pem(None, Some(&config)).unwrap(), pem);
        let missing = dir.path().join("absent.pem");
        let err = public_key_pem(Some(&missing), Some(&config)).unwrap_err();
        assert!(
            crate::report(&err).contains("absent.pem"),
            "the file wins, and is named"
        );
        assert!(matches!(
            public_key_pem(None, None),
            Err(PublicKeyError::NoKey)
        ));
    }
}
