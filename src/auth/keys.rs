//! The keys tokens are checked against, and the algorithms each one allows.
//!
//! A key's algorithms come from the key itself (its type, its curve, the `alg` of a JWK), never
//! from a token. That is what makes algorithm confusion impossible: an RSA public key only ever
//! verifies RSA signatures, so a token "signed" with HMAC using the public key's bytes as the
//! secret finds no key that accepts HS256.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// HMAC with a shared secret.
pub(crate) const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
/// What an RSA public key may verify (PKCS#1 v1.5 and PSS).
pub(crate) const RSA: &[Algorithm] =
    &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];
/// Every algorithm a key from a JWKS may carry: public-key algorithms only. A symmetric (`oct`)
/// key published in a JWKS would let anyone who can read the JWKS sign tokens.
pub(crate) const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// RSA moduli shorter than this are refused (the crypto backend would fail every signature anyway).
const MIN_RSA_BITS: usize = 2048;

/// DER encodings of the named-curve OIDs of an EC `SubjectPublicKeyInfo`.
const OID_P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];

/// A key and the algorithms it may verify.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    /// The JWK's `kid`; keys from a secret or a PEM file have none and verify tokens whatever
    /// `kid` they name.
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl VerifyingKey {
    /// An HS256/384/512 shared secret.
    pub(super) fn from_secret(secret: &str) -> VerifyingKey {
        VerifyingKey { kid: None, algorithms: HMAC.to_vec(), key: DecodingKey::from_secret(secret.as_bytes()) }
    }

    /// A public key in PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`): RSA (RS*/PS*), EC P-256 (ES256),
    /// EC P-384 (ES384) or Ed25519 (EdDSA), told apart by the key itself. `origin` names where
    /// the PEM came from in error messages.
    pub(super) fn from_pem(pem: &[u8], origin: &str) -> Result<VerifyingKey, String> {
        let text = std::str::from_utf8(pem).map_err(|_| format!("{origin} is not a PEM file"))?;
        let (label, der) =
            pem_block(text).ok_or_else(|| format!("{origin} is not a PEM file (no '-----BEGIN ...-----' block)"))?;
        if label.contains("PRIVATE KEY") {
            return Err(format!(
                "{origin} holds a private key: give the identity provider's public key instead \
                 (openssl pkey -in <key.pem> -pubout)"
            ));
        }
        if label == "CERTIFICATE" {
            return Err(format!(
                "{origin} holds a certificate: give its public key instead (openssl x509 -in <cert.pem> -pubkey -noout)"
            ));
        }
        if label != "PUBLIC KEY" && label != "RSA PUBLIC KEY" {
            return Err(format!("{origin} holds a '{label}' PEM block, not a PUBLIC KEY"));
        }
        let der = der.ok_or_else(|| format!("{origin}: the PEM block is not valid base64"))?;

        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            let jwk =
                Jwk::from_decoding_key(&key, None).map_err(|_| format!("{origin} is not a valid RSA public key"))?;
            if let AlgorithmParameters::RSA(params) = &jwk.algorithm {
                check_rsa_modulus(&params.n).map_err(|e| format!("{origin}: {e}"))?;
            }
            return Ok(VerifyingKey { kid: None, algorithms: RSA.to_vec(), key });
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            let point = key.try_get_as_bytes().map_err(|_| format!("{origin} is not a valid EC public key"))?;
            let contains = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
            let (algorithm, point_len) = if contains(OID_P256) {
                (Algorithm::ES256, 65)
            } else if contains(OID_P384) {
                (Algorithm::ES384, 97)
            } else {
                return Err(format!("{origin}: unsupported EC curve (ES256 needs P-256, ES384 needs P-384)"));
            };
            if point.len() != point_len || point[0] != 0x04 {
                return Err(format!("{origin} is not a valid uncompressed EC public key"));
            }
            return Ok(VerifyingKey { kid: None, algorithms: vec![algorithm], key });
        }
        if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            if key.try_get_as_bytes().map(<[u8]>::len).ok() != Some(32) {
                return Err(format!("{origin} is not a valid Ed25519 public key"));
            }
            return Ok(VerifyingKey { kid: None, algorithms: vec![Algorithm::EdDSA], key });
        }
        Err(format!("{origin} is not an RSA, EC (P-256, P-384) or Ed25519 public key"))
    }

    /// A key of a JWKS. The algorithms are the JWK's `alg` when present (it must fit the key), or
    /// else follow from `kty`/`crv`. `Err` says why the key is skipped.
    pub(super) fn from_jwk(jwk: &Jwk) -> Result<VerifyingKey, String> {
        if let Some(usage) = &jwk.common.public_key_use
            && *usage != PublicKeyUse::Signature
        {
            return Err("not a signing key ('use' is not 'sig')".into());
        }
        if let Some(ops) = &jwk.common.key_operations
            && !ops.contains(&KeyOperations::Verify)
        {
            return Err("not a verification key ('key_ops' has no 'verify')".into());
        }
        let fitting: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(params) => {
                check_rsa_modulus(&params.n)?;
                RSA.to_vec()
            }
            AlgorithmParameters::EllipticCurve(params) => {
                let (algorithm, size) = match params.curve {
                    EllipticCurve::P256 => (Algorithm::ES256, 32),
                    EllipticCurve::P384 => (Algorithm::ES384, 48),
                    _ => return Err("unsupported EC curve (only P-256 and P-384)".into()),
                };
                let coordinate = |c: &str| URL_SAFE_NO_PAD.decode(c).ok().filter(|b| b.len() == size);
                if coordinate(&params.x).is_none() || coordinate(&params.y).is_none() {
                    return Err("malformed EC coordinates".into());
                }
                vec![algorithm]
            }
            AlgorithmParameters::OctetKeyPair(params) => match params.curve {
                EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
                _ => return Err("unsupported OKP curve (only Ed25519)".into()),
            },
            AlgorithmParameters::OctetKey(_) => {
                return Err("a symmetric ('oct') key is never taken from a JWKS".into());
            }
            _ => return Err("unsupported key type".into()),
        };
        let algorithms = match jwk.common.key_algorithm {
            None => fitting,
            Some(declared) => {
                let declared =
                    Algorithm::try_from(declared).map_err(|_| format!("unsupported signing algorithm {declared}"))?;
                if !fitting.contains(&declared) {
                    return Err(format!("its alg {declared:?} does not fit its key type"));
                }
                vec![declared]
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|_| "unreadable key parameters".to_string())?;
        Ok(VerifyingKey { kid: jwk.common.key_id.clone(), algorithms, key })
    }
}

