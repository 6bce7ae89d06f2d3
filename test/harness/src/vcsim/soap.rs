//! A minimal vSphere SOAP client for tests that act on vcsim as a second
//! client would (log in, power operations, ExportVm and its lease, property
//! reads) without linking the full vSphere bindings. Requests are
//! hand-written envelopes; responses go through a small XML reader
//! ([`XmlElement`]). A SOAP fault comes back as an [`anyhow::Error`] holding a
//! [`SoapFault`] (`err.downcast_ref::<SoapFault>()`).

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::Vcsim;

/// A SOAP fault: the vSphere fault type (e.g. `InvalidPowerState`) and
/// the fault string.
#[derive(Debug, Clone, PartialEq)]
pub struct SoapFault {
    pub fault_type: String,
    pub message: String,
    /// The fault's detail element (e.g. `requestedState`, `existingState`).
    pub detail: Option<XmlElement>,
}

impl fmt::Display for SoapFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SOAP fault {}: {}", self.fault_type, self.message)
    }
}

impl std::error::Error for SoapFault {}

/// One `HttpNfcLeaseDeviceUrl`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceUrl {
    pub key: String,
    pub import_key: String,
    pub url: String,
    pub ssl_thumbprint: String,
    pub disk: bool,
    pub target_id: String,
    pub file_size: u64,
}

/// `HttpNfcLease.info`.
#[derive(Debug, Clone, PartialEq)]
pub struct NfcLeaseInfo {
    pub entity: String,
    pub device_urls: Vec<DeviceUrl>,
    pub total_disk_capacity_kb: u64,
    pub lease_timeout_seconds: u64,
}

/// A logged-in session (cookie `vmware_soap_session`).
#[derive(Debug, Clone)]
pub struct SoapSession {
    client: reqwest::Client,
    url: String,
    cookie: Option<String>,
    property_collector: String,
    session_manager: String,
}

impl SoapSession {
    /// Logs in with the simulator's credentials.
    pub async fn login(vcsim: &Vcsim) -> Result<Self> {
        let mut session = SoapSession {
            client: vcsim.http_client()?,
            url: vcsim.url().to_string(),
            cookie: None,
            property_collector: String::new(),
            session_manager: String::new(),
        };
        let content = session
            .call(
                "<RetrieveServiceContent xmlns=\"urn:vim25\">\
                 <_this type=\"ServiceInstance\">ServiceInstance</_this>\
                 </RetrieveServiceContent>",
            )
            .await?;
        let text = |name: &str| -> Result<String> {
            Ok(content
                .find(name)
                .with_context(|| format!("service content has no {name}"))?
                .text()
                .to_string())
        };
        session.property_collector = text("propertyCollector")?;
        session.session_manager = text("sessionManager")?;
        session
            .call(&format!(
                "<Login xmlns=\"urn:vim25\"><_this type=\"SessionManager\">{}</_this>\
                 <userName>{}</userName><password>{}</password></Login>",
                esc(&session.session_manager),
                esc(vcsim.username()),
                esc(vcsim.password())
            ))
            .await
            .context("Login")?;
        if session.cookie.is_none() {
            bail!("Login set no session cookie");
        }
        Ok(session)
    }

