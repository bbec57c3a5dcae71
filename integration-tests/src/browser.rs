//! A real browser for console tests: Debian's headless `chromium` driven over WebDriver by
//! `chromedriver` (installed by `scripts/ensure-chromium.sh`), through fantoccini.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder};

use crate::net::free_local_addr;
use crate::poll::wait_until;
use crate::process::stop;

/// Where Debian puts the two.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver child and a session on headless Chromium; both end when it is dropped
/// (call [`Browser::close`] to end the session cleanly first).
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session.
    pub async fn start() -> anyhow::Result<Browser> {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(binary).exists() {
                bail!(
                    "{binary} is missing; run scripts/ensure-chromium.sh (Debian's chromium and chromium-driver)"
                );
            }
        }
        let addr = free_local_addr();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={}", addr.port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let url = format!("http://{addr}");
        let up = wait_until(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        if !up {
            stop(&mut driver, Duration::from_secs(2));
            bail!("chromedriver did not listen on {addr} within 20 s");
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", "--no-first-run", "--disable-extensions"],
            }),
        );
        // chromedriver listens on plain loopback HTTP: no TLS stack needed.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = match ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                stop(&mut driver, Duration::from_secs(2));
                bail!("opening a Chromium session through chromedriver: {e}");
            }
        };
        Ok(Browser { client, driver })
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        stop(&mut self.driver, Duration::from_secs(5));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
