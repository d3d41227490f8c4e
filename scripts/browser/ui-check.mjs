// Drives Debian's Chromium (headless, through playwright-core) through Shoal's web
// UI as a user would, for tests/e2e/tests/web_ui_browser.rs. It signs in with a
// token, shows a form error at its field, creates a cluster through the form,
// waits for its status to turn Ready on the open clusters page (no reload), scales
// it, checks that a viewer is offered none of that and is refused a forced delete,
// downloads a kubeconfig made in the page (WebCrypto), and deletes it; it reads the cluster's recent events; it takes a screenshot of every page and runs axe-core on it.
// It prints one JSON object: the steps with their timings and every serious or
// critical accessibility violation; it exits non-zero on the first failed step.
//
// Environment: SHOAL_UI_BASE (https://host:port), SHOAL_UI_TOKEN (an owner's),
// SHOAL_UI_VIEWER_TOKEN (a viewer's in the same organization), SHOAL_UI_ORG,
// SHOAL_UI_CLUSTER (the name to create), SHOAL_UI_RELEASE, SHOAL_UI_OUT (the
// screenshot directory), CHROMIUM (default /usr/bin/chromium),
// SHOAL_UI_READY_SECS (default 300), KUBECTL (default kubectl).

import { env, launch } from "./common.mjs";
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import { execFileSync } from "node:child_process";

const base = env("SHOAL_UI_BASE");
const token = env("SHOAL_UI_TOKEN");
const viewerToken = env("SHOAL_UI_VIEWER_TOKEN");
const org = env("SHOAL_UI_ORG");
const cluster = env("SHOAL_UI_CLUSTER");
const release = env("SHOAL_UI_RELEASE");
const out = env("SHOAL_UI_OUT");
const readySecs = Number(env("SHOAL_UI_READY_SECS", "300"));
const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
mkdirSync(out, { recursive: true });

const report = { steps: [], violations: [], screenshots: [] };
const started = Date.now();
const step = (name, extra = {}) =>
  report.steps.push({ name, ms: Date.now() - started, ...extra });

