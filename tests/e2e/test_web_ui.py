"""The CMK web UI in real headless Chromium against a real ``openkcm local up``.

One scenario in steps that build on each other (pytest runs them in file order on one page): sign in
through the local OIDC issuer (code flow + PKCE), see the dashboard, configure BYOK with an AWS KMS key in
the stack's moto (first failing the connection test on a missing permission, then passing it), activate,
rotate, assign the key to a second tenant, issue and revoke a certificate, read the audit log. Each main
screen is saved to test-artifacts/screenshots/. No step may log a console error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from playwright.sync_api import expect

from tests.e2e.conftest import ACCOUNT, ConsoleLog, LocalStackProcess, accessibility_violations, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROD, STAGING = "acme-prod", "acme-staging"
DENY_DESCRIBE = {"Version": "2012-10-17", "Statement": [
    {"Sid": "deny-describe", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:DescribeKey", "Resource": "*"},
]}
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [
    {"Sid": "allow", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"},
]}


def _kms(stack: LocalStackProcess) -> Any:
    return boto3.client("kms", endpoint_url=stack.aws_endpoint, region_name="us-east-1",
                        aws_access_key_id="openkcm-local", aws_secret_access_key="openkcm-local")


@pytest.fixture(scope="module")
def world(local_stack: LocalStackProcess) -> dict[str, str]:
    """Two tenants of one account (created through the API) and a KMS key whose policy denies DescribeKey."""
    for tenant_id, name in ((PROD, "Production"), (STAGING, "Staging")):
        local_stack.api("POST", f"/v1/accounts/{ACCOUNT}/tenants",
                        {"tenant_id": tenant_id, "name": name, "region": "us-east-1"})
    key = _kms(local_stack).create_key(Description="acme BYOK master key", Policy=json.dumps(DENY_DESCRIBE))
    return {"key_arn": key["KeyMetadata"]["Arn"], "key_id": key["KeyMetadata"]["KeyId"]}


def _tab(page: Any, name: str) -> None:
    page.get_by_role("navigation", name="Tenant sections").get_by_role("link", name=name).click()


def test_sign_in_with_oidc_code_flow_and_pkce(page: Any, local_stack: LocalStackProcess, world: dict[str, str]) -> None:
    page.goto(local_stack.base_url + "/")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    screenshot(page, "01-sign-in")
    page.get_by_role("button", name="Sign in").click()
    # the local issuer's login form (authorization endpoint), reached with an S256 challenge
    expect(page.get_by_role("heading", name="OpenKCM local sign-in")).to_be_visible()
    assert "code_challenge_method=S256" in page.url and "code_challenge=" in page.url
    page.get_by_role("textbox", name="User").fill("alice@acme.example")
    page.get_by_role("textbox", name="Account").fill(ACCOUNT)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("who")).to_contain_text("alice@acme.example")
    expect(page.get_by_test_id("who")).to_contain_text("account-admin")
    stored = page.evaluate("() => [window.localStorage.length, Object.keys(window.sessionStorage)]")
    assert stored[0] == 0, "nothing (least of all the token) goes to localStorage"
    assert "openkcm.pkce" not in stored[1], "the PKCE verifier is dropped once redeemed"


def test_dashboard_and_tenant_switcher(page: Any) -> None:
    switcher = page.locator("#tenant-switcher")
    expect(switcher.locator("option")).to_have_count(2)
    switcher.select_option(PROD)
    expect(page).to_have_url(f"{page.url.split('/tenants/')[0]}/tenants/{PROD}/dashboard")
    expect(page.get_by_test_id("tenant-status")).to_contain_text("Ready")
    expect(page.get_by_test_id("master-key-mode")).to_have_text("Platform-managed")
    expect(page.get_by_text("Enforced")).to_be_visible()
    expect(page.get_by_text("version 1 current")).to_be_visible()
    screenshot(page, "02-dashboard")


def test_byok_aws_kms_missing_permission_then_pass_then_activate(page: Any, local_stack: LocalStackProcess,
                                                                 world: dict[str, str]) -> None:
    _tab(page, "Master key")
    page.get_by_label("BYOK — AWS KMS").check()
    page.get_by_role("button", name="Next").click()
    arn = page.get_by_label("KMS key ARN")
    arn.fill("not-an-arn!")
    page.get_by_label("Region").focus()  # leaving the field validates it inline
    expect(page.get_by_text("Enter a KMS key ARN")).to_be_visible()
    expect(arn).to_have_attribute("aria-invalid", "true")
    arn.fill(world["key_arn"])
    page.get_by_label("Region").fill("us-east-1")
    page.get_by_label("Keystore name").fill("acme production KMS")
    page.get_by_text("Set up access in your AWS account (trust template)").click()
    page.get_by_role("button", name="Show trust template").click()
    template = page.get_by_test_id("trust-template")
    expect(template).to_contain_text("sts:AssumeRole")
    expect(template).to_contain_text("kms:DescribeKey")
    screenshot(page, "03a-master-key-connection")
    page.get_by_role("button", name="Next").click()

    page.get_by_role("button", name="Test connection").click()
    expect(page.get_by_text("Some checks failed")).to_be_visible()
    failed = page.get_by_test_id("check").filter(has_text="permission")
    expect(failed).to_contain_text("kms:DescribeKey")
    expect(failed.locator("code.perm")).to_have_text("kms:DescribeKey")
    expect(failed).to_contain_text("How to fix:")
    expect(page.get_by_role("button", name="Next")).to_have_count(0)
    screenshot(page, "03-master-key-test-failed")

    # the customer fixes the key policy on their side, then tests again
    _kms(local_stack).put_key_policy(KeyId=world["key_id"], PolicyName="default", Policy=json.dumps(ALLOW_ALL))
    page.get_by_role("button", name="Test again").click()
    expect(page.get_by_text("All checks passed.")).to_be_visible()
    expect(page.get_by_test_id("check").filter(has_text="round_trip")).to_contain_text("wrapped and unwrapped")
    screenshot(page, "04-master-key-test-passed")

    page.get_by_role("button", name="Next").click()
    page.get_by_role("button", name="Save & activate").click()
    result = page.get_by_test_id("activation-result")
    expect(result).to_contain_text("byok")
    expect(result).to_contain_text("Active")
    expect(page.get_by_role("list", name="Activation progress")).to_contain_text("re-wrapped")
    screenshot(page, "05-master-key-active")

    tenant = local_stack.api("GET", f"/v1/tenants/{PROD}")
    assert (tenant["key_mode"], tenant["l1_state"]) == ("byok", "Active")
    _tab(page, "Dashboard")
    expect(page.get_by_test_id("master-key-mode")).to_contain_text("BYOK")
    expect(page.get_by_test_id("master-key-state")).to_have_text("Active")


def test_rotate_now(page: Any, local_stack: LocalStackProcess) -> None:
    _tab(page, "Keys")
    versions = page.get_by_test_id("l2-version")
    expect(versions).to_have_count(1)
    page.get_by_role("button", name="Rotate now").click()
    expect(page.get_by_text("Rotated: version 2 is now current.")).to_be_visible()
    expect(versions).to_have_count(2)
    expect(versions.first).to_contain_text("2 (current)")
    assert local_stack.api("GET", f"/v1/tenants/{PROD}")["current_l2_version"] == 2


def test_assign_the_key_to_a_second_tenant(page: Any, local_stack: LocalStackProcess, world: dict[str, str]) -> None:
    page.get_by_label("Keystore", exact=True).select_option(label="acme production KMS (aws-kms)")
    page.get_by_label("Key reference").fill(world["key_arn"])
    page.locator("#assign-tenant").select_option(STAGING)
    page.get_by_role("button", name="Assign & activate").click()
    expect(page.get_by_role("list", name="Progress")).to_contain_text(STAGING)
    staging = local_stack.api("GET", f"/v1/tenants/{STAGING}")
    assert (staging["key_mode"], staging["l1_state"]) == ("byok", "Active")
    expect(page.get_by_test_id("l1-row").filter(has_text=STAGING)).to_contain_text("Active")
    screenshot(page, "06-keys")


ISSUED: dict[str, Any] = {}


def _csr(service: str) -> tuple[str, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)])
    ).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def test_issue_a_certificate(page: Any, local_stack: LocalStackProcess) -> None:
    _tab(page, "Services & certificates")
    csr, key_pem = _csr("mongodb-prod")
    page.get_by_label("Service id").fill("mongodb-prod")
    page.get_by_label("Certificate signing request (PEM)").fill(csr)
    page.get_by_role("button", name="Issue certificate").click()
    expect(page.get_by_text("issued for")).to_be_visible()
    expect(page.get_by_text("spiffe://", exact=False).first).to_be_visible()
    rows = page.get_by_test_id("certificate-row")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("active")
    expect(page.get_by_role("heading", name="Integration guide: MongoDB")).to_be_visible()
    expect(page.locator("pre").first).to_contain_text("kmsProviders: { kmip: { endpoint:")
    screenshot(page, "07-services")

    with page.expect_download() as cert_download:
        page.get_by_role("button", name="Download certificate").click()
    with page.expect_download() as ca_download:
        page.get_by_role("button", name="Download CA bundle").click()
    assert ca_download.value.suggested_filename == "openkcm-ca.pem"
    assert "BEGIN CERTIFICATE" in open(ca_download.value.path()).read()
    ISSUED.update(cert=open(cert_download.value.path()).read(), key=key_pem)
    assert "BEGIN CERTIFICATE" in ISSUED["cert"]


def test_kmip_client_shows_on_dashboard_and_keys(page: Any, local_stack: LocalStackProcess,
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """The issued certificate used by a real KMIP client (PyKMIP over mTLS): the dashboard then shows the
    service with its last-seen time and the day's key operations, and Keys lists the object it created."""
    kmip = local_stack.info["services"].get("kmip")
    if not kmip or not ISSUED:
        pytest.skip("the local stack runs no KMIP listener, or no certificate was issued")
    from kmip.core import enums
    from kmip.pie.client import ProxyKmipClient

    folder = tmp_path_factory.mktemp("kmip-client")
    (folder / "client.crt").write_text(ISSUED["cert"])
    (folder / "client.key").write_bytes(ISSUED["key"])
    host, port = kmip["endpoint"].rsplit(":", 1)
    client = ProxyKmipClient(hostname=host, port=int(port), cert=str(folder / "client.crt"),
                             key=str(folder / "client.key"), ca=kmip["ca_certificate"], config_file="/dev/null")
    with client:
        uid = client.create(enums.CryptographicAlgorithm.AES, 256, name="e2e-dek")
        client.get(uid)
    _tab(page, "Dashboard")
    services = page.get_by_role("region", name="Services connected")
    deadline = time.monotonic() + 60  # usage counters may be flushed in batches: refresh until they land
    while "mongodb-prod" not in services.inner_text() and time.monotonic() < deadline:
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Refresh").click()
        expect(page.get_by_test_id("master-key-state")).to_be_visible()
    expect(services).to_contain_text("mongodb-prod")
    expect(services).not_to_contain_text("never")
    expect(page.get_by_role("img", name="Key operations per day", exact=False)).to_be_visible()
    expect(page.get_by_text("Connected", exact=True)).to_be_visible()
    screenshot(page, "02b-dashboard-with-service")
    _tab(page, "Keys")
    expect(page.get_by_role("region", name="Managed objects")).to_contain_text("e2e-dek")


