//! TLS: `stomp+ssl` listeners, the HTTPS admin API, mutual TLS, the
//! client's verification of the broker's certificate, and reloading the
//! certificate on SIGHUP. Every test makes its own CA with `rcgen`; no key
//! is kept in the repository.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use halyard_client::{Client, ClientError, SendMessage, SubscribeOptions};
use halyard_testkit::free_port;
use halyard_testkit::metrics::metric;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{BrokerProcess, run_cli};

/// A throwaway certificate authority.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Ca {
            cert: p.self_signed(&key).unwrap(),
            key,
        }
    }

    /// A certificate it signs: for a server (`names` its SANs) or a client.
    /// Returns (certificate PEM, key PEM, certificate DER).
    fn issue(&self, cn: &str, names: &[&str], client: bool) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        // Most general first, as a certificate lists them (rcgen starts
        // with a CN of its own).
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::OrganizationName, "Acme");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.cert.pem()).unwrap();
        path
    }
}

/// Files a TLS broker reads: `server.pem`, `server.key`, `ca.pem`.
pub(crate) struct Pki {
    ca: Ca,
    dir: tempfile::TempDir,
    server_der: Vec<u8>,
}

impl Pki {
    /// A CA and a server certificate for `names`.
    pub(crate) fn new(names: &[&str]) -> Pki {
        let ca = Ca::new("halyard test CA");
        let dir = tempfile::tempdir().unwrap();
        ca.write(dir.path(), "ca.pem");
        let mut pki = Pki {
            ca,
            dir,
            server_der: Vec::new(),
        };
        pki.server_cert("broker-1", names);
        pki
    }

    /// Issues a new server certificate into `server.pem` / `server.key`.
    fn server_cert(&mut self, cn: &str, names: &[&str]) {
        let (cert, key, der) = self.ca.issue(cn, names, false);
        std::fs::write(self.path("server.pem"), cert).unwrap();
        std::fs::write(self.path("server.key"), key).unwrap();
        self.server_der = der;
    }

    /// Issues a client certificate; returns its (cert, key) paths.
    fn client_cert(&self, cn: &str) -> (PathBuf, PathBuf) {
        let (cert, key, _) = self.ca.issue(cn, &[], true);
        let (c, k) = (
            self.path(&format!("{cn}.pem")),
            self.path(&format!("{cn}.key")),
        );
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn ca_file(&self) -> String {
        self.path("ca.pem").display().to_string()
    }

    /// Top-level settings and the `[tls]` section, plus a `stomp+ssl`
    /// listener at `port` (the plain one comes from `--stomp`).
    fn toml(&self, port: u16, http_tls: bool, client_auth: &str) -> String {
        format!(
            "http-tls = {http_tls}\n\
             [tls]\ncert-file = \"{}\"\nkey-file = \"{}\"\nclient-ca-file = \"{}\"\nclient-auth = \"{client_auth}\"\n\
             [[listeners]]\nprotocol = \"stomp\"\naddress = \"127.0.0.1:0\"\n\
             [[listeners]]\nprotocol = \"stomp+ssl\"\naddress = \"127.0.0.1:{port}\"\n",
            self.path("server.pem").display(),
            self.path("server.key").display(),
            self.ca_file(),
        )
    }
}

/// A raw TLS connection that trusts only `ca` and checks the name `name`;
/// returns the broker's certificate (DER) and the stream.
async fn raw_tls_as(
    addr: SocketAddr,
    ca: &str,
    name: &str,
) -> std::io::Result<(Vec<u8>, tokio_rustls::client::TlsStream<TcpStream>)> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    let s = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await?;
    let der = s.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok((der, s))
}

/// [`raw_tls_as`] `127.0.0.1`.
pub(crate) async fn raw_tls(
    addr: SocketAddr,
    ca: &str,
) -> std::io::Result<(Vec<u8>, tokio_rustls::client::TlsStream<TcpStream>)> {
    raw_tls_as(addr, ca, "127.0.0.1").await
}

