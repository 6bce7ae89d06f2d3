//! What a vSphere source's user and its vCenter hand the client as text: the
//! endpoint URL, the device keys and disk URLs of an NFC export lease, datastore
//! paths and object names; and how a disk URL is shown in messages.

use crate::Error;

/// `https://host[:port][/sdk]` → (normalized URL, `host[:port]` for vim_rs).
pub fn parse_endpoint(endpoint: &str) -> Result<(String, String), Error> {
    let with_scheme = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("https://{endpoint}")
    };
    let url = url::Url::parse(&with_scheme).map_err(Error::EndpointUrl)?;
    if url.scheme() != "https" {
        return Err(Error::EndpointScheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::EndpointCredentials);
    }
    if !matches!(url.path(), "" | "/" | "/sdk" | "/sdk/") {
        return Err(Error::EndpointPath);
    }
    let host = url.host_str().ok_or(Error::EndpointHost)?;
    let server = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    Ok((format!("https://{server}/sdk"), server))
}

/// The disk an NFC lease device key names: `/vm-42/VirtualLsiLogicController0:1`
/// is unit 1 on bus 0 of the VM's `VirtualLsiLogicController`.
pub fn parse_device_key(key: &str) -> Option<(&str, i32, i32)> {
    let last = key.rsplit('/').next()?;
    let (controller, unit) = last.rsplit_once(':')?;
    let type_len = controller
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .len();
    let (controller_type, bus) = controller.split_at(type_len);
    if controller_type.is_empty() {
        return None;
    }
    Some((controller_type, bus.parse().ok()?, unit.parse().ok()?))
}

/// `[ds 1] dir/file.vmdk` → (`ds 1`, `dir/file.vmdk`).
pub fn split_datastore_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.trim().strip_prefix('[')?;
    let (datastore, file) = rest.split_once(']')?;
    Some((datastore, file.trim_start()))
}

/// vSphere stores `%`, `/` and `\` in names as `%25`, `%2f`, `%5c`; show them plain.
pub fn unescape_name(name: &str) -> String {
    if !name.contains('%') {
        return name.to_owned();
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let code = rest.get(pos + 1..pos + 3).map(str::to_ascii_lowercase);
        match code.as_deref() {
            Some("25") => out.push('%'),
            Some("2f") => out.push('/'),
            Some("5c") => out.push('\\'),
            _ => {
                out.push('%');
                rest = &rest[pos + 1..];
                continue;
            }
        }
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    out
}

/// ESXi hands out `https://*/nfc/...`: `*` means "the host you talk to".
/// Like govc, put the SDK endpoint's host and port there.
pub fn replace_star_host(url: &str, sdk_url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    if host != "*" {
        return url.to_owned();
    }
    let Some(sdk_authority) = sdk_url
        .split_once("://")
        .map(|(_, r)| r.split('/').next().unwrap_or(r))
    else {
        return url.to_owned();
    };
    format!("{scheme}://{sdk_authority}{path}")
}

/// A URL for messages and logs: lease URLs carry a ticket in the path, and
/// the query may carry one too, so keep only the host and the file name. The
/// URL is read as the HTTP client reads it: split as text, `https:/u:pw@h…://…`
/// kept its password, which the client would send (fuzzing found it).
pub fn redact_url(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return "<url>".into();
    };
    let Some(host) = parsed.host_str() else {
        return "<url>".into();
    };
    let scheme = parsed.scheme();
    let authority = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let path = parsed.path();
    let file = path.rsplit('/').next().unwrap_or("");
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if path.matches('/').count() <= 1 {
        format!("{scheme}://{authority}{path}")
    } else if first == "folder" {
        // Datastore paths are not secret and say which file.
        format!("{scheme}://{authority}{path}")
    } else {
        format!("{scheme}://{authority}/{first}/…/{file}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let ok = |s: &str| parse_endpoint(s).unwrap();
        assert_eq!(
            ok("https://127.0.0.1:8989/sdk"),
            ("https://127.0.0.1:8989/sdk".into(), "127.0.0.1:8989".into())
        );
        assert_eq!(
            ok("vc.example.com"),
            ("https://vc.example.com/sdk".into(), "vc.example.com".into())
        );
        assert_eq!(ok("https://[::1]:443/").1, "[::1]");
        assert_eq!(parse_endpoint("http://vc/sdk"), Err(Error::EndpointScheme));
        assert_eq!(
            parse_endpoint("https://u:p@vc/sdk"),
            Err(Error::EndpointCredentials)
        );
        assert_eq!(parse_endpoint("https://vc/api"), Err(Error::EndpointPath));
    }

    #[test]
    fn device_keys() {
        assert_eq!(
            parse_device_key("/vm-42/VirtualLsiLogicController0:1"),
            Some(("VirtualLsiLogicController", 0, 1))
        );
        assert_eq!(
            parse_device_key("/vm-7/VirtualIDEController1:0"),
            Some(("VirtualIDEController", 1, 0))
        );
        assert_eq!(parse_device_key("/vm-7/nvram"), None);
    }

    #[test]
    fn datastore_paths_and_names() {
        assert_eq!(
            split_datastore_path("[LocalDS 0] Web 01/Web 01-flat.vmdk"),
            Some(("LocalDS 0", "Web 01/Web 01-flat.vmdk"))
        );
        assert_eq!(split_datastore_path("no brackets"), None);
        assert_eq!(unescape_name("a%2fb%25c%5cd%zz"), "a/b%c\\d%zz");
    }

    #[test]
    fn star_hosts_become_the_endpoint() {
        let sdk = "https://vc.example.com:8443/sdk";
        assert_eq!(
            replace_star_host("https://*/nfc/52a1/disk-0.vmdk", sdk),
            "https://vc.example.com:8443/nfc/52a1/disk-0.vmdk"
        );
        assert_eq!(
            replace_star_host("https://*:443/nfc/x/disk-0.vmdk", sdk),
            "https://vc.example.com:8443/nfc/x/disk-0.vmdk"
        );
        let esx = "https://esx1.example.com/nfc/x/disk-0.vmdk";
        assert_eq!(replace_star_host(esx, sdk), esx);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://127.0.0.1:1/export/secret-ticket/disk-0.vmdk"),
            "https://127.0.0.1:1/export/…/disk-0.vmdk"
        );
        assert_eq!(
            redact_url("https://u:p@h/folder/vm/a-flat.vmdk?dcPath=DC0&dsName=x"),
            "https://h/folder/vm/a-flat.vmdk"
        );
        assert!(!redact_url("https://h/nfc/t/d.vmdk?ticket=s").contains("ticket"));
        // One slash after the scheme is still an authority, with its userinfo.
        let shown = redact_url("https:/u:secretpw@vc.example://x/nfc/t/d.vmdk");
        assert_eq!(shown, "https://vc.example/x/…/d.vmdk");
    }
}
