//! Verification keys: where they come from, which algorithm each may verify, and the set in use.
//!
//! The algorithm comes from the key, never from the token alone: an RSA key verifies RS*/PS* tokens, an
//! EC key only the ES* of its curve, an Ed25519 key only EdDSA, an HMAC secret only HS*. A JWK `alg`
//! narrows that to exactly one algorithm. This is what makes `alg: none` and the "HMAC signed with the RSA
//! public key" trick fail by construction: no key allows them. Keys are parsed once (aws-lc-rs
//! `ParsedPublicKey`), so the request path only verifies. A [`KeySet`] is immutable; new keys mean a new
//! set with a new generation, swapped in atomically by the owner.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use aws_lc_rs::{constant_time, hmac};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::CertificateDer;
use serde::Deserialize;

/// The JWS algorithms tenantgate verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    const RSA: [Alg; 6] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
    ];
    const HMAC: [Alg; 3] = [Alg::HS256, Alg::HS384, Alg::HS512];

    /// The `alg` header value for this algorithm; `None` for anything else, including `none`.
    pub fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "ES512" => Alg::ES512,
            "EdDSA" => Alg::EdDSA,
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            _ => return None,
        })
    }

    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::ES512 => "ES512",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    fn public_algorithm(self) -> Option<&'static dyn VerificationAlgorithm> {
        Some(match self {
            Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            Alg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
            Alg::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
            Alg::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
            Alg::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
            Alg::ES512 => &signature::ECDSA_P521_SHA512_FIXED,
            Alg::EdDSA => &signature::ED25519,
            Alg::HS256 | Alg::HS384 | Alg::HS512 => return None,
        })
    }

    fn hmac_algorithm(self) -> Option<hmac::Algorithm> {
        match self {
            Alg::HS256 => Some(hmac::HMAC_SHA256),
            Alg::HS384 => Some(hmac::HMAC_SHA384),
            Alg::HS512 => Some(hmac::HMAC_SHA512),
            _ => None,
        }
    }
}

/// Why a key could not be loaded. Shown at start-up and in refresh logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// The smallest RSA modulus accepted, as NIST and every IdP default.
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Clone)]
enum Material {
    /// One parsed key per allowed algorithm (aws-lc-rs binds a parsed key to its algorithm).
    Public(Vec<(Alg, ParsedPublicKey)>),
    Hmac(Vec<(Alg, hmac::Key)>),
}

/// One key that can verify tokens, with the algorithms it is pinned to. Cloning is cheap (parsed keys are
/// reference-counted), which lets the key fetcher rebuild a set from the keys of every source.
#[derive(Clone)]
pub struct VerifyKey {
    /// JWK `kid`, matched against the token's `kid`; PEM keys have none.
    pub kid: Option<String>,
    /// Where the key came from (file, JWKS URL), for logs and metrics.
    pub source: Arc<str>,
    /// A short description (`RSA 2048`, `EC P-256`, ...) for the start-up log.
    pub description: String,
    material: Material,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("source", &self.source)
            .field("description", &self.description)
            .field("algs", &self.algs())
            .finish()
    }
}

impl VerifyKey {
    /// The algorithms this key may verify.
    pub fn algs(&self) -> Vec<Alg> {
        match &self.material {
            Material::Public(keys) => keys.iter().map(|(a, _)| *a).collect(),
            Material::Hmac(keys) => keys.iter().map(|(a, _)| *a).collect(),
        }
    }

    /// Whether a token with header `alg` may be checked with this key at all.
    pub fn allows(&self, alg: Alg) -> bool {
        match &self.material {
            Material::Public(keys) => keys.iter().any(|(a, _)| *a == alg),
            Material::Hmac(keys) => keys.iter().any(|(a, _)| *a == alg),
        }
    }

