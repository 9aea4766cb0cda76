import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type BrowserContext } from 'playwright-core';
import { startTestProxy, testConfig, type TestProxy } from '../helpers/proxy.ts';
import { tcpGreeting } from '../helpers/clients.ts';
import { startCheckedConnector, clientPlacedOn, type CheckedConnector } from '../helpers/checked-connector.ts';

/**
 * The live page in a real headless Chromium (Debian's package, installed by .ci/run). The only
 * test allowed to skip: where /usr/bin/chromium is missing, it says so and skips.
 */
const CHROMIUM = '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) console.warn(`status-page test skipped: ${CHROMIUM} is missing (apt-get install -y chromium)`);

describe.skipIf(!hasChromium)('live status page in headless Chromium', () => {
  let connectors: CheckedConnector[];
  let proxy: TestProxy;
  let context: BrowserContext;
  let profile: string;

  beforeAll(async () => {
    connectors = await Promise.all([startCheckedConnector('conn-a', '127.0.1.71'), startCheckedConnector('conn-b', '127.0.1.72')]);
    proxy = await startTestProxy(testConfig(connectors.map((c) => c.config()), { health: { interval: '300ms', timeout: '300ms', rise: 2, fall: 2, jitter: '0%' } }));
    profile = mkdtempSync(join(tmpdir(), 'plb-chromium-'));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 600 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  }, 60_000);

  afterAll(async () => {
    await context?.close();
    await proxy?.stop();
    await Promise.all((connectors ?? []).map((c) => c.close()));
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  it('shows a Connector turning down (with the reason) and back up', async () => {
    // A live session on each Connector so the page has clients and flows to show.
    const sessions = await Promise.all(['conn-a', 'conn-b'].map((id) => tcpGreeting(proxy.addresses.pcoipTcp.port, clientPlacedOn(proxy.app, id))));
    const page = await context.newPage();
    const consoleErrors: string[] = [];
    page.on('console', (msg) => (msg.type() === 'error' ? consoleErrors.push(msg.text()) : undefined));
    await page.goto(`${proxy.adminUrl}/`);

    const healthOf = (id: string, status: 'up' | 'down') => `tr[data-connector="${id}"] [data-field="health"].badge.${status}`;
    await page.waitForSelector(healthOf('conn-a', 'up'), { timeout: 10_000 });
    await page.waitForSelector(healthOf('conn-b', 'up'), { timeout: 10_000 });
    expect(await page.textContent('tr[data-connector="conn-a"] [data-field="clients"]')).toBe('1');
    expect(await page.textContent('#t-up')).toBe('2 / 2');

    connectors[0]!.broker.setHealth({ kind: 'error', reason: 'Cannot communicate with broker' });
    await page.waitForSelector(healthOf('conn-a', 'down'), { timeout: 10_000 });
    expect(await page.textContent('tr[data-connector="conn-a"] [data-field="reason"]')).toBe('broker /health: HTTP 500: Cannot communicate with broker');
    expect(await page.textContent('#t-up')).toBe('1 / 2');
    // A fresh directory per run (kept, to look at): a fixed /tmp path clashes between runs and users.
    const shot = join(mkdtempSync(join(tmpdir(), 'plb-status-page-')), 'status-page-down.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.info(`status page screenshot (conn-a down): ${shot}`);

    connectors[0]!.broker.setHealth({ kind: 'ok' });
    await page.waitForSelector(healthOf('conn-a', 'up'), { timeout: 10_000 });
    expect(await page.$('tr[data-connector="conn-a"] [data-field="reason"]')).toBeNull();
    expect(await page.textContent('#t-up')).toBe('2 / 2');
    expect(consoleErrors).toEqual([]);
    for (const s of sessions) s.socket.destroy();
  });
});