def test_revoke_the_certificate(page: Any, local_stack: LocalStackProcess) -> None:
    _tab(page, "Services & certificates")
    rows = page.get_by_test_id("certificate-row")
    rows.first.get_by_role("button", name="Revoke").click()
    page.get_by_role("button", name="Confirm revoke").click()
    expect(rows.first).to_contain_text("revoked")
    certs = local_stack.api("GET", f"/v1/tenants/{PROD}/certificates")["items"]
    assert [c["status"] for c in certs] == ["revoked"]


def test_audit_log(page: Any) -> None:
    _tab(page, "Audit log")
    rows = page.get_by_test_id("audit-row")
    expect(rows.first).to_be_visible()
    # the API's audit sink writes through a WAL and stores links within its flush interval: refresh until
    # the last action of the previous step is there (bounded)
    deadline = time.monotonic() + 30
    while "RevokeCertificate" not in page.get_by_role("table").inner_text() and time.monotonic() < deadline:
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Refresh").click()
        expect(rows.first).to_be_visible()
    expect(page.get_by_role("table")).to_contain_text("RotateL2")
    expect(page.get_by_role("table")).to_contain_text("IssueCertificate")
    expect(page.get_by_role("table")).to_contain_text("RevokeCertificate")
    texts = rows.all_inner_texts()  # newest first: the revocation came after the rotation
    assert min(i for i, t in enumerate(texts) if "RevokeCertificate" in t) < min(
        i for i, t in enumerate(texts) if "RotateL2" in t
    )
    screenshot(page, "08-audit")
    page.get_by_label("Kind").select_option("security")
    page.get_by_role("button", name="Apply filter").click()
    expect(page.get_by_role("table")).not_to_contain_text("RotateL2")
    for kind in rows.locator("td:nth-child(2)").all_inner_texts():
        assert kind == "security"
    with page.expect_download() as download:
        page.get_by_role("button", name="Export (JSON lines)").click()
    lines = open(download.value.path()).read().splitlines()
    assert lines and all(json.loads(line)["kind"] == "security" for line in lines)
    page.get_by_label("From").fill("2099-01-01T00:00")
    page.get_by_role("button", name="Apply filter").click()
    expect(page.get_by_text("No audit events match this filter.")).to_be_visible()
    page.get_by_label("From").fill("")
    page.get_by_label("Kind").select_option("")
    page.get_by_role("button", name="Apply filter").click()
    expect(rows.first).to_be_visible()


