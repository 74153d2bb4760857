//! Mints the load benchmark's keys and tokens (run by `bench/run`):
//!
//! ```text
//! cargo run --release --example mint_tokens -- OUTDIR [ROTATING]
//! ```
//!
//! writes into OUTDIR the public keys `rs256.pem`, `es256.pem`, `eddsa.pem` (give all three to
//! `-auth.publicKeyFiles`), one token per algorithm in `rs256.token`, `es256.token`, `eddsa.token`, and
//! `rotating.tokens`: ROTATING (default 10000) distinct RS256 tokens, one per line, for the token
//! rotation scenario. Every token is valid for an hour and grants `extra_labels: {team: dev}`. It also
//! writes `grants.token` (RS256, no `vm_access`, `groups: [staff, team-dev]`) for the grants-file row, and
//! `write.body`: a real remote-write request (snappy-compressed protobuf), 10,000 series of one
//! sample with ten labels each, as vmagent batches them, so row counting has real work.

#[path = "signing.rs"]
mod signing;
#[path = "write_body.rs"]
mod write_body;

use std::fs;
use std::path::PathBuf;

use signing::{groups_payload, now, payload, SigningKey};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: mint_tokens OUTDIR [ROTATING]"));
    let rotating: u64 = args
        .next()
        .map_or(10_000, |n| n.parse().expect("ROTATING is a number"));
    fs::create_dir_all(&dir).expect("create OUTDIR");
    let exp = now() + 3600;
    let mut rsa = None;
    for alg in ["RS256", "ES256", "EdDSA"] {
        let key = SigningKey::generate(alg);
        let name = alg.to_ascii_lowercase();
        fs::write(dir.join(format!("{name}.pem")), key.public_pem()).expect("write PEM");
        fs::write(
            dir.join(format!("{name}.token")),
            key.sign(&payload(exp, None)),
        )
        .expect("write token");
        if alg == "RS256" {
            rsa = Some(key);
        }
    }
    let rsa = rsa.expect("RS256 key");
    // For the grants-file row: the same key, no vm_access, a groups claim.
    fs::write(dir.join("grants.token"), rsa.sign(&groups_payload(exp)))
        .expect("write grants token");
    // RSA signing is ~1 ms a token: split the work over the machine's cores.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let chunks: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let rsa = &rsa;
                s.spawn(move || {
                    let mut out = String::new();
                    for n in (t..rotating).step_by(threads as usize) {
                        out.push_str(&rsa.sign(&payload(exp, Some(n))));
                        out.push('\n');
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("signer thread"))
            .collect()
    });
    fs::write(dir.join("rotating.tokens"), chunks.concat()).expect("write rotating tokens");
    fs::write(
        dir.join("write.body"),
        write_body::remote_write_body(10_000, now() as i64 * 1000),
    )
    .expect("write write.body");
    eprintln!(
        "mint_tokens: keys and tokens ({rotating} rotating) in {}",
        dir.display()
    );
}
