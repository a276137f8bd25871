// Debian's Chromium driven by playwright-core: nothing here downloads a browser.
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';

/** Debian's Chromium (`apt-get install chromium`); `CHROMIUM` may name another. */
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

export async function launch() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // As root (CI), Chromium refuses to start with its sandbox. The rest keeps it from calling
    // home on its own (updates, metrics, safe browsing): the tests run offline.
    args: [
      '--no-sandbox',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-domain-reliability',
      '--disable-sync',
      '--no-first-run',
      '--no-default-browser-check',
      '--metrics-recording-only',
    ],
  });
}

/** True for a URL of this machine (loopback by name or address), `data:` and `blob:` included. */
export function isLocal(url) {
  const { protocol, hostname } = new URL(url);
  if (protocol === 'data:' || protocol === 'about:') return true;
  if (protocol === 'blob:') return isLocal(url.slice('blob:'.length));
  return ['127.0.0.1', 'localhost', '[::1]'].includes(hostname);
}
