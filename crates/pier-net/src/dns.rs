//! The embedded DNS server of a user network: one per network, on the gateway address,
//! port 53, UDP and TCP (RFC 1035, TCP with its 2-byte length prefix).
//!
//! This module owns the DNS wire code (parsing hostile queries, encoding answers) and the
//! server tasks. Containers are resolved through [`Records`], which the daemon implements
//! over its containers; everything else is relayed byte for byte to the host's upstream
//! resolvers.
//!
//! ```text
//! packet ── header? ──no──▶ drop          QR set (a response) ──▶ drop
//!             │ yes
//!             ├─ opcode ≠ 0 ───────────▶ NOTIMP
//!             ├─ not one valid question ─▶ FORMERR
//!             ├─ local name ────────────▶ A / PTR answer, or NODATA for other types (AA)
//!             ├─ no upstreams ──────────▶ NXDOMAIN
//!             └─ upstreams in order, each with a timeout ──▶ relayed reply, or SERVFAIL
//! ```

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tracing::debug;

/// What the server answers from: the daemon implements this over its containers.
pub trait Records: Send + Sync + 'static {
    /// IPv4 addresses for `name` (lower-case, without the trailing dot; may be a
    /// short name like "web" or a fully qualified one like "web.mynet"), or None when the
    /// name is not known on this network.
    fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>>;
    /// The name for a PTR query of `ip` on this network (e.g. "web.mynet"), if any.
    fn reverse(&self, ip: Ipv4Addr) -> Option<String>;
    /// As [`Records::lookup`], for a query that came from `client`: a container on
    /// several networks resolves the names of all of them.
    fn lookup_from(&self, client: std::net::IpAddr, name: &str) -> Option<Vec<Ipv4Addr>> {
        let _ = client;
        self.lookup(name)
    }
    /// The IPv6 addresses of a name [`Records::lookup`] knows (containers on dual-stack
    /// networks), for AAAA queries; by default none.
    fn lookup6(&self, name: &str) -> Option<Vec<Ipv6Addr>> {
        self.lookup(name).map(|_| Vec::new())
    }
    /// As [`Records::lookup6`], for a query that came from `client`.
    fn lookup6_from(&self, client: std::net::IpAddr, name: &str) -> Option<Vec<Ipv6Addr>> {
        self.lookup_from(client, name).map(|_| Vec::new())
    }
    /// The name for a PTR query of an IPv6 address on this network, if any.
    fn reverse6(&self, ip: Ipv6Addr) -> Option<String> {
        let _ = ip;
        None
    }
}

/// The records as one client sees them.
struct ClientView {
    records: Arc<dyn Records>,
    client: std::net::IpAddr,
}

impl Records for ClientView {
    fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        self.records.lookup_from(self.client, name)
    }

    fn reverse(&self, ip: Ipv4Addr) -> Option<String> {
        self.records.reverse(ip)
    }

    fn lookup6(&self, name: &str) -> Option<Vec<Ipv6Addr>> {
        self.records.lookup6_from(self.client, name)
    }

    fn reverse6(&self, ip: Ipv6Addr) -> Option<String> {
        self.records.reverse6(ip)
    }
}

/// How long one upstream resolver gets to answer before the next one is tried.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// A TCP client connection is closed after this long without a complete query.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// TTL of local answers, as Docker's embedded DNS uses.
const LOCAL_TTL: u32 = 600;
const UDP_MAX: usize = 512;
const TCP_MAX: usize = 65535;
/// Queries in flight over UDP; more are dropped (the client retries).
const MAX_UDP_INFLIGHT: usize = 1024;
const MAX_TCP_CONNS: usize = 128;
const BIND_ATTEMPTS: usize = 16;

const HEADER_LEN: usize = 12;
const MAX_NAME: usize = 255;
const QR: u16 = 0x8000;
const OPCODE: u16 = 0x7800;
const AA: u16 = 0x0400;
const TC: u16 = 0x0200;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
const NOERROR: u16 = 0;
const FORMERR: u16 = 1;
const SERVFAIL: u16 = 2;
const NXDOMAIN: u16 = 3;
const NOTIMP: u16 = 4;
const TYPE_A: u16 = 1;
const TYPE_PTR: u16 = 12;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;

/// The one question of a standard query.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Question {
    /// The name uncompressed, in the client's case, for echoing in the reply.
    wire: Vec<u8>,
    /// Lower-case and dotted, without the trailing dot; None for the root or when a label
    /// holds a byte no container name can (such names are never local).
    name: Option<String>,
    qtype: u16,
    qclass: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Query {
    id: u16,
    flags: u16,
    question: Question,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// A name in uncompressed wire form.
    Ptr(Vec<u8>),
}

/// What to do with one incoming packet.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Reply(Vec<u8>),
    Forward(Query),
    Drop,
}

