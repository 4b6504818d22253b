//! Where a call comes from, for the log-in throttle: the peer's address,
//! or, when the peer is a proxy the operator trusts (`--trusted-proxy`),
//! the address that proxy forwarded in `X-Forwarded-For`. Each proxy
//! appends the address it got the call from, so the client is the last
//! address that is not a trusted proxy; what a client writes into the
//! header itself sits further left and is never believed.

use std::net::IpAddr;

use ipnet::IpNet;
use tonic::Request;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// These networks' proxies.
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&address))
    }

    /// The client address of `request`; `None` when the transport has no
    /// peer address.
    pub fn client<T>(&self, request: &Request<T>) -> Option<IpAddr> {
        let mut client = request.remote_addr()?.ip().to_canonical();
        if !self.trusts(client) {
            return Some(client);
        }
        let headers = request.metadata().get_all("x-forwarded-for");
        let hops = headers
            .iter()
            .rev()
            .flat_map(|value| value.to_str().unwrap_or_default().rsplit(','));
        for hop in hops {
            // An address, or one with its port (`ip:port`, `[v6]:port`).
            let hop = hop.trim();
            let address = hop
                .parse::<IpAddr>()
                .or_else(|_| hop.parse::<std::net::SocketAddr>().map(|a| a.ip()));
            match address {
                Ok(address) => client = address.to_canonical(),
                // Not written by a proxy we trust: the last trusted hop is
                // as far as we know.
                Err(_) => break,
            }
            if !self.trusts(client) {
                break;
            }
        }
        Some(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, forwarded: &[&str]) -> Request<()> {
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(std::net::SocketAddr::new(peer.parse().unwrap(), 443)),
            });
        for value in forwarded {
            request
                .metadata_mut()
                .append("x-forwarded-for", value.parse().unwrap());
        }
        request
    }

    fn trusted(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(networks.iter().map(|n| n.parse().unwrap()).collect())
    }

    #[test]
    fn the_client_is_the_last_forwarded_address_that_is_not_a_trusted_proxy() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let at = |peer: &str, forwarded: &[&str]| {
            proxies
                .client(&request(peer, forwarded))
                .unwrap()
                .to_string()
        };
        // A client's own header is believed by nobody.
        assert_eq!(at("198.51.100.9", &["203.0.113.5"]), "198.51.100.9");
        // Through a trusted proxy: what it appended.
        assert_eq!(at("10.0.0.2", &["203.0.113.5"]), "203.0.113.5");
        // A client that forges a left part is still itself.
        assert_eq!(at("10.0.0.2", &["1.2.3.4, 203.0.113.5"]), "203.0.113.5");
        // Through two trusted proxies, in one header or two.
        assert_eq!(at("10.0.0.2", &["203.0.113.5, 10.0.0.3"]), "203.0.113.5");
        assert_eq!(at("10.0.0.2", &["203.0.113.5", "10.0.0.3"]), "203.0.113.5");
        // With ports, as some proxies write them.
        assert_eq!(at("10.0.0.2", &["203.0.113.5:4711"]), "203.0.113.5");
        assert_eq!(at("10.0.0.2", &["[2001:db8::7]:4711"]), "2001:db8::7");
        // IPv6 and IPv4-mapped addresses.
        assert_eq!(at("10.0.0.2", &["2001:db8::7"]), "2001:db8::7");
        assert_eq!(at("::ffff:10.0.0.2", &["203.0.113.5"]), "203.0.113.5");
        // Garbage from the proxy's side: the proxy is as far as we know.
        assert_eq!(at("10.0.0.2", &["not an address"]), "10.0.0.2");
        // No header: the proxy.
        assert_eq!(at("10.0.0.2", &[]), "10.0.0.2");
        // No proxies configured: the peer, whatever the header says.
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(&request("10.0.0.2", &["203.0.113.5"])),
            Some("10.0.0.2".parse().unwrap())
        );
    }
}