def test_provisioning_notification_banner(page: Any, local_stack: LocalStackProcess) -> None:
    """A marketplace tenant_created event (signed webhook) provisions a tenant; its Ready notification
    from the outbox shows as a banner, and the new tenant joins the switcher."""
    body = json.dumps({
        "event_id": f"evt-{uuid.uuid4().hex[:12]}", "event": "tenant_created", "customer": ACCOUNT,
        "service": "openkcm", "region": "us-east-1", "tenant": "acme-dev",
        "timestamp": datetime.now(UTC).isoformat(),
    }).encode()
    secret = (local_stack.data_dir / "secrets" / "webhook-secret").read_bytes().strip()
    stamp = int(time.time())
    signature = hmac.new(secret, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"{local_stack.base_url}/v1/marketplace/events", data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "X-OpenKCM-Signature": f"t={stamp},v1={signature}"})
    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 (loopback)
        assert reply.status in (200, 202)
    deadline = time.monotonic() + 90
    while True:
        notes = local_stack.api("GET", f"/v1/accounts/{ACCOUNT}/notifications")["items"]
        if any(n.get("tenant_id") == "acme-dev" for n in notes):
            break
        assert time.monotonic() < deadline, "provisioning wrote no notification within 90 s"
        time.sleep(1)
    page.reload()
    banner = page.get_by_test_id("notification").filter(has_text="acme-dev")
    if banner.count() == 0:  # the subject may name the customer rather than the tenant
        banner = page.get_by_test_id("notification").first
    expect(banner).to_be_visible()
    screenshot(page, "09-notification-banner")
    expect(page.locator("#tenant-switcher option")).to_have_count(3)
    text = banner.first.inner_text().split("Dismiss")[0].strip()
    banner.first.get_by_role("button", name="Dismiss").click()
    expect(page.get_by_test_id("notification").filter(has_text=text)).to_have_count(0)


