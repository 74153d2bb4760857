//! Signing keys made at benchmark time, standing in for an identity provider's: shared by the token
//! minter (`bench/mint_tokens.rs`) and the criterion benches (`benches/`), which include this file with
//! `#[path]`. Never used by the gateway itself.
#![allow(dead_code)]

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

/// One signing key of a JWS algorithm tenantgate verifies.
pub enum SigningKey {
    /// RS256 with a 2048-bit key, what most identity providers issue.
    Rsa(RsaKeyPair),
    /// ES256 (P-256).
    Ec(EcdsaKeyPair),
    /// EdDSA (Ed25519).
    Ed(Ed25519KeyPair),
}

impl SigningKey {
    /// A fresh key for `alg` (`RS256`, `ES256` or `EdDSA`).
    pub fn generate(alg: &str) -> SigningKey {
        match alg {
            "RS256" => SigningKey::Rsa(
                RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA keygen"),
            ),
            "ES256" => SigningKey::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .expect("EC keygen"),
            ),
            "EdDSA" => SigningKey::Ed(Ed25519KeyPair::generate().expect("Ed25519 keygen")),
            other => panic!("no signing key for {other}"),
        }
    }

    /// The JWS `alg` header value.
    pub fn alg(&self) -> &'static str {
        match self {
            SigningKey::Rsa(_) => "RS256",
            SigningKey::Ec(_) => "ES256",
            SigningKey::Ed(_) => "EdDSA",
        }
    }

    /// The public key as a PEM `PUBLIC KEY` block, what `-auth.publicKeyFiles` reads.
    pub fn public_pem(&self) -> String {
        let der: PublicKeyX509Der = match self {
            SigningKey::Rsa(k) => k.public_key().as_der().expect("RSA SPKI"),
            SigningKey::Ec(k) => k.public_key().as_der().expect("EC SPKI"),
            SigningKey::Ed(k) => k.public_key().as_der().expect("Ed25519 SPKI"),
        };
        let b64 = STANDARD.encode(der.as_ref());
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        out
    }

    /// A compact JWS of `payload` (JSON text) with header `{"alg":..,"typ":"JWT"}`.
    pub fn sign(&self, payload: &str) -> String {
        let header = format!(r#"{{"alg":"{}","typ":"JWT"}}"#, self.alg());
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let rng = SystemRandom::new();
        let sig = match self {
            SigningKey::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .expect("RSA sign");
                sig
            }
            SigningKey::Ec(k) => k
                .sign(&rng, input.as_bytes())
                .expect("EC sign")
                .as_ref()
                .to_vec(),
            SigningKey::Ed(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

/// The benchmark's token payload: team `dev`, valid until `exp`; `jti` makes tokens distinct.
pub fn payload(exp: u64, jti: Option<u64>) -> String {
    let jti = jti.map_or(String::new(), |n| format!(r#""jti":"bench-{n}","#));
    format!(r#"{{{jti}"exp":{exp},"vm_access":{{"extra_labels":{{"team":"dev"}}}}}}"#)
}

/// A payload without `vm_access`, with the `groups` claim a grants file maps to a grant.
pub fn groups_payload(exp: u64) -> String {
    format!(r#"{{"exp":{exp},"sub":"bench","groups":["staff","team-dev"]}}"#)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