/// Refuses RSA moduli (base64url, as in a JWK) shorter than [`MIN_RSA_BITS`].
fn check_rsa_modulus(n: &str) -> Result<(), String> {
    let n = URL_SAFE_NO_PAD.decode(n).map_err(|_| "malformed RSA modulus".to_string())?;
    let significant = n.iter().skip_while(|b| **b == 0).count();
    if significant * 8 < MIN_RSA_BITS {
        return Err(format!("RSA keys shorter than {MIN_RSA_BITS} bits are refused"));
    }
    Ok(())
}

/// The label and the DER body (`None` when not base64) of the first PEM block of `text`.
fn pem_block(text: &str) -> Option<(String, Option<Vec<u8>>)> {
    let begin = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &text[begin..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].trim().to_string();
    let body = &rest[label_end + 5..];
    let end = body.find("-----END ")?;
    let base64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    Some((label, STANDARD.decode(base64).ok()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A test-only key pair file of tests/fixtures/jwt.
    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn pem(name: &str) -> Result<VerifyingKey, String> {
        VerifyingKey::from_pem(&fixture(name), name)
    }

    #[test]
    fn a_pem_key_allows_only_the_algorithms_of_its_type() {
        assert_eq!(pem("test-only-rsa-a.pub.pem").unwrap().algorithms, RSA);
        assert_eq!(pem("test-only-ec-p256.pub.pem").unwrap().algorithms, [Algorithm::ES256]);
        assert_eq!(pem("test-only-ec-p384.pub.pem").unwrap().algorithms, [Algorithm::ES384]);
        assert_eq!(pem("test-only-ed25519.pub.pem").unwrap().algorithms, [Algorithm::EdDSA]);
        for key in ["test-only-rsa-a.pub.pem", "test-only-ec-p256.pub.pem", "test-only-ed25519.pub.pem"] {
            let key = pem(key).unwrap();
            assert!(!key.algorithms.iter().any(|a| HMAC.contains(a)), "{key:?}");
        }
    }

    #[test]
    fn unusable_pem_files_are_refused_with_a_reason_naming_the_file() {
        let private = pem("test-only-rsa-a.key.pem").unwrap_err();
        assert!(private.contains("test-only-rsa-a.key.pem") && private.contains("private key"), "{private}");
        assert!(pem("test-only-ec-p256.key.pem").unwrap_err().contains("private key"));
        assert!(pem("test-only-ec-secp256k1.pub.pem").unwrap_err().contains("unsupported EC curve"));
        assert!(pem("test-only-rsa-1024.pub.pem").unwrap_err().contains("2048 bits"));
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert!(VerifyingKey::from_pem(cert.as_bytes(), "c.pem").unwrap_err().contains("certificate"));
        assert!(VerifyingKey::from_pem(b"not a key", "k.pem").unwrap_err().contains("k.pem is not a PEM file"));
        let broken = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(VerifyingKey::from_pem(broken.as_bytes(), "b.pem").unwrap_err().starts_with("b.pem"));
        assert!(VerifyingKey::from_pem(&[0xff, 0xfe], "bin.pem").unwrap_err().contains("not a PEM file"));
    }

    fn jwk(value: serde_json::Value) -> Result<VerifyingKey, String> {
        VerifyingKey::from_jwk(&serde_json::from_value(value).unwrap())
    }

    fn rsa_jwk() -> serde_json::Value {
        let key = DecodingKey::from_rsa_pem(&fixture("test-only-rsa-a.pub.pem")).unwrap();
        serde_json::to_value(Jwk::from_decoding_key(&key, None).unwrap()).unwrap()
    }

    fn ec_jwk() -> serde_json::Value {
        let key = DecodingKey::from_ec_pem(&fixture("test-only-ec-p256.pub.pem")).unwrap();
        serde_json::to_value(Jwk::from_decoding_key(&key, None).unwrap()).unwrap()
    }

    #[test]
    fn a_jwk_carries_its_algorithm_or_derives_it_from_its_type() {
        let mut rsa = rsa_jwk();
        rsa["kid"] = "r1".into();
        let key = jwk(rsa.clone()).unwrap();
        assert_eq!((key.kid.as_deref(), key.algorithms.as_slice()), (Some("r1"), RSA));
        rsa["alg"] = "RS256".into();
        assert_eq!(jwk(rsa.clone()).unwrap().algorithms, [Algorithm::RS256]);
        rsa["use"] = "sig".into();
        assert!(jwk(rsa.clone()).is_ok());

        let mut ec = ec_jwk();
        assert_eq!(ec["crv"], "P-256");
        assert_eq!(jwk(ec.clone()).unwrap().algorithms, [Algorithm::ES256]);
        ec["alg"] = "ES256".into();
        assert_eq!(jwk(ec).unwrap().algorithms, [Algorithm::ES256]);
    }

    #[test]
    fn jwks_keys_that_cannot_sign_our_tokens_safely_are_skipped() {
        let mut rsa = rsa_jwk();
        rsa["alg"] = "HS256".into();
        assert!(jwk(rsa).unwrap_err().contains("does not fit"));
        let mut ec = ec_jwk();
        ec["alg"] = "ES384".into();
        assert!(jwk(ec).unwrap_err().contains("does not fit"));
        let mut rsa = rsa_jwk();
        rsa["use"] = "enc".into();
        assert!(jwk(rsa).unwrap_err().contains("not a signing key"));
        let mut rsa = rsa_jwk();
        rsa["key_ops"] = serde_json::json!(["encrypt"]);
        assert!(jwk(rsa).is_err());
        let oct = serde_json::json!({"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ", "alg": "HS256", "kid": "h"});
        assert!(jwk(oct).unwrap_err().contains("symmetric"));
        let mut ec = ec_jwk();
        ec["x"] = "AAAA".into();
        assert!(jwk(ec).unwrap_err().contains("malformed"));
        let other = serde_json::json!({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"});
        assert!(jwk(other).is_err());
    }

    #[test]
    fn key_material_never_shows_in_debug_output() {
        let secret = "a-very-secret-hmac-key-value";
        let shown = format!("{:?}", VerifyingKey::from_secret(secret));
        assert!(!shown.contains(secret) && shown.contains("<redacted>"), "{shown}");
    }
}