def test_failed_activation_is_rolled_back(page: Any, local_stack: LocalStackProcess) -> None:
    """Assigning a disabled KMS key: the switch is rolled back and the UI says so, with the fix."""
    kms = _kms(local_stack)
    key = kms.create_key(Description="disabled key")["KeyMetadata"]
    kms.disable_key(KeyId=key["KeyId"])
    _tab(page, "Keys")
    page.get_by_label("Keystore", exact=True).select_option(label="acme production KMS (aws-kms)")
    page.get_by_label("Key reference").fill(key["Arn"])
    page.locator("#assign-tenant").select_option("acme-dev")
    page.get_by_role("button", name="Assign & activate").click()
    rolled = page.get_by_test_id("rolled-back")
    expect(rolled).to_contain_text("Rolled back for acme-dev")
    expect(rolled).to_contain_text("Disabled")
    expect(rolled).to_contain_text("How to fix")
    screenshot(page, "11-rollback")
    assert local_stack.api("GET", "/v1/tenants/acme-dev")["key_mode"] == "platform-managed"


def test_keyboard_only_navigation(page: Any) -> None:
    page.reload()  # the session survives a reload of the tab (sessionStorage), the focus starts at the top
    expect(page.get_by_test_id("who")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    # Tab on to the "Keys" section link (bounded), open it with Enter, and rotate with the keyboard
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement && document.activeElement.textContent") == "Keys":
            break
    else:
        raise AssertionError("the Keys link cannot be reached with Tab")
    page.keyboard.press("Enter")
    rotate = page.get_by_role("button", name="Rotate now")
    rotate.focus()
    expect(rotate).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_text("Rotated: version 3 is now current.")).to_be_visible()


