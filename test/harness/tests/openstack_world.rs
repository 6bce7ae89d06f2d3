//! The OpenStack test world: real Keystone and Glance from PyPI on loopback
//! (`vmm_testkit::openstack`), shared by the tests of this binary. Each test
//! makes its own domain, project and user.

use anyhow::Result;
use reqwest::StatusCode;
use vmm_testkit::openstack::{Auth, OpenStack, ProjectUser};

/// A user with `member` on a project of a domain of its own.
async fn member(test: &str) -> Result<ProjectUser> {
    OpenStack::shared()
        .await
        .keystone
        .create_project_user(
            &format!("{test}-domain"),
            &format!("{test}-project"),
            &format!("{test}-user"),
            "member",
        )
        .await
}

#[tokio::test]
async fn a_password_token_for_the_project_lists_glance_in_the_catalog() -> Result<()> {
    let os = OpenStack::shared().await;
    let user = member("catalog").await?;
    let response = os.keystone.token_response(&user.password_auth()).await?;
    assert_eq!(response.status(), StatusCode::CREATED);

    let token = os.keystone.authenticate(&user.password_auth()).await?;
    assert_eq!(token.project_id.as_deref(), Some(user.project_id.as_str()));
    assert!(
        token.roles.iter().any(|r| r == "member"),
        "{:?}",
        token.roles
    );
    let url = os.glance.url();
    assert_eq!(
        token.endpoint("image", "public", "RegionOne"),
        Some(url.as_str())
    );
    assert_eq!(
        token.endpoint("image", "internal", "RegionOne"),
        Some(url.as_str())
    );
    let identity = format!("{}/", os.keystone.url());
    assert_eq!(
        token.endpoint("identity", "public", "RegionOne"),
        Some(identity.as_str()),
        "bootstrap's placeholder URL was rewritten"
    );
    Ok(())
}

#[tokio::test]
async fn a_wrong_password_is_401() -> Result<()> {
    let os = OpenStack::shared().await;
    let user = member("wrong-password").await?;
    let Auth::Password {
        user_domain,
        user: name,
        project_domain,
        project,
        ..
    } = user.password_auth()
    else {
        unreachable!()
    };
    let wrong = Auth::Password {
        user_domain,
        user: name,
        password: "not-the-password".into(),
        project_domain,
        project,
    };
    let response = os.keystone.token_response(&wrong).await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn application_credentials_authenticate_until_they_expire_or_are_deleted() -> Result<()> {
    let os = OpenStack::shared().await;
    let keystone = &os.keystone;
    let user = member("appcred").await?;

    let credential = keystone
        .create_application_credential(&user, "importer")
        .await?;
    let token = keystone.authenticate(&credential.auth()).await?;
    assert_eq!(token.user_id, user.user_id);
    assert_eq!(token.project_id.as_deref(), Some(user.project_id.as_str()));
    assert!(token.endpoint("image", "public", "RegionOne").is_some());

    let expired = keystone
        .create_expired_application_credential(&user, "expired")
        .await?;
    assert!(expired.expires_at.is_some());
    let status = keystone.token_response(&expired.auth()).await?.status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    keystone
        .delete_application_credential(&user, &credential)
        .await?;
    let status = keystone.token_response(&credential.auth()).await?.status();
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "Keystone's answer to a deleted one"
    );
    Ok(())
}

#[tokio::test]
async fn an_image_uploaded_through_glance_downloads_byte_identical() -> Result<()> {
    use ring::rand::SecureRandom;
    let os = OpenStack::shared().await;
    let user = member("image").await?;
    let token = os.keystone.authenticate(&user.password_auth()).await?;

    let mut data = vec![0u8; 5 * 1024 * 1024 + 17];
    ring::rand::SystemRandom::new().fill(&mut data).unwrap();
    let want = vmm_testkit::vcsim::sha256_bytes(&data);
    let image = os
        .glance
        .create_image(&token, "disk-0", "raw", data.clone())
        .await?;
    assert_eq!(image.status, "active");
    assert_eq!(image.size, Some(data.len() as u64));
    assert_eq!(image.owner.as_deref(), Some(user.project_id.as_str()));

    let listed = os.glance.images(&token).await?;
    assert!(
        listed
            .iter()
            .any(|i| i.id == image.id && i.name.as_deref() == Some("disk-0")),
        "{listed:?}"
    );
    assert!(os.glance.image_bytes(&token, &image.id).await? == data);
    assert_eq!(os.glance.image_sha256(&token, &image.id).await?, want);
    Ok(())
}

#[tokio::test]
async fn a_registered_service_is_in_the_catalog_with_both_interfaces() -> Result<()> {
    let os = OpenStack::shared().await;
    let keystone = &os.keystone;
    let service = keystone
        .register_service(
            "compute",
            "nova",
            "RegionTwo",
            "http://127.0.0.1:1/compute/v2.1",
            "http://127.0.0.1:2/compute/v2.1",
        )
        .await?;
    let user = member("service").await?;
    let token = keystone.authenticate(&user.password_auth()).await?;
    let compute = token
        .catalog
        .iter()
        .find(|s| s.id == service.id)
        .expect("the service is in the catalog");
    assert_eq!(
        (compute.service_type.as_str(), compute.name.as_str()),
        ("compute", "nova")
    );
    assert_eq!(
        token.endpoint("compute", "public", "RegionTwo"),
        Some("http://127.0.0.1:1/compute/v2.1")
    );
    assert_eq!(
        token.endpoint("compute", "internal", "RegionTwo"),
        Some("http://127.0.0.1:2/compute/v2.1")
    );
    // RegionOne's compute is the world's own stand-in, a service of its own.
    assert_eq!(
        token.endpoint("compute", "public", "RegionOne"),
        Some(os.cloud.compute_url().as_str())
    );
    Ok(())
}