    /// Checks `signature` over `message` with algorithm `alg`; false when the key does not allow `alg`.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            Material::Public(keys) => keys
                .iter()
                .find(|(a, _)| *a == alg)
                .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok()),
            Material::Hmac(keys) => keys
                .iter()
                .find(|(a, _)| *a == alg)
                .is_some_and(|(_, key)| {
                    let expected = hmac::sign(key, message);
                    constant_time::verify_slices_are_equal(expected.as_ref(), signature).is_ok()
                }),
        }
    }

    fn public(
        kid: Option<String>,
        source: &Arc<str>,
        description: String,
        algs: &[Alg],
        key_bytes: &[u8],
    ) -> Result<VerifyKey, KeyError> {
        let mut parsed = Vec::with_capacity(algs.len());
        for &alg in algs {
            let algorithm = alg
                .public_algorithm()
                .ok_or_else(|| KeyError(format!("{} is not a public-key algorithm", alg.name())))?;
            let key = ParsedPublicKey::new(algorithm, key_bytes)
                .map_err(|e| KeyError(format!("{description} key rejected: {e}")))?;
            parsed.push((alg, key));
        }
        Ok(VerifyKey {
            kid,
            source: source.clone(),
            description,
            material: Material::Public(parsed),
        })
    }

    /// An HMAC secret for HS256/384/512 (opt-in; never usable for RS/ES/EdDSA tokens).
    pub fn hmac(secret: &[u8], source: &str) -> Result<VerifyKey, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError(format!(
                "{source}: HMAC secrets must be at least 32 bytes, got {}",
                secret.len()
            )));
        }
        let keys = Alg::HMAC
            .iter()
            .map(|&a| {
                (
                    a,
                    hmac::Key::new(a.hmac_algorithm().expect("HS alg"), secret),
                )
            })
            .collect();
        Ok(VerifyKey {
            kid: None,
            source: Arc::from(source),
            description: "HMAC secret".into(),
            material: Material::Hmac(keys),
        })
    }
}

/// Parses every `PUBLIC KEY` and `CERTIFICATE` block of a PEM text. Private keys are refused loudly:
/// whoever pasted one has leaked it.
pub fn keys_from_pem(pem: &[u8], source: &str) -> Result<Vec<VerifyKey>, KeyError> {
    let source: Arc<str> = Arc::from(source);
    let mut keys = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = section.map_err(|e| KeyError(format!("{source}: bad PEM: {e}")))?;
        match kind {
            SectionKind::PublicKey => keys.push(key_from_spki(&der, &source)?),
            SectionKind::Certificate => {
                let cert = CertificateDer::from(der);
                let parsed = webpki::EndEntityCert::try_from(&cert)
                    .map_err(|e| KeyError(format!("{source}: bad certificate: {e}")))?;
                keys.push(key_from_spki(&parsed.subject_public_key_info(), &source)?);
            }
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                return Err(KeyError(format!(
                    "{source}: holds a PRIVATE key; give tenantgate only the public key (and rotate the leaked one)"
                )));
            }
            _ => {}
        }
    }
    if keys.is_empty() {
        return Err(KeyError(format!(
            "{source}: no PUBLIC KEY or CERTIFICATE block found"
        )));
    }
    Ok(keys)
}

/// A SubjectPublicKeyInfo of any supported type. aws-lc-rs validates the curve of EC keys, so trying the
/// types in turn finds the one the key really is.
fn key_from_spki(spki: &[u8], source: &Arc<str>) -> Result<VerifyKey, KeyError> {
    if let Ok(rsa) = aws_lc_rs::rsa::PublicEncryptingKey::from_der(spki) {
        let bits = rsa.key_size_bits();
        check_rsa_bits(bits, source)?;
        return VerifyKey::public(None, source, format!("RSA {bits}"), &Alg::RSA, spki);
    }
    for (alg, curve) in [
        (Alg::ES256, "P-256"),
        (Alg::ES384, "P-384"),
        (Alg::ES512, "P-521"),
    ] {
        let algorithm = alg.public_algorithm().expect("EC alg");
        if ParsedPublicKey::new(algorithm, spki).is_ok() {
            return VerifyKey::public(None, source, format!("EC {curve}"), &[alg], spki);
        }
    }
    if ParsedPublicKey::new(&signature::ED25519, spki).is_ok() {
        return VerifyKey::public(None, source, "Ed25519".into(), &[Alg::EdDSA], spki);
    }
    Err(KeyError(format!(
        "{source}: unsupported public key type (want RSA, EC P-256/384/521 or Ed25519)"
    )))
}

fn check_rsa_bits(bits: usize, source: &str) -> Result<(), KeyError> {
    if bits < MIN_RSA_BITS {
        return Err(KeyError(format!(
            "{source}: RSA key of {bits} bits refused; at least {MIN_RSA_BITS} bits are required"
        )));
    }
    Ok(())
}

/// One JSON Web Key as published in a JWKS document (RFC 7517/7518/8037). Unknown fields are ignored.
#[derive(Debug, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub key_ops: Option<Vec<String>>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
    /// Present only in private or symmetric keys, which a JWKS must never publish.
    #[serde(default)]
    pub d: Option<String>,
    #[serde(default)]
    pub k: Option<String>,
}

