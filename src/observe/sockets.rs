//! Listening TCP sockets, read from the kernel: netlink `sock_diag` first, `/proc/net/tcp{,6}`
//! when netlink is unavailable.
//!
//! Netlink asks the kernel for LISTEN sockets only, so it walks the listening hash instead of
//! every connection: 0.04-2 ms where `/proc/net/tcp` costs 3 ms or more even on an idle host
//! (`docs/performance.md`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustix::net::netlink::{SOCK_DIAG, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType, recv, sendto, socket};

/// One listening socket as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RawSocket {
    /// Local port.
    pub port: u16,
    /// Local address.
    pub address: IpAddr,
    /// Socket inode.
    pub inode: u64,
    /// Owner uid.
    pub uid: u32,
}

/// Where the sockets came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `NETLINK_SOCK_DIAG`.
    Netlink,
    /// `/proc/net/tcp` and `/proc/net/tcp6`.
    ProcNet,
}

impl Source {
    /// The name recorded in observations.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Netlink => "netlink",
            Self::ProcNet => "proc-net",
        }
    }
}

/// Reads every listening TCP socket (IPv4 and IPv6) whose port satisfies `wanted`.
pub fn listening(wanted: impl Fn(u16) -> bool) -> Result<(Vec<RawSocket>, Source), String> {
    match netlink_listening() {
        Ok(all) => Ok((
            all.into_iter().filter(|s| wanted(s.port)).collect(),
            Source::Netlink,
        )),
        Err(netlink_err) => match proc_net_listening() {
            Ok(all) => Ok((
                all.into_iter().filter(|s| wanted(s.port)).collect(),
                Source::ProcNet,
            )),
            Err(proc_err) => Err(format!(
                "netlink sock_diag failed ({netlink_err}) and so did /proc/net/tcp ({proc_err})"
            )),
        },
    }
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCPF_LISTEN: u32 = 1 << 10;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;

const TCPF_ESTABLISHED: u32 = 1 << 1;

/// Dumps LISTEN TCP sockets of both families through `NETLINK_SOCK_DIAG`.
pub fn netlink_listening() -> Result<Vec<RawSocket>, String> {
    netlink_dump(TCPF_LISTEN)
}

/// Dumps ESTABLISHED TCP sockets of both families (the kernel filters by state), each with its
/// local port: how many clients a server has, without reading `/proc/net/tcp`.
pub fn netlink_established() -> Result<Vec<RawSocket>, String> {
    netlink_dump(TCPF_ESTABLISHED)
}

/// Dumps the TCP sockets in `states` (a `TCPF_*` mask) of both families.
fn netlink_dump(states: u32) -> Result<Vec<RawSocket>, String> {
    let fd = socket(AddressFamily::NETLINK, SocketType::DGRAM, Some(SOCK_DIAG))
        .map_err(|e| format!("netlink socket: {e}"))?;
    let kernel = SocketAddrNetlink::new(0, 0);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for (seq, family) in [(1u32, AF_INET), (2, AF_INET6)] {
        // nlmsghdr (16 bytes) + inet_diag_req_v2 (56 bytes).
        let mut req = [0u8; 72];
        req[0..4].copy_from_slice(&72u32.to_ne_bytes());
        req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&seq.to_ne_bytes());
        req[16] = family;
        req[17] = IPPROTO_TCP;
        req[20..24].copy_from_slice(&states.to_ne_bytes());
        sendto(&fd, &req, SendFlags::empty(), &kernel).map_err(|e| format!("netlink send: {e}"))?;
        'recv: loop {
            let (n, _) = recv(&fd, &mut buf[..], RecvFlags::empty())
                .map_err(|e| format!("netlink recv: {e}"))?;
            let mut msgs = &buf[..n];
            while msgs.len() >= 16 {
                let len = u32::from_ne_bytes(msgs[0..4].try_into().unwrap_or_default()) as usize;
                let kind = u16::from_ne_bytes([msgs[4], msgs[5]]);
                if len < 16 || len > msgs.len() {
                    return Err("netlink: truncated message".to_owned());
                }
                let payload = &msgs[16..len];
                match kind {
                    NLMSG_DONE => break 'recv,
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(0..4)
                            .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap_or_default()));
                        return Err(format!("netlink error {}", -errno));
                    }
                    SOCK_DIAG_BY_FAMILY => {
                        if let Some(s) = parse_diag_msg(payload) {
                            out.push(s);
                        }
                    }
                    _ => {}
                }
                let aligned = (len + 3) & !3;
                msgs = msgs.get(aligned..).unwrap_or(&[]);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Parses one `inet_diag_msg`: family at 0, sport (big-endian) at 4, src address at 8, uid at 64,
