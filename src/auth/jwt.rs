//! Compact JWS verification: split, decode, pick keys by `alg` and `kid`, check the signature, then read
//! the claims and check time, issuer and audience.
//!
//! Pure: the key set, options and the current time are passed in, so every rule here is unit-testable
//! and fuzzable. The signature is checked before the payload is parsed, so nothing an attacker wrote
//! reaches the claim parser unless a trusted key signed it (except in the compatibility mode without
//! keys, which the operator is warned about at start-up and on `/health`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use super::claims::{parse_claims, Access, ClaimError};
use super::keys::{Alg, KeySet};
use crate::error::AuthReason;

/// The largest token accepted. IdP access tokens are a few KiB; anything larger is an attack or a bug.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Checks beyond the signature, all off by default as in vmgateway.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// When false (no key source configured), signatures are not checked: vmgateway compatibility.
    pub check_signature: bool,
    /// `iss` must equal one of these, when non-empty.
    pub issuers: Vec<String>,
    /// `aud` must contain one of these, when non-empty.
    pub audiences: Vec<String>,
    /// Seconds of clock difference forgiven on `exp` and `nbf`.
    pub clock_skew: f64,
    /// A grants file is configured: a token without `vm_access` is verified too, and its payload kept
    /// for the grants to match (`-auth.grantsFile`).
    pub grants: bool,
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// What its `vm_access` grants; `None` only with [`VerifyOptions::grants`].
    pub access: Option<Access>,
    /// The decoded payload, kept with [`VerifyOptions::grants`] for the grants file to match.
    pub payload: Option<Vec<u8>>,
    /// Expiry, seconds since the epoch; cache entries die then.
    pub exp: f64,
    /// Not-before, if any.
    pub nbf: Option<f64>,
    /// `sub`, for the audit log.
    pub subject: Option<String>,
    /// `client_id` (or `azp`), for the audit log.
    pub client_id: Option<String>,
}

/// Why a token was refused, with a message that never includes the token.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyError {
    /// The metric label and 401 category.
    pub reason: AuthReason,
    /// What to tell the client and the log.
    pub message: String,
    /// The `kid` that no key carries: a hint that the IdP rotated keys and a refresh may help.
    pub unknown_kid: Option<String>,
}