/// A JWKS document: `{"keys": [...]}`.
#[derive(Debug, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<serde_json::Value>,
}

/// What happened to each key of a JWKS: loaded, or skipped with a reason worth a warning.
pub struct JwksKeys {
    /// Keys ready for verification.
    pub keys: Vec<VerifyKey>,
    /// One line per key that was skipped (wrong `use`, unsupported type, weak RSA...).
    pub skipped: Vec<String>,
}

/// Parses a JWKS document. A key that cannot be used is skipped with a reason rather than failing the
/// whole set: IdPs publish encryption keys and new key types beside the signing keys we need.
pub fn keys_from_jwks(document: &[u8], source: &str) -> Result<JwksKeys, KeyError> {
    let set: JwkSet = serde_json::from_slice(document)
        .map_err(|e| KeyError(format!("{source}: not a JWKS document: {e}")))?;
    let source: Arc<str> = Arc::from(source);
    let mut out = JwksKeys {
        keys: Vec::new(),
        skipped: Vec::new(),
    };
    for (i, value) in set.keys.into_iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(jwk) => jwk,
            Err(e) => {
                out.skipped.push(format!("key #{i}: {e}"));
                continue;
            }
        };
        let name = jwk.kid.clone().unwrap_or_else(|| format!("#{i}"));
        match key_from_jwk(&jwk, &source) {
            Ok(Some(key)) => out.keys.push(key),
            Ok(None) => {}
            Err(e) => out.skipped.push(format!("key {name}: {}", e.0)),
        }
    }
    Ok(out)
}

/// One JWK to a key; `Ok(None)` for keys that are not for signatures (silently not ours).
pub fn key_from_jwk(jwk: &Jwk, source: &Arc<str>) -> Result<Option<VerifyKey>, KeyError> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = &jwk.key_ops {
        if !ops.iter().any(|op| op == "verify") {
            return Ok(None);
        }
    }
    if jwk.d.is_some() || jwk.k.is_some() {
        return Err(KeyError(
            "holds private or symmetric key material; refusing it".into(),
        ));
    }
    let pinned = match jwk.alg.as_deref() {
        None => None,
        Some(name) => Some(
            Alg::from_name(name)
                .ok_or_else(|| KeyError(format!("algorithm {name:?} is not supported")))?,
        ),
    };
    let allowed = |family: &[Alg]| -> Result<Vec<Alg>, KeyError> {
        match pinned {
            None => Ok(family.to_vec()),
            Some(a) if family.contains(&a) => Ok(vec![a]),
            Some(a) => Err(KeyError(format!(
                "alg {} does not match key type {}",
                a.name(),
                jwk.kty
            ))),
        }
    };
    let kid = jwk.kid.clone();
    match jwk.kty.as_str() {
        "RSA" => {
            let n = b64_field(&jwk.n, "n")?;
            let e = b64_field(&jwk.e, "e")?;
            let n_trimmed = trim_leading_zeros(&n);
            let bits =
                n_trimmed.len() * 8 - n_trimmed.first().map_or(8, |b| b.leading_zeros() as usize);
            check_rsa_bits(bits, source).map_err(|_| {
                KeyError(format!(
                    "RSA key of {bits} bits refused; at least {MIN_RSA_BITS} bits are required"
                ))
            })?;
            let der = rsa_public_key_der(n_trimmed, trim_leading_zeros(&e));
            VerifyKey::public(
                kid,
                source,
                format!("RSA {bits}"),
                &allowed(&Alg::RSA)?,
                &der,
            )
            .map(Some)
        }
        "EC" => {
            let (alg, size, curve) = match jwk.crv.as_deref() {
                Some("P-256") => (Alg::ES256, 32, "P-256"),
                Some("P-384") => (Alg::ES384, 48, "P-384"),
                Some("P-521") => (Alg::ES512, 66, "P-521"),
                other => return Err(KeyError(format!("EC curve {other:?} is not supported"))),
            };
            let x = b64_field(&jwk.x, "x")?;
            let y = b64_field(&jwk.y, "y")?;
            if x.len() != size || y.len() != size {
                return Err(KeyError(format!(
                    "EC {curve} coordinates must be {size} bytes"
                )));
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            VerifyKey::public(
                kid,
                source,
                format!("EC {curve}"),
                &allowed(&[alg])?,
                &point,
            )
            .map(Some)
        }
        "OKP" => {
            if jwk.crv.as_deref() != Some("Ed25519") {
                return Err(KeyError(format!(
                    "OKP curve {:?} is not supported (only Ed25519)",
                    jwk.crv
                )));
            }
            let x = b64_field(&jwk.x, "x")?;
            VerifyKey::public(kid, source, "Ed25519".into(), &allowed(&[Alg::EdDSA])?, &x).map(Some)
        }
        other => Err(KeyError(format!("key type {other:?} is not supported"))),
    }
}