fn be16(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

/// Reads a possibly compressed name at `start`: its uncompressed wire form, its lower-case
/// text, and the offset just past it. Every pointer must point strictly below everything read
/// so far, so loops and forward pointers are refused; the 255-byte limit bounds the work.
fn read_name(msg: &[u8], start: usize) -> Option<(Vec<u8>, Option<String>, usize)> {
    let (mut wire, mut text) = (Vec::with_capacity(64), String::new());
    let (mut pos, mut floor, mut end, mut plain) = (start, start, None, true);
    loop {
        let len = usize::from(*msg.get(pos)?);
        match len & 0xC0 {
            0 if len == 0 => {
                wire.push(0);
                let name = (plain && !text.is_empty()).then_some(text);
                return Some((wire, name, end.unwrap_or(pos + 1)));
            }
            0 => {
                let label = msg.get(pos + 1..pos + 1 + len)?;
                if wire.len() + 1 + len + 1 > MAX_NAME {
                    return None;
                }
                wire.push(len as u8);
                wire.extend_from_slice(label);
                if !text.is_empty() {
                    text.push('.');
                }
                for &b in label {
                    if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                        text.push(char::from(b.to_ascii_lowercase()));
                    } else {
                        plain = false;
                    }
                }
                pos += 1 + len;
            }
            0xC0 => {
                let target = (len & 0x3F) << 8 | usize::from(*msg.get(pos + 1)?);
                if target < HEADER_LEN || target >= floor {
                    return None;
                }
                end.get_or_insert(pos + 2);
                (floor, pos) = (target, target);
            }
            // 0x40 and 0x80: extended and reserved label types.
            _ => return None,
        }
    }
}

/// Encodes a dotted name (trailing dot optional) uncompressed; None if it is not a valid name.
fn encode_name(name: &str) -> Option<Vec<u8>> {
    let mut wire = Vec::with_capacity(name.len() + 2);
    for label in name.strip_suffix('.').unwrap_or(name).split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        wire.push(label.len() as u8);
        wire.extend_from_slice(label.as_bytes());
    }
    wire.push(0);
    (wire.len() <= MAX_NAME).then_some(wire)
}

/// `d.c.b.a.in-addr.arpa` to `a.b.c.d`.
/// The address of an `ip6.arpa` name: 32 nibbles, lowest first.
fn parse_reverse6(name: &str) -> Option<Ipv6Addr> {
    let nibbles: Vec<&str> = name.strip_suffix(".ip6.arpa")?.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut v: u128 = 0;
    for n in nibbles.iter().rev() {
        v = (v << 4) | u128::from(u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1)?);
    }
    Some(Ipv6Addr::from(v))
}

fn parse_reverse(name: &str) -> Option<Ipv4Addr> {
    let mut octets = name.strip_suffix(".in-addr.arpa")?.split('.');
    let mut ip = [0u8; 4];
    for slot in ip.iter_mut().rev() {
        *slot = octets.next()?.parse().ok()?;
    }
    octets.next().is_none().then_some(Ipv4Addr::from(ip))
}

fn parse_question(msg: &[u8]) -> Option<Question> {
    if be16(msg, 4)? != 1 {
        return None;
    }
    let (wire, name, end) = read_name(msg, HEADER_LEN)?;
    let (qtype, qclass) = (be16(msg, end)?, be16(msg, end + 2)?);
    // Anything after the question (an EDNS OPT record, typically) is ignored.
    Some(Question {
        wire,
        name,
        qtype,
        qclass,
    })
}

/// The answers for a local name (empty for NODATA), or None when the name is not local.
fn local_answers(q: &Question, records: &dyn Records) -> Option<Vec<Rdata>> {
    if q.qclass != CLASS_IN && q.qclass != CLASS_ANY {
        return None;
    }
    let name = q.name.as_deref()?;
    let reversed = match (parse_reverse(name), parse_reverse6(name)) {
        (Some(ip), _) => Some(records.reverse(ip)),
        (None, Some(ip)) => Some(records.reverse6(ip)),
        (None, None) => None,
    };
    if let Some(found) = reversed {
        let target = found.and_then(|n| encode_name(&n))?;
        return Some(if q.qtype == TYPE_PTR {
            vec![Rdata::Ptr(target)]
        } else {
            Vec::new()
        });
    }
    let addrs = records.lookup(name)?;
    Some(match q.qtype {
        TYPE_A => addrs.into_iter().map(Rdata::A).collect(),
        TYPE_AAAA => records
            .lookup6(name)
            .unwrap_or_default()
            .into_iter()
            .map(Rdata::Aaaa)
            .collect(),
        _ => Vec::new(),
    })
}

fn header(id: u16, flags: u16, qdcount: u16, ancount: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(UDP_MAX);
    for field in [id, flags, qdcount, ancount, 0, 0] {
        out.extend_from_slice(&field.to_be_bytes());
    }
    out
}

/// A reply without a question (FORMERR, NOTIMP): the question could not be trusted.
fn error_reply(id: u16, query_flags: u16, rcode: u16) -> Vec<u8> {
    header(id, QR | RA | (query_flags & (OPCODE | RD)) | rcode, 0, 0)
}

