//! The PROXY protocol (v1 text and v2 binary, as HAProxy specifies them): the header a TCP load balancer
//! (HAProxy, AWS NLB, Envoy, ...) puts before a connection's bytes to say who the real client is, for
//! listeners with `-httpListenAddr.useProxyProtocol`.
//!
//! [`parse`] is pure: bytes in, the header's length and the client address out, or "need more bytes",
//! or a refusal. [`read_header`] peeks at a fresh connection, so not a byte past the header is consumed
//! (the TLS handshake or HTTP request that follows stays in the socket), and gives up after a deadline.
//! A connection without a valid header is closed: on such a listener, accepting it would let any client
//! that reaches the port directly claim any address.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

/// The v2 signature.
const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;

/// Longest v2 header accepted: 16 fixed bytes and up to 2 KiB of addresses and TLVs (the spec allows
/// 64 KiB of TLVs, which nobody sends; a cap keeps a hostile peer from making us buffer them).
const V2_MAX: usize = 16 + 2048;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes the header takes, to be consumed before the connection's own bytes.
    pub len: usize,
    /// The real client, or `None` when the header says to use the connection's own address (v1
    /// `UNKNOWN`, v2 `LOCAL` — health checks of the load balancer itself — or a family other than IP).
    pub source: Option<SocketAddr>,
}

/// Why a header is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub &'static str);

/// Parses the start of a connection. `Ok(None)`: a valid prefix, more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<Header>, Refused> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == b'P' {
        return parse_v1(buf);
    }
    if buf[0] == V2_SIGNATURE[0] {
        return parse_v2(buf);
    }
    Err(Refused(
        "the connection does not start with a PROXY protocol header",
    ))
}

fn parse_v1(buf: &[u8]) -> Result<Option<Header>, Refused> {
    let prefix = b"PROXY ";
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        return Err(Refused(
            "the connection does not start with a PROXY protocol header",
        ));
    }
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(Refused("PROXY v1 header longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[prefix.len()..end])
        .map_err(|_| Refused("PROXY v1 header is not ASCII"))?;
    let len = end + 2;
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["UNKNOWN", ..] => Ok(Some(Header { len, source: None })),
        [family @ ("TCP4" | "TCP6"), src, _dst, src_port, _dst_port] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| Refused("PROXY v1 header has a bad source address"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(Refused("PROXY v1 address does not match its family"));
            }
            let port = parse_port(src_port)?;
            Ok(Some(Header {
                len,
                source: Some(SocketAddr::new(ip, port)),
            }))
        }
        _ => Err(Refused("malformed PROXY v1 header")),
    }
}

/// A decimal port without sign or leading zeros (the spec forbids them).
fn parse_port(text: &str) -> Result<u16, Refused> {
    let bad = Refused("PROXY v1 header has a bad port");
    if text.is_empty()
        || (text.len() > 1 && text.starts_with('0'))
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad);
    }
    text.parse().map_err(|_| bad)
}