fn b64_field(value: &Option<String>, name: &str) -> Result<Vec<u8>, KeyError> {
    let text = value
        .as_deref()
        .ok_or_else(|| KeyError(format!("missing {name}")))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| KeyError(format!("{name} is not base64url")))
}

fn trim_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// DER `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017), the form
/// aws-lc-rs parses, built from a JWK's `n` and `e`.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn integer(out: &mut Vec<u8>, magnitude: &[u8]) {
        let pad = magnitude.first().is_none_or(|b| b & 0x80 != 0);
        out.push(0x02);
        der_length(out, magnitude.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(magnitude);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(&mut body, n);
    integer(&mut body, e);
    let mut der = Vec::with_capacity(body.len() + 6);
    der.push(0x30);
    der_length(&mut der, body.len());
    der.extend_from_slice(&body);
    der
}

fn der_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// The keys in force. Immutable: a change is a new set with a higher generation.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
    /// Bumped on every change; verified-token cache entries from older generations are not trusted.
    pub generation: u64,
}

impl KeySet {
    /// A set of `keys` at `generation`.
    pub fn new(keys: Vec<VerifyKey>, generation: u64) -> KeySet {
        KeySet { keys, generation }
    }

    /// All keys.
    pub fn keys(&self) -> &[VerifyKey] {
        &self.keys
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is loaded.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys that may verify a token with `alg` and `kid`. A token with a `kid` is only checked against
    /// keys with that `kid` or keys without one (PEM keys), so a rotated-out `kid` cannot be verified by
    /// an unrelated JWKS key.
    pub fn candidates<'a>(
        &'a self,
        alg: Alg,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        self.keys.iter().filter(move |k| {
            k.allows(alg)
                && match (kid, k.kid.as_deref()) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        })
    }

    /// Whether any key carries `kid` (an unknown `kid` may mean the IdP rotated keys).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};