/// inode at 68.
fn parse_diag_msg(p: &[u8]) -> Option<RawSocket> {
    if p.len() < 72 {
        return None;
    }
    let port = u16::from_be_bytes([p[4], p[5]]);
    let address = match p[0] {
        AF_INET => IpAddr::V4(Ipv4Addr::new(p[8], p[9], p[10], p[11])),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?)),
        _ => return None,
    };
    let uid = u32::from_ne_bytes(p[64..68].try_into().ok()?);
    let inode = u64::from(u32::from_ne_bytes(p[68..72].try_into().ok()?));
    Some(RawSocket {
        port,
        address,
        inode,
        uid,
    })
}

/// Reads LISTEN sockets from `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn proc_net_listening() -> Result<Vec<RawSocket>, String> {
    let mut out = Vec::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(path) {
            Ok(text) => out.extend(parse_proc_net(&text)),
            // A kernel without IPv6 has no tcp6 file; that is not a failure.
            Err(e) if path.ends_with('6') && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{path}: {e}")),
        }
    }
    out.sort();
    Ok(out)
}

/// Parses the text of `/proc/net/tcp{,6}`, keeping LISTEN (`0A`) rows.
#[must_use]
pub fn parse_proc_net(text: &str) -> Vec<RawSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                return None;
            }
            let (addr, port) = f[1].split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let address = parse_hex_addr(addr)?;
            let uid = f[7].parse().ok()?;
            let inode = f[9].parse().ok()?;
            Some(RawSocket {
                port,
                address,
                inode,
                uid,
            })
        })
        .collect()
}

/// The kernel prints each 32-bit word of the address as a native-endian hex number.
fn parse_hex_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| {
        u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
            .ok()
            .map(u32::to_ne_bytes)
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_rows_parse() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:4965 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 424242 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:4966 0100007F:9999 01 00000000:00000000 00:00000000 00000000  1000        0 5 1 0 100 0 0 10 0\n";
        let got = parse_proc_net(text);
        assert_eq!(got.len(), 1, "only LISTEN rows");
        assert_eq!(got[0].port, 0x4965);
        assert_eq!(got[0].inode, 424_242);
        assert_eq!(got[0].uid, 1000);
        if cfg!(target_endian = "little") {
            assert_eq!(got[0].address, "127.0.0.1".parse::<IpAddr>().unwrap());
        }
    }

    #[test]
    fn netlink_and_proc_net_agree_on_this_host() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let netlink = netlink_listening().expect("netlink sock_diag works here");
        let procnet = proc_net_listening().expect("/proc/net/tcp is readable");
        let a: Vec<_> = netlink.iter().filter(|s| s.port == port).collect();
        let b: Vec<_> = procnet.iter().filter(|s| s.port == port).collect();
        assert_eq!(a.len(), 1);
        assert_eq!(a, b);
    }

    #[test]
    fn established_dump_counts_the_server_side_of_a_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let est = netlink_established().expect("netlink sock_diag works here");
        assert_eq!(
            est.iter().filter(|s| s.port == port).count(),
            1,
            "the accepted socket"
        );
        assert!(netlink_listening().unwrap().iter().any(|s| s.port == port));
    }
}