fn parse_v2(buf: &[u8]) -> Result<Option<Header>, Refused> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(Refused(
            "the connection does not start with a PROXY protocol header",
        ));
    }
    if buf.len() < 16 {
        return Ok(None);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(Refused("PROXY v2 header with an unknown version"));
    }
    let local = match version_command & 0x0F {
        0 => true,
        1 => false,
        _ => return Err(Refused("PROXY v2 header with an unknown command")),
    };
    let family = buf[13];
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body_len;
    if len > V2_MAX {
        return Err(Refused("PROXY v2 header too long"));
    }
    let Some(body) = buf.get(16..len) else {
        return Ok(None);
    };
    if local {
        return Ok(Some(Header { len, source: None }));
    }
    let source = match family {
        // TCP or UDP over IPv4: source, destination, source port, destination port.
        0x11 | 0x12 => {
            let a = body
                .get(..12)
                .ok_or(Refused("PROXY v2 IPv4 addresses truncated"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        0x21 | 0x22 => {
            let a = body
                .get(..36)
                .ok_or(Refused("PROXY v2 IPv6 addresses truncated"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            Some(SocketAddr::new(
                Ipv6Addr::from(octets).into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // UNSPEC and unix sockets: no IP to report; the connection's own address stands.
        0x00 | 0x31 | 0x32 => None,
        _ => return Err(Refused("PROXY v2 header with an unknown address family")),
    };
    Ok(Some(Header { len, source }))
}

/// Reads the PROXY header of a new connection within `limit`, consuming exactly its bytes, and returns
/// the client it names (or `peer` when it names none).
pub async fn read_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
    limit: Duration,
) -> io::Result<SocketAddr> {
    let refused = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let header = tokio::time::timeout(limit, async {
        let mut buf = vec![0u8; V2_MAX];
        let mut seen = 0;
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before the PROXY header",
                ));
            }
            match parse(&buf[..n]).map_err(|r| refused(r.0))? {
                Some(header) => return Ok(header),
                // Peek returns what is buffered: wait for more to arrive before peeking again.
                None if n == seen => tokio::time::sleep(Duration::from_millis(5)).await,
                None => seen = n,
            }
        }
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no PROXY header in time"))??;
    let mut consumed = vec![0u8; header.len];
    tokio::io::AsyncReadExt::read_exact(stream, &mut consumed).await?;
    Ok(header.source.unwrap_or(peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let h = parse(b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 8431\r\nGET / HTTP/1.1\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.len, 42);
        assert_eq!(h.source, Some("192.0.2.7:51234".parse().unwrap()));
        let h = parse(b"PROXY TCP6 2001:db8::1 ::1 443 8431\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.source, Some("[2001:db8::1]:443".parse().unwrap()));
        let h = parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!((h.len, h.source), (15, None));
    }

    #[test]
    fn v1_partial_and_bad() {
        assert_eq!(parse(b"PROX"), Ok(None));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(None));
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 80 80\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 080 80\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 80 80\r\n",
            &[b'P'; 200][..],
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut long = b"PROXY ".to_vec();
        long.extend([b'x'; 150]);
        assert!(parse(&long).is_err());
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend((body.len() as u16).to_be_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn v2_ipv4_ipv6_local_and_tlvs() {
        let mut body = vec![203, 0, 113, 9, 10, 0, 0, 1];
        body.extend(40000u16.to_be_bytes());
        body.extend(8431u16.to_be_bytes());
        body.extend([0x04, 0x00, 0x01, 0xAA]); // a TLV, skipped
        let bytes = v2(1, 0x11, &body);
        let h = parse(&bytes).unwrap().unwrap();
        assert_eq!(h.len, bytes.len());
        assert_eq!(h.source, Some("203.0.113.9:40000".parse().unwrap()));
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Ok(None), "prefix of {cut} bytes");
        }
        let mut body6 = vec![0u8; 36];
        body6[0] = 0x20;
        body6[1] = 0x01;
        body6[15] = 5;
        body6[32..34].copy_from_slice(&443u16.to_be_bytes());
        let h = parse(&v2(1, 0x21, &body6)).unwrap().unwrap();
        assert_eq!(h.source, Some("[2001::5]:443".parse().unwrap()));
        let h = parse(&v2(0, 0x00, &[])).unwrap().unwrap();
        assert_eq!(h.source, None);
    }

    #[test]
    fn v2_refusals() {
        assert!(parse(&v2(2, 0x11, &[0; 12])).is_err(), "unknown command");
        assert!(parse(&v2(1, 0x11, &[0; 4])).is_err(), "truncated addresses");
        assert!(parse(&v2(1, 0x51, &[0; 12])).is_err(), "unknown family");
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(parse(&wrong_version).is_err());
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend([0x21, 0x11, 0xFF, 0xFF]);
        assert!(parse(&huge).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
            if seed.is_multiple_of(3) {
                let mut sig = V2_SIGNATURE.to_vec();
                sig.append(&mut bytes);
                bytes = sig;
            } else if seed % 3 == 1 {
                let mut p = b"PROXY ".to_vec();
                p.append(&mut bytes);
                bytes = p;
            }
            let _ = parse(&bytes);
        }
    }
}