def test_main_screens_have_no_serious_accessibility_violations(page: Any, local_stack: LocalStackProcess) -> None:
    found: dict[str, list[str]] = {}
    for tab in ("dashboard", "master-key", "keys", "services", "audit"):
        page.goto(f"{local_stack.base_url}/tenants/{PROD}/{tab}")
        expect(page.locator("main .card").first).to_be_visible()
        page.wait_for_load_state("networkidle")
        violations = accessibility_violations(page)
        if violations:
            found[tab] = violations
    assert not found, found


def test_no_console_errors(console: ConsoleLog) -> None:
    assert console.errors == []


def test_api_errors_are_shown(page: Any, console: ConsoleLog) -> None:
    """A CSR the API refuses (RSA 1024): the UI shows the API's own message. Runs after the console check:
    Chromium itself logs every 4xx answer as a console error, so only that network line is allowed here."""
    seen = len(console.errors)
    _tab(page, "Services & certificates")
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")])
    ).sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
    page.get_by_label("Service id").fill("legacy-app")
    page.get_by_label("Certificate signing request (PEM)").fill(weak)
    page.get_by_role("button", name="Issue certificate").click()
    alert = page.get_by_role("alert").filter(has_text="HTTP 400")
    expect(alert).to_contain_text("RSA (2048 bits or more)")
    screenshot(page, "10-api-error")
    extra = console.errors[seen:]
    assert all("status of 400" in line for line in extra), extra


def _sign_in(page: Any, base_url: str, *, mfa: bool) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("textbox", name="User").fill("alice@acme.example")
    page.get_by_role("textbox", name="Account").fill(ACCOUNT)
    if mfa:
        page.get_by_label("I signed in with a second factor (MFA)").check()
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("who")).to_contain_text("alice@acme.example")


def test_hyok_pkcs11_needs_mfa_then_activates(page: Any, local_stack: LocalStackProcess, console: ConsoleLog) -> None:
    """HYOK on a SoftHSM2 token: without MFA the UI warns and shows the API's 403; after signing in again
    with MFA the test passes and the tenant's master key is Active in the HSM."""
    hsm = local_stack.hsm
    if hsm is None:
        pytest.skip("SoftHSM2 is not installed (scripts/bootstrap.sh test installs softhsm2)")
    seen = len(console.errors)

    def fill_hsm() -> None:
        page.get_by_label("HYOK — PKCS#11 HSM").check()
        page.get_by_role("button", name="Next").click()
        page.get_by_label("PKCS#11 module").fill(hsm["module"])
        page.get_by_label("Token label").fill(hsm["token"])
        page.get_by_label("Key label").fill(hsm["key"])
        page.get_by_label("User PIN").fill(hsm["pin"])
        page.get_by_role("button", name="Next").click()
        page.get_by_role("button", name="Test connection").click()

    page.goto(f"{local_stack.base_url}/tenants/acme-dev/master-key")
    page.get_by_label("HYOK — PKCS#11 HSM").check()
    expect(page.get_by_role("alert")).to_contain_text("without MFA")
    fill_hsm()
    expect(page.get_by_role("alert").filter(has_text="HTTP 403")).to_contain_text("mfa")

    _sign_in(page, local_stack.base_url, mfa=True)
    expect(page.get_by_test_id("who")).to_contain_text("MFA")
    page.goto(f"{local_stack.base_url}/tenants/acme-dev/master-key")
    fill_hsm()
    expect(page.get_by_text("All checks passed.")).to_be_visible()
    page.get_by_role("button", name="Next").click()
    page.get_by_role("button", name="Save & activate").click()
    result = page.get_by_test_id("activation-result")
    expect(result).to_contain_text("hyok")
    expect(result).to_contain_text("Active")
    screenshot(page, "12-hyok-active")
    tenant = local_stack.api("GET", "/v1/tenants/acme-dev")
    assert (tenant["key_mode"], tenant["l1_state"]) == ("hyok", "Active")
    extra = console.errors[seen:]
    assert all("status of 403" in line for line in extra), extra