/// A reply echoing the question; answers that do not fit in `max_len` are left out with TC.
fn reply(q: &Query, rcode: u16, aa: bool, answers: &[Rdata], max_len: usize) -> Vec<u8> {
    let mut flags = QR | RA | (q.flags & RD) | rcode;
    if aa {
        flags |= AA;
    }
    let mut out = header(q.id, flags, 1, 0);
    out.extend_from_slice(&q.question.wire);
    out.extend_from_slice(&q.question.qtype.to_be_bytes());
    out.extend_from_slice(&q.question.qclass.to_be_bytes());
    let question_end = out.len();
    let mut count: u16 = 0;
    for rdata in answers {
        let (rtype, data): (u16, &[u8]) = match rdata {
            Rdata::A(ip) => (TYPE_A, &ip.octets()[..]),
            Rdata::Aaaa(ip) => (TYPE_AAAA, &ip.octets()[..]),
            Rdata::Ptr(name) => (TYPE_PTR, name),
        };
        out.extend_from_slice(&[0xC0, HEADER_LEN as u8]); // pointer to the question name
        for field in [rtype, CLASS_IN] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        out.extend_from_slice(&LOCAL_TTL.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        count += 1;
        if out.len() > max_len {
            out.truncate(question_end);
            flags |= TC;
            count = 0;
            break;
        }
    }
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&count.to_be_bytes());
    out
}

/// Decides what to do with one packet; never panics, whatever the bytes.
fn handle(msg: &[u8], records: &dyn Records, can_forward: bool, max_len: usize) -> Action {
    let (Some(id), Some(flags)) = (be16(msg, 0), be16(msg, 2)) else {
        return Action::Drop;
    };
    if msg.len() < HEADER_LEN || flags & QR != 0 {
        return Action::Drop;
    }
    if flags & OPCODE != 0 {
        return Action::Reply(error_reply(id, flags, NOTIMP));
    }
    let Some(question) = parse_question(msg) else {
        return Action::Reply(error_reply(id, flags, FORMERR));
    };
    let query = Query {
        id,
        flags,
        question,
    };
    match local_answers(&query.question, records) {
        Some(answers) => Action::Reply(reply(&query, NOERROR, true, &answers, max_len)),
        None if can_forward => Action::Forward(query),
        None => Action::Reply(reply(&query, NXDOMAIN, false, &[], max_len)),
    }
}

struct Shared {
    records: Arc<dyn Records>,
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

/// A running server; dropping it (or calling `stop`) stops its tasks and closes the sockets.
#[derive(Debug)]
pub struct DnsServer {
    local_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (normally gateway:53) and serves until stopped.
    /// Must be called inside a tokio runtime. Errors if either bind fails. With port 0,
    /// both sockets get the same ephemeral port.
    pub async fn start(
        addr: SocketAddr,
        records: Arc<dyn Records>,
        upstreams: Vec<SocketAddr>,
    ) -> io::Result<DnsServer> {
        Self::start_with_timeout(addr, records, upstreams, UPSTREAM_TIMEOUT).await
    }

    /// [`DnsServer::start`] with `upstream_timeout` per upstream instead of
    /// [`UPSTREAM_TIMEOUT`].
    pub async fn start_with_timeout(
        addr: SocketAddr,
        records: Arc<dyn Records>,
        upstreams: Vec<SocketAddr>,
        upstream_timeout: Duration,
    ) -> io::Result<DnsServer> {
        let (udp, tcp) = bind_pair(addr).await?;
        let local_addr = udp.local_addr()?;
        let shared = Arc::new(Shared {
            records,
            upstreams,
            timeout: upstream_timeout,
        });
        let tasks = vec![
            tokio::spawn(serve_udp(Arc::new(udp), shared.clone())),
            tokio::spawn(serve_tcp(tcp, shared)),
        ];
        Ok(DnsServer { local_addr, tasks })
    }

