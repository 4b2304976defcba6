"""End-to-end fixtures: a real ``openkcm local up`` in a subprocess (temp data dir, free ports) and
Debian's Chromium driven by Playwright through an explicit executable path.

Playwright's own browser download is never used (``playwright install`` cannot reach its CDN here);
``scripts/bootstrap.sh test`` installs the ``chromium`` package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
FRONTEND = REPO / "frontend"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("OPENKCM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
OPENKCM = [sys.executable, "-c", "import sys; from openkcm.cli import main; sys.exit(main())"]
ACCOUNT = "acme-corp-12345"  # the local issuer's login form proposes this account


@dataclass
class LocalStackProcess:
    data_dir: Path
    info: dict[str, Any]
    process: subprocess.Popen[bytes]
    hsm: dict[str, str] | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return str(self.info["services"]["api"]["ui"]).rstrip("/")

    @property
    def aws_endpoint(self) -> str:
        return str(self.info["aws_endpoint"])

    def token(self, role: str = "account-admin", account: str = ACCOUNT) -> str:
        key = f"{account}|{role}"
        if key not in self.tokens:
            done = subprocess.run(
                [*OPENKCM, "local", "token", "--data-dir", str(self.data_dir),
                 "--account", account, "--role", role, "--sub", "e2e-setup"],
                capture_output=True, text=True, timeout=60, cwd=REPO, env=_clean_env(),
            )
            assert done.returncode == 0, done.stderr
            self.tokens[key] = done.stdout.strip().splitlines()[-1]
        return self.tokens[key]

    def api(self, method: str, path: str, body: Any = None, role: str = "account-admin") -> Any:
        """Test setup and cross-checks through the same public API the UI uses."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token(role)}", "Content-Type": "application/json",
        })
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 (loopback)
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path} -> {exc.code}: {exc.read()[:500]!r}") from None


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPENKCM_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _ensure_ui_built() -> None:
    index = FRONTEND / "dist" / "index.html"
    sources = [p for p in (FRONTEND / "src").rglob("*") if p.is_file()] + [FRONTEND / "index.html"]
    if index.exists() and all(p.stat().st_mtime <= index.stat().st_mtime for p in sources):
        return
    if not (FRONTEND / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=FRONTEND, check=True, timeout=600)
    subprocess.run(["npm", "run", "--silent", "build"], cwd=FRONTEND, check=True, timeout=600)


SOFTHSM_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                   "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so")
HSM_TOKEN, HSM_PIN, HSM_KEY = "acme-hsm", "4711-e2e", "acme-hyok-master"


def _softhsm(base: Path) -> dict[str, str] | None:
    """A SoftHSM2 token with one AES-256 key, made before the stack starts (SoftHSM reads its
    configuration once per process). The customer's HSM in the HYOK step; None without SoftHSM2."""
    module = next((m for m in SOFTHSM_MODULES if Path(m).exists()), None)
    if module is None or shutil.which("softhsm2-util") is None:
        return None
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**_clean_env(), "SOFTHSM2_CONF": str(conf)}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", HSM_TOKEN, "--so-pin", "so-" + HSM_PIN,
                    "--pin", HSM_PIN], check=True, capture_output=True, env=env, timeout=60)
    make_key = (
        "import os, sys, pkcs11\n"
        "from pkcs11 import Attribute, KeyType\n"
        "lib = pkcs11.lib(sys.argv[1])\n"
        "with lib.get_token(token_label=sys.argv[2]).open(user_pin=sys.argv[3], rw=True) as s:\n"
        "    s.generate_key(KeyType.AES, 256, label=sys.argv[4], id=os.urandom(8), store=True,\n"
        "                   template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True})\n"
    )
    subprocess.run([sys.executable, "-c", make_key, module, HSM_TOKEN, HSM_PIN, HSM_KEY], check=True,
                   capture_output=True, env=env, timeout=60)
    return {"module": module, "conf": str(conf), "token": HSM_TOKEN, "pin": HSM_PIN, "key": HSM_KEY}


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackProcess]:
    _ensure_ui_built()
    data_dir = tmp_path_factory.mktemp("openkcm-e2e")
    hsm = _softhsm(tmp_path_factory.mktemp("softhsm"))
    env = _clean_env()
    if hsm is not None:
        env.update(SOFTHSM2_CONF=hsm["conf"], OPENKCM_PKCS11_MODULES=hsm["module"])
    log = (data_dir / "stack.log").open("wb")
    command = [
        *OPENKCM, "local", "up", "--data-dir", str(data_dir),
        "--moto-port", str(free_port()), "--health-port", str(free_port()),
        "--port", f"api={free_port()}", "--port", f"kmip={free_port()}",
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    stack_file = data_dir / "stack.json"
    try:
        deadline = time.monotonic() + 120
        while not stack_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("openkcm local up did not start:\n" + (data_dir / "stack.log").read_text()[-4000:])
            time.sleep(0.25)
        info = json.loads(stack_file.read_text())
        assert "api" in info["services"], f"the local stack serves no API: {info['services']}"
        yield LocalStackProcess(data_dir, info, process, hsm=hsm)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (scripts/bootstrap.sh test installs the chromium package)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # a shared 2-core machine: assertions wait as long as actions

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh user data dir
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900}, accept_downloads=True,
        )
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


@dataclass
class ConsoleLog:
    errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture(scope="module")
def page(browser_context: Any, console: ConsoleLog) -> Any:
    page = browser_context.pages[0] if browser_context.pages else browser_context.new_page()
    page.on("console", lambda m: console.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: console.errors.append(f"pageerror: {exc}"))
    return page


def screenshot(page: Any, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


AXE = FRONTEND / "node_modules" / "axe-core" / "axe.min.js"


def accessibility_violations(page: Any) -> list[str]:
    """axe-core (WCAG 2 A/AA rules) on the current page; serious and critical findings only. The script is
    evaluated through the DevTools protocol, which the page's CSP does not govern (nothing is injected)."""
    if not AXE.exists():
        pytest.skip("axe-core is not installed (npm ci in frontend/)")
    result = page.evaluate(
        AXE.read_text() + "\n;axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}})"
        ".then(r => r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => v.id + ': ' + v.help + ' -> ' + v.nodes.map(n => n.target.join(' ')).slice(0, 3).join(', ')))"
    )
    return list(result)