const browser = await launch();
try {
  // The server's CA is the test's own; the browser is told to accept it.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();

  // A screenshot and an axe-core run of the page as it stands.
  const check = async (label) => {
    const file = `${out}/${label}.png`;
    await page.screenshot({ path: file, fullPage: true });
    report.screenshots.push(file);
    await page.addScriptTag({ path: axePath });
    const result = await page.evaluate(async () => {
      // eslint-disable-next-line no-undef
      const r = await axe.run(document);
      return r.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5),
      }));
    });
    for (const v of result) {
      if (v.impact === "serious" || v.impact === "critical") {
        report.violations.push({ page: label, ...v });
      }
    }
  };

  // Signed out, /ui leads to the sign-in form.
  await page.goto(`${base}/ui`);
  if (!page.url().endsWith("/ui/sign-in")) throw new Error(`/ui led to ${page.url()}`);
  await check("sign-in");
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${base}/ui/clusters`);
  step("signed in");
  await check("clusters-empty");

  // The create form: the server's refusal shows at the field.
  await page.getByRole("link", { name: "Create cluster" }).click();
  await page.waitForURL(`${base}/ui/clusters/new`);
  await check("create-form");
  const fill = async (name) => {
    await page.locator("#name").fill(name);
    await page.locator("#organization").selectOption(org);
    await page.locator("#release").selectOption(release);
    await page.locator("#control_plane_1").check();
    await page.locator("#workers").fill("0");
    await page.locator("#cpu").fill("1");
    await page.locator("#memory").fill("256Mi");
    await page.locator("#disk").fill("1Gi");
    await page.getByRole("button", { name: "Create cluster" }).click();
  };
  await fill("Not_A_Name");
  await page.locator("#name-error").waitFor();
  const nameError = (await page.locator("#name-error").textContent()).trim();
  const described = await page.locator("#name").getAttribute("aria-describedby");
  if (described !== "name-error") throw new Error(`#name is described by ${described}`);
  step("name error at its field", { message: nameError });
  await check("create-form-error");

  // A valid cluster: back to the list, where the row turns Ready without a reload.
  await fill(cluster);
  await page.waitForURL(`${base}/ui/clusters`);
  await page.evaluate(() => {
    window.shoalMarker = "no reload";
  });
  step("created");
  const row = page.locator("#clusters tr", { hasText: cluster });
  await row.waitFor();
  await row
    .locator("td", { hasText: /^Ready$/ })
    .waitFor({ timeout: readySecs * 1000 });
  const marker = await page.evaluate(() => window.shoalMarker);
  if (marker !== "no reload") throw new Error("the clusters page reloaded while waiting");
  step("Ready live", { row: (await row.textContent()).replace(/\s+/g, " ").trim() });
  await check("clusters-ready");

  // The cluster's page: scale the default pool, then delete by typing the name.
  await row.getByRole("link", { name: cluster }).click();
  await page.waitForURL(`${base}/ui/clusters/${org}/${cluster}`);
  await check("cluster-detail");
  const eventRows = await page
    .locator("h2:has-text('Recent events') + table tbody tr")
    .count();
  step("events shown", { rows: eventRows });
  const workers = page.getByLabel(`Workers in ${cluster}-default`);
  await workers.fill("1");
  await page.getByRole("button", { name: "Scale" }).click();
  // The same URL again after the redirect: wait for the page that says so.
  await page.getByText(/of 1 workers Ready/).waitFor();
  const scaled = await page.getByLabel(`Workers in ${cluster}-default`).inputValue();
  if (scaled !== "1") throw new Error(`the pool shows ${scaled} workers after scaling to 1`);
  step("scaled");

  // A viewer of the organization, in a browser of its own: the cluster is
  // listed, but nothing to create, scale, upgrade, delete or make a kubeconfig
  // is offered, and a delete forced past the page is refused by the server.
  const viewerContext = await browser.newContext({ ignoreHTTPSErrors: true });
  const viewer = await viewerContext.newPage();
  await viewer.goto(`${base}/ui/sign-in`);
  await viewer.getByLabel("API token").fill(viewerToken);
  await viewer.getByRole("button", { name: "Sign in" }).click();
  await viewer.waitForURL(`${base}/ui/clusters`);
  await viewer.locator("#clusters tr", { hasText: cluster }).waitFor();
  const offered = async (role, name) => (await viewer.getByRole(role, { name }).count()) > 0;
  const onList = { create: await offered("link", "Create cluster") };
  await viewer.goto(`${base}/ui/clusters/${org}/${cluster}`);
  await viewer.getByRole("heading", { name: `Cluster ${cluster}` }).waitFor();
  const onDetail = {
    scale: await offered("button", "Scale"),
    upgrade: await offered("button", "Upgrade"),
    delete: await offered("button", "Delete cluster"),
    kubeconfig: await offered("button", "Create kubeconfig"),
  };
  await viewer.screenshot({ path: `${out}/viewer-cluster-detail.png`, fullPage: true });
  report.screenshots.push(`${out}/viewer-cluster-detail.png`);
  const forced = await viewer.request.post(`${base}/ui/clusters/${org}/${cluster}/delete`, {
    form: { confirm: cluster },
    maxRedirects: 0,
  });
  step("viewer offered nothing", { onList, onDetail, forcedDelete: forced.status() });
  await viewerContext.close();

  // Create kubeconfig: the key pair is made in the page, only a CSR is sent, and
  // the file is downloaded once; the test then uses it with kubectl.
  const downloading = page.waitForEvent("download", { timeout: 60000 });
  await page.getByRole("button", { name: "Create kubeconfig" }).click();
  const download = await downloading;
  const kubeconfig = `${out}/${download.suggestedFilename()}`;
  await download.saveAs(kubeconfig);
  await page.getByText(/^Downloaded /).waitFor();
  step("kubeconfig downloaded", { file: kubeconfig });
  await check("cluster-kubeconfig");
  // kubectl with the downloaded file, through the gateway, while the cluster is up.
  let guest = null;
  let lastError = "";
  for (const until = Date.now() + 60000; Date.now() < until; ) {
    try {
      guest = execFileSync(env("KUBECTL", "kubectl"), ["--kubeconfig", kubeconfig, "get", "--raw", "/api"], {
        encoding: "utf8",
        timeout: 20000,
      });
      break;
    } catch (e) {
      lastError = String(e.stderr ?? e);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  if (guest === null) throw new Error(`kubectl with the downloaded kubeconfig failed: ${lastError}`);
  step("kubectl with the kubeconfig", { answer: JSON.parse(guest) });

  for (const [label, path] of [
    ["organizations", "/ui/organizations"],
    ["releases", "/ui/releases"],
    ["hosts", "/ui/hosts"],
    ["getting-started", "/ui/getting-started"],
  ]) {
    await page.goto(`${base}${path}`);
    await check(label);
  }

  await page.goto(`${base}/ui/clusters/${org}/${cluster}`);
  await page.getByLabel(/Type the cluster's name/).fill(cluster);
  await page.getByRole("button", { name: "Delete cluster" }).click();
  await page.waitForURL(`${base}/ui/clusters`);
  step("deleted");
  await page
    .locator("#clusters tr", { hasText: cluster })
    .waitFor({ state: "detached", timeout: 120000 });
  step("gone from the list");
  await check("clusters-after-delete");

  // Keyboard: Tab from the top reaches the navigation's first link.
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement?.textContent?.trim());
  step("keyboard focus", { focused });
  report.ok = true;
} catch (e) {
  report.ok = false;
  report.error = String(e?.stack ?? e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
process.exit(report.ok ? 0 : 1);
