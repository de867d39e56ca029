//! A headless Chromium driven over WebDriver (chromedriver + fantoccini).
//! Debian: `apt-get install chromium chromium-driver` (scripts/setup.sh
//! does it).

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

use super::wait_until;

/// chromedriver and one browser session; both end when dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `width`×`height` window.
    pub async fn start(width: u32, height: u32) -> Self {
        let port = super::free_ports().0;
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so the browsers it starts go with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("chromedriver does not start ({error}): run scripts/setup.sh, or apt-get install chromium chromium-driver")
            });
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        wait_until("chromedriver answers", Duration::from_secs(20), || async {
            let status = http.get(format!("{url}/status")).send().await.ok()?;
            status.status().is_success().then_some(())
        })
        .await;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", format!("--window-size={width},{height}"),
            ]}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a headless Chromium session starts");
        Self { client, driver }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn eval(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        self.client.execute(script, args).await.expect("script runs in the page")
    }

    /// Saves a PNG of the window under the test artifacts and returns its path.
    pub async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
        std::fs::create_dir_all(&dir).expect("artifact dir");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Ends the session, then chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(i32::try_from(self.driver.id()).expect("pid"));
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}
