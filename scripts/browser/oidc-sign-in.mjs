// Signs in to Shoal's web UI through the identity provider in Debian's Chromium
// (headless, through playwright-core), for tests/e2e/tests/web_ui_browser.rs: the
// sign-in page's provider link, the provider's login and consent forms, the
// callback, and the clusters page that must open signed in. This checks what
// only a browser does: the session cookie is SameSite=Strict, so it must reach
// the clusters page after a navigation the provider started.
// It prints one JSON object {ok, url, heading, error?} and exits non-zero on failure.
//
// Environment: SHOAL_UI_BASE, OIDC_USER, OIDC_PASSWORD, SHOAL_UI_OUT (screenshot
// directory), CHROMIUM (default /usr/bin/chromium).
import { env, launch } from "./common.mjs";
import { mkdirSync } from "node:fs";

const base = env("SHOAL_UI_BASE");
const out = env("SHOAL_UI_OUT");
mkdirSync(out, { recursive: true });

const report = {};
let page = null;
const browser = await launch();
try {
  // Both the server's and the provider's CAs are the test's own.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  page = await context.newPage();
  await page.goto(`${base}/ui/sign-in`);
  await page.getByRole("link", { name: "Sign in with your identity provider" }).click();
  await page.locator("input[name=login]").fill(env("OIDC_USER"));
  await page.locator("input[name=password]").fill(env("OIDC_PASSWORD"));
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("button", { name: "Allow" }).click();
  await page.waitForURL(`${base}/ui/clusters`, { timeout: 30000 });
  await page.getByRole("heading", { level: 1 }).waitFor();
  report.url = page.url();
  report.heading = (await page.getByRole("heading", { level: 1 }).textContent()).trim();
  report.createOffered = (await page.getByRole("link", { name: "Create cluster" }).count()) > 0;
  await page.screenshot({ path: `${out}/oidc-signed-in.png`, fullPage: true });
  report.ok = true;
} catch (e) {
  report.ok = false;
  report.error = String(e?.stack ?? e);
  if (page) {
    report.url = page.url();
    report.text = (await page.locator("body").textContent().catch(() => "")).slice(0, 2000);
    await page.screenshot({ path: `${out}/oidc-failed.png`, fullPage: true }).catch(() => {});
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
process.exit(report.ok ? 0 : 1);