/// `GET path` over HTTPS (HTTP/1.0: the answer ends with the connection).
async fn https_get(addr: SocketAddr, ca: &str, path: &str) -> String {
    let (_, mut s) = raw_tls_as(addr, ca, "localhost").await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn round_trip(url: &str, queue: &str) -> Result<(), ClientError> {
    let c = Client::connect(url).await?;
    let mut sub = c.subscribe(queue, SubscribeOptions::default()).await?;
    c.send(SendMessage::new(queue, "over tls").persistent(true))
        .await?;
    let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("no message within 10 s")
        .expect("subscription ended");
    assert_eq!(m.text(), Some("over tls"));
    c.disconnect().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_and_admin_over_tls_with_the_client_and_the_cli() {
    // The certificate names `localhost` only: connecting to 127.0.0.1 is a
    // host-name mismatch.
    let pki = Pki::new(&["localhost"]);
    let port = free_port();
    let b = BrokerProcess::start(&pki.toml(port, true, "none")).await;
    let ca = pki.ca_file();

    round_trip(
        &format!("ssl://localhost:{port}?trustCa={ca}"),
        "/queue/tls",
    )
    .await
    .unwrap();
    round_trip(
        &format!(
            "failover:(stomp+ssl://localhost:{port})?nested.trustCa={ca}&maxReconnectAttempts=0"
        ),
        "/queue/tls2",
    )
    .await
    .unwrap();

    // Not trusted: the system roots do not know our CA.
    let e = Client::connect(&format!("ssl://localhost:{port}"))
        .await
        .err()
        .expect("an untrusted certificate was accepted")
        .to_string();
    assert!(
        e.contains("TLS: certificate not trusted (unknown issuer) for host localhost"),
        "{e}"
    );
    // The name does not match, unless told not to check it.
    let e = Client::connect(&format!("ssl://127.0.0.1:{port}?trustCa={ca}"))
        .await
        .err()
        .expect("a certificate for another host was accepted")
        .to_string();
    assert!(e.contains("not valid for host name 127.0.0.1"), "{e}");
    round_trip(
        &format!("ssl://127.0.0.1:{port}?trustCa={ca}&verifyHostName=false"),
        "/queue/tls3",
    )
    .await
    .unwrap();
    // A failover list skips a broker whose certificate it refuses.
    round_trip(
        &format!(
            "failover:(ssl://127.0.0.1:{port}?trustCa={ca},ssl://localhost:{port}?trustCa={ca})?randomize=false&maxReconnectAttempts=0&startupMaxReconnectAttempts=1"
        ),
        "/queue/tls4",
    )
    .await
    .unwrap();

    // The command line takes the same URLs.
    let url = format!("ssl://localhost:{port}?trustCa={ca}");
    let (code, _, err) = run_cli(&["send", "--url", &url, "-d", "/queue/cli-tls", "hi"], None);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_cli(
        &[
            "receive",
            "--url",
            &url,
            "-d",
            "/queue/cli-tls",
            "-n",
            "1",
            "--timeout",
            "5",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hi\n");

    // The admin API is HTTPS only.
    let health = https_get(b.http, &ca, "/healthz").await;
    assert!(
        health.starts_with("HTTP/1.0 200") && health.ends_with("ok\n"),
        "{health}"
    );
    // Refused during the handshake: a broken connection or no answer.
    if let Ok((code, body)) = halyard_testkit::http::try_http_get(b.http, "/healthz").await {
        assert_ne!(code, 200, "plain HTTP answered: {body}");
    }
    let metrics = https_get(b.http, &ca, "/metrics").await;
    let failures = metric(&metrics, "halyard_tls_handshake_failures_total").unwrap();
    // The untrusted and wrong-name attempts, and plain HTTP.
    assert!(failures >= 3, "{failures}\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_and_passes_on_its_subject() {
    let pki = Pki::new(&["localhost"]);
    let (cert, key) = pki.client_cert("app1");
    let port = free_port();
    let b = BrokerProcess::start(&pki.toml(port, false, "need")).await;
    let ca = pki.ca_file();

    let e = Client::connect(&format!("ssl://localhost:{port}?trustCa={ca}"))
        .await
        .err()
        .expect("a client without a certificate was served");
    assert!(
        matches!(e, ClientError::Tls { .. }),
        "not reported as a TLS failure: {e}"
    );
    assert!(e.to_string().contains("client certificate"), "{e}");

    // A certificate from another CA is refused too.
    let other = Ca::new("another CA");
    let (ocert, okey, _) = other.issue("intruder", &[], true);
    std::fs::write(pki.path("intruder.pem"), ocert).unwrap();
    std::fs::write(pki.path("intruder.key"), okey).unwrap();
    assert!(
        Client::connect(&format!(
            "ssl://localhost:{port}?trustCa={ca}&clientCert={}&clientKey={}",
            pki.path("intruder.pem").display(),
            pki.path("intruder.key").display()
        ))
        .await
        .is_err()
    );

    round_trip(
        &format!(
            "ssl://localhost:{port}?trustCa={ca}&clientCert={}&clientKey={}",
            cert.display(),
            key.display()
        ),
        "/queue/mtls",
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !b.logs().contains("CN=app1,O=Acme") {
        assert!(
            std::time::Instant::now() < deadline,
            "no subject in the log:\n{}",
            b.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, text) = b.http_get("/metrics").await;
    let failures = metric(&text, "halyard_tls_handshake_failures_total").unwrap();
    assert!(failures >= 2, "{failures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let mut pki = Pki::new(&["127.0.0.1"]);
    let port = free_port();
    let b = BrokerProcess::start(&pki.toml(port, false, "none")).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ca = pki.ca_file();
    let first = pki.server_der.clone();
    assert_eq!(raw_tls(addr, &ca).await.unwrap().0, first);

    let url = format!("ssl://127.0.0.1:{port}?trustCa={ca}");
    let c = Client::connect(&url).await.unwrap();
    let mut sub = c
        .subscribe("/queue/reload", SubscribeOptions::default())
        .await
        .unwrap();

    pki.server_cert("broker-2", &["127.0.0.1"]);
    let second = pki.server_der.clone();
    assert_ne!(first, second);
    halyard_testkit::process::signal(b.pid(), halyard_testkit::process::Signal::HUP).unwrap();
    halyard_testkit::eventually(
        Duration::from_secs(10),
        "new connections see the new certificate",
        || async { (raw_tls(addr, &ca).await.ok()?.0 == second).then_some(()) },
    )
    .await;

    // The connection made before the reload still works.
    c.send(SendMessage::new("/queue/reload", "still here"))
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.text(), Some("still here"));

    // A reload that fails keeps the certificate in use.
    std::fs::write(pki.path("server.key"), "not a key").unwrap();
    halyard_testkit::process::signal(b.pid(), halyard_testkit::process::Signal::HUP).unwrap();
    halyard_testkit::eventually(
        Duration::from_secs(10),
        "the failed reload logged",
        || async {
            b.logs()
                .contains("TLS certificate reload failed")
                .then_some(())
        },
    )
    .await;
    assert!(b.logs().contains("server.key"), "the bad file is not named");
    assert_eq!(raw_tls(addr, &ca).await.unwrap().0, second);
    round_trip(&url, "/queue/after").await.unwrap();
    c.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_a_certificate_or_with_a_bad_file_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("halyard.toml");
    let run = |toml: String| {
        std::fs::write(&conf, toml).unwrap();
        run_cli(
            &[
                "broker",
                "--config",
                conf.to_str().unwrap(),
                "--data-dir",
                dir.path().join("data").to_str().unwrap(),
                "--http",
                "127.0.0.1:0",
                "--stomp",
                "127.0.0.1:0",
                "--ws",
                "127.0.0.1:0",
                "--openwire",
                "127.0.0.1:0",
            ],
            None,
        )
    };
    let (code, _, err) =
        run("[[listeners]]\nprotocol = \"stomp+ssl\"\naddress = \"127.0.0.1:0\"\n".into());
    assert_ne!(code, 0);
    assert!(err.contains("tls.cert-file"), "{err}");
    let (code, _, err) = run("http-tls = true\n".into());
    assert_ne!(code, 0);
    assert!(
        err.contains("http-tls") && err.contains("cert-file"),
        "{err}"
    );
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "hello").unwrap();
    let (code, _, err) = run(format!(
        "http-tls = true\n[tls]\ncert-file = \"{0}\"\nkey-file = \"{0}\"\n",
        bad.display()
    ));
    assert_ne!(code, 0);
    assert!(
        err.contains("tls.cert-file") && err.contains("bad.pem") && err.contains("CERTIFICATE"),
        "{err}"
    );
    let (code, _, err) = run(format!(
        "http-tls = true\n[tls]\ncert-file = \"{0}\"\nkey-file = \"{0}\"\n",
        dir.path().join("missing.pem").display()
    ));
    assert_ne!(code, 0);
    assert!(err.contains("missing.pem"), "{err}");
}

/// The users and rights of [`failover_over_tls_with_a_login_across_a_kill_9_takeover`]
/// and [`a_client_certificate_logs_in_as_its_user`]: `pat` by password,
/// `app1` by certificate, both in `apps`, which may use `tls.>`.
fn users_toml(pat_hash: &str) -> String {
    format!(
        "[[security.users]]\nname = \"pat\"\npassword = \"{pat_hash}\"\ngroups = [\"apps\", \"monitors\"]\n\
         [[security.users]]\nname = \"app1\"\ngroups = [\"apps\"]\ncertificate-subject = \"CN=app1,O=Acme\"\n\
         [[security.users]]\nname = \"mallory\"\ngroups = []\ncertificate-subject = \"CN=mallory,O=Acme\"\n\
         [[security.authorization]]\nqueue = \"tls.>\"\nread = [\"apps\"]\nwrite = [\"apps\"]\nadmin = [\"apps\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_in_as_its_user() {
    let pki = Pki::new(&["localhost"]);
    let port = free_port();
    let hash = halyard_broker::password::hash("pat-pw").unwrap();
    let b = BrokerProcess::start(&format!(
        "{}{}",
        pki.toml(port, false, "want"),
        users_toml(&hash)
    ))
    .await;
    let ca = pki.ca_file();
    let with_cert = |cn: &str| {
        let (cert, key) = pki.client_cert(cn);
        format!(
            "ssl://localhost:{port}?trustCa={ca}&clientCert={}&clientKey={}",
            cert.display(),
            key.display()
        )
    };
    // app1's certificate is app1: it may use tls.> without a passcode.
    round_trip(&with_cert("app1"), "/queue/tls.cert")
        .await
        .unwrap();
    // mallory's certificate is mallory, who has no rights there.
    let e = round_trip(&with_cert("mallory"), "/queue/tls.cert")
        .await
        .expect_err("mallory was let in to tls.>");
    assert!(e.to_string().contains("not authorized"), "{e}");
    // A certificate no user claims is nobody, and nobody is refused.
    let e = round_trip(&with_cert("stranger"), "/queue/tls.cert")
        .await
        .expect_err("a stranger's certificate was let in");
    assert!(e.to_string().contains("login required"), "{e}");
    // Without a certificate, the password still works (client-auth = want).
    round_trip(
        &format!("ssl://pat:pat-pw@localhost:{port}?trustCa={ca}"),
        "/queue/tls.cert",
    )
    .await
    .unwrap();
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_over_tls_with_a_login_across_a_kill_9_takeover() {
    use crate::support::cluster::{Cluster, ROLE_WAIT};
    use std::collections::{BTreeSet, VecDeque};
    const N: usize = 600;
    const Q: &str = "/queue/tls.orders";
    let pki = Pki::new(&["localhost"]);
    let hash = halyard_broker::password::hash("pat-pw").unwrap();
    let mut c = Cluster::new("");
    let ports = [free_port(), free_port()];
    for (name, port) in ["a", "b"].into_iter().zip(ports) {
        let i = c.reserve(name);
        let config = c.dir.path().join(format!("{name}.toml"));
        let toml = format!("{}{}", pki.toml(port, false, "none"), users_toml(&hash));
        std::fs::write(&config, toml).unwrap();
        c.nodes[i].config = config;
        // The admin API wants a login once there are users.
        c.nodes[i].admin_auth = Some(("pat".to_owned(), "pat-pw".to_owned()));
    }
    c.nodes[0].spawn();
    c.nodes[0].wait_role("master", ROLE_WAIT).await;
    c.nodes[1].spawn();
    c.nodes[1].wait_role("slave", ROLE_WAIT).await;

    let ca = pki.ca_file();
    let url = format!(
        "failover:(ssl://localhost:{},ssl://localhost:{})?randomize=false&initialReconnectDelay=10\
         &maxReconnectDelay=200&nested.trustCa={ca}&nested.login=pat&nested.passcode=pat-pw",
        ports[0], ports[1]
    );
    let client = Client::connect(&url).await.unwrap();
    let text = |i: usize| format!("tls-{i:04}");
    let mut inflight = VecDeque::new();
    let mut confirmed = 0;
    let mut killed = false;
    for i in 0..N {
        let r = client
            .send_nowait(SendMessage::new(Q, text(i)).persistent(true))
            .await
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
        inflight.push_back((i, r));
        if inflight.len() >= 50 {
            let (j, r) = inflight.pop_front().unwrap();
            tokio::time::timeout(ROLE_WAIT, r)
                .await
                .unwrap_or_else(|_| panic!("no receipt for {j}"))
                .unwrap_or_else(|e| panic!("message {j}: {e}\n{}", c.logs()));
            confirmed += 1;
        }
        if !killed && confirmed >= N / 3 {
            c.nodes[0].kill();
            killed = true;
        }
    }
    for (j, r) in inflight {
        tokio::time::timeout(ROLE_WAIT, r)
            .await
            .unwrap_or_else(|_| panic!("no receipt for {j}"))
            .unwrap_or_else(|e| panic!("message {j}: {e}\n{}", c.logs()));
    }
    client.disconnect().await.unwrap();
    c.nodes[1].wait_role("master", ROLE_WAIT).await;

    // The new master knows the same users: a wrong passcode is refused,
    // the right one reads every message exactly once.
    let new = format!("ssl://localhost:{}?trustCa={ca}", ports[1]);
    let e = Client::connect(&format!(
        "ssl://pat:wrong@localhost:{}?trustCa={ca}",
        ports[1]
    ))
    .await
    .err()
    .expect("a wrong passcode was accepted by the new master");
    assert!(e.to_string().contains("login failed"), "{e}");
    let consumer = Client::connect(&format!("{new}&login=pat&passcode=pat-pw"))
        .await
        .unwrap();
    let mut sub = consumer
        .subscribe(Q, SubscribeOptions::default().prefetch(1000))
        .await
        .unwrap();
    let mut got = BTreeSet::new();
    for k in 0..N {
        let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {k} of {N} messages delivered\n{}", c.logs()))
            .unwrap();
        let t = m.text().unwrap().to_owned();
        assert!(got.insert(t.clone()), "{t} delivered twice");
    }
    assert_eq!(got, (0..N).map(text).collect::<BTreeSet<_>>());
    consumer.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_over_https_asks_for_credentials() {
    use base64::Engine;
    let pki = Pki::new(&["localhost"]);
    let hash = halyard_broker::password::hash("watch-pw").unwrap();
    let b = BrokerProcess::start(&format!(
        "{}[[security.users]]\nname = \"watcher\"\npassword = \"{hash}\"\ngroups = [\"monitors\"]\n",
        pki.toml(free_port(), true, "none")
    ))
    .await;
    let ca = pki.ca_file();
    let get = |auth: Option<&str>| {
        let ca = ca.clone();
        let auth = auth.map(|a| base64::engine::general_purpose::STANDARD.encode(a));
        async move {
            let (_, mut s) = raw_tls_as(b.http, &ca, "localhost").await.unwrap();
            let header = auth.map_or(String::new(), |a| format!("Authorization: Basic {a}\r\n"));
            s.write_all(format!("GET /api/status HTTP/1.0\r\nHost: x\r\n{header}\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let open = get(None).await;
    assert!(
        open.starts_with("HTTP/1.0 401") || open.starts_with("HTTP/1.1 401"),
        "{open}"
    );
    let wrong = get(Some("watcher:nope")).await;
    assert!(wrong.contains(" 401 "), "{wrong}");
    let ok = get(Some("watcher:watch-pw")).await;
    assert!(ok.contains(" 200 ") && ok.contains("\"role\""), "{ok}");
    assert!(https_get(b.http, &ca, "/healthz").await.contains(" 200 "));
}

/// The operator's CLI reaches an HTTPS admin API (`https://` addresses,
/// `--ca`), and says what to do when the certificate is not trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_to_an_https_admin_api() {
    let pki = Pki::new(&["localhost"]);
    let hash = halyard_broker::password::hash("watch-pw").unwrap();
    let b = BrokerProcess::start(&format!(
        "{}[[security.users]]\nname = \"watcher\"\npassword = \"{hash}\"\ngroups = [\"monitors\"]\n",
        pki.toml(free_port(), true, "none")
    ))
    .await;
    let ca = pki.ca_file();
    let url = format!("https://localhost:{}", b.http.port());
    let login = ["--user", "watcher", "--password", "watch-pw"];
    let mut args = vec!["status", "--http", url.as_str(), "--ca", ca.as_str()];
    args.extend(login);
    let (code, out, err) = run_cli(&args, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("master, epoch 1"), "{out}");
    let mut args = vec![
        "dstat",
        "--json",
        "--http",
        url.as_str(),
        "--ca",
        ca.as_str(),
    ];
    args.extend(login);
    let (code, out, err) = run_cli(&args, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().starts_with('['), "{out}");
    // Without the CA: the handshake fails, and the message says why.
    let mut args = vec!["status", "--http", url.as_str()];
    args.extend(login);
    let (code, _, err) = run_cli(&args, None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("TLS handshake failed") && err.contains("--ca"),
        "{err}"
    );
}
