import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';

/**
 * Debian's Chromium, headless, for the live-page tests (.ci/run installs it). The only tests
 * allowed to skip: where /usr/bin/chromium is missing, they say so and skip.
 */
export const CHROMIUM = '/usr/bin/chromium';
export const hasChromium = existsSync(CHROMIUM);

export function warnIfNoChromium(test: string): void {
  if (!hasChromium) console.warn(`${test} test skipped: ${CHROMIUM} is missing (apt-get install -y chromium)`);
}

/** A headless browser with a throw-away profile directory (screenshots may go there); `close` removes both. */
export async function launchChromium(viewport: { width: number; height: number }, profilePrefix: string): Promise<{ context: BrowserContext; profile: string; close: () => Promise<void> }> {
  const profile = mkdtempSync(join(tmpdir(), profilePrefix));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return {
    context,
    profile,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