impl VerifyError {
    fn new(reason: AuthReason, message: impl Into<String>) -> Self {
        VerifyError {
            reason,
            message: message.into(),
            unknown_kid: None,
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Verifies `token` (without the `Bearer ` prefix) at time `now` (seconds since the epoch).
pub fn verify(
    token: &str,
    keys: &KeySet,
    options: &VerifyOptions,
    now: f64,
) -> Result<Verified, VerifyError> {
    use AuthReason::*;
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::new(Malformed, "token is too large"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::new(
            Malformed,
            "token is not a JWT (want three base64url parts separated by dots)",
        ));
    };
    let header_json = decode_part(header_b64, "header")?;
    let header: Header = serde_json::from_slice(&header_json)
        .map_err(|_| VerifyError::new(Malformed, "token header is not valid JSON"))?;
    if let Some(typ) = &header.typ {
        let typ = typ.to_ascii_lowercase();
        let typ = typ.strip_prefix("application/").unwrap_or(&typ);
        if typ != "jwt" && typ != "at+jwt" {
            return Err(VerifyError::new(
                Malformed,
                "token typ must be JWT or at+jwt",
            ));
        }
    }
    if header.crit.is_some() {
        return Err(VerifyError::new(
            Malformed,
            "token header has crit extensions tenantgate does not understand",
        ));
    }
    let Some(alg) = Alg::from_name(&header.alg) else {
        return Err(VerifyError::new(
            Algorithm,
            "token algorithm is not accepted (none and unknown algorithms never are)",
        ));
    };

    if options.check_signature {
        let signature = decode_part(signature_b64, "signature")?;
        let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        let kid = header.kid.as_deref();
        let mut tried = 0usize;
        let mut ok = false;
        for key in keys.candidates(alg, kid) {
            tried += 1;
            if key.verify(alg, signed, &signature) {
                ok = true;
                break;
            }
        }
        if !ok {
            // A kid no key carries is reported even when kid-less (PEM) keys were tried and failed:
            // with PEM keys beside a JWKS, a rotated IdP key must still trigger a refresh.
            if let Some(kid) = kid.filter(|k| !keys.has_kid(k)) {
                let mut e = VerifyError::new(
                    UnknownKey,
                    "token was signed by a key tenantgate does not know (unknown kid)",
                );
                e.unknown_kid = Some(kid.to_owned());
                return Err(e);
            }
            if tried == 0 {
                return Err(VerifyError::new(
                    Algorithm,
                    format!("no verification key accepts {} tokens", alg.name()),
                ));
            }
            return Err(VerifyError::new(BadSignature, "token signature is invalid"));
        }
    }

    let payload = decode_part(payload_b64, "payload")?;
    check_claims(payload, options, now)
}

/// Whether `token` has a JWT's shape (three parts separated by dots, the first a base64url header):
/// such a token is verified as a JWT, anything else is an opaque token (introspected,
/// `auth::introspect`). Only the short header's characters are checked: the payload and signature are
/// checked by the verification a JWT gets anyway, which refuses them if they are not base64url, and
/// checking a whole 1 KB token byte by byte on every request cost a fifth of a cached request.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.splitn(4, '.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !header.is_empty()
        && !payload.is_empty()
        && header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
}

/// The checks on a payload whose origin is trusted (a verified signature, or the identity provider's
/// own introspection answer): claims, time, issuer, audience, `vm_access` or a grants file.
pub fn check_claims(
    payload: Vec<u8>,
    options: &VerifyOptions,
    now: f64,
) -> Result<Verified, VerifyError> {
    use AuthReason::*;
    let claims = parse_claims(&payload).map_err(|e| match e {
        ClaimError::Payload(_) => VerifyError::new(Malformed, e.to_string()),
        ClaimError::VmAccess(_) => VerifyError::new(BadClaim, e.to_string()),
    })?;
    if now >= claims.exp + options.clock_skew {
        return Err(VerifyError::new(
            Expired,
            format!("token expired {}s ago", (now - claims.exp).floor() as u64),
        ));
    }
    if let Some(nbf) = claims.nbf {
        if now + options.clock_skew < nbf {
            return Err(VerifyError::new(
                NotYetValid,
                format!(
                    "token is not valid for another {}s",
                    (nbf - now).ceil() as u64
                ),
            ));
        }
    }
    if !options.issuers.is_empty()
        && !claims
            .iss
            .as_ref()
            .is_some_and(|iss| options.issuers.iter().any(|i| i == iss))
    {
        return Err(VerifyError::new(
            Issuer,
            "token issuer is not one of -auth.issuers",
        ));
    }
    if !options.audiences.is_empty() && !claims.aud.iter().any(|a| options.audiences.contains(a)) {
        return Err(VerifyError::new(
            Audience,
            "token audience names none of -auth.audiences",
        ));
    }
    if claims.access.is_none() && !options.grants {
        return Err(VerifyError::new(
            MissingClaim,
            "token has no vm_access claim",
        ));
    }
    Ok(Verified {
        access: claims.access,
        payload: options.grants.then_some(payload),
        exp: claims.exp,
        nbf: claims.nbf,
        subject: claims.subject,
        client_id: claims.client_id,
    })
}

/// One base64url part of a token, decoded (`what` names it in the error).
pub(crate) fn decode_part(part: &str, what: &str) -> Result<Vec<u8>, VerifyError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        VerifyError::new(
            AuthReason::Malformed,
            format!("token {what} is not base64url"),
        )
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::auth::keys::{keys_from_pem, VerifyKey};
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
    use aws_lc_rs::{encoding::AsDer, encoding::PublicKeyX509Der, hmac};

    pub fn b64(data: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(data)
    }

    #[test]
    fn jwts_are_told_from_opaque_tokens_by_shape() {
        for jwt in [
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
            "eyJh.eyJz.",
            "a-_=.b.c",
        ] {
            assert!(looks_like_jwt(jwt), "{jwt}");
        }
        let opaque = [
            "",
            "rJm3xkTtW1AjCF2Xq0oNFn_yL4fP8", // oidc-provider's opaque tokens
            "ya29.a0AfH6SMBx",               // two parts
            "a.b.c.d",                       // four parts
            ".eyJz.c",                       // no header
            "eyJh..c",                       // no payload
            "ey J.eyJz.c",                   // not base64url in the header
            "Zm9v%2F.eyJz.c",
        ];
        for token in opaque {
            assert!(!looks_like_jwt(token), "{token}");
        }
    }

    /// Signs `header.payload` with an RSA key (RS256), the way an IdP would.
    pub fn rs256(pair: &RsaKeyPair, header: &str, payload: &str) -> String {
        let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let mut sig = vec![0; pair.public_modulus_len()];
        pair.sign(
            &signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signing_input.as_bytes(),
            &mut sig,
        )
        .unwrap();
        format!("{signing_input}.{}", b64(&sig))
    }