    /// The UDP address served (TCP is on the same address).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for DnsServer {
    /// Aborting the two loops drops their `JoinSet`s, which aborts every query and
    /// connection task, so all sockets close.
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut attempt = 0;
    loop {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // The ephemeral UDP port may be taken for TCP: try another one.
            Err(e) if addr.port() == 0 && attempt + 1 < BIND_ATTEMPTS => {
                debug!(error = %e, "ephemeral port taken for TCP, retrying");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Decides and, if needed, forwards; None means send nothing (and close a TCP connection).
async fn respond(
    msg: &[u8],
    shared: &Shared,
    tcp: bool,
    client: std::net::IpAddr,
) -> Option<Vec<u8>> {
    let max_len = if tcp { TCP_MAX } else { UDP_MAX };
    let view = ClientView {
        records: shared.records.clone(),
        client,
    };
    match handle(msg, &view, !shared.upstreams.is_empty(), max_len) {
        Action::Drop => None,
        Action::Reply(out) => Some(out),
        Action::Forward(query) => match forward(msg, shared, tcp).await {
            Some(out) => Some(out),
            None => Some(reply(&query, SERVFAIL, false, &[], max_len)),
        },
    }
}

async fn serve_udp(sock: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65535];
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            received = sock.recv_from(&mut buf) => {
                let (n, peer) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        debug!(error = %e, "dns udp receive failed");
                        continue;
                    }
                };
                if tasks.len() >= MAX_UDP_INFLIGHT {
                    debug!(%peer, "too many dns queries in flight, dropping one");
                    continue;
                }
                let (msg, sock, shared) = (buf[..n].to_vec(), sock.clone(), shared.clone());
                tasks.spawn(async move {
                    if let Some(out) = respond(&msg, &shared, false, peer.ip()).await {
                        if let Err(e) = sock.send_to(&out, peer).await {
                            debug!(%peer, error = %e, "dns udp send failed");
                        }
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if conns.len() < MAX_TCP_CONNS => {
                    conns.spawn(serve_conn(stream, shared.clone(), peer));
                }
                Ok((_, peer)) => debug!(%peer, "too many dns tcp connections, closing one"),
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    debug!(error = %e, "dns tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One TCP client: length-prefixed queries, answered in order, until idle or an error.
async fn serve_conn(mut stream: TcpStream, shared: Arc<Shared>, peer: SocketAddr) {
    loop {
        let mut len = [0u8; 2];
        if !matches!(
            timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut len)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if !matches!(
            timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut msg)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Some(out) = respond(&msg, &shared, true, peer.ip()).await else {
            return;
        };
        let Ok(out_len) = u16::try_from(out.len()) else {
            return;
        };
        let mut frame = out_len.to_be_bytes().to_vec();
        frame.extend_from_slice(&out);
        if !matches!(
            timeout(TCP_IDLE_TIMEOUT, stream.write_all(&frame)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}

/// Relays the raw query to each upstream in order; the first matching reply wins.
async fn forward(msg: &[u8], shared: &Shared, tcp: bool) -> Option<Vec<u8>> {
    for &upstream in &shared.upstreams {
        let attempt = async {
            if tcp {
                forward_tcp(msg, upstream).await
            } else {
                forward_udp(msg, upstream).await
            }
        };
        match timeout(shared.timeout, attempt).await {
            Ok(Ok(out)) => return Some(out),
            Ok(Err(e)) => debug!(%upstream, error = %e, "dns upstream failed"),
            Err(_) => debug!(%upstream, "dns upstream timed out"),
        }
    }
    None
}

/// A reply to `query`: same ID, QR set.
fn is_reply_to(query: &[u8], out: &[u8]) -> bool {
    out.len() >= HEADER_LEN && out[..2] == query[..2] && out[2] & 0x80 != 0
}

/// Over a fresh connected socket, so only the upstream can answer; a truncated reply is
/// relayed as is and the client retries over TCP.
async fn forward_udp(msg: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let any = match upstream {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let sock = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    sock.connect(upstream).await?;
    sock.send(msg).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        if is_reply_to(msg, &buf[..n]) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(msg: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let len = u16::try_from(msg.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut stream = TcpStream::connect(upstream).await?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(msg);
    stream.write_all(&frame).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut out = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut out).await?;
    if !is_reply_to(msg, &out) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "reply does not match query",
        ));
    }
    Ok(out)
}

/// The upstream resolvers from a resolv.conf text: `nameserver` lines, port 53. Loopback
/// addresses are kept (the daemon runs on the host, it can reach them). Addresses with a
/// zone (`fe80::1%eth0`) are skipped; duplicates are dropped, order is kept.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line
            .split(['#', ';'])
            .next()
            .unwrap_or("")
            .split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
            let addr = SocketAddr::new(ip, 53);
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;

    const TYPE_MX: u16 = 15;

    /// Records from a map; remembers the names it was asked for.
    #[derive(Default)]
    struct Fake {
        names: HashMap<String, Vec<Ipv4Addr>>,
        names6: HashMap<String, Vec<Ipv6Addr>>,
        asked: Mutex<Vec<String>>,
    }

    impl Fake {
        fn with(entries: &[(&str, &[Ipv4Addr])]) -> Arc<Fake> {
            let names = entries
                .iter()
                .map(|(n, a)| (n.to_string(), a.to_vec()))
                .collect();
            Arc::new(Fake {
                names,
                names6: HashMap::new(),
                asked: Mutex::default(),
            })
        }
    }

    impl Records for Fake {
        fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
            self.asked.lock().unwrap().push(name.to_string());
            self.names.get(name).cloned()
        }
        fn reverse(&self, ip: Ipv4Addr) -> Option<String> {
            let mut hits: Vec<&String> = self
                .names
                .iter()
                .filter(|(_, a)| a.contains(&ip))
                .map(|(n, _)| n)
                .collect();
            hits.sort();
            hits.first().map(|n| n.to_string())
        }
        fn lookup6(&self, name: &str) -> Option<Vec<Ipv6Addr>> {
            self.lookup(name)?;
            Some(self.names6.get(name).cloned().unwrap_or_default())
        }
        fn reverse6(&self, ip: Ipv6Addr) -> Option<String> {
            let (n, _) = self.names6.iter().find(|(_, a)| a.contains(&ip))?;
            Some(n.to_string())
        }
    }

    const WEB: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const WEB2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

    fn records() -> Arc<Fake> {
        Fake::with(&[
            ("web", &[WEB, WEB2]),
            ("web.mynet", &[WEB, WEB2]),
            ("db.mynet", &[]),
        ])
    }

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut m = header(id, RD, 1, 0);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m
    }

    /// A decoded reply: id, flags, question name (wire), answers as (type, ttl, rdata).
    #[derive(Debug)]
    struct Decoded {
        id: u16,
        flags: u16,
        qname: Vec<u8>,
        answers: Vec<(u16, u32, Vec<u8>)>,
    }

    impl Decoded {
        fn rcode(&self) -> u16 {
            self.flags & 0xF
        }
        fn addrs(&self) -> Vec<Ipv4Addr> {
            let a = self.answers.iter().filter(|(t, _, _)| *t == TYPE_A);
            a.map(|(_, _, d)| Ipv4Addr::new(d[0], d[1], d[2], d[3]))
                .collect()
        }
    }

    fn decode(msg: &[u8]) -> Decoded {
        let (id, flags) = (be16(msg, 0).unwrap(), be16(msg, 2).unwrap());
        let (qdcount, ancount) = (be16(msg, 4).unwrap(), be16(msg, 6).unwrap());
        assert_eq!(be16(msg, 10), Some(0), "no additional records expected");
        let (mut qname, mut pos) = (Vec::new(), HEADER_LEN);
        if qdcount == 1 {
            let (wire, _, end) = read_name(msg, pos).unwrap();
            (qname, pos) = (wire, end + 4);
        }
        let mut answers = Vec::new();
        for _ in 0..ancount {
            let (_, _, end) = read_name(msg, pos).unwrap();
            let rtype = be16(msg, end).unwrap();
            let ttl = u32::from_be_bytes(msg[end + 4..end + 8].try_into().unwrap());
            let len = usize::from(be16(msg, end + 8).unwrap());
            answers.push((rtype, ttl, msg[end + 10..end + 10 + len].to_vec()));
            pos = end + 10 + len;
        }
        assert_eq!(pos, msg.len(), "trailing bytes in reply");
        Decoded {
            id,
            flags,
            qname,
            answers,
        }
    }

    /// A container on a dual-stack network: A and AAAA each give their family, and its
    /// IPv6 address resolves back (ip6.arpa); a name without IPv6 gets NODATA for AAAA.
    #[test]
    fn aaaa_and_ip6_reverse_answer_dual_stack_names() {
        let v6: Ipv6Addr = "fd00:19:1::2".parse().unwrap();
        let mut f = Fake::default();
        f.names.insert("dual".into(), vec![WEB]);
        f.names6.insert("dual".into(), vec![v6]);
        f.names.insert("only4".into(), vec![WEB2]);
        let d = answer(&query(1, "dual", TYPE_AAAA), &f, false);
        assert_eq!(d.rcode(), NOERROR);
        assert_eq!(d.answers.len(), 1);
        assert_eq!(
            (d.answers[0].0, d.answers[0].2.as_slice()),
            (TYPE_AAAA, &v6.octets()[..])
        );
        assert_eq!(
            answer(&query(2, "dual", TYPE_A), &f, false).addrs(),
            vec![WEB]
        );
        let d = answer(&query(3, "only4", TYPE_AAAA), &f, false);
        assert_eq!((d.rcode(), d.answers.len()), (NOERROR, 0), "NODATA");
        assert!(d.flags & AA != 0);
        let arpa: String = v6
            .octets()
            .iter()
            .rev()
            .flat_map(|b| [b & 0xF, b >> 4])
            .map(|n| format!("{n:x}."))
            .collect::<String>()
            + "ip6.arpa";
        assert_eq!(parse_reverse6(&arpa), Some(v6));
        let d = answer(&query(4, &arpa, TYPE_PTR), &f, false);
        assert_eq!(d.answers.len(), 1);
        assert_eq!(d.answers[0].2, encode_name("dual").unwrap());
        assert_eq!(parse_reverse6("1.2.ip6.arpa"), None);
        assert_eq!(parse_reverse6(&arpa.replacen('2', "22", 1)), None);
    }

    fn answer(msg: &[u8], recs: &Fake, can_forward: bool) -> Decoded {
        match handle(msg, recs, can_forward, UDP_MAX) {
            Action::Reply(out) => decode(&out),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn a_query_for_a_local_name_gets_exact_bytes() {
        let recs = records();
        let Action::Reply(out) = handle(&query(0xBEEF, "web", TYPE_A), &*recs, true, UDP_MAX)
        else {
            panic!("no reply");
        };
        let mut want = vec![0xBE, 0xEF, 0x85, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        want.extend_from_slice(&[3, b'w', b'e', b'b', 0, 0, 1, 0, 1]);
        for last in [2, 3] {
            want.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0x02, 0x58, 0, 4, 10, 0, 0, last]);
        }
        assert_eq!(out, want);
    }

    #[test]
    fn names_match_case_insensitively_and_the_question_keeps_its_case() {
        let recs = records();
        let d = answer(&query(7, "WeB.MyNet.", TYPE_A), &recs, false);
        assert_eq!((d.id, d.rcode()), (7, NOERROR));
        assert_eq!(d.addrs(), vec![WEB, WEB2]);
        assert_eq!(d.qname, b"\x03WeB\x05MyNet\x00");
        assert_eq!(d.answers[0].1, 600);
        assert_eq!(recs.asked.lock().unwrap().as_slice(), ["web.mynet"]);
    }

    #[test]
    fn other_types_for_local_names_are_nodata() {
        let recs = records();
        for (name, qtype) in [
            ("web", TYPE_AAAA),
            ("web", TYPE_MX),
            ("web", 255),
            ("db.mynet", TYPE_A),
        ] {
            let d = answer(&query(1, name, qtype), &recs, true);
            assert_eq!(d.rcode(), NOERROR, "{name} {qtype}");
            assert!(d.answers.is_empty());
            assert_ne!(d.flags & AA, 0);
        }
    }

    #[test]
    fn unknown_names_are_nxdomain_without_upstreams_and_forwarded_with() {
        let recs = records();
        let d = answer(&query(9, "example.org", TYPE_A), &recs, false);
        assert_eq!((d.id, d.rcode(), d.flags & AA), (9, NXDOMAIN, 0));
        assert_eq!(d.qname, b"\x07example\x03org\x00");
        match handle(&query(9, "example.org", TYPE_A), &*recs, true, UDP_MAX) {
            Action::Forward(q) => assert_eq!(q.question.name.as_deref(), Some("example.org")),
            other => panic!("expected forward, got {other:?}"),
        }
        // Odd bytes in a label: never local, still a valid query.
        let d = answer(&query(9, "we*b", TYPE_A), &recs, false);
        assert_eq!(d.rcode(), NXDOMAIN);
    }

    #[test]
    fn ptr_queries_answer_from_reverse() {
        let recs = records();
        let d = answer(&query(3, "3.0.0.10.in-addr.arpa", TYPE_PTR), &recs, false);
        assert_eq!(d.rcode(), NOERROR);
        assert_eq!(d.answers, vec![(TYPE_PTR, 600, b"\x03web\x00".to_vec())]);
        let d = answer(&query(3, "9.0.0.10.in-addr.arpa", TYPE_PTR), &recs, false);
        assert_eq!(d.rcode(), NXDOMAIN);
        assert_eq!(parse_reverse("1.2.3.4.5.in-addr.arpa"), None);
        assert_eq!(
            parse_reverse("4.3.2.1.in-addr.arpa"),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(
            encode_name("web.mynet."),
            Some(b"\x03web\x05mynet\x00".to_vec())
        );
        assert_eq!(encode_name("a..b"), None);
    }

    #[test]
    fn edns_opt_is_ignored_and_not_echoed() {
        let mut q = query(5, "web", TYPE_A);
        q[11] = 1; // ARCOUNT
        q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        let d = answer(&q, &records(), false);
        assert_eq!(d.addrs(), vec![WEB, WEB2]);
    }

    #[test]
    fn udp_answers_that_do_not_fit_set_tc() {
        let many: Vec<Ipv4Addr> = (1..=40).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
        let recs = Fake::with(&[("many", &many)]);
        let q = query(1, "many", TYPE_A);
        let d = answer(&q, &recs, false);
        assert_ne!(d.flags & TC, 0);
        assert!(d.answers.is_empty());
        let Action::Reply(out) = handle(&q, &*recs, false, TCP_MAX) else {
            panic!()
        };
        let d = decode(&out);
        assert_eq!((d.flags & TC, d.addrs()), (0, many));
    }

    fn rcode_of(msg: &[u8]) -> Option<u16> {
        match handle(msg, &*records(), true, UDP_MAX) {
            Action::Reply(out) => {
                assert_eq!(out[..2], msg[..2], "id echoed");
                Some(be16(&out, 2).unwrap() & 0xF)
            }
            Action::Drop => None,
            Action::Forward(q) => panic!("forwarded {q:?}"),
        }
    }

    #[test]
    fn hostile_packets_get_formerr_or_nothing() {
        let hdr = header(0x1234, RD, 1, 0);
        let with = |body: &[u8]| [&hdr[..], body].concat();
        assert_eq!(handle(&[], &*records(), true, UDP_MAX), Action::Drop);
        assert_eq!(handle(&hdr[..11], &*records(), true, UDP_MAX), Action::Drop);
        assert_eq!(rcode_of(&hdr), Some(FORMERR)); // QDCOUNT 1, no question
        assert_eq!(rcode_of(&with(&[0xC0, 12, 0, 1, 0, 1])), Some(FORMERR)); // self loop
        assert_eq!(
            rcode_of(&with(&[1, b'a', 0xC0, 12, 0, 1, 0, 1])),
            Some(FORMERR)
        ); // loop
        assert_eq!(
            rcode_of(&with(&[0xC0, 20, 0, 1, 0, 1, 1, b'a', 0])),
            Some(FORMERR)
        ); // forward
        assert_eq!(rcode_of(&with(&[0xC0, 2, 0, 1, 0, 1])), Some(FORMERR)); // into header
        assert_eq!(rcode_of(&with(&[0x40, b'a', 0, 0, 1, 0, 1])), Some(FORMERR)); // label 64
        assert_eq!(rcode_of(&with(&[63, b'a', b'b'])), Some(FORMERR)); // truncated label
        assert_eq!(
            rcode_of(&with(&[3, b'w', b'e', b'b', 0, 0, 1])),
            Some(FORMERR)
        ); // no class
        let long = [&[63][..], &[b'a'; 63]].concat().repeat(5);
        assert_eq!(
            rcode_of(&with(&[&long[..], &[0, 0, 1, 0, 1]].concat())),
            Some(FORMERR)
        );
        // Exactly 255 bytes is still a name.
        let max = [
            [&[63][..], &[b'a'; 63]].concat().repeat(3),
            [&[61][..], &[b'b'; 61]].concat(),
        ];
        let max = [&max.concat()[..], &[0]].concat();
        assert_eq!(max.len(), 255);
        let q = with(&[&max[..], &[0, 1, 0, 1]].concat());
        assert!(matches!(
            handle(&q, &*records(), true, UDP_MAX),
            Action::Forward(_)
        ));
        for qdcount in [0u8, 2] {
            let mut q = query(1, "web", TYPE_A);
            q[5] = qdcount;
            assert_eq!(rcode_of(&q), Some(FORMERR));
        }
        let mut notify = query(1, "web", TYPE_A);
        notify[2] |= 4 << 3;
        assert_eq!(rcode_of(&notify), Some(NOTIMP));
        let mut response = query(1, "web", TYPE_A);
        response[2] |= 0x80;
        assert_eq!(rcode_of(&response), None);
    }

    #[test]
    fn mutated_queries_never_panic() {
        let base = query(0x4242, "web.mynet", TYPE_A);
        let recs = records();
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50_000 {
            let mut msg = base.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % msg.len();
                msg[at] = next() as u8;
            }
            msg.truncate(1 + (next() as usize) % (msg.len() + 8));
            if let Action::Reply(out) = handle(&msg, &*recs, next() % 2 == 0, UDP_MAX) {
                assert!(out.len() <= UDP_MAX);
                assert_eq!(out[..2], msg[..2]);
            }
        }
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch example.com\nnameserver 127.0.0.53\n\
                    nameserver 1.1.1.1 # cloudflare\n  nameserver\t2001:db8::1\n\
                    nameserver fe80::1%eth0\nnameserver 1.1.1.1\n;nameserver 9.9.9.9\nnameserverx 8.8.8.8\n";
        let want: Vec<SocketAddr> = ["127.0.0.53:53", "1.1.1.1:53", "[2001:db8::1]:53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(upstreams_from_resolv_conf(text), want);
        assert!(upstreams_from_resolv_conf("").is_empty());
    }

    // ---- real sockets ----

    async fn start(recs: Arc<Fake>, upstreams: Vec<SocketAddr>, wait: Duration) -> DnsServer {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        DnsServer::start_with_timeout(addr, recs, upstreams, wait)
            .await
            .unwrap()
    }

    async fn udp_raw(server: SocketAddr, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(msg, server).await.unwrap();
        let mut buf = vec![0u8; 65535];
        let n = timeout(wait, sock.recv(&mut buf)).await.ok()?.unwrap();
        Some(buf[..n].to_vec())
    }

    async fn udp_ask(server: SocketAddr, msg: &[u8]) -> Option<Decoded> {
        Some(decode(&udp_raw(server, msg, Duration::from_secs(5)).await?))
    }

    async fn tcp_ask(stream: &mut TcpStream, msg: &[u8]) -> Decoded {
        let mut frame = (msg.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(msg);
        stream.write_all(&frame).await.unwrap();
        let mut len = [0u8; 2];
        timeout(Duration::from_secs(5), stream.read_exact(&mut len))
            .await
            .unwrap()
            .unwrap();
        let mut out = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut out).await.unwrap();
        decode(&out)
    }

    #[tokio::test]
    async fn serves_local_names_over_udp_and_tcp() {
        let server = start(records(), Vec::new(), UPSTREAM_TIMEOUT).await;
        let addr = server.local_addr();
        let d = udp_ask(addr, &query(11, "web", TYPE_A)).await.unwrap();
        assert_eq!((d.id, d.rcode(), d.addrs()), (11, NOERROR, vec![WEB, WEB2]));
        let d = udp_ask(addr, &query(12, "web", TYPE_AAAA)).await.unwrap();
        assert_eq!((d.rcode(), d.answers.len()), (NOERROR, 0));
        let d = udp_ask(addr, &query(13, "nope", TYPE_A)).await.unwrap();
        assert_eq!(d.rcode(), NXDOMAIN);
        // Hostile packets over the wire: no header, no reply; a pointer loop, FORMERR.
        assert_eq!(
            udp_raw(addr, &[1, 2, 3], Duration::from_millis(300)).await,
            None
        );
        let looped = [&header(14, 0, 1, 0)[..], &[0xC0, 12, 0, 1, 0, 1]].concat();
        let d = udp_ask(addr, &looped).await.unwrap();
        assert_eq!((d.id, d.rcode(), d.flags & QR), (14, FORMERR, QR));

        let mut stream = TcpStream::connect(addr).await.unwrap();
        let d = tcp_ask(&mut stream, &query(21, "WEB.mynet", TYPE_A)).await;
        assert_eq!((d.id, d.addrs()), (21, vec![WEB, WEB2]));
        let d = tcp_ask(&mut stream, &query(22, "2.0.0.10.in-addr.arpa", TYPE_PTR)).await;
        assert_eq!(d.answers, vec![(TYPE_PTR, 600, b"\x03web\x00".to_vec())]);
        let d = tcp_ask(&mut stream, &query(23, "nope", TYPE_A)).await;
        assert_eq!((d.id, d.rcode()), (23, NXDOMAIN));
    }

    #[tokio::test]
    async fn servfail_when_no_upstream_answers() {
        // One upstream that never reads, one where nothing listens.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let closed = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let upstreams = vec![silent.local_addr().unwrap(), closed];
        let server = start(records(), upstreams, Duration::from_millis(200)).await;
        let started = Instant::now();
        let d = udp_ask(server.local_addr(), &query(31, "example.org", TYPE_A))
            .await
            .unwrap();
        assert_eq!((d.id, d.rcode(), d.qname.len()), (31, SERVFAIL, 13));
        assert!(started.elapsed() >= Duration::from_millis(200));
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        let d = tcp_ask(&mut stream, &query(32, "example.org", TYPE_A)).await;
        assert_eq!((d.id, d.rcode()), (32, SERVFAIL));
    }

    #[tokio::test]
    async fn a_slow_upstream_does_not_block_local_answers() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstreams = vec![silent.local_addr().unwrap()];
        let server = start(records(), upstreams, Duration::from_secs(1)).await;
        let addr = server.local_addr();
        let slow = tokio::spawn(async move { udp_ask(addr, &query(41, "example.org", 1)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let d = udp_ask(addr, &query(42, "web", TYPE_A)).await.unwrap();
        assert_eq!(d.addrs(), vec![WEB, WEB2]);
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(slow.await.unwrap().unwrap().rcode(), SERVFAIL);
    }

    #[tokio::test]
    async fn forwards_unknown_names_over_udp_and_tcp() {
        let ext = Ipv4Addr::new(192, 0, 2, 7);
        let many: Vec<Ipv4Addr> = (1..=40).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
        let upstream_recs = Fake::with(&[("example.org", &[ext]), ("many.example", &many)]);
        let upstream = start(upstream_recs, Vec::new(), UPSTREAM_TIMEOUT).await;
        let local = records();
        let server = start(local.clone(), vec![upstream.local_addr()], UPSTREAM_TIMEOUT).await;
        let addr = server.local_addr();

        let d = udp_ask(addr, &query(51, "Example.ORG", TYPE_A))
            .await
            .unwrap();
        // The upstream's own reply, relayed: its AA bit and the client's casing.
        assert_eq!((d.id, d.rcode(), d.addrs()), (51, NOERROR, vec![ext]));
        assert_ne!(d.flags & AA, 0);
        assert_eq!(d.qname, b"\x07Example\x03ORG\x00");
        let d = udp_ask(addr, &query(52, "nothing.example", TYPE_A))
            .await
            .unwrap();
        assert_eq!((d.id, d.rcode()), (52, NXDOMAIN));
        let d = udp_ask(addr, &query(53, "web", TYPE_A)).await.unwrap();
        assert_eq!(d.addrs(), vec![WEB, WEB2]);
        // Too big for UDP upstream: TC relayed; over TCP the whole answer comes through.
        let d = udp_ask(addr, &query(54, "many.example", TYPE_A))
            .await
            .unwrap();
        assert_eq!((d.flags & TC, d.answers.len()), (TC, 0));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let d = tcp_ask(&mut stream, &query(55, "many.example", TYPE_A)).await;
        assert_eq!((d.id, d.flags & TC, d.addrs()), (55, 0, many));
        let d = tcp_ask(&mut stream, &query(56, "example.org", TYPE_A)).await;
        assert_eq!(d.addrs(), vec![ext]);
        assert!(local
            .asked
            .lock()
            .unwrap()
            .contains(&"example.org".to_string()));
    }

    #[tokio::test]
    async fn forwarded_replies_with_another_id_are_ignored() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let fake = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, peer) = upstream.recv_from(&mut buf).await.unwrap();
            let mut out = buf[..n].to_vec();
            out[2] |= 0x80;
            out[3] = NXDOMAIN as u8;
            let mut spoofed = out.clone();
            spoofed[1] ^= 1;
            spoofed[3] = 5; // REFUSED
            upstream.send_to(&spoofed, peer).await.unwrap();
            upstream.send_to(&out, peer).await.unwrap();
        });
        let server = start(records(), vec![upstream_addr], UPSTREAM_TIMEOUT).await;
        let d = udp_ask(server.local_addr(), &query(61, "example.org", TYPE_A)).await;
        let d = d.unwrap();
        assert_eq!((d.id, d.rcode()), (61, NXDOMAIN));
        fake.await.unwrap();
    }

    #[tokio::test]
    async fn stop_closes_both_sockets() {
        let server = start(records(), Vec::new(), UPSTREAM_TIMEOUT).await;
        let addr = server.local_addr();
        assert!(UdpSocket::bind(addr).await.is_err());
        server.stop();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let udp = UdpSocket::bind(addr).await;
            let tcp = TcpListener::bind(addr).await;
            if udp.is_ok() && tcp.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "sockets still bound after stop");
        }
    }
}