    /// Sends one request (the element inside `soapenv:Body`) and returns
    /// the response element (e.g. `<ExportVmResponse>`).
    pub async fn call(&mut self, body: &str) -> Result<XmlElement> {
        let envelope = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
             xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">\
             <soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
        );
        let mut request = self
            .client
            .post(&self.url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", "urn:vim25/8.0.2.0")
            .body(envelope);
        if let Some(cookie) = &self.cookie {
            request = request.header("Cookie", cookie);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {}", self.url))?;
        for value in response.headers().get_all("set-cookie") {
            if let Ok(value) = value.to_str()
                && let Some(pair) = value.split(';').next()
                && pair.trim().starts_with("vmware_soap_session=")
            {
                self.cookie = Some(pair.trim().to_string());
            }
        }
        let status = response.status();
        let text = response.text().await.context("read SOAP response")?;
        let root = XmlElement::parse(&text)
            .with_context(|| format!("SOAP response ({status}) is not XML: {text:.500}"))?;
        let payload = root
            .find("Body")
            .and_then(|b| b.children.first())
            .ok_or_else(|| anyhow!("SOAP response ({status}) without a body: {text:.500}"))?;
        if payload.name == "Fault" {
            let detail = payload.find("detail").and_then(|d| d.children.first());
            let fault_type = detail
                .map(|d| {
                    d.attr("type")
                        .map(|t| t.rsplit(':').next().unwrap_or(t).to_string())
                        .unwrap_or_else(|| {
                            d.name.strip_suffix("Fault").unwrap_or(&d.name).to_string()
                        })
                })
                .unwrap_or_default();
            let message = payload
                .find("faultstring")
                .map(|f| f.text().to_string())
                .unwrap_or_default();
            return Err(SoapFault {
                fault_type,
                message,
                detail: detail.cloned(),
            }
            .into());
        }
        if !status.is_success() {
            bail!("SOAP HTTP {status}: {text:.500}");
        }
        Ok(payload.clone())
    }

    /// `Logout`.
    pub async fn logout(mut self) -> Result<()> {
        let body = format!(
            "<Logout xmlns=\"urn:vim25\"><_this type=\"SessionManager\">{}</_this></Logout>",
            esc(&self.session_manager)
        );
        self.call(&body).await.map(|_| ())
    }

    /// `TerminateSession` of every session but this one; how many.
    pub async fn terminate_other_sessions(&mut self) -> Result<usize> {
        let manager = self.session_manager.clone();
        let properties = self
            .properties(
                "SessionManager",
                &manager,
                &["sessionList", "currentSession"],
            )
            .await?;
        let key = |session: &XmlElement| session.find("key").map(|k| k.text().to_owned());
        let own = properties
            .iter()
            .find(|(name, _)| name == "currentSession")
            .and_then(|(_, session)| key(session))
            .context("SessionManager.currentSession has no key")?;
        let others: Vec<String> = properties
            .iter()
            .filter(|(name, _)| name == "sessionList")
            .flat_map(|(_, list)| list.children.iter().filter_map(key))
            .filter(|k| *k != own)
            .collect();
        if others.is_empty() {
            return Ok(0);
        }
        let ids: String = others
            .iter()
            .map(|id| format!("<sessionId>{}</sessionId>", esc(id)))
            .collect();
        self.call(&format!(
            "<TerminateSession xmlns=\"urn:vim25\"><_this type=\"SessionManager\">{}</_this>{ids}</TerminateSession>",
            esc(&manager)
        ))
        .await
        .context("TerminateSession")?;
        Ok(others.len())
    }

    /// `RetrieveProperties` of one object: `(path, value)` for each path
    /// that is set.
    pub async fn properties(
        &mut self,
        type_: &str,
        moref: &str,
        paths: &[&str],
    ) -> Result<Vec<(String, XmlElement)>> {
        let path_set: String = paths
            .iter()
            .map(|p| format!("<pathSet>{}</pathSet>", esc(p)))
            .collect();
        let body = format!(
            "<RetrieveProperties xmlns=\"urn:vim25\">\
             <_this type=\"PropertyCollector\">{pc}</_this><specSet>\
             <propSet><type>{t}</type>{path_set}</propSet>\
             <objectSet><obj type=\"{t}\">{m}</obj></objectSet>\
             </specSet></RetrieveProperties>",
            pc = esc(&self.property_collector),
            t = esc(type_),
            m = esc(moref),
        );
        let response = self
            .call(&body)
            .await
            .with_context(|| format!("RetrieveProperties {type_}:{moref} {paths:?}"))?;
        let mut out = Vec::new();
        for returnval in response.children_named("returnval") {
            for prop in returnval.children_named("propSet") {
                let name = prop
                    .find("name")
                    .map(|n| n.text().to_string())
                    .unwrap_or_default();
                if let Some(val) = prop.find("val") {
                    out.push((name, val.clone()));
                }
            }
        }
        Ok(out)
    }

    /// One property's value, `None` if unset.
    pub async fn property(
        &mut self,
        type_: &str,
        moref: &str,
        path: &str,
    ) -> Result<Option<XmlElement>> {
        Ok(self
            .properties(type_, moref, &[path])
            .await?
            .into_iter()
            .find(|(name, _)| name == path)
            .map(|(_, val)| val))
    }

    /// Waits for a task to end; its error becomes an error.
    pub async fn wait_task(&mut self, task: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let info = self
                .property("Task", task, "info")
                .await?
                .ok_or_else(|| anyhow!("task {task} has no info"))?;
            match info.find("state").map(|s| s.text()) {
                Some("success") => return Ok(()),
                Some("error") => {
                    let msg = info
                        .find("error")
                        .and_then(|e| e.find("localizedMessage"))
                        .map(|m| m.text().to_string())
                        .unwrap_or_default();
                    bail!("task {task} failed: {msg}");
                }
                _ if Instant::now() > deadline => {
                    bail!("task {task} still running after {timeout:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn vm_task(&mut self, method: &str, vm: &str) -> Result<()> {
        let body = format!(
            "<{method} xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{}</_this></{method}>",
            esc(vm)
        );
        let response = self
            .call(&body)
            .await
            .with_context(|| format!("{method} {vm}"))?;
        let task = response
            .find("returnval")
            .ok_or_else(|| anyhow!("{method} returned no task"))?
            .text()
            .to_string();
        self.wait_task(&task, Duration::from_secs(60)).await
    }

    /// `PowerOffVM_Task`, waited for.
    pub async fn power_off(&mut self, vm: &str) -> Result<()> {
        self.vm_task("PowerOffVM_Task", vm).await
    }

    /// `PowerOnVM_Task`, waited for.
    pub async fn power_on(&mut self, vm: &str) -> Result<()> {
        self.vm_task("PowerOnVM_Task", vm).await
    }

    /// `Destroy_Task`, waited for: the VM is gone.
    pub async fn destroy(&mut self, vm: &str) -> Result<()> {
        self.vm_task("Destroy_Task", vm).await
    }

    /// `ExportVm`: the lease's managed object id.
    pub async fn export_vm(&mut self, vm: &str) -> Result<String> {
        let body = format!(
            "<ExportVm xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{}</_this></ExportVm>",
            esc(vm)
        );
        let response = self.call(&body).await?;
        Ok(response
            .find("returnval")
            .ok_or_else(|| anyhow!("ExportVm returned no lease"))?
            .text()
            .to_string())
    }

    async fn lease_call(&mut self, method: &str, lease: &str, extra: &str) -> Result<XmlElement> {
        let body = format!(
            "<{method} xmlns=\"urn:vim25\"><_this type=\"HttpNfcLease\">{}</_this>{extra}</{method}>",
            esc(lease)
        );
        self.call(&body).await
    }

    /// `HttpNfcLeaseProgress` (keeps the lease alive).
    pub async fn lease_progress(&mut self, lease: &str, percent: u8) -> Result<()> {
        self.lease_call(
            "HttpNfcLeaseProgress",
            lease,
            &format!("<percent>{percent}</percent>"),
        )
        .await
        .map(|_| ())
    }

    /// `HttpNfcLeaseComplete`.
    pub async fn lease_complete(&mut self, lease: &str) -> Result<()> {
        self.lease_call("HttpNfcLeaseComplete", lease, "")
            .await
            .map(|_| ())
    }

    /// `HttpNfcLeaseAbort` without a fault.
    pub async fn lease_abort(&mut self, lease: &str) -> Result<()> {
        self.lease_call("HttpNfcLeaseAbort", lease, "")
            .await
            .map(|_| ())
    }

    /// `HttpNfcLeaseGetManifest`: `(key, sha1, size)` per disk.
    pub async fn lease_manifest(&mut self, lease: &str) -> Result<Vec<(String, String, u64)>> {
        let response = self
            .lease_call("HttpNfcLeaseGetManifest", lease, "")
            .await?;
        response
            .children_named("returnval")
            .map(|e| {
                let text = |n: &str| e.find(n).map(|x| x.text().to_string()).unwrap_or_default();
                Ok((
                    text("key"),
                    text("sha1"),
                    text("size").parse().context("manifest size")?,
                ))
            })
            .collect()
    }

    /// The lease's `state`: `initializing`, `ready`, `done` or `error`.
    pub async fn lease_state(&mut self, lease: &str) -> Result<String> {
        Ok(self
            .property("HttpNfcLease", lease, "state")
            .await?
            .ok_or_else(|| anyhow!("lease {lease} has no state"))?
            .text()
            .to_string())
    }

    /// The lease's `error` fault type and message, if any.
    pub async fn lease_error(&mut self, lease: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .property("HttpNfcLease", lease, "error")
            .await?
            .map(|e| {
                let fault_type = e
                    .find("fault")
                    .and_then(|f| f.attr("type"))
                    .map(|t| t.rsplit(':').next().unwrap_or(t).to_string())
                    .unwrap_or_default();
                let message = e
                    .find("localizedMessage")
                    .map(|m| m.text().to_string())
                    .unwrap_or_default();
                (fault_type, message)
            }))
    }

    /// The lease's `info` (set once it is ready).
    pub async fn lease_info(&mut self, lease: &str) -> Result<Option<NfcLeaseInfo>> {
        let Some(info) = self.property("HttpNfcLease", lease, "info").await? else {
            return Ok(None);
        };
        let text =
            |e: &XmlElement, n: &str| e.find(n).map(|x| x.text().to_string()).unwrap_or_default();
        let device_urls = info
            .children_named("deviceUrl")
            .map(|d| DeviceUrl {
                key: text(d, "key"),
                import_key: text(d, "importKey"),
                url: text(d, "url"),
                ssl_thumbprint: text(d, "sslThumbprint"),
                disk: text(d, "disk") == "true",
                target_id: text(d, "targetId"),
                file_size: text(d, "fileSize").parse().unwrap_or(0),
            })
            .collect();
        Ok(Some(NfcLeaseInfo {
            entity: text(&info, "entity"),
            device_urls,
            total_disk_capacity_kb: text(&info, "totalDiskCapacityInKB").parse().unwrap_or(0),
            lease_timeout_seconds: text(&info, "leaseTimeout").parse().unwrap_or(0),
        }))
    }

    /// Polls the lease until it leaves `initializing`; returns the state.
    pub async fn wait_lease(&mut self, lease: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.lease_state(lease).await?;
            if state != "initializing" {
                return Ok(state);
            }
            if Instant::now() > deadline {
                bail!("lease {lease} still initializing after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Escapes text for XML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// An XML element with namespace prefixes dropped from element and
/// attribute names (so `xsi:type` and vcsim's `_XMLSchema-instance:type`
/// are both `type`). Enough for SOAP responses; no DTDs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct XmlElement {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<XmlElement>,
    /// Character data directly inside this element (untrimmed).
    pub text: String,
}

impl XmlElement {
    /// Parses a document and returns its root element.
    pub fn parse(input: &str) -> Result<XmlElement> {
        let mut stack = vec![XmlElement::default()];
        let mut rest = input;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("<?") {
                rest = after.split_once("?>").context("unterminated <?")?.1;
            } else if let Some(after) = rest.strip_prefix("<!--") {
                rest = after.split_once("-->").context("unterminated comment")?.1;
            } else if let Some(after) = rest.strip_prefix("<![CDATA[") {
                let (data, r) = after.split_once("]]>").context("unterminated CDATA")?;
                stack.last_mut().expect("document").text.push_str(data);
                rest = r;
            } else if let Some(after) = rest.strip_prefix("</") {
                let (name, r) = after.split_once('>').context("unterminated end tag")?;
                let element = stack.pop().expect("document");
                if stack.is_empty() || element.name != local(name.trim()) {
                    bail!("unexpected </{}>", name.trim());
                }
                stack.last_mut().expect("parent").children.push(element);
                rest = r;
            } else if let Some(after) = rest.strip_prefix('<') {
                let end = tag_end(after).context("unterminated tag")?;
                let (tag, self_closing) = match after[..end].strip_suffix('/') {
                    Some(t) => (t, true),
                    None => (&after[..end], false),
                };
                rest = &after[end + 1..];
                let element = parse_tag(tag)?;
                if self_closing {
                    stack.last_mut().expect("parent").children.push(element);
                } else {
                    stack.push(element);
                }
            } else {
                let next = rest.find('<').unwrap_or(rest.len());
                let text = unescape(&rest[..next])?;
                stack.last_mut().expect("document").text.push_str(&text);
                rest = &rest[next..];
            }
        }
        if stack.len() != 1 {
            bail!(
                "unclosed <{}>",
                stack.last().map(|e| e.name.as_str()).unwrap_or("")
            );
        }
        stack
            .pop()
            .and_then(|doc| doc.children.into_iter().next())
            .context("no root element")
    }

    /// The text content, trimmed.
    pub fn text(&self) -> &str {
        self.text.trim()
    }

    /// An attribute by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Direct children with this local name.
    pub fn children_named<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a XmlElement> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The first descendant (depth first, self excluded) with this local name.
    pub fn find(&self, name: &str) -> Option<&XmlElement> {
        for child in &self.children {
            if child.name == name {
                return Some(child);
            }
            if let Some(found) = child.find(name) {
                return Some(found);
            }
        }
        None
    }
}

fn local(name: &str) -> String {
    name.rsplit(':').next().unwrap_or(name).to_string()
}

/// Index of the `>` that ends a tag, skipping quoted attribute values.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_tag(tag: &str) -> Result<XmlElement> {
    let tag = tag.trim();
    let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
    let mut element = XmlElement {
        name: local(&tag[..name_end]),
        ..XmlElement::default()
    };
    let mut rest = tag[name_end..].trim_start();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .with_context(|| format!("bad attribute in <{tag}>"))?;
        let after = after.trim_start();
        let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'');
        let quote = quote.with_context(|| format!("unquoted attribute in <{tag}>"))?;
        let (value, r) = after[1..]
            .split_once(quote)
            .with_context(|| format!("unterminated attribute in <{tag}>"))?;
        element.attrs.push((local(name.trim()), unescape(value)?));
        rest = r.trim_start();
    }
    Ok(element)
}

fn unescape(s: &str) -> Result<String> {
    if !s.contains('&') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let (entity, r) = rest[i + 1..]
            .split_once(';')
            .context("unterminated entity")?;
        match entity {
            "lt" => out.push('<'),
            "gt" => out.push('>'),
            "amp" => out.push('&'),
            "quot" => out.push('"'),
            "apos" => out.push('\''),
            e => {
                let code = if let Some(h) = e.strip_prefix("#x").or_else(|| e.strip_prefix("#X")) {
                    u32::from_str_radix(h, 16).ok()
                } else {
                    e.strip_prefix('#').and_then(|d| d.parse().ok())
                };
                out.push(
                    code.and_then(char::from_u32)
                        .with_context(|| format!("unknown entity &{e};"))?,
                );
            }
        }
        rest = r;
    }
    out.push_str(rest);
    Ok(out)
}
