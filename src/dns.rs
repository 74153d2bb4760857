//! A small DNS client for backend discovery (`-discoverBackendIPs`): A, AAAA and SRV questions over UDP to
//! one server (`-dns.server`, else the first `nameserver` of `/etc/resolv.conf`), one question at a time.
//!
//! Why not the system resolver alone: it has no SRV lookups, and `-dns.server` must send the questions to
//! a server of the operator's choice (Consul's DNS on :8600). Why not a resolver crate: discovery needs
//! three record types, no cache (pods and Consul services answer with TTL 0, and every interval must
//! ask again) and no recursion of its own; the packet code below is the whole of it, and
//! [`parse_answer`] is pure and tested on hostile input. A truncated answer is an error (no TCP
//! fallback): keep SRV sets under ~30 records.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

/// The record types asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    A = 1,
    Aaaa = 28,
    Srv = 33,
}

/// An answer record tenantgate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An IPv4 or IPv6 address.
    Addr(IpAddr),
    /// An SRV record's target and port.
    Srv { target: String, port: u16 },
}

/// Encodes a recursive question for `name` (dotted, without the root dot) of `kind`.
pub fn encode_query(id: u16, name: &str, kind: RecordType) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(name.len() + 18);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00]); // recursion desired
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a DNS name"));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    if out.len() > 12 + 255 {
        return Err(format!("{name:?} is longer than a DNS name may be"));
    }
    out.extend_from_slice(&(kind as u16).to_be_bytes());
    out.extend_from_slice(&[0, 1]); // class IN
    Ok(out)
}

/// The records of `kind` in an answer to question `id`. Errors: another id, a server error or NXDOMAIN,
/// a truncated answer, or a packet that does not parse. Never panics, whatever the bytes.
pub fn parse_answer(packet: &[u8], id: u16, kind: RecordType) -> Result<Vec<Record>, String> {
    let u16_at = |i: usize| -> Result<u16, String> {
        packet
            .get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "the DNS answer is cut short".to_string())
    };
    if u16_at(0)? != id {
        return Err("the DNS answer is for another question".to_string());
    }
    let flags = u16_at(2)?;
    if flags & 0x0200 != 0 {
        return Err("the DNS answer was truncated".to_string());
    }
    match flags & 0x000f {
        0 => {}
        3 => return Err("no such name (NXDOMAIN)".to_string()),
        code => return Err(format!("the DNS server answered error {code}")),
    }
    let (questions, answers) = (u16_at(4)?, u16_at(6)?);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(packet, at)? + 4;
    }
    let mut records = Vec::new();
    for _ in 0..answers {
        at = skip_name(packet, at)?;
        let rtype = u16_at(at)?;
        let rdlength = u16_at(at + 8)? as usize;
        let data = at + 10;
        let rdata = packet
            .get(data..data + rdlength)
            .ok_or("the DNS answer is cut short")?;
        at = data + rdlength;
        if rtype != kind as u16 {
            continue; // CNAMEs on the way, other records
        }
        records.push(match kind {
            RecordType::A => {
                let b: [u8; 4] = rdata.try_into().map_err(|_| "a bad A record")?;
                Record::Addr(IpAddr::V4(Ipv4Addr::from(b)))
            }
            RecordType::Aaaa => {
                let b: [u8; 16] = rdata.try_into().map_err(|_| "a bad AAAA record")?;
                Record::Addr(IpAddr::V6(Ipv6Addr::from(b)))
            }
            RecordType::Srv => {
                if rdlength < 7 {
                    return Err("a bad SRV record".to_string());
                }
                Record::Srv {
                    port: u16_at(data + 4)?,
                    target: read_name(packet, data + 6)?,
                }
            }
        });
    }
    Ok(records)
}

/// The offset just past the (possibly compressed) name at `at`.
fn skip_name(packet: &[u8], mut at: usize) -> Result<usize, String> {
    loop {
        let len = *packet.get(at).ok_or("the DNS answer is cut short")? as usize;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xc0 == 0xc0 => return Ok(at + 2),
            l if l & 0xc0 != 0 => return Err("a bad DNS name".to_string()),
            l => at += 1 + l,
        }
    }
}

/// The name at `at`, following compression pointers (a bounded number of them: no loops).
fn read_name(packet: &[u8], mut at: usize) -> Result<String, String> {
    let mut name = String::new();
    for _ in 0..128 {
        let len = *packet.get(at).ok_or("the DNS answer is cut short")? as usize;
        match len {
            0 => return Ok(name),
            l if l & 0xc0 == 0xc0 => {
                let low = *packet.get(at + 1).ok_or("the DNS answer is cut short")? as usize;
                at = ((l & 0x3f) << 8) | low;
            }
            l if l & 0xc0 != 0 => return Err("a bad DNS name".to_string()),
            l => {
                let label = packet
                    .get(at + 1..at + 1 + l)
                    .ok_or("the DNS answer is cut short")?;
                if !label
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(b))
                {
                    return Err("a DNS name with characters a host name cannot have".to_string());
                }
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(&String::from_utf8_lossy(label));
                at += 1 + l;
            }
        }
    }
    Err("a DNS name with too many parts or a pointer loop".to_string())
}

