"""/ui, the playground and gallery (issue 17): plain files from the service under a self-only policy, public but
holding no data, and in a real browser (headless Chromium) against a real keyed server on the tiny model: ask for the
key, generate with live progress, see the image in the gallery, refine it, delete it, with nothing leaving loopback."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import assert_error

KEY = "ui-key"
AUTH = {"X-API-Key": KEY}
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


@pytest.fixture(scope="module")
def secured(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tiny_settings(model_cache, tmp_path_factory.mktemp("img"), generation_auth_key=KEY))
    yield live
    live.stop()


def test_the_page_and_its_files_are_public_static_and_self_only(secured: LiveServer) -> None:
    with secured.client() as c:  # no key
        root = c.get("/")
        assert root.status_code == 307 and root.headers["location"] == "ui"  # relative: fine under a proxy prefix
        r = c.get("/ui")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self';" in csp and "style-src 'self';" in csp
        assert "connect-src 'self';" in csp and "img-src 'self' blob:;" in csp
        assert "unsafe" not in csp and "http" not in csp
        assert "<script>" not in r.text and "style=" not in r.text and "<style" not in r.text
        assert not re.search(r"\son[a-z]+=", r.text)  # no inline event handlers either
        refs = re.findall(r'(?:src|href)="([^"]*)"', r.text)
        assert sorted(refs) == ["docs", "ui/assets/icon.svg", "ui/assets/ui.css", "ui/assets/ui.js"], refs
        for ref in refs:
            assert not urlsplit(ref).scheme and not urlsplit(ref).netloc and not ref.startswith("/"), ref
            if ref == "docs":
                continue
            asset = c.get(urljoin(f"{secured.url}/ui", ref))
            assert asset.status_code == 200, ref
            assert asset.headers["content-type"].startswith(TYPES[Path(ref).suffix]), asset.headers
            assert asset.headers["x-content-type-options"] == "nosniff"
        script = c.get("/ui/assets/ui.js").text
        assert "innerHTML" not in script and "outerHTML" not in script and "insertAdjacentHTML" not in script
        assert "eval(" not in script and "localStorage" not in script and "sessionStorage" in script
        assert "http://" not in script and "https://" not in script  # every call goes to the page's own service
        # Public to read only: any other method on the same paths needs the key, as everywhere else.
        for method, path in (("POST", "/"), ("POST", "/ui"), ("PUT", "/ui/assets/ui.js"), ("DELETE", "/ui")):
            assert_error(c.request(method, path), 401, "unauthorized")
        # The page holds no data; the data needs the key.
        assert_error(c.get("/images"), 401, "unauthorized")
        assert_error(c.get("/models"), 401, "unauthorized")


CHROMIUM = shutil.which("chromium")
# CI (.ci/run) installs chromium and sets this, so that there the page test can never quietly skip.
NEED_BROWSER = os.environ.get("SDXL_REQUIRE_BROWSER") == "1"
# Where the README's screenshot is written from (docs/ui.png): set to refresh it; otherwise it goes to tmp_path.
SCREENSHOT = os.environ.get("SDXL_UI_SCREENSHOT")


def _card(image_id: str) -> str:
    return f'#gallery .card[data-id="{image_id}"]'


@pytest.mark.skipif(CHROMIUM is None and not NEED_BROWSER, reason="no system chromium (apt-get install chromium)")
def test_generate_watch_refine_delete_in_a_browser(secured: LiveServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        # The resolver rule: the page can reach nothing but loopback, as on a machine without a network.
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            console: list[str] = []
            requested: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("request", lambda r: requested.append(r.url))
            refused: list[str] = []
            page.on("response", lambda r: refused.append(r.url) if r.status == 401 else None)
            page.goto(f"{secured.url}/")  # redirected to /ui

            # 1. Without the key the page shows nothing but the prompt for it; a wrong key is refused.
            expect(page.locator("#login")).to_be_visible()
            expect(page.locator("#app")).to_be_hidden()
            page.fill("#key", "wrong")
            page.click("#key-form button")
            expect(page.locator("#key-error")).to_have_text("The key was refused.")
            expect(page.locator("#app")).to_be_hidden()
            page.fill("#key", KEY)
            page.click("#key-form button")
            expect(page.locator("#app")).to_be_visible()
            expect(page.locator("#login")).to_be_hidden()
            assert page.evaluate("sessionStorage.getItem('sdxl-serve.key')") == KEY
            assert page.evaluate("localStorage.length") == 0
            expect(page.locator("#model")).to_have_value("tiny")

            # 2. Generate, watching the job's progress arrive from /jobs/{id}/events.
            page.evaluate(
                """() => {
                    window.seen = [];
                    const note = () => window.seen.push([document.getElementById('job-status').textContent,
                        document.getElementById('progress').value, document.getElementById('progress').max]);
                    new MutationObserver(note).observe(document.getElementById('job-status'),
                        {childList: true, characterData: true, subtree: true});
                }"""
            )
            prompt = "a lighthouse at dusk <b>not bold</b>"  # markup in a prompt stays text
            page.fill("#prompt", prompt)
            page.fill("#seed", "7")
            page.fill("#steps", "12")
            page.fill("#negative_prompt", "fog")
            page.select_option("#scheduler", "euler_a")
            page.select_option("#lora", "tiny-lora")
            page.fill("#lora_scale", "0.5")
            page.click("#go")
            result = page.locator("#results .card")
            expect(result).to_have_count(1, timeout=60_000)
            expect(page.locator("#job-status")).to_have_text("generate: done")
            image_id = result.get_attribute("data-id")
            assert image_id and re.fullmatch(r"[0-9a-f]{32}", image_id)
            seen = page.evaluate("window.seen")
            assert any(text == "generate: running" and 0 < value < top for text, value, top in seen), seen

            # 3. It is in the gallery, drawn (a blob: URL of the PNG fetched with the key), with its provenance.
            card = page.locator(_card(image_id))
            expect(card.locator("img")).to_have_attribute("src", re.compile(r"^blob:"))
            page.wait_for_function(
                "id => document.querySelector(`#gallery .card[data-id='${id}'] img`).naturalWidth === 256", arg=image_id
            )
            expect(card.locator(".prompt")).to_have_text(prompt)
            assert page.locator("#gallery b").count() == 0
            names, values = card.locator("dt").all_text_contents(), card.locator("dd").all_text_contents()
            facts = dict(zip(names, values, strict=True))
            assert facts == {"id": image_id, "kind": "generate", "seed": "7", "model": "tiny", "parent": "none"}

            # 4. Refine it from the gallery: the new image is the gallery's first, with the first as its parent.
            card.get_by_role("button", name="Refine").click()
            expect(page.locator("#job-status")).to_have_text("refine: done", timeout=60_000)
            expect(page.locator("#gallery .card")).to_have_count(2)
            newest = page.locator("#gallery .card").first
            refined_id = newest.get_attribute("data-id")
            assert refined_id and refined_id != image_id
            expect(newest.locator("dd").nth(1)).to_have_text("refine")
            expect(newest.locator("dd").nth(4)).to_have_text(image_id)
            expect(newest.locator("img")).to_have_attribute("src", re.compile(r"^blob:"))
            page.wait_for_function(
                "id => document.querySelector(`#gallery .card[data-id='${id}'] img`).naturalWidth > 0", arg=refined_id
            )

            # 5. "Same again" on the first image remakes it from its provenance: the same seed, the same bytes.
            card.get_by_role("button", name="Same again").click()
            expect(page.locator("#job-status")).to_have_text("same again (generate): done", timeout=60_000)
            expect(page.locator("#gallery .card")).to_have_count(3)
            again_id = page.locator("#results .card").first.get_attribute("data-id")
            assert again_id and again_id not in (image_id, refined_id)

            # 6. "Img2img from this": a new image made from the first, its parent.
            card.get_by_role("button", name="Img2img from this").click()
            expect(page.locator("#job-status")).to_have_text("img2img: done", timeout=60_000)
            expect(page.locator("#gallery .card")).to_have_count(4)
            edited = page.locator("#gallery .card").first
            expect(edited.locator("dd").nth(1)).to_have_text("img2img")
            expect(edited.locator("dd").nth(4)).to_have_text(image_id)
            page.wait_for_function(
                "() => [...document.querySelectorAll('#gallery .card img')].every(img => img.naturalWidth > 0)"
            )
            page.screenshot(path=SCREENSHOT or str(tmp_path / "ui.png"), full_page=True)

            # 7. Delete the refined image: gone from the page and from the store.
            page.locator(_card(refined_id)).get_by_role("button", name="Delete").click()
            expect(page.locator(f'.card[data-id="{refined_id}"]')).to_have_count(0)
            expect(page.locator("#gallery .card")).to_have_count(3)

            # 8. "Forget key" empties the page and asks again; the key was for that tab only: a new one asks too.
            page.click("#forget")
            expect(page.locator("#login")).to_be_visible()
            expect(page.locator("#app")).to_be_hidden()
            assert page.locator(".card").count() == 0
            assert page.evaluate("sessionStorage.length") == 0
            other = browser.new_page()
            other.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            other.on("response", lambda r: refused.append(r.url) if r.status == 401 else None)
            other.goto(f"{secured.url}/ui")
            expect(other.locator("#login")).to_be_visible()
            expect(other.locator("#app")).to_be_hidden()
        finally:
            browser.close()
    with httpx.Client(base_url=secured.url, headers=AUTH) as c:
        assert_error(c.get(f"/download/{refined_id}"), 404, "not_found")
        listed = {image["id"]: image["provenance"] for image in c.get("/images").json()["images"]}
        made = listed[image_id]
        assert made["prompt"] == prompt and made["negative_prompt"] == "fog" and made["steps"] == 12
        assert made["scheduler"] == "euler_a" and made["loras"] == [{"name": "tiny-lora", "scale": 0.5}]
        assert listed[again_id] == made  # made again from the provenance: the same record
        first = c.get(f"/download/{image_id}")
        assert first.status_code == 200
        assert c.get(f"/download/{again_id}").content == first.content  # same request, same seed: the same PNG
    assert not [m for m in console if "Content Security Policy" in m], console
    # The only failed loads are the three probes that asked for the key: no key, the wrong key, the new tab
    # (the page names its icon, so the browser does not ask for /favicon.ico, which would need the key).
    assert refused == [f"{secured.url}/models"] * 3, refused
    errors = [m for m in console if m.startswith("error")]
    assert errors == ["error: Failed to load resource: the server responded with a status of 401 (Unauthorized)"] * 3
    own = (secured.url + "/", f"blob:{secured.url}/")
    assert requested and all(url.startswith(own) for url in requested), requested