    fn rsa_setup() -> (RsaKeyPair, KeySet) {
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let spki: PublicKeyX509Der = pair.public_key().as_der().unwrap();
        let pem = crate::auth::keys::tests::pem_block("PUBLIC KEY", spki.as_ref());
        let keys = KeySet::new(keys_from_pem(pem.as_bytes(), "t").unwrap(), 1);
        (pair, keys)
    }

    fn opts() -> VerifyOptions {
        VerifyOptions {
            check_signature: true,
            ..Default::default()
        }
    }

    const NOW: f64 = 1_700_000_000.0;
    const GOOD: &str =
        r#"{"exp":1700000100,"vm_access":{"tenant_id":{"account_id":0,"project_id":1}}}"#;

    #[test]
    fn valid_rs256_token_is_accepted() {
        let (pair, keys) = rsa_setup();
        let token = rs256(&pair, r#"{"alg":"RS256","typ":"JWT"}"#, GOOD);
        let v = verify(&token, &keys, &opts(), NOW).unwrap();
        assert_eq!(v.access.unwrap().tenant.project, 1);
        let token = rs256(&pair, r#"{"alg":"RS256","typ":"at+jwt"}"#, GOOD);
        assert!(verify(&token, &keys, &opts(), NOW).is_ok());
    }

    fn reason(token: &str, keys: &KeySet, o: &VerifyOptions, now: f64) -> AuthReason {
        verify(token, keys, o, now).unwrap_err().reason
    }

    #[test]
    fn every_kind_of_bad_token_is_refused_with_its_reason() {
        let (pair, keys) = rsa_setup();
        let h = r#"{"alg":"RS256"}"#;
        let o = opts();
        assert_eq!(
            reason(&rs256(&pair, h, GOOD), &keys, &o, 1_700_000_100.0),
            AuthReason::Expired
        );
        let nbf = r#"{"exp":1700000100,"nbf":1700000050,"vm_access":{}}"#;
        assert_eq!(
            reason(&rs256(&pair, h, nbf), &keys, &o, NOW),
            AuthReason::NotYetValid
        );
        let noclaim = r#"{"exp":1700000100}"#;
        assert_eq!(
            reason(&rs256(&pair, h, noclaim), &keys, &o, NOW),
            AuthReason::MissingClaim
        );
        let noexp = r#"{"vm_access":{}}"#;
        assert_eq!(
            reason(&rs256(&pair, h, noexp), &keys, &o, NOW),
            AuthReason::Malformed
        );
        // A valid signature over a different payload.
        let token = rs256(&pair, h, GOOD);
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64(br#"{"exp":1700000100,"vm_access":{"tenant_id":{"account_id":7}}}"#);
        parts[1] = &forged;
        assert_eq!(
            reason(&parts.join("."), &keys, &o, NOW),
            AuthReason::BadSignature
        );
        // alg none, unsigned.
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(GOOD.as_bytes()));
        assert_eq!(reason(&none, &keys, &o, NOW), AuthReason::Algorithm);
        // Garbage.
        for garbage in ["", "abc", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30"] {
            let r = reason(garbage, &keys, &o, NOW);
            assert!(
                matches!(r, AuthReason::Malformed | AuthReason::Algorithm),
                "{garbage}: {r:?}"
            );
        }
        assert_eq!(
            reason(&"a".repeat(MAX_TOKEN_LEN + 1), &keys, &o, NOW),
            AuthReason::Malformed
        );
        // Wrong typ and crit.
        assert_eq!(
            reason(
                &rs256(&pair, r#"{"alg":"RS256","typ":"dpop+jwt"}"#, GOOD),
                &keys,
                &o,
                NOW
            ),
            AuthReason::Malformed
        );
        assert_eq!(
            reason(
                &rs256(&pair, r#"{"alg":"RS256","crit":["exp"]}"#, GOOD),
                &keys,
                &o,
                NOW
            ),
            AuthReason::Malformed
        );
    }

    #[test]
    fn hmac_signed_with_the_rsa_public_key_fails() {
        let (pair, keys) = rsa_setup();
        let spki: PublicKeyX509Der = pair.public_key().as_der().unwrap();
        let pem = crate::auth::keys::tests::pem_block("PUBLIC KEY", spki.as_ref());
        let input = format!("{}.{}", b64(br#"{"alg":"HS256"}"#), b64(GOOD.as_bytes()));
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, pem.as_bytes()),
            input.as_bytes(),
        );
        let token = format!("{input}.{}", b64(tag.as_ref()));
        assert_eq!(reason(&token, &keys, &opts(), NOW), AuthReason::Algorithm);
    }

    #[test]
    fn hmac_keys_do_not_verify_rs_tokens_and_vice_versa() {
        let (pair, _) = rsa_setup();
        let keys = KeySet::new(vec![VerifyKey::hmac(&[1u8; 32], "t").unwrap()], 1);
        let token = rs256(&pair, r#"{"alg":"RS256"}"#, GOOD);
        assert_eq!(reason(&token, &keys, &opts(), NOW), AuthReason::Algorithm);
    }

    #[test]
    fn unknown_kid_is_reported_for_refresh() {
        let (pair, keys) = rsa_setup();
        let ec = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let _ = ec.public_key();
        // PEM keys have no kid and accept any kid; a JWKS key with another kid does not.
        let token = rs256(&pair, r#"{"alg":"RS256","kid":"x"}"#, GOOD);
        assert!(verify(&token, &keys, &opts(), NOW).is_ok());
        let doc = format!(
            r#"{{"keys":[{}]}}"#,
            crate::auth::keys::tests::rsa_jwk(&pair, "k1", None)
        );
        let jwks = KeySet::new(
            crate::auth::keys::keys_from_jwks(doc.as_bytes(), "t")
                .unwrap()
                .keys,
            2,
        );
        let err = verify(&token, &jwks, &opts(), NOW).unwrap_err();
        assert_eq!(err.reason, AuthReason::UnknownKey);
        assert_eq!(err.unknown_kid.as_deref(), Some("x"));
        let token = rs256(&pair, r#"{"alg":"RS256","kid":"k1"}"#, GOOD);
        assert!(verify(&token, &jwks, &opts(), NOW).is_ok());
        // A PEM key of another pair beside the JWKS: tried and failed, but the kid is still unknown.
        let (_, other_pem) = rsa_setup();
        let mut mixed: Vec<VerifyKey> = other_pem.keys().to_vec();
        mixed.extend(jwks.keys().iter().cloned());
        let mixed = KeySet::new(mixed, 3);
        let token = rs256(&pair, r#"{"alg":"RS256","kid":"new"}"#, GOOD);
        let err = verify(&token, &mixed, &opts(), NOW).unwrap_err();
        assert_eq!(err.reason, AuthReason::UnknownKey);
        assert_eq!(err.unknown_kid.as_deref(), Some("new"));
        // A known kid with a bad signature stays a bad signature.
        let (forger, _) = rsa_setup();
        let token = rs256(&forger, r#"{"alg":"RS256","kid":"k1"}"#, GOOD);
        assert_eq!(
            reason(&token, &mixed, &opts(), NOW),
            AuthReason::BadSignature
        );
    }

    #[test]
    fn issuer_audience_and_skew() {
        let (pair, keys) = rsa_setup();
        let payload = r#"{"exp":1700000100,"iss":"https://idp","aud":["x","vm"],"vm_access":{}}"#;
        let token = rs256(&pair, r#"{"alg":"RS256"}"#, payload);
        let mut o = opts();
        o.issuers = vec!["https://other".into()];
        assert_eq!(reason(&token, &keys, &o, NOW), AuthReason::Issuer);
        o.issuers.push("https://idp".into());
        o.audiences = vec!["nope".into()];
        assert_eq!(reason(&token, &keys, &o, NOW), AuthReason::Audience);
        o.audiences.push("vm".into());
        assert!(verify(&token, &keys, &o, NOW).is_ok());
        o.clock_skew = 30.0;
        assert!(verify(&token, &keys, &o, 1_700_000_110.0).is_ok());
        assert_eq!(
            reason(&token, &keys, &o, 1_700_000_130.0),
            AuthReason::Expired
        );
    }

    #[test]
    fn without_keys_signatures_are_not_checked() {
        let o = VerifyOptions::default();
        let token = format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256"}"#),
            b64(GOOD.as_bytes()),
            "sig"
        );
        assert!(verify(&token, &KeySet::default(), &o, NOW).is_ok());
        // alg none is still refused.
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(GOOD.as_bytes()));
        assert_eq!(
            reason(&none, &KeySet::default(), &o, NOW),
            AuthReason::Algorithm
        );
    }
}