    /// Test helper: the public JWK fields of an RSA key pair.
    pub fn rsa_jwk(pair: &RsaKeyPair, kid: &str, alg: Option<&str>) -> String {
        let public = pair.public_key();
        let rsa = aws_lc_rs::rsa::PublicKey::from_der(public.as_ref()).unwrap();
        let n = URL_SAFE_NO_PAD.encode(rsa.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(rsa.exponent().big_endian_without_leading_zero());
        let alg = alg.map(|a| format!(r#","alg":"{a}""#)).unwrap_or_default();
        format!(r#"{{"kty":"RSA","kid":"{kid}","use":"sig","n":"{n}","e":"{e}"{alg}}}"#)
    }

    fn rsa_pair(bits: aws_lc_rs::rsa::KeySize) -> RsaKeyPair {
        RsaKeyPair::generate(bits).unwrap()
    }

    #[test]
    fn rsa_jwk_verifies_its_signatures_and_pins_alg() {
        let pair = rsa_pair(aws_lc_rs::rsa::KeySize::Rsa2048);
        let doc = format!(r#"{{"keys":[{}]}}"#, rsa_jwk(&pair, "k1", Some("RS256")));
        let parsed = keys_from_jwks(doc.as_bytes(), "test").unwrap();
        assert_eq!(parsed.keys.len(), 1, "skipped: {:?}", parsed.skipped);
        let key = &parsed.keys[0];
        assert_eq!(key.algs(), vec![Alg::RS256]);
        let mut sig = vec![0; pair.public_modulus_len()];
        pair.sign(
            &signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            b"msg",
            &mut sig,
        )
        .unwrap();
        assert!(key.verify(Alg::RS256, b"msg", &sig));
        assert!(!key.verify(Alg::RS256, b"other", &sig));
        assert!(!key.verify(Alg::RS384, b"msg", &sig), "pinned to RS256");
        assert!(!key.allows(Alg::HS256));
    }

    #[test]
    fn rsa_without_alg_allows_the_rsa_family_only() {
        let pair = rsa_pair(aws_lc_rs::rsa::KeySize::Rsa2048);
        let doc = format!(r#"{{"keys":[{}]}}"#, rsa_jwk(&pair, "k1", None));
        let key = &keys_from_jwks(doc.as_bytes(), "t").unwrap().keys[0];
        assert_eq!(key.algs(), Alg::RSA.to_vec());
    }

    #[test]
    fn jwk_skips_and_refusals() {
        let ec = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = ec.public_key().as_ref().to_vec();
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..]);
        let doc = format!(
            r#"{{"keys":[
            {{"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"{x}","y":"{y}"}},
            {{"kty":"EC","crv":"P-256","kid":"good","x":"{x}","y":"{y}"}},
            {{"kty":"EC","crv":"P-256","kid":"wrongalg","alg":"RS256","x":"{x}","y":"{y}"}},
            {{"kty":"EC","crv":"P-384","kid":"wrongcurve","x":"{x}","y":"{y}"}},
            {{"kty":"oct","kid":"sym","k":"c2VjcmV0"}},
            {{"kty":"RSA","kid":"small","n":"AQAB","e":"AQAB"}},
            {{"kty":"EC","crv":"secp256k1","kid":"k1","x":"{x}","y":"{y}"}},
            {{"kty":"EC","crv":"P-256","kid":"priv","d":"AA","x":"{x}","y":"{y}"}},
            {{"kty":"OKP","crv":"X25519","kid":"x","x":"{x}"}},
            {{"kty":"EC","crv":"P-256","kid":"badb64","x":"!!","y":"{y}"}},
            {{"kid":"notype"}}
        ]}}"#
        );
        let parsed = keys_from_jwks(doc.as_bytes(), "t").unwrap();
        let kids: Vec<_> = parsed.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, vec!["good"]);
        assert_eq!(parsed.keys[0].algs(), vec![Alg::ES256]);
        assert_eq!(parsed.skipped.len(), 9, "{:?}", parsed.skipped);
        assert!(parsed.skipped.iter().any(|s| s.contains("2048")));
    }

    #[test]
    fn pem_public_keys_of_every_type() {
        let rsa = rsa_pair(aws_lc_rs::rsa::KeySize::Rsa2048);
        let spki = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(
            rsa.public_key(),
        )
        .unwrap();
        let keys = keys_from_pem(pem_block("PUBLIC KEY", spki.as_ref()).as_bytes(), "t").unwrap();
        assert_eq!(keys[0].algs(), Alg::RSA.to_vec());
        assert_eq!(keys[0].description, "RSA 2048");
        for (alg, signing) in [
            (Alg::ES256, &signature::ECDSA_P256_SHA256_FIXED_SIGNING),
            (Alg::ES384, &signature::ECDSA_P384_SHA384_FIXED_SIGNING),
            (Alg::ES512, &signature::ECDSA_P521_SHA512_FIXED_SIGNING),
        ] {
            let pair = EcdsaKeyPair::generate(signing).unwrap();
            let spki = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(
                pair.public_key(),
            )
            .unwrap();
            let pem = pem_block("PUBLIC KEY", spki.as_ref());
            let keys = keys_from_pem(pem.as_bytes(), "t").unwrap();
            assert_eq!(keys[0].algs(), vec![alg]);
            let sig = pair.sign(&SystemRandom::new(), b"m").unwrap();
            assert!(keys[0].verify(alg, b"m", sig.as_ref()));
        }
        let ed = Ed25519KeyPair::generate().unwrap();
        let spki = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(
            ed.public_key(),
        )
        .unwrap();
        let keys = keys_from_pem(pem_block("PUBLIC KEY", spki.as_ref()).as_bytes(), "t").unwrap();
        assert_eq!(keys[0].algs(), vec![Alg::EdDSA]);
        assert!(keys[0].verify(Alg::EdDSA, b"m", ed.sign(b"m").as_ref()));
    }

    #[test]
    fn private_keys_and_garbage_are_refused() {
        assert!(keys_from_pem(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "t"
        )
        .is_err());
        assert!(keys_from_pem(b"hello", "t").is_err());
        assert!(keys_from_pem(
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "t"
        )
        .is_err());
    }

    #[test]
    fn hmac_keys_verify_only_hs() {
        let key = VerifyKey::hmac(&[7u8; 32], "t").unwrap();
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32]), b"m");
        assert!(key.verify(Alg::HS256, b"m", tag.as_ref()));
        assert!(!key.verify(Alg::HS256, b"x", tag.as_ref()));
        assert!(!key.allows(Alg::RS256));
        assert!(VerifyKey::hmac(b"short", "t").is_err());
    }

    #[test]
    fn rsa_der_lengths() {
        let n = [0xffu8; 256];
        let der = rsa_public_key_der(&n, &[1, 0, 1]);
        assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x0a]);
    }

    pub fn pem_block(label: &str, der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }
}