/// The server questions go to: `configured`, else the first `nameserver` of `/etc/resolv.conf`.
pub async fn server(configured: Option<&str>) -> Result<SocketAddr, String> {
    if let Some(server) = configured {
        if let Ok(addr) = server.parse() {
            return Ok(addr);
        }
        // A name (`consul:8600` in a compose file) is resolved by the system every round, so a
        // DNS server that moves is followed.
        return tokio::net::lookup_host(server)
            .await
            .map_err(|e| format!("cannot resolve -dns.server {server}: {e}"))?
            .next()
            .ok_or_else(|| format!("-dns.server {server} has no address"));
    }
    let conf = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("cannot read /etc/resolv.conf: {e}"))?;
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .ok_or_else(|| "no nameserver in /etc/resolv.conf; set -dns.server".to_string())
}

/// Asks `server` for the `kind` records of `name`, within `timeout` (tried twice: UDP may drop one).
pub async fn lookup(
    server: SocketAddr,
    name: &str,
    kind: RecordType,
    timeout: Duration,
) -> Result<Vec<Record>, String> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().map_err(|_| "address")?
    } else {
        "[::]:0".parse().map_err(|_| "address")?
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("DNS socket: {e}"))?;
    socket
        .connect(server)
        .await
        .map_err(|e| format!("DNS server {server}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let mut last = String::new();
    for _ in 0..2 {
        let id: u16 = rand::random();
        let query = encode_query(id, name, kind)?;
        socket
            .send(&query)
            .await
            .map_err(|e| format!("DNS server {server}: {e}"))?;
        // Answers to an earlier try, or forged ones with another id, are skipped until the deadline.
        let deadline = tokio::time::Instant::now() + timeout / 2;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => {
                    last = format!("DNS server {server} did not answer for {name}");
                    break;
                }
                Ok(Err(e)) => return Err(format!("DNS server {server}: {e}")),
                Ok(Ok(n)) => match parse_answer(&buf[..n], id, kind) {
                    Err(e) if e.contains("another question") => continue,
                    answered => return answered.map_err(|e| format!("{name}: {e}")),
                },
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dnsmasq 2.90's answer to `vm.test A` (two addresses, TTL 0), id 0x1234.
    const A_ANSWER: &str = "12348580000100020000000002766d04746573740000010001c00c000100010000000000047f000001c00c000100010000000000047f000002";
    /// dnsmasq 2.90's answer to `_vm._tcp.test SRV` (target vm.test:8428, with additional A records).
    const SRV_ANSWER: &str = "123485800001000100000002035f766d045f74637004746573740000210001c00c0021000100000000000f0000000020ec02766d047465737400c031000100010000000000047f000002c031000100010000000000047f000001";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn queries_are_encoded_as_dnsmasq_reads_them() {
        let q = encode_query(0x1234, "vm.test", RecordType::A).unwrap();
        assert_eq!(&hex(A_ANSWER)[12..12 + 13], &q[12..]);
        assert!(encode_query(1, "a..b", RecordType::A).is_err());
        assert!(encode_query(1, &"a".repeat(64), RecordType::A).is_err());
    }

    #[test]
    fn answers_of_a_real_server_are_read() {
        let a = parse_answer(&hex(A_ANSWER), 0x1234, RecordType::A).unwrap();
        assert_eq!(
            a,
            [
                Record::Addr("127.0.0.1".parse().unwrap()),
                Record::Addr("127.0.0.2".parse().unwrap())
            ]
        );
        let srv = parse_answer(&hex(SRV_ANSWER), 0x1234, RecordType::Srv).unwrap();
        assert_eq!(
            srv,
            [Record::Srv {
                target: "vm.test".into(),
                port: 8428
            }]
        );
        assert!(parse_answer(&hex(A_ANSWER), 0x4321, RecordType::A).is_err());
    }

    #[test]
    fn hostile_answers_are_errors_not_panics() {
        let good = hex(SRV_ANSWER);
        for cut in 0..good.len() {
            let _ = parse_answer(&good[..cut], 0x1234, RecordType::Srv);
        }
        let mut looped = good.clone();
        // The SRV target becomes a pointer to itself.
        let target = good.len() - 2 * 16 - 9;
        looped[target] = 0xc0;
        looped[target + 1] = target as u8;
        assert!(parse_answer(&looped, 0x1234, RecordType::Srv).is_err());
        let mut nx = good.clone();
        nx[3] |= 3;
        assert!(parse_answer(&nx, 0x1234, RecordType::Srv)
            .unwrap_err()
            .contains("NXDOMAIN"));
        let mut truncated = good;
        truncated[2] |= 0x02;
        assert!(parse_answer(&truncated, 0x1234, RecordType::Srv).is_err());
        for seed in 0..2000u32 {
            let bytes: Vec<u8> = (0..(seed % 90))
                .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 40503) >> 7) as u8)
                .collect();
            let _ = parse_answer(&bytes, 0x1234, RecordType::Srv);
        }
    }
}
