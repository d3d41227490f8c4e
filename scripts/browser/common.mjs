// What the browser scripts share: reading the environment, and Debian's Chromium
// launched headless as this machine runs it.
import { chromium } from "playwright-core";

// The variable `name`, or `fallback`; an error when neither is there.
export const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};

// Chromium from CHROMIUM (default /usr/bin/chromium), headless.
export const launch = () =>
  chromium.launch({
    executablePath: env("CHROMIUM", "/usr/bin/chromium"),
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
