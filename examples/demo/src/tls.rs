//! The demo's `--tls`: a self-signed certificate made at start, and the rustls server that offers HTTP/2 and HTTP/1.1 by ALPN.
//!
//! Browsers speak HTTP/2 only over TLS. Over HTTP/1.1 they open at most six
//! connections per origin, and each open `EventSource` holds one, so a
//! seventh stream on the same origin waits; over HTTP/2 every stream shares
//! one connection. The certificate is made fresh at every start for
//! `localhost`, `127.0.0.1` and `::1`: a browser warns about it (launch
//! Chromium with `--ignore-certificate-errors` in tests), and clients that
//! should trust it can be given [`DemoTls::certificate_pem`].

use std::sync::Arc;

use futures_rustls::TlsAcceptor;
use futures_rustls::rustls::crypto::CryptoProvider;
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use futures_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

/// The ALPN protocol id of HTTP/2.
pub const ALPN_HTTP2: &[u8] = b"h2";
/// The ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// What the server offers by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/2, and HTTP/1.1 for clients without it (`--tls`).
    Http2AndHttp1,
    /// HTTP/1.1 only (`--tls --http1-only`): the browser's six-connection limit, for comparison.
    Http1Only,
}

/// A self-signed certificate, its key, and the TLS acceptor that serves them.
#[derive(Clone)]
pub struct DemoTls {
    acceptor: TlsAcceptor,
    certificate: CertificateDer<'static>,
    certificate_pem: String,
}

impl DemoTls {
    /// Makes a certificate for `localhost`, `127.0.0.1` and `::1` and a server config offering `protocols`.
    ///
    /// # Errors
    ///
    /// The certificate or the config cannot be made (the message says which).
    pub fn self_signed(protocols: Protocols) -> Result<Self, String> {
        let names = ["localhost", "127.0.0.1", "::1"].map(str::to_owned).to_vec();
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|error| format!("cannot make a self-signed certificate: {error}"))?;
        let certificate = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .and_then(|builder| {
                builder.with_no_client_auth().with_single_cert(vec![certificate.clone()], key)
            })
            .map_err(|error| format!("cannot make the TLS config: {error}"))?;
        config.alpn_protocols = alpn(protocols);
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate,
            certificate_pem: certified.cert.pem(),
        })
    }

    /// Accepts TLS connections with this certificate.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The certificate, DER-encoded: a client's trust anchor.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// A client config that trusts this certificate alone and offers `protocols` by ALPN (tests and
    /// the bench connect with it).
    ///
    /// # Errors
    ///
    /// The certificate cannot be a trust anchor, or the config cannot be made.
    pub fn client_config(&self, protocols: Protocols) -> Result<Arc<ClientConfig>, String> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.certificate.clone())
            .map_err(|error| format!("cannot trust the certificate: {error}"))?;
        let mut config = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("cannot make the TLS client config: {error}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn(protocols);
        Ok(Arc::new(config))
    }

    /// The certificate, PEM-encoded (for `NODE_EXTRA_CA_CERTS`, `curl --cacert` and the like).
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }
}

/// The ALPN list for `protocols`, most preferred first.
fn alpn(protocols: Protocols) -> Vec<Vec<u8>> {
    match protocols {
        Protocols::Http2AndHttp1 => vec![ALPN_HTTP2.to_vec(), ALPN_HTTP1.to_vec()],
        Protocols::Http1Only => vec![ALPN_HTTP1.to_vec()],
    }
}

/// The cryptography under rustls: ring, which builds with a C compiler alone (no cmake, no assembler
/// toolchain).
fn crypto_provider() -> Arc<CryptoProvider> {
    // rustls deprecates ring for lacking post-quantum key exchange, which a demo on a
    // self-signed certificate can do without.
    #[expect(deprecated, reason = "ring has no post-quantum key exchange; the demo needs none")]
    Arc::new(rustls::crypto::ring::default_provider())
}
